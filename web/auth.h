/* auth.h — access control of the DICOMweb endpoint: bearer tokens (JWT, libjwt) and the
 * data actions of roles, as the reference service's open-source predecessor has them
 * (docs/CLI.md "Access control").
 *
 *   auth file   JSON: issuer, audiences, keys (PEM files or inline PEM), jwks (a JWKS
 *               file), jwksUri or discovery (a JWKS fetched with libcurl: at load, and
 *               again on a token of an unknown kid, at most once per 30 s), hs256Secret,
 *               rolesClaim, roles (a roles.json), clockSkewSeconds
 *   token       RS256 / ES256 (public keys from PEM or JWKS) or HS256 (the shared
 *               secret). The header is read first: alg must be one the chosen key is
 *               for (an RSA or EC key is never an HMAC secret), the key is picked by kid
 *               (a key's kid is its own or its RFC 7638 thumbprint); then libjwt checks
 *               the signature and we check iss, aud, exp and nbf (with the skew).
 *   roles       the roles claim (an array or a string) names roles; each grants
 *               dataActions minus notDataActions; built in: owner / "DICOM Data Owner"
 *               (*), reader / "DICOM Data Reader" (read), writer (read, write).
 *   routes      every route kind has a data action (auth_route_action), or is open
 *               (health, CORS preflight); a kind without a mapping is refused.
 *
 * Any number of threads may check tokens at once. A loaded web_auth changes only in its
 * fetched keys: a refresh publishes a new, immutable key set (reference-counted; requests
 * in flight keep the set they started with); one thread fetches, the others wait for it.
 * The key helpers at the end serve `dicomfs keygen` and `dicomfs token` too. */
#ifndef DICOMFS_WEB_AUTH_H
#define DICOMFS_WEB_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "route.h"

typedef struct web_auth web_auth;

/* Data actions (bits). */
enum {
    AUTH_READ = 1u << 0,
    AUTH_WRITE = 1u << 1,
    AUTH_DELETE = 1u << 2,
    AUTH_MANAGE_XQT = 1u << 3, /* manageExtendedQueryTags */
    AUTH_EXPORT = 1u << 4,
    AUTH_ALL = (1u << 5) - 1, /* "*" */
};
#define AUTH_OPEN 0u          /* auth_route_action: the route needs no token */
#define AUTH_REFUSED 0x80000000u /* auth_route_action: no mapping: never served */

/* The data action a route kind needs: one AUTH_* bit, AUTH_OPEN, or AUTH_REFUSED. */
unsigned auth_route_action(route_kind kind);
/* "read", "write", ... of one bit. */
const char *auth_action_name(unsigned action);

/* Loads the auth file PATH (relative paths in it are relative to its folder). NULL with
 * a reason in ERR when it is unreadable or wrong in any way (unknown fields included), or
 * when its jwksUri / discovery keys cannot be fetched and it has no other key (with other
 * keys: a warning on stderr). */
web_auth *web_auth_load(const char *path, char *err, size_t len);
void web_auth_free(web_auth *a);
/* The WWW-Authenticate value of a 401 (the reference's form). */
const char *web_auth_challenge(const web_auth *a);
/* One line describing the configuration, for the server's start message. */
void web_auth_describe(const web_auth *a, char *out, size_t len);

typedef struct {
    char sub[128];     /* the token's sub (or "?"), for messages and the audit log */
    unsigned actions;  /* the data actions its roles grant */
} web_principal;

/* Checks an Authorization header value (NULL when absent). true: a valid token, P
 * filled; false: a 401, with WHY (never the token itself). */
bool web_auth_check(const web_auth *a, const char *authorization, web_principal *p, char *why, size_t len);

/* ---- keys (auth.c; GnuTLS) ------------------------------------------------------------ */

typedef enum { AUTH_KEY_RSA = 1, AUTH_KEY_EC256 } auth_key_type;

/* Any PEM public key or certificate → the SubjectPublicKeyInfo PEM libjwt reads, its
 * type and its RFC 7638 JWK thumbprint (base64url SHA-256). Returns false with ERR. */
bool auth_pem_public(const char *pem, size_t len, char **spki_pem, auth_key_type *type, char kid[64],
                     char *err, size_t errlen);
/* A PEM private key (PKCS#1, SEC1 or PKCS#8) → its type, the thumbprint of its public
 * key, and optionally that public key as PEM (*PUB_PEM, malloc'd) and as a JWK object
 * (*JWK, malloc'd JSON text with kty, kid, use, alg and n/e or crv/x/y). */
bool auth_pem_private(const char *pem, size_t len, auth_key_type *type, char kid[64], char **pub_pem, char **jwk,
                      char *err, size_t errlen);
/* Generates a private key (RSA 2048 bits or EC P-256) as PKCS#8 PEM (malloc'd). */
char *auth_generate_key(auth_key_type type, char *err, size_t errlen);

#endif
