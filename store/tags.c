/* tags.c — the reference's attribute sets (see tags.h). */
#include "tags.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcm.h"

static const tag_def core[] = {
    {TAG_StudyInstanceUID, "StudyInstanceUID", "UI", STORE_LEVEL_STUDY},
    {TAG_PatientName, "PatientName", "PN", STORE_LEVEL_STUDY},
    {TAG_PatientID, "PatientID", "LO", STORE_LEVEL_STUDY},
    {TAG_PatientBirthDate, "PatientBirthDate", "DA", STORE_LEVEL_STUDY},
    {TAG_AccessionNumber, "AccessionNumber", "SH", STORE_LEVEL_STUDY},
    {TAG_ReferringPhysicianName, "ReferringPhysicianName", "PN", STORE_LEVEL_STUDY},
    {TAG_StudyDate, "StudyDate", "DA", STORE_LEVEL_STUDY},
    {TAG_StudyDescription, "StudyDescription", "LO", STORE_LEVEL_STUDY},
    {TAG_ModalitiesInStudy, "ModalitiesInStudy", "CS", STORE_LEVEL_STUDY},
    {TAG_SeriesInstanceUID, "SeriesInstanceUID", "UI", STORE_LEVEL_SERIES},
    {TAG_Modality, "Modality", "CS", STORE_LEVEL_SERIES},
    {TAG_PerformedProcedureStepStartDate, "PerformedProcedureStepStartDate", "DA", STORE_LEVEL_SERIES},
    {TAG_ManufacturerModelName, "ManufacturerModelName", "LO", STORE_LEVEL_SERIES},
    {TAG_SOPInstanceUID, "SOPInstanceUID", "UI", STORE_LEVEL_INSTANCE},
};

const tag_def *tags_core(uint32_t tag)
{
    for (size_t i = 0; i < sizeof core / sizeof core[0]; i++)
        if (core[i].tag == tag) return &core[i];
    return NULL;
}

const tag_def *tags_core_list(size_t *n)
{
    *n = sizeof core / sizeof core[0];
    return core;
}

bool tags_is_computed(uint32_t tag, store_level *level)
{
    switch (tag) {
    case TAG_ModalitiesInStudy:
    case TAG_NumberOfStudyRelatedSeries:
    case TAG_NumberOfStudyRelatedInstances:
        *level = STORE_LEVEL_STUDY;
        return true;
    case TAG_NumberOfSeriesRelatedInstances:
        *level = STORE_LEVEL_SERIES;
        return true;
    }
    return false;
}

/* PS3.18's computed study and series result attributes (Tables 10.6.3-3 and -4). */
static const uint32_t study_computed[] = {TAG_ModalitiesInStudy, TAG_NumberOfStudyRelatedSeries,
                                          TAG_NumberOfStudyRelatedInstances};
static const uint32_t series_computed[] = {TAG_NumberOfSeriesRelatedInstances};

const uint32_t *tags_computed(store_level level, size_t *n)
{
    *n = level == STORE_LEVEL_STUDY ? 3 : level == STORE_LEVEL_SERIES ? 1 : 0;
    return level == STORE_LEVEL_STUDY ? study_computed : series_computed;
}

/* QueryResponseBuilder's sets. */
static const uint32_t study_v2[] = {0x0020000D, 0x00080020, 0x00081030, 0x00080050,
                                    0x00080090, 0x00100010, 0x00100020, 0x00100030};
static const uint32_t series_v2[] = {0x0020000E, 0x00080060, 0x00400244, 0x00081090};
static const uint32_t instance_v2[] = {0x00080018};
static const uint32_t study_v1[] = {0x00080005, 0x00080020, 0x00080030, 0x00080050, 0x00080056,
                                    0x00080090, 0x00080201, 0x00100010, 0x00100020, 0x00100030,
                                    0x00100040, 0x0020000D, 0x00200010};
static const uint32_t series_v1[] = {0x00080005, 0x00080060, 0x00080201, 0x0008103E,
                                     0x0020000E, 0x00400244, 0x00400245, 0x00400275};
static const uint32_t instance_v1[] = {0x00080005, 0x00080016, 0x00080018, 0x00080056, 0x00080201,
                                       0x00200013, 0x00280010, 0x00280011, 0x00280100, 0x00280008};
/* includefield=all: the v1 defaults plus these. */
static const uint32_t study_all[] = {0x00081030, 0x00082218, 0x00081032, 0x00081060, 0x00081080,
                                     0x00081110, 0x00101010, 0x00101020, 0x00101030, 0x00102180,
                                     0x001021B0};
static const uint32_t series_all[] = {0x00200011, 0x00200060, 0x00080021, 0x00080031};

#define LEN(a) (sizeof(a) / sizeof(a)[0])

const uint32_t *tags_default(store_level level, int api_version, size_t *n)
{
    bool v1 = api_version == 1;
    switch (level) {
    case STORE_LEVEL_STUDY: *n = v1 ? LEN(study_v1) : LEN(study_v2); return v1 ? study_v1 : study_v2;
    case STORE_LEVEL_SERIES: *n = v1 ? LEN(series_v1) : LEN(series_v2); return v1 ? series_v1 : series_v2;
    default: *n = v1 ? LEN(instance_v1) : LEN(instance_v2); return v1 ? instance_v1 : instance_v2;
    }
}

