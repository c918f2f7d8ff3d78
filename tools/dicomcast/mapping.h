/* mapping.h — DICOM JSON (an instance's metadata from the change feed) to FHIR R4 Patient,
 * Endpoint and ImagingStudy, following the reference's DICOMcast field by field
 * (azure-dicom-api.md section 8). Pure functions on jansson values: no I/O.
 *
 * Values are checked by their VR before they are used. An invalid optional value (a
 * PatientSex of "X", a StudyDate of 20231350) is left out and described in the context's
 * problems, and the entry still maps (the reference's EnforceValidationOfTagValues=false);
 * an invalid or missing required value (PatientID, a series' Modality, SOPClassUID) fails
 * the entry with CAST_DICOM_ERROR and ctx->error. */
#ifndef DICOMCAST_MAPPING_H
#define DICOMCAST_MAPPING_H

#include <jansson.h>
#include <stdbool.h>

#include "cast.h"

#define MAP_DCM_SYSTEM "http://dicom.nema.org/resources/ontology/DCM"
#define MAP_ENDPOINT_TYPE_SYSTEM "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"

typedef struct {
    json_t *problems;  /* array of {"tag", "value", "error"}: optional values left out */
    char error[512];   /* why the entry cannot map (CAST_DICOM_ERROR) */
    char error_tag[9]; /* the tag of that value, "" when none */
} map_ctx_t;

void map_ctx_init(map_ctx_t *ctx);
void map_ctx_clear(map_ctx_t *ctx);

/* The first value of TAG ("00100020") as a string ("" when empty or absent; PN gives its
 * Alphabetic group, numbers their decimal text). The pointer lives as long as MD. */
const char *map_value(json_t *md, const char *tag, char *buf, size_t len);

/* The Patient identifier's system: SYSTEM, or with ISSUER_AS_SYSTEM the IssuerOfPatientID
 * when the instance has one. "" means none. */
const char *map_patient_system(json_t *md, const char *system, bool issuer_as_system);

/* A new Patient from MD: identifier (SYSTEM | PatientID), name, gender, birthDate.
 * CAST_DICOM_ERROR without a PatientID. */
cast_status_t map_patient(json_t *md, const char *system, json_t **patient, map_ctx_t *ctx);

/* Copies FRESH's name and gender onto EXISTING (birthDate is set only on create); returns
 * whether anything changed. */
bool map_patient_refresh(json_t *existing, json_t *fresh);

/* The Endpoint of the DICOMweb service at ADDRESS, and the name it is searched by. */
json_t *map_endpoint(const char *address);
void map_endpoint_name(const char *address, char *buf, size_t len);

/* A new ImagingStudy for STUDY_UID: identifier, status available, subject, meta.source. */
json_t *map_study_new(const char *study_uid, const char *patient_ref, const char *source);

/* Adds (or refreshes) the instance of MD in STUDY: study fields, the series, the instance,
 * the endpoint reference, the counts. */
cast_status_t map_study_add(json_t *study, json_t *md, const char *endpoint_ref, map_ctx_t *ctx);

/* Removes the instance, and its series when that becomes empty. Returns whether the
 * instance was there. */
bool map_study_remove(json_t *study, const char *series_uid, const char *sop_uid);

/* The number of series left. */
size_t map_study_series_count(json_t *study);

/* FHIR dates from DICOM DA / DA+TM+offset ("" on invalid input; returns false then). */
bool map_date(const char *da, char *out, size_t len);
bool map_datetime(const char *da, const char *tm, const char *tz, char *out, size_t len, const char **why);

#endif
