/* auth.c — bearer tokens, roles and data actions (see auth.h). libjwt checks signatures;
 * GnuTLS turns PEM and JWK keys into the one form libjwt reads (SubjectPublicKeyInfo PEM)
 * and gives each key its RFC 7638 thumbprint; jansson reads the JSON. */
#include "auth.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <jansson.h>
#include <jwt.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* A route kind the switch below does not name must not build: new routes get a data
 * action on purpose, never by a default. */
#pragma GCC diagnostic error "-Wswitch"

unsigned auth_route_action(route_kind kind)
{
    switch (kind) {
    case ROUTE_HEALTH:
    case ROUTE_PREFLIGHT: return AUTH_OPEN;
    case ROUTE_QIDO:
    case ROUTE_RETRIEVE:
    case ROUTE_METADATA:
    case ROUTE_FRAMES:
    case ROUTE_RENDERED:
    case ROUTE_CHANGEFEED:
    case ROUTE_CHANGEFEED_LATEST:
    case ROUTE_XQT_LIST:
    case ROUTE_XQT_GET:
    case ROUTE_XQT_ERRORS:
    case ROUTE_OPERATION: return AUTH_READ;
    case ROUTE_STOW: return AUTH_WRITE;
    case ROUTE_DELETE: return AUTH_DELETE;
    case ROUTE_XQT_ADD:
    case ROUTE_XQT_UPDATE:
    case ROUTE_XQT_DELETE: return AUTH_MANAGE_XQT;
    }
    return AUTH_REFUSED; /* a value outside the enum */
}

static const struct {
    const char *name;
    unsigned bits;
} action_names[] = {{"read", AUTH_READ},     {"write", AUTH_WRITE},   {"delete", AUTH_DELETE},
                    {"manageExtendedQueryTags", AUTH_MANAGE_XQT}, {"export", AUTH_EXPORT}, {"*", AUTH_ALL}};

const char *auth_action_name(unsigned action)
{
    for (size_t i = 0; i < sizeof action_names / sizeof action_names[0]; i++)
        if (action_names[i].bits == action) return action_names[i].name;
    return "?";
}

/* ---- base64url ------------------------------------------------------------------------- */

static const char b64url_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Without padding; OUT holds 4 * ceil(len / 3) + 1. */
static void b64url_encode(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        out[o++] = b64url_chars[v >> 18 & 63];
        out[o++] = b64url_chars[v >> 12 & 63];
        if (i + 1 < len) out[o++] = b64url_chars[v >> 6 & 63];
        if (i + 2 < len) out[o++] = b64url_chars[v & 63];
    }
    out[o] = 0;
}

/* Strict: only the URL alphabet, no padding. Returns malloc'd bytes (NUL-terminated for
 * convenience) or NULL. */
static unsigned char *b64url_decode(const char *in, size_t len, size_t *out_len)
{
    if (len % 4 == 1) return NULL;
    unsigned char *out = malloc(len * 3 / 4 + 3);
    if (!out) abort();
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        const char *p = in[i] ? strchr(b64url_chars, in[i]) : NULL;
        if (!p) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)(p - b64url_chars);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    out[o] = 0;
    *out_len = o;
    return out;
}

static char *b64url_of_datum(const gnutls_datum_t *d, size_t width)
{
    /* EC coordinates have the field's width (RFC 7518 6.2.1.2); GnuTLS drops leading zeros */
    size_t n = d->size > width ? d->size : width;
    unsigned char *buf = calloc(1, n ? n : 1);
    if (!buf) abort();
    memcpy(buf + (n - d->size), d->data, d->size);
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!out) abort();
    b64url_encode(buf, n, out);
    free(buf);
    return out;
}

/* ---- keys --------------------------------------------------------------------------------- */

static bool fail(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && len) vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return false;
}

/* The JWK members of PUB (without kid/use/alg) in RFC 7638's order, its thumbprint and
 * type. */
static bool describe_pubkey(gnutls_pubkey_t pub, auth_key_type *type, char kid[64], char **jwk_members, char *err,
                            size_t errlen)
{
    unsigned bits = 0;
    int pk = gnutls_pubkey_get_pk_algorithm(pub, &bits);
    char *canon = NULL;
    if (pk == GNUTLS_PK_RSA) {
        gnutls_datum_t m = {0}, e = {0};
        if (gnutls_pubkey_export_rsa_raw2(pub, &m, &e, GNUTLS_EXPORT_FLAG_NO_LZ) < 0)
            return fail(err, errlen, "cannot read the RSA key's numbers");
        if (bits < 2048) {
            gnutls_free(m.data);
            gnutls_free(e.data);
            return fail(err, errlen, "the RSA key has %u bits; at least 2048 are needed", bits);
        }
        char *n64 = b64url_of_datum(&m, 0), *e64 = b64url_of_datum(&e, 0);
        if (asprintf(&canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", e64, n64) < 0) abort();
        free(n64);
        free(e64);
        gnutls_free(m.data);
        gnutls_free(e.data);
        *type = AUTH_KEY_RSA;
    } else if (pk == GNUTLS_PK_ECDSA) {
        gnutls_ecc_curve_t curve;
        gnutls_datum_t x = {0}, y = {0};
        if (gnutls_pubkey_export_ecc_raw2(pub, &curve, &x, &y, GNUTLS_EXPORT_FLAG_NO_LZ) < 0)
            return fail(err, errlen, "cannot read the EC key's coordinates");
        if (curve != GNUTLS_ECC_CURVE_SECP256R1) {
            gnutls_free(x.data);
            gnutls_free(y.data);
            return fail(err, errlen, "the EC key is on curve %s; only P-256 (ES256) is supported",
                        gnutls_ecc_curve_get_name(curve));
        }
        char *x64 = b64url_of_datum(&x, 32), *y64 = b64url_of_datum(&y, 32);
        if (asprintf(&canon, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x64, y64) < 0) abort();
        free(x64);
        free(y64);
        gnutls_free(x.data);
        gnutls_free(y.data);
        *type = AUTH_KEY_EC256;
    } else {
        return fail(err, errlen, "the key is neither RSA nor EC (%s)", gnutls_pk_get_name(pk));
    }
    unsigned char digest[32];
    gnutls_hash_fast(GNUTLS_DIG_SHA256, canon, strlen(canon), digest);
    b64url_encode(digest, sizeof digest, kid);
    if (jwk_members) {
        /* the canonical members without the braces */
        size_t n = strlen(canon);
        canon[n - 1] = 0;
        *jwk_members = strdup(canon + 1);
        if (!*jwk_members) abort();
    }
    free(canon);
    return true;
}

static char *export_pem(gnutls_pubkey_t pub)
{
    gnutls_datum_t out = {0};
    if (gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_PEM, &out) < 0) return NULL;
    char *s = malloc(out.size + 1);
    if (!s) abort();
    memcpy(s, out.data, out.size);
    s[out.size] = 0;
    gnutls_free(out.data);
    return s;
}

bool auth_pem_public(const char *pem, size_t len, char **spki_pem, auth_key_type *type, char kid[64], char *err,
                     size_t errlen)
{
    gnutls_pubkey_t pub;
    if (gnutls_pubkey_init(&pub) < 0) return fail(err, errlen, "out of memory");
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned)len};
    int r;
    if (memmem(pem, len, "-----BEGIN CERTIFICATE-----", 27)) {
        gnutls_x509_crt_t crt;
        gnutls_x509_crt_init(&crt);
        r = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM);
        if (r >= 0) r = gnutls_pubkey_import_x509(pub, crt, 0);
        gnutls_x509_crt_deinit(crt);
    } else {
        r = gnutls_pubkey_import(pub, &d, GNUTLS_X509_FMT_PEM);
    }
    bool ok = false;
    if (r < 0)
        fail(err, errlen, "not a PEM public key (BEGIN PUBLIC KEY) or certificate: %s", gnutls_strerror(r));
    else if (describe_pubkey(pub, type, kid, NULL, err, errlen)) {
        *spki_pem = export_pem(pub);
        ok = *spki_pem != NULL;
        if (!ok) fail(err, errlen, "cannot export the public key");
    }
    gnutls_pubkey_deinit(pub);
    return ok;
}