const uint32_t *tags_all(store_level level, size_t *n)
{
    switch (level) {
    case STORE_LEVEL_STUDY: *n = LEN(study_all); return study_all;
    case STORE_LEVEL_SERIES: *n = LEN(series_all); return series_all;
    default: *n = 0; return instance_v1;
    }
}

static bool in(const uint32_t *set, size_t n, uint32_t tag)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == tag) return true;
    return false;
}

bool tags_returnable(uint32_t tag, store_level *level)
{
    /* The lowest level wins for attributes listed at several (SpecificCharacterSet):
     * each instance carries its own copy anyway. */
    if (in(instance_v1, LEN(instance_v1), tag)) { *level = STORE_LEVEL_INSTANCE; return true; }
    if (in(series_v1, LEN(series_v1), tag) || in(series_v2, LEN(series_v2), tag) ||
        in(series_all, LEN(series_all), tag)) { *level = STORE_LEVEL_SERIES; return true; }
    if (in(study_v1, LEN(study_v1), tag) || in(study_v2, LEN(study_v2), tag) ||
        in(study_all, LEN(study_all), tag)) { *level = STORE_LEVEL_STUDY; return true; }
    return false;
}

tag_vrc tag_vr_class(const char *vr)
{
    static const struct { const char *vr; tag_vrc c; } map[] = {
        {"AE", VRC_TEXT}, {"AS", VRC_TEXT}, {"CS", VRC_TEXT}, {"LO", VRC_TEXT}, {"SH", VRC_TEXT},
        {"UI", VRC_UID}, {"PN", VRC_PN}, {"DA", VRC_DATE}, {"TM", VRC_TIME}, {"DT", VRC_DATETIME},
        {"IS", VRC_INT}, {"SL", VRC_INT}, {"SS", VRC_INT}, {"UL", VRC_INT}, {"US", VRC_INT},
        {"DS", VRC_REAL}, {"FL", VRC_REAL}, {"FD", VRC_REAL},
    };
    for (size_t i = 0; i < LEN(map); i++)
        if (strcmp(map[i].vr, vr) == 0) return map[i].c;
    return VRC_NONE;
}

void tags_hex(uint32_t tag, char out[9])
{
    snprintf(out, 9, "%08X", tag);
}

/* Other keywords (extended query tags, includefield): DCMTK's dictionary looks a name up
 * by walking it (~0.1 ms, more than the query), so the last few answers are kept. */
#define KEYWORD_CACHE 64
static struct {
    char name[64];
    uint32_t tag;
    char vr[3];
} keyword_cache[KEYWORD_CACHE];
static size_t keyword_next;
static pthread_mutex_t keyword_lock = PTHREAD_MUTEX_INITIALIZER;

static int keyword_cached(const char *name, uint32_t *tag, char vr[3])
{
    if (strlen(name) >= sizeof keyword_cache[0].name) return dcm_tag_by_keyword(name, tag, vr);
    pthread_mutex_lock(&keyword_lock);
    for (size_t i = 0; i < KEYWORD_CACHE; i++)
        if (keyword_cache[i].name[0] && strcmp(keyword_cache[i].name, name) == 0) {
            *tag = keyword_cache[i].tag;
            memcpy(vr, keyword_cache[i].vr, 3);
            pthread_mutex_unlock(&keyword_lock);
            return 0;
        }
    pthread_mutex_unlock(&keyword_lock);
    if (dcm_tag_by_keyword(name, tag, vr) != 0) return -1; /* unknown names are not kept */
    pthread_mutex_lock(&keyword_lock);
    size_t slot = keyword_next++ % KEYWORD_CACHE;
    snprintf(keyword_cache[slot].name, sizeof keyword_cache[slot].name, "%s", name);
    keyword_cache[slot].tag = *tag;
    memcpy(keyword_cache[slot].vr, vr, 3);
    pthread_mutex_unlock(&keyword_lock);
    return 0;
}

int tags_parse(const char *name, uint32_t *tag, char vr[3])
{
    size_t len = strlen(name);
    if (len == 8 && strspn(name, "0123456789abcdefABCDEF") == 8) {
        unsigned v = 0;
        sscanf(name, "%8x", &v);
        *tag = v;
        if (dcm_tag_info(v, NULL, 0, vr) != 0) snprintf(vr, 3, "UN");
        return 0;
    }
    for (size_t i = 0; i < LEN(core); i++) /* the common case, without the dictionary lock */
        if (strcmp(core[i].keyword, name) == 0) {
            *tag = core[i].tag;
            snprintf(vr, 3, "%s", core[i].vr);
            return 0;
        }
    return keyword_cached(name, tag, vr);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

size_t tags_returnable_list(uint32_t *out, size_t cap)
{
    const uint32_t *sets[] = {study_v1, study_v2, study_all, series_v1, series_v2, series_all, instance_v1, instance_v2};
    size_t lens[] = {LEN(study_v1), LEN(study_v2), LEN(study_all), LEN(series_v1), LEN(series_v2), LEN(series_all),
                     LEN(instance_v1), LEN(instance_v2)};
    size_t n = 0;
    for (size_t k = 0; k < LEN(sets); k++)
        for (size_t i = 0; i < lens[k]; i++)
            if (n < cap && !in(out, n, sets[k][i])) out[n++] = sets[k][i];
    qsort(out, n, sizeof *out, cmp_u32);
    return n;
}
