/* cmd_token.c — `dicomfs token` (mint a bearer token for `dicomfs serve --auth`) and
 * `dicomfs keygen` (a key pair and an auth file: a working setup in one command). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "cli.h"

static const char token_usage[] =
    "usage: dicomfs token (--key FILE | --secret S | --secret-file FILE | --auth FILE) [--role ROLE]...\n"
    "                    [--ttl DURATION] [--nbf DURATION] [--aud AUD]... [--iss ISS] [--sub SUB]\n"
    "                    [--kid KID] [--roles-claim NAME]\n\n"
    "Prints a bearer token (a signed JWT) for `dicomfs serve --auth`:\n"
    "  curl -H \"Authorization: Bearer $(dicomfs token --key auth/private.pem --role reader)\" ...\n\n"
    "  --key FILE         a PEM private key (RSA: RS256, EC P-256: ES256), as dicomfs keygen makes\n"
    "  --secret S, --secret-file FILE   an HS256 shared secret (the auth file's hs256Secret)\n"
    "  --auth FILE        take issuer, the first audience and the roles claim (and, without\n"
    "                     --key or --secret, the hs256Secret) from an auth file\n"
    "  --role ROLE        a role for the roles claim: owner, reader, writer, or one of the\n"
    "                     roles file (repeatable; none gives a token without rights)\n"
    "  --ttl DURATION     lifetime: N[s|m|h|d] (default 1h; negative: already expired)\n"
    "  --nbf DURATION     not valid before now + DURATION (default: no nbf)\n"
    "  --aud AUD          audience (repeatable; default dicomfs)\n"
    "  --iss ISS          issuer (default dicomfs-local)\n"
    "  --sub SUB          subject, the principal's name in messages (default $USER)\n"
    "  --kid KID          key id in the header (default: the key's RFC 7638 thumbprint, which\n"
    "                     the server computes for its PEM keys too; '' for none)\n"
    "  --roles-claim NAME the claim holding the roles (default roles)\n";

static bool parse_duration(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s) return false;
    long mult = 1;
    if (*end == 's') mult = 1, end++;
    else if (*end == 'm') mult = 60, end++;
    else if (*end == 'h') mult = 3600, end++;
    else if (*end == 'd') mult = 86400, end++;
    if (*end || v > 100L * 365 * 86400 / mult || v < -100L * 365 * 86400 / mult) return false;
    *out = v * mult;
    return true;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) abort();
    n = fread(buf, 1, cap, f);
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

int cmd_token(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'},     {"secret", required_argument, NULL, 's'},
        {"secret-file", required_argument, NULL, 'S'}, {"auth", required_argument, NULL, 'a'},
        {"role", required_argument, NULL, 'r'},    {"ttl", required_argument, NULL, 't'},
        {"nbf", required_argument, NULL, 'n'},     {"aud", required_argument, NULL, 'A'},
        {"iss", required_argument, NULL, 'i'},     {"sub", required_argument, NULL, 'u'},
        {"kid", required_argument, NULL, 'K'},     {"roles-claim", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    const char *key_file = NULL, *secret = NULL, *secret_file = NULL, *auth_file = NULL;
    const char *iss = NULL, *sub = NULL, *kid = NULL, *claim = NULL;
    json_t *roles = json_array(), *auds = json_array();
    long ttl = 3600, nbf = 0;
    bool has_nbf = false;
    int c, rc = 2;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'k': key_file = optarg; break;
        case 's': secret = optarg; break;
        case 'S': secret_file = optarg; break;
        case 'a': auth_file = optarg; break;
        case 'r': json_array_append_new(roles, json_string(optarg)); break;
        case 'A': json_array_append_new(auds, json_string(optarg)); break;
        case 'i': iss = optarg; break;
        case 'u': sub = optarg; break;
        case 'K': kid = optarg; break;
        case 'c': claim = optarg; break;
        case 't':
        case 'n':
            if (!parse_duration(optarg, c == 't' ? &ttl : &nbf)) {
                fprintf(stderr, "dicomfs token: --%s wants N[s|m|h|d], not '%s'\n", c == 't' ? "ttl" : "nbf", optarg);
                goto out;
            }
            if (c == 'n') has_nbf = true;
            break;
        case 'h': fputs(token_usage, stdout); rc = 0; goto out;
        default: fputs(token_usage, stderr); goto out;
        }
    }
    if (optind != argc || (!!key_file + !!secret + !!secret_file) > 1 || (!key_file && !secret && !secret_file && !auth_file)) {
        fputs(token_usage, stderr);
        goto out;
    }
    /* defaults from the auth file */
    json_t *auth = NULL;
    if (auth_file) {
        json_error_t je;
        if (!(auth = json_load_file(auth_file, 0, &je))) {
            fprintf(stderr, "dicomfs token: auth file '%s': %s\n", auth_file, je.text);
            goto out;
        }
        if (!iss) iss = json_string_value(json_object_get(auth, "issuer"));
        json_t *a = json_object_get(auth, "audiences");
        if (!a) a = json_object_get(auth, "audience");
        if (!json_array_size(auds) && (json_is_string(a) || json_array_size(a)))
            json_array_append(auds, json_is_string(a) ? a : json_array_get(a, 0));
        if (!claim) claim = json_string_value(json_object_get(auth, "rolesClaim"));
        if (!key_file && !secret && !secret_file) secret = json_string_value(json_object_get(auth, "hs256Secret"));
        if (!key_file && !secret && !secret_file) {
            fprintf(stderr, "dicomfs token: the auth file has no hs256Secret; give --key (the private key)\n");
            json_decref(auth);
            goto out;
        }
    }
    unsigned char *key = NULL;
    size_t key_len = 0;
    jwt_alg_t alg = JWT_ALG_HS256;
    char thumb[64] = "";
    if (key_file || secret_file) {
        key = (unsigned char *)slurp(key_file ? key_file : secret_file, &key_len);
        if (!key) {
            fprintf(stderr, "dicomfs token: cannot read '%s': %s\n", key_file ? key_file : secret_file, strerror(errno));
            json_decref(auth);
            goto out;
        }
    } else {
        key = (unsigned char *)strdup(secret);
        key_len = strlen(secret);
    }
    if (key_file) {
        auth_key_type type;
        char err[256];
        if (!auth_pem_private((const char *)key, key_len, &type, thumb, NULL, NULL, err, sizeof err)) {
            fprintf(stderr, "dicomfs token: %s: %s\n", key_file, err);
            free(key);
            json_decref(auth);
            goto out;
        }
        alg = type == AUTH_KEY_RSA ? JWT_ALG_RS256 : JWT_ALG_ES256;
    }
    time_t now = time(NULL);
    json_t *claims = json_object();
    json_object_set_new(claims, "iss", json_string(iss ? iss : "dicomfs-local"));
    const char *user = getenv("USER");
    json_object_set_new(claims, "sub", json_string(sub ? sub : user && *user ? user : "dicomfs-token"));
    if (!json_array_size(auds)) json_array_append_new(auds, json_string("dicomfs"));
    json_object_set(claims, "aud", json_array_size(auds) == 1 ? json_array_get(auds, 0) : auds);
    json_object_set_new(claims, "iat", json_integer((json_int_t)now));
    json_object_set_new(claims, "exp", json_integer((json_int_t)now + ttl));
    if (has_nbf) json_object_set_new(claims, "nbf", json_integer((json_int_t)now + nbf));
    json_object_set(claims, claim ? claim : "roles", roles);
    char *text = json_dumps(claims, JSON_COMPACT);
    json_decref(claims);
    json_decref(auth); /* iss and claim pointed into it: used above, not after */
    jwt_t *jwt = NULL;
    char *tok = NULL;
    if (jwt_new(&jwt) == 0 && jwt_add_grants_json(jwt, text) == 0 &&
        (!(kid ? *kid : *thumb) || jwt_add_header(jwt, "kid", kid ? kid : thumb) == 0) &&
        jwt_set_alg(jwt, alg, key, (int)key_len) == 0)
        tok = jwt_encode_str(jwt);
    if (tok) {
        printf("%s\n", tok);
        rc = 0;
    } else {
        fprintf(stderr, "dicomfs token: libjwt could not sign the token (%s)\n", strerror(errno));
        rc = 1;
    }
    free(tok);
    free(text);
    jwt_free(jwt);
    memset(key, 0, key_len);
    free(key);
