/* fhir.h — the FHIR R4 client: the capability check, searches, transaction Bundles.
 *
 * dicomcast reads with searches and writes only with transactions (one per change-feed
 * entry), so that an entry is applied whole or not at all. Creates are conditional
 * (request.ifNoneExist) and updates carry If-Match: W/"versionId" (quoted, as RFC 7232 and
 * FHIR require), which makes a replay after a crash idempotent and a concurrent writer a
 * 412 that is retried after reading again. */
#ifndef DICOMCAST_FHIR_H
#define DICOMCAST_FHIR_H

#include <jansson.h>
#include <stddef.h>

#include "cast.h"
#include "http.h"

typedef struct fhir fhir_t;

typedef struct {
    long status;     /* HTTP status of the failure; 0 for a transport failure */
    char text[2048]; /* the OperationOutcome's issues (text, diagnostics, expression), or why */
} fhir_error_t;

fhir_t *fhir_new(http_client_t *http, const char *base, const char *token);
void fhir_free(fhir_t *f);

/* GET metadata: FHIR 4.0.x with the transaction interaction, else CAST_FATAL and why. */
cast_status_t fhir_check_metadata(fhir_t *f, fhir_error_t *err);

/* GET {base}/{TYPE}?name=value&... (PARAMS: name, value, ..., NULL; values are encoded
 * here). *resources: a new array of the matching resources (the searchset's "match"
 * entries; an included resource is not one). */
cast_status_t fhir_search(fhir_t *f, const char *type, const char *const *params, json_t **resources,
                          fhir_error_t *err);

/* POSTs BUNDLE (a transaction) to the base. *response: the transaction-response (new
 * reference). 5xx, 408, 429, 412 and transport failures are CAST_TRANSIENT; other 4xx are
 * CAST_FHIR_ERROR with the OperationOutcome's text. */
cast_status_t fhir_transaction(fhir_t *f, json_t *bundle, json_t **response, fhir_error_t *err);

/* The readable text of an OperationOutcome (issues joined by "; "). */
void fhir_outcome_text(json_t *outcome, char *buf, size_t len);

#endif
