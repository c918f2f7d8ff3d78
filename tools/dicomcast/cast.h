/* cast.h — what every dicomcast module shares: the outcome of an operation.
 *
 * dicomcast follows a DICOMweb change feed (Azure-compatible, /v1/changefeed) and writes
 * Patient, Endpoint and ImagingStudy resources to a FHIR R4 server, one transaction per
 * entry. Every step answers one of these outcomes; main.c decides what follows from it
 * (retry with backoff, log the entry and go on, or stop). Single-threaded throughout. */
#ifndef DICOMCAST_CAST_H
#define DICOMCAST_CAST_H

typedef enum {
    CAST_OK = 0,
    CAST_TRANSIENT,   /* may succeed later: no connection, timeout, 5xx, 408, 429, 412, a race */
    CAST_FHIR_ERROR,  /* the FHIR server refused the entry for good (4xx, OperationOutcome) */
    CAST_DICOM_ERROR, /* a required DICOM value is missing or invalid: the entry cannot map */
    CAST_FATAL        /* misconfiguration or a broken peer: stop (bad URL, 401/403, not R4) */
} cast_status_t;

const char *cast_strstatus(cast_status_t st);

#endif
