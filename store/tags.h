/* tags.h — which attributes the archive indexes and returns, per level.
 *
 * The reference's searchable ("core") attributes and its default and includefield=all
 * return sets live here and nowhere else. Extended query tags (a later capability) join
 * the same registry at run time; the index schema needs no change for them. */
#ifndef DICOMFS_TAGS_H
#define DICOMFS_TAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* How a VR is indexed and matched. */
typedef enum {
    VRC_TEXT,     /* AE AS CS LO SH: case-insensitive string */
    VRC_UID,      /* UI: exact, list matching */
    VRC_PN,       /* case- and accent-insensitive, fuzzy word prefixes */
    VRC_DATE,     /* DA: YYYYMMDD, ranges */
    VRC_TIME,     /* TM: HHMMSS.ffffff, ranges */
    VRC_DATETIME, /* DT: YYYYMMDDHHMMSS.ffffff, ranges */
    VRC_INT,      /* IS SL SS UL US */
    VRC_REAL,     /* DS FL FD */
    VRC_NONE      /* not indexable */
} tag_vrc;

typedef struct {
    uint32_t tag;
    const char *keyword;
    const char *vr;
    store_level level;
} tag_def;

/* Well-known tags the code refers to by name. */
enum {
    TAG_SpecificCharacterSet = 0x00080005,
    TAG_SOPClassUID = 0x00080016,
    TAG_SOPInstanceUID = 0x00080018,
    TAG_StudyDate = 0x00080020,
    TAG_AccessionNumber = 0x00080050,
    TAG_Modality = 0x00080060,
    TAG_ModalitiesInStudy = 0x00080061,
    TAG_ReferringPhysicianName = 0x00080090,
    TAG_StudyDescription = 0x00081030,
    TAG_ManufacturerModelName = 0x00081090,
    TAG_PatientName = 0x00100010,
    TAG_PatientID = 0x00100020,
    TAG_PatientBirthDate = 0x00100030,
    TAG_StudyInstanceUID = 0x0020000D,
    TAG_SeriesInstanceUID = 0x0020000E,
    TAG_InstanceNumber = 0x00200013,
    TAG_NumberOfStudyRelatedSeries = 0x00201206,
    TAG_NumberOfStudyRelatedInstances = 0x00201208,
    TAG_NumberOfSeriesRelatedInstances = 0x00201209,
    TAG_NumberOfFrames = 0x00280008,
    TAG_PerformedProcedureStepStartDate = 0x00400244,
};

tag_vrc tag_vr_class(const char *vr);

/* The reference's searchable attributes (QueryLimit). NULL when TAG is not one. */
const tag_def *tags_core(uint32_t tag);
const tag_def *tags_core_list(size_t *n);

/* Attributes computed by the archive rather than read from an instance. */
bool tags_is_computed(uint32_t tag, store_level *level);
/* The computed attributes of LEVEL's results (none for instances). */
const uint32_t *tags_computed(store_level level, size_t *n);

/* Default return attributes of a level for API version 1 or 2, and the extra set that
 * includefield=all adds. */
const uint32_t *tags_default(store_level level, int api_version, size_t *n);
const uint32_t *tags_all(store_level level, size_t *n);

/* The level at which a returnable attribute lives, if it is in any level's return sets;
 * these are copied into each instance's precomputed "attrs" JSON at ingest. */
bool tags_returnable(uint32_t tag, store_level *level);
/* All returnable attributes, ascending; returns the count (at most CAP written). */
size_t tags_returnable_list(uint32_t *out, size_t cap);

/* Parses a QIDO attribute name: a keyword (case-sensitive) or 8 hex digits. Fills VR
 * from the dictionary when it knows the tag ("UN" otherwise). 0 or -1. */
int tags_parse(const char *name, uint32_t *tag, char vr[3]);

/* "0020000D" */
void tags_hex(uint32_t tag, char out[9]);

#endif