out:
    json_decref(roles);
    json_decref(auds);
    return rc;
}

/* ---- keygen ------------------------------------------------------------------------------ */

static const char keygen_usage[] =
    "usage: dicomfs keygen DIR [--ec] [--force]\n\n"
    "Makes DIR (mode 0700) with a new key pair and an auth file for `dicomfs serve --auth`:\n"
    "  private.pem  the signing key (RSA 2048, or EC P-256 with --ec), for dicomfs token --key\n"
    "  public.pem   its public key          jwks.json   the same as a JWKS\n"
    "  auth.json    issuer dicomfs-local, audience dicomfs, the key public.pem\n"
    "All files are mode 0600. Existing files are kept unless --force.\n\n"
    "  dicomfs keygen ./auth\n"
    "  dicomfs serve ./archive --auth ./auth/auth.json\n"
    "  curl -H \"Authorization: Bearer $(dicomfs token --key ./auth/private.pem --role owner)\" \\\n"
    "       http://127.0.0.1:8080/v2/studies\n";

static bool write_secret_file(const char *dir, const char *name, const char *text, bool force)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), 0600);
    if (fd < 0) {
        fprintf(stderr, "dicomfs keygen: cannot create %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (--force replaces it)" : "");
        return false;
    }
    size_t len = strlen(text);
    bool ok = fchmod(fd, 0600) == 0 && write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    if (close(fd) != 0) ok = false;
    if (!ok) fprintf(stderr, "dicomfs keygen: cannot write %s: %s\n", path, strerror(errno));
    return ok;
}