bool auth_pem_private(const char *pem, size_t len, auth_key_type *type, char kid[64], char **pub_pem, char **jwk,
                      char *err, size_t errlen)
{
    gnutls_privkey_t priv;
    gnutls_pubkey_t pub;
    gnutls_privkey_init(&priv);
    gnutls_pubkey_init(&pub);
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned)len};
    bool ok = false;
    char *members = NULL;
    int r = gnutls_privkey_import_x509_raw(priv, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (r < 0)
        fail(err, errlen, "not a PEM private key: %s", gnutls_strerror(r));
    else if ((r = gnutls_pubkey_import_privkey(pub, priv, 0, 0)) < 0)
        fail(err, errlen, "cannot derive the public key: %s", gnutls_strerror(r));
    else if (describe_pubkey(pub, type, kid, jwk ? &members : NULL, err, errlen)) {
        ok = true;
        if (pub_pem && !(*pub_pem = export_pem(pub))) ok = fail(err, errlen, "cannot export the public key");
        if (ok && jwk &&
            asprintf(jwk, "{%s,\"kid\":\"%s\",\"use\":\"sig\",\"alg\":\"%s\"}", members, kid,
                     *type == AUTH_KEY_RSA ? "RS256" : "ES256") < 0)
            abort();
    }
    free(members);
    gnutls_pubkey_deinit(pub);
    gnutls_privkey_deinit(priv);
    return ok;
}

char *auth_generate_key(auth_key_type type, char *err, size_t errlen)
{
    gnutls_x509_privkey_t key;
    gnutls_x509_privkey_init(&key);
    int r = type == AUTH_KEY_RSA ? gnutls_x509_privkey_generate(key, GNUTLS_PK_RSA, 2048, 0)
                                 : gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                                                GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
    gnutls_datum_t out = {0};
    if (r >= 0) r = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &out);
    gnutls_x509_privkey_deinit(key);
    if (r < 0) {
        fail(err, errlen, "cannot generate a key: %s", gnutls_strerror(r));
        return NULL;
    }
    char *s = malloc(out.size + 1);
    if (!s) abort();
    memcpy(s, out.data, out.size);
    s[out.size] = 0;
    gnutls_memset(out.data, 0, out.size);
    gnutls_free(out.data);
    return s;
}

/* A JWK (RSA n/e or EC P-256 crv/x/y) → SPKI PEM. */
static bool jwk_to_pem(json_t *jwk, char **pem, auth_key_type *type, char kid[64], char *err, size_t errlen)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    gnutls_pubkey_t pub;
    gnutls_pubkey_init(&pub);
    int r = -1;
    const char *names[2];
    bool rsa = kty && strcmp(kty, "RSA") == 0;
    if (rsa) {
        names[0] = "n", names[1] = "e";
    } else if (kty && strcmp(kty, "EC") == 0) {
        const char *crv = json_string_value(json_object_get(jwk, "crv"));
        if (!crv || strcmp(crv, "P-256") != 0) {
            gnutls_pubkey_deinit(pub);
            return fail(err, errlen, "EC key on curve '%s'; only P-256 is supported", crv ? crv : "?");
        }
        names[0] = "x", names[1] = "y";
    } else {
        gnutls_pubkey_deinit(pub);
        return fail(err, errlen, "key type '%s' is not supported (RSA and EC are)", kty ? kty : "?");
    }
    gnutls_datum_t v[2] = {{0}};
    unsigned char *raw[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        const char *s = json_string_value(json_object_get(jwk, names[i]));
        size_t n = 0;
        if (!s || !(raw[i] = b64url_decode(s, strlen(s), &n)) || !n) {
            free(raw[0]);
            free(raw[1]);
            gnutls_pubkey_deinit(pub);
            return fail(err, errlen, "the key's '%s' is missing or not base64url", names[i]);
        }
        v[i].data = raw[i];
        v[i].size = (unsigned)n;
    }
    r = rsa ? gnutls_pubkey_import_rsa_raw(pub, &v[0], &v[1])
            : gnutls_pubkey_import_ecc_raw(pub, GNUTLS_ECC_CURVE_SECP256R1, &v[0], &v[1]);
    free(raw[0]);
    free(raw[1]);
    bool ok = false;
    if (r < 0)
        fail(err, errlen, "the key's numbers are not a valid key: %s", gnutls_strerror(r));
    else if (describe_pubkey(pub, type, kid, NULL, err, errlen)) {
        ok = (*pem = export_pem(pub)) != NULL;
        if (!ok) fail(err, errlen, "cannot export the key");
    }
    gnutls_pubkey_deinit(pub);
    return ok;
}

