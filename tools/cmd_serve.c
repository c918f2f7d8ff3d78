/* cmd_serve.c — `dicomfs serve`: the archive's DICOMweb endpoint, until SIGINT/SIGTERM. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fs.h"
#include "auth.h"
#include "web.h"

static const char usage_text[] =
    "usage: dicomfs serve ARCHIVE [--http HOST:PORT] [--cors ORIGIN] [--strict]\n"
    "                    [--auth FILE | --insecure-no-auth] [--tls-cert FILE --tls-key FILE]\n"
    "                    [--audit FILE|-] [--connection-timeout S] [--header-timeout S]\n"
    "                    [--max-connections N] [--max-connections-per-ip N]\n"
    "                    [--mount DIR [--allow-delete] [--sync-close] [--inbox-keep S]]\n\n"
    "Serves ARCHIVE (created when missing or empty) over DICOMweb as the Azure DICOM service does:\n"
    "STOW-RS, QIDO-RS, WADO-RS and DELETE under /v1/ and /v2/, and /health/check.\n\n"
    "  --http HOST:PORT  where to listen (default 127.0.0.1:8080; port 0 picks a free one).\n"
    "                    Without --auth only a loopback address (127.x.x.x) is allowed\n"
    "  --cors ORIGIN     Access-Control-Allow-Origin for browser viewers (default *)\n"
    "  --strict          refuse what the Azure service refuses, where it is stricter than\n"
    "                    DICOMweb and real clients (no Accept header, unquoted parameters,\n"
    "                    application/json, XML answers...; docs/CLI.md lists them).\n"
    "                    Also DICOMFS_STRICT=1 in the environment.\n"
    "  --auth FILE       require bearer tokens (JWT) and roles, as the Azure service does: 401\n"
    "                    without a valid token, 403 without the route's data action. FILE is\n"
    "                    JSON (issuer, audiences, keys, jwks, hs256Secret, rolesClaim, roles,\n"
    "                    clockSkewSeconds; docs/CLI.md). dicomfs keygen DIR makes one.\n"
    "  --insecure-no-auth  allow a non-loopback --http address without --auth: anyone who\n"
    "                    can reach it reads, changes and deletes the archive\n"
    "  --audit FILE      append one JSON line per request to FILE (created 0600; - for stderr):\n"
    "                    time, sub, client, method, route template, status, bytes, ms; never\n"
    "                    a token, a UID or a query string\n"
    "  --auth-failures N  with --auth: after N failed authentications (bad tokens) from one\n"
    "                    address within 60 s, answer it 429 for 60 s (default 20; 0: never)\n"
    "  --tls-cert FILE, --tls-key FILE   serve HTTPS with this certificate (PEM; the chain\n"
    "                    after it) and its private key (PEM, unencrypted)\n"
    "  --connection-timeout S  close a connection after S seconds with nothing received or\n"
    "                    sent (default 60; 0: never)\n"
    "  --header-timeout S  close a connection whose request headers have not all arrived S\n"
    "                    seconds after it opened or its last answer (default 30; 0: never)\n"
    "  --max-connections N  connections open at once (default 256; one thread each)\n"
    "  --max-connections-per-ip N  connections open at once from one client address\n"
    "                    (default 64). Past either limit a new connection is closed at once,\n"
    "                    unanswered (0: no limit)\n"
    "  --mount DIR       also mount the archive at DIR (see dicomfs mount --help)\n"
    "  --allow-delete, --sync-close, --inbox-keep S   the mount's options (dicomfs mount --help)\n\n"
    "Prints 'dicomfs: serving ARCHIVE at http://HOST:PORT' (https:// with TLS) once it listens;\n"
    "stops cleanly on SIGINT or SIGTERM, finishing the requests in progress.\n";

/* A PEM file's text (at most 1 MiB), or NULL with the reason. */
static char *read_pem(const char *path, const char *option, char *why, size_t len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, len, "%s %s: %s", option, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc((1 << 20) + 1);
    if (!buf) abort();
    size_t n = fread(buf, 1, 1 << 20, f);
    bool bad = ferror(f) || !feof(f);
    fclose(f);
    buf[n] = 0;
    if (bad || !strstr(buf, "-----BEGIN ")) {
        snprintf(why, len, "%s %s: %s", option, path, bad ? "unreadable or larger than 1 MiB" : "not a PEM file");
        free(buf);
        return NULL;
    }
    return buf;
}