int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {{"ec", no_argument, NULL, 'e'}, {"force", no_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    bool ec = false, force = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'e': ec = true; break;
        case 'f': force = true; break;
        case 'h': fputs(keygen_usage, stdout); return 0;
        default: fputs(keygen_usage, stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        fputs(keygen_usage, stderr);
        return 2;
    }
    const char *dir = argv[optind];
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "dicomfs keygen: cannot create %s: %s\n", dir, strerror(errno));
        return 2;
    }
    if (chmod(dir, 0700) != 0) {
        fprintf(stderr, "dicomfs keygen: cannot make %s private: %s\n", dir, strerror(errno));
        return 2;
    }
    char err[256], kid[64];
    char *priv = auth_generate_key(ec ? AUTH_KEY_EC256 : AUTH_KEY_RSA, err, sizeof err);
    if (!priv) {
        fprintf(stderr, "dicomfs keygen: %s\n", err);
        return 1;
    }
    char *pub = NULL, *jwk = NULL, *jwks = NULL;
    auth_key_type type;
    int rc = 1;
    if (!auth_pem_private(priv, strlen(priv), &type, kid, &pub, &jwk, err, sizeof err)) {
        fprintf(stderr, "dicomfs keygen: %s\n", err);
        goto out;
    }
    if (asprintf(&jwks, "{\"keys\":[%s]}\n", jwk) < 0) abort();
    static const char auth[] = "{\n  \"issuer\": \"dicomfs-local\",\n  \"audiences\": [\"dicomfs\"],\n"
                               "  \"keys\": [\"public.pem\"],\n  \"rolesClaim\": \"roles\",\n"
                               "  \"clockSkewSeconds\": 60\n}\n";
    if (!write_secret_file(dir, "private.pem", priv, force) || !write_secret_file(dir, "public.pem", pub, force) ||
        !write_secret_file(dir, "jwks.json", jwks, force) || !write_secret_file(dir, "auth.json", auth, force))
        goto out;
    printf("dicomfs keygen: %s key %s in %s (private.pem, public.pem, jwks.json, auth.json)\n",
           ec ? "EC P-256" : "RSA 2048", kid, dir);
    printf("  dicomfs serve ARCHIVE --auth %s/auth.json\n  dicomfs token --key %s/private.pem --role owner\n", dir, dir);
    rc = 0;
out:
    memset(priv, 0, strlen(priv));
    free(priv);
    free(pub);
    free(jwk);
    free(jwks);
    return rc;
}