/* ---- the auth file ------------------------------------------------------------------------ */

typedef struct {
    char kid[128];
    auth_key_type type;
    char *pem;
} auth_key;

typedef struct {
    char *name;
    unsigned grant; /* dataActions minus notDataActions */
} auth_role;

/* Keys fetched from a JWKS URL: a set is never changed once published; a refresh
 * publishes a new one. Requests hold a reference (under auth_remote.lock) while they use
 * it, so a set replaced meanwhile is freed by its last user. */
typedef struct {
    int refs;
    auth_key *keys;
    size_t n_keys;
} auth_keyset;

/* jwksUri / discovery: where the keys come from, the published set, and one fetch at a
 * time (the others wait for it), at most one refresh per AUTH_REFRESH_SECONDS. */
typedef struct {
    char *jwks_uri;      /* given, or found by discovery (NULL until then) */
    char *discovery_url; /* <issuer>/.well-known/openid-configuration, or NULL */
    pthread_mutex_t lock;
    pthread_cond_t done;
    auth_keyset *set; /* NULL until a fetch succeeds */
    bool fetching;
    bool refreshed;       /* a refresh happened at LAST (the fetch at start is no refresh) */
    struct timespec last; /* CLOCK_MONOTONIC */
} auth_remote;

struct web_auth {
    char *issuer;
    char **aud;
    size_t n_aud;
    auth_key *keys; /* from keys and jwks (the file): fixed */
    size_t n_keys;
    auth_remote *remote; /* jwksUri or discovery, or NULL */
    unsigned char *hs_secret;
    size_t hs_len;
    char *roles_claim;
    auth_role *roles;
    size_t n_roles;
    long skew;
    char *challenge;
};

static char *read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fail(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max + 1);
    if (!buf) abort();
    size_t n = fread(buf, 1, max + 1, f);
    bool bad = ferror(f);
    fclose(f);
    if (bad || n > max) {
        free(buf);
        fail(err, errlen, bad ? "cannot read '%s'" : "'%s' is too large", path);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

/* PATH as written in the auth file: relative to the file's folder. */
static char *resolve(const char *dir, const char *path)
{
    char *out;
    if (path[0] == '/' || !dir[0]) out = strdup(path);
    else if (asprintf(&out, "%s/%s", dir, path) < 0) out = NULL;
    if (!out) abort();
    return out;
}

static bool add_key(web_auth *a, const char *kid, const char *pem, size_t len, const char *what, char *err,
                    size_t errlen)
{
    auth_key k = {0};
    char thumb[64], why[256];
    if (!auth_pem_public(pem, len, &k.pem, &k.type, thumb, why, sizeof why))
        return fail(err, errlen, "%s: %s", what, why);
    snprintf(k.kid, sizeof k.kid, "%s", kid && *kid ? kid : thumb);
    a->keys = realloc(a->keys, (a->n_keys + 1) * sizeof *a->keys);
    if (!a->keys) abort();
    a->keys[a->n_keys++] = k;
    return true;
}

/* The RS256 / ES256 signing keys of the JWKS ROOT (named PATH in messages), appended to
 * *KEYS / *N_KEYS. Other keys (oct, OKP, use enc, other algs) are skipped, and so are
 * keys we cannot read (with a warning); a JWKS without any usable key is refused. */
static bool parse_jwks(json_t *root, const char *path, auth_key **keys_out, size_t *n_out, char *err, size_t errlen)
{
    json_t *keys = json_object_get(root, "keys");
    bool ok = json_is_array(keys);
    if (!ok) fail(err, errlen, "JWKS '%s' has no \"keys\" array", path);
    size_t i, used = 0;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        if (!ok) break;
        const char *use = json_string_value(json_object_get(k, "use"));
        const char *alg = json_string_value(json_object_get(k, "alg"));
        const char *kty = json_string_value(json_object_get(k, "kty"));
        if (use && strcmp(use, "sig") != 0) continue;                                   /* encryption keys */
        if (kty && strcmp(kty, "RSA") != 0 && strcmp(kty, "EC") != 0) continue;           /* oct, OKP */
        if (alg && strcmp(alg, "RS256") != 0 && strcmp(alg, "ES256") != 0) continue;      /* RS384... */
        char *pem = NULL, thumb[64], why[256];
        auth_key_type type;
        /* One key we cannot use (a P-384 curve, a short RSA key) must not refuse the set: an
         * issuer's rotation would then lock every token out. It is skipped, and said. */
        if (!jwk_to_pem(k, &pem, &type, thumb, why, sizeof why)) {
            fprintf(stderr, "dicomfs serve: JWKS '%s', key %zu skipped: %s\n", path, i, why);
            continue;
        }
        if (alg && (strcmp(alg, "RS256") == 0) != (type == AUTH_KEY_RSA)) {
            free(pem);
            fprintf(stderr, "dicomfs serve: JWKS '%s', key %zu skipped: alg %s does not fit its kty\n", path, i, alg);
            continue;
        }
        const char *kid = json_string_value(json_object_get(k, "kid"));
        auth_key key = {0};
        key.type = type;
        key.pem = pem;
        snprintf(key.kid, sizeof key.kid, "%s", kid && *kid ? kid : thumb);
        *keys_out = realloc(*keys_out, (*n_out + 1) * sizeof **keys_out);
        if (!*keys_out) abort();
        (*keys_out)[(*n_out)++] = key;
        used++;
    }
    if (ok && !used) ok = fail(err, errlen, "JWKS '%s' has no RS256 or ES256 signing key", path);
    return ok;
}

static bool load_jwks(web_auth *a, const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return fail(err, errlen, "JWKS '%s': %s (line %d)", path, je.text, je.line);
    bool ok = parse_jwks(root, path, &a->keys, &a->n_keys, err, errlen);
    json_decref(root);
    return ok;
}

