/* cmd_serve.c — `dicomfs serve`: the archive's DICOMweb endpoint, until SIGINT/SIGTERM. */
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
    "usage: dicomfs serve ARCHIVE [--http HOST:PORT] [--cors ORIGIN] [--strict] [--auth FILE]\n"
    "                    [--mount DIR [--allow-delete] [--sync-close] [--inbox-keep S]]\n\n"
    "Serves ARCHIVE (created when missing or empty) over DICOMweb as the Azure DICOM service does:\n"
    "STOW-RS, QIDO-RS, WADO-RS and DELETE under /v1/ and /v2/, and /health/check.\n\n"
    "  --http HOST:PORT  where to listen (default 127.0.0.1:8080; port 0 picks a free one)\n"
    "  --cors ORIGIN     Access-Control-Allow-Origin for browser viewers (default *)\n"
    "  --strict          refuse what the Azure service refuses, where it is stricter than\n"
    "                    DICOMweb and real clients (no Accept header, unquoted parameters,\n"
    "                    application/json, XML answers...; docs/CLI.md lists them).\n"
    "                    Also DICOMFS_STRICT=1 in the environment.\n"
    "  --auth FILE       require bearer tokens (JWT) and roles, as the Azure service does: 401\n"
    "                    without a valid token, 403 without the route's data action. FILE is\n"
    "                    JSON (issuer, audiences, keys, jwks, hs256Secret, rolesClaim, roles,\n"
    "                    clockSkewSeconds; docs/CLI.md). dicomfs keygen DIR makes one.\n"
    "  --mount DIR       also mount the archive at DIR (see dicomfs mount --help)\n"
    "  --allow-delete, --sync-close, --inbox-keep S   the mount's options (dicomfs mount --help)\n\n"
    "Prints 'dicomfs: serving ARCHIVE at http://HOST:PORT' once it listens; stops cleanly\n"
    "on SIGINT or SIGTERM, finishing the requests in progress.\n";

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {{"http", required_argument, NULL, 'H'}, {"cors", required_argument, NULL, 'c'},
                                         {"mount", required_argument, NULL, 'm'}, {"allow-delete", no_argument, NULL, 'd'},
                                         {"sync-close", no_argument, NULL, 's'}, {"inbox-keep", required_argument, NULL, 'k'},
                                         {"strict", no_argument, NULL, 'S'}, {"auth", required_argument, NULL, 'a'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *mountpoint = NULL, *auth_file = NULL;
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
    web_auth *auth = NULL;
    if (auth_file) {
        char why[512];
        if (!(auth = web_auth_load(auth_file, why, sizeof why))) {
            fprintf(stderr, "dicomfs serve: %s\n", why);
            return 2;
        }
        wo.auth = auth;
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
        return 2;
    }
    fs_mount *mnt = NULL;
    if (mountpoint && !(mnt = fs_mount_start(s, mountpoint, &fo, &err))) {
        fprintf(stderr, "dicomfs serve: %s\n", err.msg);
        web_server_stop(srv);
        store_close(s);
        web_auth_free(auth);
        return 2;
    }
    if (auth) {
        char line[1024];
        web_auth_describe(auth, line, sizeof line);
        fprintf(stderr, "dicomfs serve: access control: bearer tokens of %s\n", line);
    }
    if (wo.strict) fprintf(stderr, "dicomfs serve: strict: refusing requests as the Azure DICOM service does\n");
    printf("dicomfs: serving %s at http://%s:%u%s%s\n", store_dir(s), host, web_server_port(srv),
           mnt ? " and mounted at " : "", mnt ? mountpoint : "");
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "dicomfs serve: stopping (%s)\n", sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "unmounted");
    fs_mount_stop(mnt);
    web_server_stop(srv);
    store_close(s);
    web_auth_free(auth);
    return 0;
}