static void free_pem(char *pem)
{
    if (!pem) return;
    memset(pem, 0, strlen(pem)); /* the key */
    free(pem);
}

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {{"http", required_argument, NULL, 'H'}, {"cors", required_argument, NULL, 'c'},
                                         {"mount", required_argument, NULL, 'm'}, {"allow-delete", no_argument, NULL, 'd'},
                                         {"sync-close", no_argument, NULL, 's'}, {"inbox-keep", required_argument, NULL, 'k'},
                                         {"strict", no_argument, NULL, 'S'}, {"auth", required_argument, NULL, 'a'},
                                         {"insecure-no-auth", no_argument, NULL, 'I'},
                                         {"audit", required_argument, NULL, 'A'},
                                         {"auth-failures", required_argument, NULL, 'F'},
                                         {"tls-cert", required_argument, NULL, 'C'},
                                         {"tls-key", required_argument, NULL, 'K'},
                                         {"connection-timeout", required_argument, NULL, 'T'},
                                         {"header-timeout", required_argument, NULL, 'W'},
                                         {"max-connections", required_argument, NULL, 'M'},
                                         {"max-connections-per-ip", required_argument, NULL, 'P'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *mountpoint = NULL, *auth_file = NULL;
    const char *cert_file = NULL, *key_file = NULL, *audit_file = NULL;
    bool insecure = false;
    char host[64] = "127.0.0.1";
    long port = 8080;
    web_options wo = {0};
    fs_options fo = {0};
    wo.strict = cli_strict_env();
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'H': {
            const char *colon = strrchr(optarg, ':');
            char *end;
            port = colon ? strtol(colon + 1, &end, 10) : -1;
            if (!colon || *end || port < 0 || port > 65535 || (size_t)(colon - optarg) >= sizeof host) {
                fprintf(stderr, "dicomfs serve: --http wants HOST:PORT, not '%s'\n", optarg);
                return 2;
            }
            snprintf(host, sizeof host, "%.*s", (int)(colon - optarg), optarg);
            break;
        }
        case 'c': wo.cors_origin = optarg; break;
        case 'S': wo.strict = true; break;
        case 'a': auth_file = optarg; break;
        case 'I': insecure = true; break;
        case 'C': cert_file = optarg; break;
        case 'A': audit_file = optarg; break;
        case 'F': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || !*optarg || v < 0 || v > 1000000) {
                fprintf(stderr, "dicomfs serve: --auth-failures wants a count (0 for no limit), not '%s'\n", optarg);
                return 2;
            }
            wo.auth_failures = v ? (unsigned)v : UINT_MAX;
            break;
        }
        case 'K': key_file = optarg; break;
        case 'T':
        case 'W':
        case 'M':
        case 'P': {
            /* 0 means none; web_options takes that as UINT_MAX (its 0 is the default) */
            static const char *const names[] = {"connection-timeout", "header-timeout", "max-connections",
                                                "max-connections-per-ip"};
            int which = c == 'T' ? 0 : c == 'W' ? 1 : c == 'M' ? 2 : 3;
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || !*optarg || v < 0 || v > (which < 2 ? 86400L : 65536L)) {
                fprintf(stderr, "dicomfs serve: --%s wants %s (0 for none), not '%s'\n", names[which],
                        which < 2 ? "seconds up to 86400" : "a count up to 65536", optarg);
                return 2;
            }
            unsigned *field[] = {&wo.connection_timeout, &wo.header_timeout, &wo.max_connections,
                                 &wo.max_connections_per_ip};
            *field[which] = v ? (unsigned)v : UINT_MAX;
            break;
        }
        case 'm': mountpoint = optarg; break;
        case 'd': fo.allow_delete = true; break;
        case 's': fo.sync_close = true; break;
        case 'k': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 86400L * 365) {
                fprintf(stderr, "dicomfs serve: --inbox-keep wants seconds (1 or more), not '%s'\n", optarg);
                return 2;
            }
            fo.inbox_keep = (unsigned)v;
            break;
        }
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        fputs(usage_text, stderr);
        return 2;
    }
    /* Safe default: without access control, only this machine may connect. */
    struct in_addr a4;
    bool loopback = inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
    if (!auth_file && !loopback && !insecure) {
        fprintf(stderr,
                "dicomfs serve: refusing to listen on %s without access control: anyone who can reach it could "
                "read, change and delete the archive. Give --auth FILE (dicomfs keygen DIR makes one), listen on "
                "127.0.0.1, or say --insecure-no-auth\n",
                host);
        return 2;
    }
    char *tls_cert = NULL, *tls_key = NULL;
    if (cert_file || key_file) {
        if (!cert_file || !key_file) {
            fprintf(stderr, "dicomfs serve: HTTPS needs both --tls-cert and --tls-key\n");
            return 2;
        }
        char why[512];
        store_err terr = {0};
        if (!(tls_cert = read_pem(cert_file, "--tls-cert", why, sizeof why)) ||
            !(tls_key = read_pem(key_file, "--tls-key", why, sizeof why))) {
            fprintf(stderr, "dicomfs serve: %s\n", why);
            free(tls_cert);
            return 2;
        }
        if (!web_tls_check(tls_cert, tls_key, &terr)) {
            fprintf(stderr, "dicomfs serve: --tls-cert %s, --tls-key %s: %s\n", cert_file, key_file, terr.msg);
            free_pem(tls_cert);
            free_pem(tls_key);
            return 2;
        }
        wo.tls_cert = tls_cert;
        wo.tls_key = tls_key;
    }
    web_auth *auth = NULL;
    if (auth_file) {
        char why[512];
        if (!(auth = web_auth_load(auth_file, why, sizeof why))) {
            fprintf(stderr, "dicomfs serve: %s\n", why);
            free_pem(tls_cert);
            free_pem(tls_key);
            return 2;
        }
        wo.auth = auth;
    }
    web_audit *audit = NULL;
    if (audit_file) {
        char why[512];
        if (!(audit = web_audit_open(audit_file, why, sizeof why))) {
            fprintf(stderr, "dicomfs serve: %s\n", why);
            web_auth_free(auth);
            free_pem(tls_cert);
            free_pem(tls_key);
            return 2;
        }
        wo.audit = audit;
    }
    /* Block the stop signals in every thread; the main thread waits for them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGUSR1); /* the mount went away */
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    store_t *s = cli_open("serve", argv[optind], true);
    if (!s) {
        web_auth_free(auth);
        free_pem(tls_cert);
        free_pem(tls_key);
        web_audit_close(audit);
        return 2;
    }
    wo.host = host;
    wo.port = (uint16_t)port;
    store_err err = {0};
    web_server *srv = web_server_start(s, &wo, &err);
    if (!srv) {
        fprintf(stderr, "dicomfs serve: %s\n", err.msg);
        store_close(s);
        web_auth_free(auth);
        free_pem(tls_cert);
        free_pem(tls_key);
        web_audit_close(audit);
        return 2;
    }
    fs_mount *mnt = NULL;
    if (mountpoint && !(mnt = fs_mount_start(s, mountpoint, &fo, &err))) {
        fprintf(stderr, "dicomfs serve: %s\n", err.msg);
        web_server_stop(srv);
        store_close(s);
        web_auth_free(auth);
        free_pem(tls_cert);
        free_pem(tls_key);
        web_audit_close(audit);
        return 2;
    }
    if (auth) {
        char line[1024];
        web_auth_describe(auth, line, sizeof line);
        fprintf(stderr, "dicomfs serve: access control: bearer tokens of %s\n", line);
    } else if (loopback)
        fprintf(stderr, "dicomfs serve: no access control (no --auth): listening on loopback %s only\n", host);
    else
        fprintf(stderr, "dicomfs serve: WARNING: no access control (--insecure-no-auth) on %s: anyone who can reach "
                "it can read, change and delete the archive\n", host);
    if (audit) fprintf(stderr, "dicomfs serve: audit log: %s\n", strcmp(audit_file, "-") ? audit_file : "stderr");
    if (wo.strict) fprintf(stderr, "dicomfs serve: strict: refusing requests as the Azure DICOM service does\n");
    printf("dicomfs: serving %s at %s://%s:%u%s%s\n", store_dir(s), tls_cert ? "https" : "http", host, web_server_port(srv),
           mnt ? " and mounted at " : "", mnt ? mountpoint : "");
    fflush(stdout);
    int sig = cli_idle_until_signal(&stop);
    fprintf(stderr, "dicomfs serve: stopping (%s)\n", sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "unmounted");
    fs_mount_stop(mnt);
    web_server_stop(srv);
    store_close(s);
    web_auth_free(auth);
    free_pem(tls_cert);
    free_pem(tls_key);
    web_audit_close(audit);
    return 0;
}