/* ---- keys from a JWKS URL (jwksUri, discovery; libcurl) ------------------------------------ */

#define AUTH_REFRESH_SECONDS 30 /* at most one refresh (on an unknown kid) in this time */
#define AUTH_FETCH_SECONDS 10L  /* one HTTP request, connection included */
#define AUTH_FETCH_MAX (1u << 20)

/* https:// anywhere; http:// only to a loopback address (127.x.x.x, [::1], localhost),
 * where nobody on the way can change the keys. *HTTP tells which. */
static bool url_allowed(const char *url, bool *http, char *err, size_t errlen)
{
    const char *host;
    if (strncasecmp(url, "https://", 8) == 0) host = url + 8, *http = false;
    else if (strncasecmp(url, "http://", 7) == 0) host = url + 7, *http = true;
    else return fail(err, errlen, "'%s' is not an https:// URL", url);
    size_t n = strcspn(host, "/?#");
    if (!n || memchr(host, '@', n) || strpbrk(url, " \t\r\n"))
        return fail(err, errlen, "'%s' is not a URL with a host (and no user name)", url);
    if (!*http) return true;
    char h[256];
    if (n >= sizeof h) return fail(err, errlen, "'%s': the host is too long", url);
    memcpy(h, host, n);
    h[n] = 0;
    bool loopback;
    if (h[0] == '[') {
        loopback = strncmp(h, "[::1]", 5) == 0 && (h[5] == 0 || h[5] == ':');
    } else {
        char *colon = strchr(h, ':');
        if (colon) *colon = 0;
        struct in_addr in;
        loopback = strcasecmp(h, "localhost") == 0 || (inet_pton(AF_INET, h, &in) == 1 && (ntohl(in.s_addr) >> 24) == 127);
    }
    if (!loopback)
        return fail(err, errlen, "'%s': http:// is allowed only to a loopback address (127.x.x.x, [::1], localhost); use https://",
                    url);
    return true;
}

typedef struct {
    char *data;
    size_t len;
    bool too_large;
} fetch_buf;

static size_t fetch_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    fetch_buf *b = user;
    size_t n = size * nmemb;
    if (b->len + n > AUTH_FETCH_MAX) {
        b->too_large = true;
        return 0;
    }
    b->data = realloc(b->data, b->len + n + 1);
    if (!b->data) abort();
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = 0;
    return n;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_start(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* GET URL → its JSON body (200 only). Certificates are verified; redirects are followed
 * only from https to https (never from http); at most AUTH_FETCH_MAX bytes. */
static json_t *fetch_json(const char *url, char *err, size_t errlen)
{
    bool http;
    if (!url_allowed(url, &http, err, errlen)) return NULL;
    pthread_once(&curl_once, curl_start);
    CURL *c = curl_easy_init();
    if (!c) {
        fail(err, errlen, "%s: cannot start libcurl", url);
        return NULL;
    }
    fetch_buf b = {0};
    char cerr[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdr = curl_slist_append(NULL, "Accept: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, http ? "http" : "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, http ? 0L : 1L);
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (http) curl_easy_setopt(c, CURLOPT_NOPROXY, "*"); /* loopback: never through a proxy */
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, AUTH_FETCH_SECONDS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, AUTH_FETCH_SECONDS);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "dicomfs");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fetch_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    json_t *root = NULL;
    if (b.too_large) fail(err, errlen, "%s: the answer is larger than %u bytes", url, AUTH_FETCH_MAX);
    else if (rc != CURLE_OK) fail(err, errlen, "%s: %s", url, cerr[0] ? cerr : curl_easy_strerror(rc));
    else if (status != 200) fail(err, errlen, "%s: HTTP status %ld", url, status);
    else {
        json_error_t je;
        root = json_loadb(b.data ? b.data : "", b.len, 0, &je);
        if (!json_is_object(root)) {
            fail(err, errlen, "%s: not a JSON object (%s)", url, root ? "another JSON value" : je.text);
            json_decref(root);
            root = NULL;
        }
    }
    free(b.data);
    return root;
}

static void keyset_free(auth_keyset *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_keys; i++) free(s->keys[i].pem);
    free(s->keys);
    free(s);
}

/* Discovery (once it has found a jwks_uri, never again), then the JWKS. Only one thread
 * at a time (at start, or the one that set fetching). */
static auth_keyset *remote_fetch(const web_auth *a, char *err, size_t errlen)
{
    auth_remote *r = a->remote;
    if (!r->jwks_uri) {
        json_t *doc = fetch_json(r->discovery_url, err, errlen);
        if (!doc) return NULL;
        const char *iss = json_string_value(json_object_get(doc, "issuer"));
        const char *uri = json_string_value(json_object_get(doc, "jwks_uri"));
        bool http;
        if (!iss || strcmp(iss, a->issuer) != 0)
            fail(err, errlen, "%s: the discovery document's issuer is not %s", r->discovery_url, a->issuer);
        else if (!uri || !*uri)
            fail(err, errlen, "%s: the discovery document has no jwks_uri", r->discovery_url);
        else if (url_allowed(uri, &http, err, errlen)) {
            char *copy = strdup(uri);
            if (!copy) abort();
            pthread_mutex_lock(&r->lock); /* web_auth_describe may read it */
            r->jwks_uri = copy;
            pthread_mutex_unlock(&r->lock);
        }
        json_decref(doc);
        if (!r->jwks_uri) return NULL;
    }
    json_t *root = fetch_json(r->jwks_uri, err, errlen);
    if (!root) return NULL;
    auth_keyset *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->refs = 1;
    bool ok = parse_jwks(root, r->jwks_uri, &s->keys, &s->n_keys, err, errlen);
    json_decref(root);
    if (!ok) {
        keyset_free(s);
        return NULL;
    }
    return s;
}

/* The published set with a reference (NULL when there is none), and giving it back. */
static auth_keyset *keyset_get(const web_auth *a)
{
    if (!a->remote) return NULL;
    pthread_mutex_lock(&a->remote->lock);
    auth_keyset *s = a->remote->set;
    if (s) s->refs++;
    pthread_mutex_unlock(&a->remote->lock);
    return s;
}

