/* sync.h — one change-feed entry to one FHIR transaction.
 *
 * create (and update, with the current metadata): search the Patient by identifier, the
 * Endpoint by name and connection type, the ImagingStudy by urn:dicom:uid; then one
 * transaction Bundle with, in the reference's order, the Patient (POST with ifNoneExist,
 * or PUT with If-Match only when name or gender changed), the Endpoint (POST with
 * ifNoneExist when missing) and the ImagingStudy (POST with ifNoneExist, or PUT with
 * If-Match only when it changed). delete: the instance leaves the ImagingStudy, its series
 * too when empty, and the study is DELETEd when no series is left and it came from this
 * endpoint (meta.source); a missing study or instance is nothing to do.
 *
 * Idempotent: an entry applied twice (a replay after kill -9 between the commit and the
 * checkpoint) finds everything in place and sends nothing. A create + state deleted entry
 * is skipped, as the reference does. */
#ifndef DICOMCAST_SYNC_H
#define DICOMCAST_SYNC_H

#include <jansson.h>
#include <stdbool.h>

#include "cast.h"
#include "fhir.h"

typedef struct {
    fhir_t *fhir;
    const char *endpoint_address; /* the DICOMweb base URL: Endpoint.address, meta.source */
    const char *patient_system;   /* "" for none */
    bool issuer_as_system;
    char endpoint_id[128];        /* the Endpoint's id once known ("" until then) */
} sync_t;

typedef struct {
    bool skipped;        /* nothing to do by the rules (deleted before it was read, ...) */
    bool wrote;          /* a transaction was committed */
    fhir_error_t fhir;   /* CAST_FHIR_ERROR / CAST_TRANSIENT / CAST_FATAL: why */
    char error_tag[9];   /* CAST_DICOM_ERROR: the tag, and fhir.text says why */
    json_t *problems;    /* optional values left out (owned; json_decref when done) */
} sync_result_t;

cast_status_t sync_entry(sync_t *s, json_t *entry, sync_result_t *res);

#endif
