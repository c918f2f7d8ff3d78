/* fuzz_jwt.c — bearer token checking (web_auth_check in web/auth.c) against a fixed key
 * set: an RSA and an EC public key (PEM, one with a kid) and an HS256 secret.
 *
 * Input: a mode byte, then the text.
 *   mode 0: the text is the Authorization header value as sent;
 *   mode 1: the text is "<header JSON>\n<payload JSON>", base64url'd by the target and
 *           signed with the HS256 secret, so the header's and claims' checks are reached;
 *   mode 2: the same, signed RS256 with the private key of the RSA key.
 * Beyond "no crash, no leak" it checks: a token accepted has a payload whose iss, aud and
 * exp are as the auth file demands; sub is never empty; actions are known bits; the
 * reason of a refusal never quotes the signature (the header's promise: "never the token
 * itself"). The keys below are throwaway test keys made for this target. */
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "fuzzlib.h"

static const char rsa_private[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCccO7N4IjphiDH\n"
    "76BYfWF5aaPydqUxLZY6wpmL7QiJTJx178/SKTeT1+BgICEbm23MaMF/HaU+Vkv0\n"
    "cGbslAzeYkqD3VM5sC5agJi+ab4UphqctJmeKD6cto6/9//ne7aXvFAPbMhXFXyV\n"
    "0qX/vZAeC5ccXW9W1Rfi/HBhVwka7QrSMVK2U4UYxq6aQTSwVbzGXtD354B4Tam2\n"
    "79JSdpmR8XYnJJkNvDmb5i7p4/5WPmIGrSBq1xT2beDYd87f9qxfODrcu0eFqzWJ\n"
    "VrLB8GfbREnO0ggZelKPPALN5x9HLl5bnAD4BHst8/P2CN564/ddC8Jtd6drbFyr\n"
    "haW+4vshAgMBAAECggEAAKAa9Eu/gF9+5g25MGFf8GJRu3hp9KZgAWAhyQNrk1Dx\n"
    "Fy+cPxTXGgo05W17dGbMq5KHo4B01qj1qMaCQtPcsU7nSVurJ4HizY3SDoDRt7dq\n"
    "R9IZAx7aETpRm8bcCQrfkf+4ujcPHfoCA39SFpGlb9lQA1cESO6VJ90mfd0hNjBW\n"
    "zljxf6PgNZ6bvG5aR+Bdkpps0RaDgV3Cdmq3W1+pltVUcYRJlHxUHz8l73w0tKVZ\n"
    "dOsOUxgVRtmFJ1gPJr7w8Epg1zaVB5YXjldAe7CoAJHshI3fsz3+hH3IsIbmmtIP\n"
    "4E4QqXK7Un7WAtCPut2dszOYYEiraNqu7jvwapLIeQKBgQDUtshGv2w+qHKH2aRU\n"
    "9cS7p2mhUtYkVPIfDEMYtpz2ldg9docnVE/3tmeO7M+33mFr3i9sIrQXKoP+JnsO\n"
    "mjkpWL1SguEfA0R/2hUI+72I1JuTEcyVXkyNbs+tXrIQIumg0XSHlkx9Ht80kxp8\n"
    "5vaKEslNlI1W5rM3W1DL13RUgwKBgQC8RqXG/1Tbc3AjyFfIDfcpNmkM8e+PEIin\n"
    "zqcVXkYhhfLYG2G/Iwn0JL31Wr4apMGApQ8OBz/xKO++rOTREtc5hDdcDD+KDgHt\n"
    "7vSk8ggt8zBx39Bvr8CR19LAnI3YskYDiEHjYk+qyJNGkUXJtcmy16aIgeio7DR4\n"
    "cog/BYcIiwKBgQCeyIZ90TyjFSjRYdR6my8tCQ4fn288lbBbHtMjKoXGyBov3z+K\n"
    "SzSaa62oEfwIe9brJ2Ls7IbUWCdJWz42q0cKJzTD1/DmLpE+gvN6zjgwYMx1Hy9B\n"
    "PLAWT2Z1Ox/eTcFqC5BZ+gbEy3vAiiKWo+3bKaTc5YwQF4wmQWLxlrY+swKBgFw2\n"
    "NcdrEsKQnWHJI8UloeIbdgQTEoN9U5Dsk8TRcYPFuRTDBHK61Isw26CpmuYtv2Ak\n"
    "d2Ulg9m3dQRsZX1IvwS6juqUTSJujd9c45FNwVfP/fAn8ExjReuoSt5vTsHNPqFI\n"
    "QQz+/4njxs4PJKEQWgMvv66oAa2KUoCTh8tmB6bVAoGAbLUEqbe/bYe0gH6eHuxP\n"
    "uPZfEERsyuXUkO6wiRTgveoKnJhkK7WOkME8muo0Xvbxy8TqR4/C1ZwRdp1TJ6nW\n"
    "QyQ0tSi5dEiJOx/sKNSIGWMoLWQpRq5btKCA7p1tOoeVutHENyY9uKesoWozyxBX\n"
    "XA7EXK/vGOGfSJjM853v2SQ=\n"
    "-----END PRIVATE KEY-----\n"
    ;
static const char rsa_public[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnHDuzeCI6YYgx++gWH1h\n"
    "eWmj8nalMS2WOsKZi+0IiUycde/P0ik3k9fgYCAhG5ttzGjBfx2lPlZL9HBm7JQM\n"
    "3mJKg91TObAuWoCYvmm+FKYanLSZnig+nLaOv/f/53u2l7xQD2zIVxV8ldKl/72Q\n"
    "HguXHF1vVtUX4vxwYVcJGu0K0jFStlOFGMaumkE0sFW8xl7Q9+eAeE2ptu/SUnaZ\n"
    "kfF2JySZDbw5m+Yu6eP+Vj5iBq0gatcU9m3g2HfO3/asXzg63LtHhas1iVaywfBn\n"
    "20RJztIIGXpSjzwCzecfRy5eW5wA+AR7LfPz9gjeeuP3XQvCbXena2xcq4WlvuL7\n"
    "IQIDAQAB\n"
    "-----END PUBLIC KEY-----\n"
    ;
static const char ec_public[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEhrsACGk9nlEcKs78wgR8KxCV/L/q\n"
    "hgoYFGRDIkGjVS4NGhBUn6kAuoaXvvvZe4Xe+2FxXzTfiHaPzIRzjupJRg==\n"
    "-----END PUBLIC KEY-----\n"
    ;

#define ISSUER "https://issuer.test"
#define SECRET "fuzz-secret-0123456789abcdef0123456789"

static web_auth *auth;
static gnutls_privkey_t rsa_key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    json_t *keys = json_pack("[{s:s}, {s:s, s:s}]", "pem", rsa_public, "kid", "ec-1", "pem", ec_public);
    json_t *conf = json_pack("{s:s, s:[s, s], s:o, s:s, s:s}", "issuer", ISSUER, "audiences", "dicom", "api://x",
                             "keys", keys, "hs256Secret", SECRET, "rolesClaim", "realm.roles");
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/auth.json", fuzz_scratch());
    if (!conf || json_dump_file(conf, path, 0) != 0) abort();
    json_decref(conf);
    auth = web_auth_load(path, err, sizeof err);
    if (!auth) {
        fprintf(stderr, "fuzz_jwt: %s\n", err);
        abort();
    }
    gnutls_datum_t d = {(unsigned char *)rsa_private, (unsigned)strlen(rsa_private)};
    if (gnutls_privkey_init(&rsa_key) < 0 || gnutls_privkey_import_x509_raw(rsa_key, &d, GNUTLS_X509_FMT_PEM, NULL, 0) < 0)
        abort();
    return 0;
}

static size_t b64url(const unsigned char *in, size_t len, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        if (i + 1 < len) out[o++] = abc[v >> 6 & 63];
        if (i + 2 < len) out[o++] = abc[v & 63];
    }
    out[o] = 0;
    return o;
}

/* "Bearer " header "." payload "." signature of TEXT ("<header>\n<payload>"). */
static char *signed_token(const uint8_t *text, size_t len, bool rsa)
{
    const uint8_t *nl = memchr(text, '\n', len);
    size_t hl = nl ? (size_t)(nl - text) : len;
    const uint8_t *payload = nl ? nl + 1 : text + len;
    size_t pl = len - (size_t)(payload - text);
    char *tok = malloc(7 + (hl + pl) * 2 + 400 + 8);
    if (!tok) abort();
    size_t n = (size_t)sprintf(tok, "Bearer ");
    size_t start = n;
    n += b64url(text, hl, tok + n);
    tok[n++] = '.';
    n += b64url(payload, pl, tok + n);
    unsigned char mac[32];
    gnutls_datum_t sig = {NULL, 0}, data = {(unsigned char *)tok + start, (unsigned)(n - start)};
    if (rsa) {
        if (gnutls_privkey_sign_data(rsa_key, GNUTLS_DIG_SHA256, 0, &data, &sig) < 0) abort();
    } else if (gnutls_hmac_fast(GNUTLS_MAC_SHA256, SECRET, strlen(SECRET), data.data, data.size, mac) != 0) {
        abort();
    }
    tok[n++] = '.';
    n += b64url(rsa ? sig.data : mac, rsa ? sig.size : sizeof mac, tok + n);
    gnutls_free(sig.data);
    return tok;
}

/* An accepted token: the principal is well formed, and when the target made the token
 * (PAYLOAD non-NULL) its claims are what check_claims demands. */
static void check_accepted(const web_principal *p, const uint8_t *payload, size_t len)
{
    FUZZ_ASSERT(p->sub[0] && strlen(p->sub) < sizeof p->sub, "empty or unterminated sub");
    FUZZ_ASSERT((p->actions & ~(unsigned)AUTH_ALL) == 0, "unknown action bits %#x", p->actions);
    if (!payload) return;
    /* The whole payload must be one JSON object (web/auth.c checks it before libjwt,
     * which reads it as a C string and would ignore bytes after a NUL). */
    json_t *c = json_loadb((const char *)payload, len, 0, NULL);
    FUZZ_ASSERT(json_is_object(c), "accepted a payload that is not a JSON object");
    const char *iss = json_string_value(json_object_get(c, "iss"));
    FUZZ_ASSERT(iss && strcmp(iss, ISSUER) == 0, "accepted issuer %s", iss ? iss : "(none)");
    FUZZ_ASSERT(json_is_number(json_object_get(c, "exp")), "accepted a token without exp");
    json_t *aud = json_object_get(c, "aud");
    bool aud_ok = false;
    for (size_t i = 0; i < (json_is_array(aud) ? json_array_size(aud) : 1); i++) {
        const char *s = json_string_value(json_is_array(aud) ? json_array_get(aud, i) : aud);
        aud_ok |= s && (strcmp(s, "dicom") == 0 || strcmp(s, "api://x") == 0);
    }
    FUZZ_ASSERT(aud_ok, "accepted a token for another audience");
    json_decref(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int mode = data[0] % 3;
    char *header = mode == 0 ? fuzz_strndup(data + 1, size - 1) : signed_token(data + 1, size - 1, mode == 2);
    web_principal p;
    char why[256];
    memset(why, 0x55, sizeof why);
    bool ok = web_auth_check(auth, header, &p, why, sizeof why);
    if (ok) {
        const uint8_t *nl = mode ? memchr(data + 1, '\n', size - 1) : NULL;
        check_accepted(&p, nl ? nl + 1 : NULL, nl ? size - (size_t)(nl + 1 - data) : 0);
    } else {
        FUZZ_ASSERT(memchr(why, 0, sizeof why), "unterminated reason");
        const char *sig = strrchr(header, '.');
        if (sig && strlen(sig + 1) >= 16) FUZZ_ASSERT(!strstr(why, sig + 1), "the reason quotes the signature: %s", why);
    }
    free(header);
    return 0;
}