static void keyset_put(const web_auth *a, auth_keyset *s)
{
    if (!s) return;
    pthread_mutex_lock(&a->remote->lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&a->remote->lock);
    if (last) keyset_free(s);
}

/* A token names a kid no key has: fetch the JWKS again, unless a refresh happened less
 * than AUTH_REFRESH_SECONDS ago; while one thread fetches, the others wait for it. Returns
 * the set published then (with a reference). */
static auth_keyset *keyset_refresh(const web_auth *a)
{
    auth_remote *r = a->remote;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&r->lock);
    if (r->fetching) {
        while (r->fetching) pthread_cond_wait(&r->done, &r->lock);
    } else if (!r->refreshed || now.tv_sec - r->last.tv_sec >= AUTH_REFRESH_SECONDS) {
        r->fetching = true;
        r->refreshed = true;
        r->last = now;
        pthread_mutex_unlock(&r->lock);
        char why[512];
        auth_keyset *fresh = remote_fetch(a, why, sizeof why);
        if (!fresh) fprintf(stderr, "dicomfs serve: refreshing the JWKS failed (keeping the keys we have): %s\n", why);
        pthread_mutex_lock(&r->lock);
        auth_keyset *old = NULL;
        if (fresh) {
            old = r->set;
            r->set = fresh; /* its reference is the publication's */
            if (old && --old->refs > 0) old = NULL;
        }
        r->fetching = false;
        pthread_cond_broadcast(&r->done);
        if (old) {
            pthread_mutex_unlock(&r->lock);
            keyset_free(old);
            pthread_mutex_lock(&r->lock);
        }
    }
    auth_keyset *s = r->set;
    if (s) s->refs++;
    pthread_mutex_unlock(&r->lock);
    return s;
}

static void remote_free(auth_remote *r)
{
    if (!r) return;
    free(r->jwks_uri);
    free(r->discovery_url);
    keyset_free(r->set);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->done);
    free(r);
}

static auth_remote *remote_new(void)
{
    auth_remote *r = calloc(1, sizeof *r);
    if (!r) abort();
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->done, NULL);
    return r;
}

static bool parse_actions(json_t *arr, unsigned *out, const char *role, const char *field, char *err, size_t errlen)
{
    *out = 0;
    if (!arr) return true;
    if (!json_is_array(arr)) return fail(err, errlen, "role '%s': %s must be an array", role, field);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *s = json_string_value(v);
        size_t j;
        for (j = 0; s && j < sizeof action_names / sizeof action_names[0]; j++)
            if (strcmp(s, action_names[j].name) == 0) break;
        if (!s || j == sizeof action_names / sizeof action_names[0])
            return fail(err, errlen,
                        "role '%s': unknown data action '%s' (read, write, delete, manageExtendedQueryTags, export, *)",
                        role, s ? s : "?");
        *out |= action_names[j].bits;
    }
    return true;
}

static void add_role(web_auth *a, const char *name, unsigned grant)
{
    a->roles = realloc(a->roles, (a->n_roles + 1) * sizeof *a->roles);
    if (!a->roles) abort();
    a->roles[a->n_roles].name = strdup(name);
    if (!a->roles[a->n_roles].name) abort();
    a->roles[a->n_roles++].grant = grant;
}

static bool load_roles(web_auth *a, const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return fail(err, errlen, "roles file '%s': %s (line %d)", path, je.text, je.line);
    json_t *roles = json_object_get(root, "roles");
    bool ok = json_is_array(roles);
    if (!ok) fail(err, errlen, "roles file '%s' has no \"roles\" array", path);
    size_t i;
    json_t *r;
    json_array_foreach(roles, i, r)
    {
        if (!ok) break;
        const char *name = json_string_value(json_object_get(r, "name"));
        if (!name || !*name) {
            ok = fail(err, errlen, "roles file '%s': role %zu has no name", path, i);
            break;
        }
        const char *key;
        json_t *v;
        json_object_foreach(r, key, v)
        {
            if (strcmp(key, "name") && strcmp(key, "dataActions") && strcmp(key, "notDataActions") &&
                strcmp(key, "scopes")) {
                ok = fail(err, errlen, "roles file '%s': role '%s' has an unknown field '%s'", path, name, key);
                break;
            }
        }
        unsigned allow = 0, deny = 0;
        if (ok) ok = parse_actions(json_object_get(r, "dataActions"), &allow, name, "dataActions", err, errlen);
        if (ok) ok = parse_actions(json_object_get(r, "notDataActions"), &deny, name, "notDataActions", err, errlen);
        json_t *scopes = json_object_get(r, "scopes");
        if (ok && scopes) {
            size_t j;
            json_t *s;
            ok = json_is_array(scopes);
            json_array_foreach(scopes, j, s) if (!json_is_string(s) || strcmp(json_string_value(s), "/") != 0) ok = false;
            if (!ok) fail(err, errlen, "roles file '%s': role '%s': the only scope is \"/\"", path, name);
        }
        if (ok) add_role(a, name, allow & ~deny); /* before the built-in ones: a file role wins */
    }
    json_decref(root);
    return ok;
}

static bool header_safe(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == '"' || *s == '\\' || *s == 0x7f) return false;
    return true;
}

void web_auth_free(web_auth *a)
{
    if (!a) return;
    free(a->issuer);
    for (size_t i = 0; i < a->n_aud; i++) free(a->aud[i]);
    free(a->aud);
    for (size_t i = 0; i < a->n_keys; i++) free(a->keys[i].pem);
    free(a->keys);
    remote_free(a->remote);
    if (a->hs_secret) {
        gnutls_memset(a->hs_secret, 0, a->hs_len);
        free(a->hs_secret);
    }
    free(a->roles_claim);
    for (size_t i = 0; i < a->n_roles; i++) free(a->roles[i].name);
    free(a->roles);
    free(a->challenge);
    free(a);
}

web_auth *web_auth_load(const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        fail(err, errlen, "auth file '%s': %s (line %d)", path, je.text, je.line);
        return NULL;
    }
    web_auth *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->skew = 60;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else dir[0] = 0;
    bool ok = json_is_object(root);
    if (!ok) fail(err, errlen, "auth file '%s' is not a JSON object", path);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (!ok) break;
        if (strcmp(key, "issuer") == 0) {
            ok = json_is_string(v) && *json_string_value(v) && header_safe(json_string_value(v));
            if (ok) a->issuer = strdup(json_string_value(v));
        } else if (strcmp(key, "audiences") == 0 || strcmp(key, "audience") == 0) {
            json_t *one = json_is_string(v) ? v : NULL;
            size_t n = one ? 1 : json_is_array(v) ? json_array_size(v) : 0;
            ok = n > 0;
            for (size_t i = 0; ok && i < n; i++) {
                json_t *s = one ? one : json_array_get(v, i);
                ok = json_is_string(s) && *json_string_value(s) && header_safe(json_string_value(s));
                if (!ok) break;
                a->aud = realloc(a->aud, (a->n_aud + 1) * sizeof *a->aud);
                if (!a->aud) abort();
                a->aud[a->n_aud++] = strdup(json_string_value(s));
            }
        } else if (strcmp(key, "keys") == 0) {
            ok = json_is_array(v);
            size_t i;
            json_t *k;
            json_array_foreach(v, i, k)
            {
                if (!ok) break;
                const char *kid = NULL, *text = json_string_value(k);
                if (json_is_object(k)) {
                    kid = json_string_value(json_object_get(k, "kid"));
                    text = json_string_value(json_object_get(k, "pem"));
                    if (!text) text = json_string_value(json_object_get(k, "path"));
                }
                if (!text) {
                    ok = fail(err, errlen, "auth file '%s': keys[%zu] is neither a PEM, a path nor {kid, pem|path}",
                              path, i);
                    break;
                }
                char what[64];
                snprintf(what, sizeof what, "keys[%zu]", i);
                if (strstr(text, "-----BEGIN")) {
                    ok = add_key(a, kid, text, strlen(text), what, err, errlen);
                } else {
                    char *file = resolve(dir, text);
                    size_t n;
                    char *pem = read_file(file, 1 << 20, &n, err, errlen);
                    ok = pem && add_key(a, kid, pem, n, file, err, errlen);
                    free(pem);
                    free(file);
                }
            }
            if (!json_is_array(v)) fail(err, errlen, "auth file '%s': keys must be an array", path);
            continue;
        } else if (strcmp(key, "jwks") == 0) {
            if (!json_is_string(v)) {
                ok = fail(err, errlen, "auth file '%s': jwks must be a file path", path);
                break;
            }
            char *file = resolve(dir, json_string_value(v));
            ok = load_jwks(a, file, err, errlen);
            free(file);
            continue;
        } else if (strcmp(key, "jwksUri") == 0) {
            bool http;
            ok = json_is_string(v) && url_allowed(json_string_value(v), &http, err, errlen);
            if (!ok) {
                if (!json_is_string(v)) fail(err, errlen, "auth file '%s': jwksUri must be a URL", path);
                else {
                    char why[512];
                    snprintf(why, sizeof why, "%s", err);
                    fail(err, errlen, "auth file '%s': jwksUri %s", path, why);
                }
                break;
            }
            if (!a->remote) a->remote = remote_new();
            a->remote->jwks_uri = strdup(json_string_value(v));
            continue;
        } else if (strcmp(key, "discovery") == 0) {
            ok = json_is_boolean(v);
            if (ok && json_is_true(v) && !a->remote) a->remote = remote_new();
            if (ok && json_is_true(v)) a->remote->discovery_url = strdup(""); /* made from the issuer below */
        } else if (strcmp(key, "hs256Secret") == 0) {
            ok = json_is_string(v) && json_string_length(v) >= 32;
            if (!ok) {
                fail(err, errlen, "auth file '%s': hs256Secret must be a string of at least 32 characters", path);
                break;
            }
            a->hs_len = json_string_length(v);
            a->hs_secret = malloc(a->hs_len + 1);
            if (!a->hs_secret) abort();
            memcpy(a->hs_secret, json_string_value(v), a->hs_len + 1);
            continue;
        } else if (strcmp(key, "rolesClaim") == 0) {
            ok = json_is_string(v) && *json_string_value(v);
            if (ok) a->roles_claim = strdup(json_string_value(v));
        } else if (strcmp(key, "roles") == 0) {
            if (!json_is_string(v)) {
                ok = fail(err, errlen, "auth file '%s': roles must be the path of a roles file", path);
                break;
            }
            char *file = resolve(dir, json_string_value(v));
            ok = load_roles(a, file, err, errlen);
            free(file);
            continue;
        } else if (strcmp(key, "clockSkewSeconds") == 0) {
            ok = json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= 3600;
            if (ok) a->skew = (long)json_integer_value(v);
        } else {
            ok = fail(err, errlen,
                      "auth file '%s': unknown field '%s' (issuer, audiences, keys, jwks, jwksUri, discovery, "
                      "hs256Secret, rolesClaim, roles, clockSkewSeconds)",
                      path, key);
            break;
        }
        if (!ok) fail(err, errlen, "auth file '%s': '%s' has a wrong value", path, key);
    }
    if (ok && !a->issuer) ok = fail(err, errlen, "auth file '%s' names no issuer", path);
    if (ok && !a->n_aud) ok = fail(err, errlen, "auth file '%s' names no audiences", path);
    if (ok && !a->n_keys && !a->hs_secret && !a->remote)
        ok = fail(err, errlen, "auth file '%s' has no key: give keys, jwks, jwksUri, discovery or hs256Secret", path);
    if (ok && a->remote && a->remote->jwks_uri && a->remote->discovery_url)
        ok = fail(err, errlen, "auth file '%s': give jwksUri or discovery, not both", path);
    if (ok && a->remote && a->remote->discovery_url) {
        /* OpenID Connect Discovery 1.0, 4: the issuer URL (without a trailing /) + the path */
        size_t n = strlen(a->issuer);
        while (n && a->issuer[n - 1] == '/') n--;
        free(a->remote->discovery_url);
        if (asprintf(&a->remote->discovery_url, "%.*s/.well-known/openid-configuration", (int)n, a->issuer) < 0) abort();
        bool http;
        char why[512];
        if (!url_allowed(a->remote->discovery_url, &http, why, sizeof why))
            ok = fail(err, errlen, "auth file '%s': discovery needs an issuer that is an https:// URL: %s", path, why);
    }
    if (ok && a->remote) {
        /* the keys at start: without them (and no other key) there is nothing to serve */
        char why[768];
        if (!(a->remote->set = remote_fetch(a, why, sizeof why))) {
            if (!a->n_keys && !a->hs_secret)
                ok = fail(err, errlen, "auth file '%s': cannot fetch the keys: %s", path, why);
            else
                fprintf(stderr,
                        "dicomfs serve: WARNING: cannot fetch the keys (%s); going on with the auth file's other keys, "
                        "fetching again on a token of an unknown kid\n",
                        why);
        }
    }
    json_decref(root);
    if (!ok) {
        web_auth_free(a);
        return NULL;
    }
    if (!a->roles_claim) a->roles_claim = strdup("roles");
    add_role(a, "owner", AUTH_ALL);
    add_role(a, "DICOM Data Owner", AUTH_ALL);
    add_role(a, "reader", AUTH_READ);
    add_role(a, "DICOM Data Reader", AUTH_READ);
    add_role(a, "writer", AUTH_READ | AUTH_WRITE);
    if (asprintf(&a->challenge, "Bearer authorization_uri=\"%s\", resource_id=\"%s\", realm=\"%s\"", a->issuer,
                 a->aud[0], a->aud[0]) < 0)
        abort();
    return a;
}

const char *web_auth_challenge(const web_auth *a) { return a->challenge; }

void web_auth_describe(const web_auth *a, char *out, size_t len)
{
    size_t rsa = 0, ec = 0;
    for (size_t i = 0; i < a->n_keys; i++) *(a->keys[i].type == AUTH_KEY_RSA ? &rsa : &ec) += 1;
    auth_keyset *s = keyset_get(a);
    for (size_t i = 0; s && i < s->n_keys; i++) *(s->keys[i].type == AUTH_KEY_RSA ? &rsa : &ec) += 1;
    keyset_put(a, s);
    char from[600] = "";
    if (a->remote) {
        pthread_mutex_lock(&a->remote->lock);
        snprintf(from, sizeof from, " (keys from %s, refreshed on an unknown kid)",
                 a->remote->jwks_uri ? a->remote->jwks_uri : a->remote->discovery_url);
        pthread_mutex_unlock(&a->remote->lock);
    }
    snprintf(out, len, "issuer %s, audience %s%s, %zu RS256 and %zu ES256 key(s)%s%s, roles claim '%s'", a->issuer,
             a->aud[0], a->n_aud > 1 ? " (and more)" : "", rsa, ec, from, a->hs_secret ? ", HS256 secret" : "",
             a->roles_claim);
}

/* ---- tokens ------------------------------------------------------------------------------- */

static bool deny(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool deny(char *why, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
    return false;
}

/* The claim at PATH ("roles", or dotted for nested claims: "realm_access.roles"). */
static json_t *claim_at(json_t *claims, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *v = claims;
    for (char *save = NULL, *t = strtok_r(buf, ".", &save); t && v; t = strtok_r(NULL, ".", &save))
        v = json_object_get(v, t);
    if (v == claims) return NULL;
    /* a claim literally named with dots wins */
    json_t *flat = json_object_get(claims, path);
    return flat ? flat : v;
}

static unsigned role_grant(const web_auth *a, const char *name)
{
    for (size_t i = 0; i < a->n_roles; i++)
        if (strcmp(a->roles[i].name, name) == 0) return a->roles[i].grant;
    return 0;
}

static bool check_claims(const web_auth *a, json_t *c, web_principal *p, char *why, size_t len)
{
    time_t now = time(NULL);
    json_t *exp = json_object_get(c, "exp"), *nbf = json_object_get(c, "nbf");
    if (!json_is_number(exp)) return deny(why, len, "the token has no exp");
    if ((double)now > json_number_value(exp) + (double)a->skew) return deny(why, len, "the token has expired");
    if (nbf && !json_is_number(nbf)) return deny(why, len, "the token's nbf is not a number");
    if (nbf && (double)now + (double)a->skew < json_number_value(nbf))
        return deny(why, len, "the token is not valid yet (nbf)");
    const char *iss = json_string_value(json_object_get(c, "iss"));
    if (!iss || strcmp(iss, a->issuer) != 0) return deny(why, len, "the token's issuer is not %s", a->issuer);
    json_t *aud = json_object_get(c, "aud");
    bool aud_ok = false;
    size_t n = json_is_array(aud) ? json_array_size(aud) : 1;
    for (size_t i = 0; i < n && !aud_ok; i++) {
        const char *s = json_string_value(json_is_array(aud) ? json_array_get(aud, i) : aud);
        for (size_t j = 0; s && j < a->n_aud && !aud_ok; j++) aud_ok = strcmp(s, a->aud[j]) == 0;
    }
    if (!aud_ok) return deny(why, len, "the token is not for audience %s", a->aud[0]);
    const char *sub = json_string_value(json_object_get(c, "sub"));
    snprintf(p->sub, sizeof p->sub, "%s", sub && *sub ? sub : "?");
    p->actions = 0;
    json_t *roles = claim_at(c, a->roles_claim);
    if (json_is_string(roles)) p->actions = role_grant(a, json_string_value(roles));
    size_t i;
    json_t *r;
    if (json_is_array(roles))
        json_array_foreach(roles, i, r) if (json_is_string(r)) p->actions |= role_grant(a, json_string_value(r));
    return true;
}

/* HS256 in constant time, before libjwt (whose check compares with strcmp, so that its
 * timing tells nothing about a forged signature). */
static bool hs256_ok(const web_auth *a, const char *input, size_t input_len, const char *sig64, size_t sig_len)
{
    unsigned char mac[32];
    size_t n = 0;
    unsigned char *sig = b64url_decode(sig64, sig_len, &n);
    bool ok = false;
    if (sig && n == sizeof mac && gnutls_hmac_fast(GNUTLS_MAC_SHA256, a->hs_secret, a->hs_len, input, input_len, mac) == 0) {
        unsigned char diff = 0;
        for (size_t i = 0; i < sizeof mac; i++) diff |= (unsigned char)(mac[i] ^ sig[i]);
        ok = diff == 0;
    }
    free(sig);
    return ok;
}

/* Checks TCOPY with each key of KEYS of TYPE (and KID, when not NULL); *ANY_KEY is set when
 * there is one. */
static bool try_keys(const auth_key *keys, size_t n, auth_key_type type, const char *kid, const char *tcopy, jwt_t **jwt,
                     bool *any_key)
{
    for (size_t i = 0; i < n; i++) {
        const auth_key *k = &keys[i];
        if (k->type != type || (kid && strcmp(k->kid, kid) != 0)) continue;
        *any_key = true;
        if (jwt_decode(jwt, tcopy, (const unsigned char *)k->pem, (int)strlen(k->pem)) == 0) return true;
        if (*jwt) jwt_free(*jwt), *jwt = NULL;
    }
    return false;
}

bool web_auth_check(const web_auth *a, const char *authorization, web_principal *p, char *why, size_t len)
{
    memset(p, 0, sizeof *p);
    if (!authorization || !*authorization) return deny(why, len, "no bearer token");
    while (*authorization == ' ') authorization++;
    if (strncasecmp(authorization, "Bearer ", 7) != 0) return deny(why, len, "the Authorization scheme is not Bearer");
    const char *tok = authorization + 7;
    while (*tok == ' ') tok++;
    size_t tlen = strlen(tok);
    while (tlen && tok[tlen - 1] == ' ') tlen--;
    if (!tlen) return deny(why, len, "no bearer token");
    if (tlen > 16384) return deny(why, len, "the token is too long");
    const char *dot1 = memchr(tok, '.', tlen);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', tlen - (size_t)(dot1 + 1 - tok)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', tlen - (size_t)(dot2 + 1 - tok)) || dot2 + 1 == tok + tlen)
        return deny(why, len, "the token is not a signed JWT (header.payload.signature)");
    /* The header, read before any key is used: alg decides which key may check it. */
    size_t hlen;
    unsigned char *hraw = b64url_decode(tok, (size_t)(dot1 - tok), &hlen);
    json_t *head = hraw ? json_loadb((const char *)hraw, hlen, 0, NULL) : NULL;
    free(hraw);
    if (!json_is_object(head)) {
        json_decref(head);
        return deny(why, len, "the token's header is not base64url JSON");
    }
    char alg[16] = "", kid[128] = "";
    const char *s = json_string_value(json_object_get(head, "alg"));
    if (s) snprintf(alg, sizeof alg, "%s", s);
    s = json_string_value(json_object_get(head, "kid"));
    bool has_kid = s != NULL;
    if (s) snprintf(kid, sizeof kid, "%s", s);
    bool crit = json_object_get(head, "crit") != NULL;
    json_decref(head);
    if (crit) return deny(why, len, "the token's header has crit extensions");
    /* The payload whole (libjwt reads it as a C string: "{...}\0junk" would pass there). */
    size_t plen;
    unsigned char *praw = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &plen);
    json_t *payload = praw ? json_loadb((const char *)praw, plen, 0, NULL) : NULL;
    free(praw);
    bool payload_ok = json_is_object(payload);
    json_decref(payload);
    if (!payload_ok) return deny(why, len, "the token's payload is not base64url JSON");
    jwt_alg_t want;
    auth_key_type type = 0;
    if (strcmp(alg, "RS256") == 0) want = JWT_ALG_RS256, type = AUTH_KEY_RSA;
    else if (strcmp(alg, "ES256") == 0) want = JWT_ALG_ES256, type = AUTH_KEY_EC256;
    else if (strcmp(alg, "HS256") == 0) want = JWT_ALG_HS256;
    else return deny(why, len, "the token's alg '%.15s' is not accepted (RS256, ES256, HS256)", alg);

    char *tcopy = strndup(tok, tlen);
    if (!tcopy) abort();
    jwt_t *jwt = NULL;
    bool verified = false, any_key = false;
    if (want == JWT_ALG_HS256) {
        /* only the shared secret: a public key is never an HMAC secret */
        any_key = a->hs_secret != NULL;
        if (any_key) verified = hs256_ok(a, tok, (size_t)(dot2 - tok), dot2 + 1, tlen - (size_t)(dot2 + 1 - tok)) &&
                                jwt_decode(&jwt, tcopy, a->hs_secret, (int)a->hs_len) == 0;
    } else {
        verified = try_keys(a->keys, a->n_keys, type, has_kid ? kid : NULL, tcopy, &jwt, &any_key);
        auth_keyset *set = keyset_get(a);
        if (!verified && set) verified = try_keys(set->keys, set->n_keys, type, has_kid ? kid : NULL, tcopy, &jwt, &any_key);
        if (!any_key && has_kid && a->remote) {
            /* a kid no key has: perhaps the issuer rotated its keys */
            keyset_put(a, set);
            set = keyset_refresh(a);
            if (set) verified = try_keys(set->keys, set->n_keys, type, kid, tcopy, &jwt, &any_key);
        }
        keyset_put(a, set);
    }
    free(tcopy);
    if (!any_key) {
        if (jwt) jwt_free(jwt);
        if (want == JWT_ALG_HS256) return deny(why, len, "HS256 tokens are not accepted (no shared secret)");
        return has_kid ? deny(why, len, "the token's key (kid) is unknown")
                       : deny(why, len, "no %s key to check the token with", alg);
    }
    if (!verified || !jwt || jwt_get_alg(jwt) != want) {
        if (jwt) jwt_free(jwt);
        return deny(why, len, "the token's signature is not valid");
    }
    char *claims_text = jwt_get_grants_json(jwt, NULL);
    jwt_free(jwt);
    json_t *claims = claims_text ? json_loads(claims_text, 0, NULL) : NULL;
    free(claims_text);
    if (!json_is_object(claims)) {
        json_decref(claims);
        return deny(why, len, "the token's payload is not a JSON object");
    }
    bool ok = check_claims(a, claims, p, why, len);
    json_decref(claims);
    return ok;
}
