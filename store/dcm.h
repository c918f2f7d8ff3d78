/* dcm.h — the DCMTK adapter: the only door to DCMTK (C++) from the C code.
 *
 * dcm_parse() reads a file once and hands back everything the store precomputes at
 * ingest: the required UIDs, the transfer syntax, the DICOM JSON metadata (UTF-8, bulk
 * data and invalid attributes left out, as the reference's metadata), the v2 validation
 * comments, and where each frame's bytes lie in the file.
 *
 * Threads: every function is safe to call from any thread (each call works on its own
 * dataset). The first call loads DCMTK's dictionary (~15 ms), so a process that never
 * parses (a query) never pays for it. */
#ifndef DICOMFS_DCM_H
#define DICOMFS_DCM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Loads the data dictionary, registers codecs, quiets DCMTK's logging. 0 on success,
 * -1 with a message (for example when the dictionary is missing). Idempotent; the other
 * functions call it themselves. */
int dcm_global_init(char *err, size_t errlen);

/* One required attribute as found in the file: present at all, and its raw value with
 * trailing spaces and NULs trimmed (backslashes kept, so a multi-valued UID is visible). */
typedef struct {
    bool present;
    char value[256];
    bool truncated; /* longer than value[] could hold */
    bool has_nul;   /* a NUL inside the value: never a valid UID */
    size_t len;     /* bytes in value[] (NULs included) */
} dcm_attr;

/* Frame layout. kind 0: unknown (decode to get frames); 1: native, frame i at
 * offset + i*frame_size; 2: encapsulated, frame i is fragments[first[i] .. first[i+1]). */
typedef struct {
    int kind;
    uint32_t count;      /* number of frames */
    uint64_t offset;     /* native */
    uint64_t frame_size; /* native */
    uint32_t n_fragments;
    uint64_t *fragments; /* encapsulated: 2*n_fragments values: offset, length */
    uint32_t *first;     /* encapsulated: count+1 indexes into fragments */
} dcm_frames;

/* What the caller wants besides the metadata: the top-level attributes to copy into a
 * small DICOM JSON object (attrs), and the first value of some attributes as text. */
typedef struct {
    bool validate;               /* drop (and report) elements whose value breaks its VR */
    const uint32_t *attr_tags;   /* ascending */
    size_t n_attr_tags;
    const uint32_t *value_tags;
    size_t n_value_tags;
} dcm_request;

/* The first value of an attribute as UTF-8 text, as DICOM writes it (a person name as
 * "Alphabetic=Ideographic=Phonetic", numbers in decimal). */
typedef struct {
    uint32_t tag;
    char *text;
    bool multiple; /* the attribute had more than one value */
} dcm_value;

typedef struct {
    char transfer_syntax[65];
    bool implicit_vr;
    bool dicomdir;
    dcm_attr sop_class_uid, sop_instance_uid, study_uid, series_uid, patient_id;
    char *metadata_json;     /* one DICOM JSON object; malloc'd */
    char *invalid;           /* NULL or ErrorComment lines separated by '\n'; malloc'd */
    uint32_t invalid_count;
    char *invalid_tags;      /* NULL or "GGGGEEEE" top-level tags removed, '\n'-separated */
    char *attrs_json;        /* the requested attributes that are present, DICOM JSON */
    dcm_value *values;       /* the requested values that are present and not empty */
    size_t n_values;
    dcm_frames frames;
} dcm_parsed;

/* Parses the file at PATH. 0 on success; -1 when it is not a readable DICOM file, with
 * the reason in ERR. The required attributes above are never dropped by validation;
 * dropped attributes are absent from metadata, attrs and values alike. */
int dcm_parse(const char *path, const dcm_request *req, dcm_parsed *out, char *err, size_t errlen);
/* The same, with FD open for reading on the same file: the adapter's own small reads use
 * it instead of reopening PATH (DCMTK still opens PATH once). */
int dcm_parse_fd(const char *path, int fd, const dcm_request *req, dcm_parsed *out, char *err, size_t errlen);
void dcm_parsed_free(dcm_parsed *p);

/* ---- Reading for retrieval (WADO-RS) ---------------------------------------------- */

/* Can DCMTK write transfer syntax TS (for transcoding)? */
bool dcm_can_write(const char *ts);

/* Writes the instance at PATH in transfer syntax TS as a Part-10 file into a malloc'd
 * buffer. 0, or -1 with why (a codec that cannot read the source or write the target). */
int dcm_transcode(const char *path, const char *ts, unsigned char **out, size_t *len, char *err, size_t errlen);

/* Frame FRAME (0-based) of PATH decoded to native pixels in Explicit VR Little Endian
 * byte order. 0, or -1 with why. */
int dcm_frame_native(const char *path, uint32_t frame, unsigned char **out, size_t *len, char *err, size_t errlen);

/* Frame FRAME (0-based) of PATH rendered for display (its window, else min-max) as JPEG
 * (QUALITY 1..100) or PNG. 0, or -1 with why; 1 when the instance has no pixel data. */
int dcm_render(const char *path, uint32_t frame, bool png, int quality, unsigned char **out, size_t *len, char *err,
               size_t errlen);

/* A raw value as it may appear in a message (ErrorComment, failure reasons): printable
 * ASCII, other bytes and quotes as \xNN; at most MAX bytes of V, "..." when cut; OUT
 * (CAP bytes) always ends with NUL. */
void dcm_printable(const char *v, size_t len, size_t max, char *out, size_t cap);

/* DCMTK 3.6.7 writes some decimal strings (DS) as JSON numbers that JSON parsers refuse:
 * "5." and "1.e5" as 5. and 1.e5, and "0e-6" as e-6 (it strips the leading zeros). Returns
 * the DICOM JSON text S (N bytes) with its DS values mended (5, 1e5, 0e-6: the numbers a
 * parser would read) as a malloc'd NUL-terminated string of *LEN bytes, or NULL when
 * nothing needed mending. The metadata written by dcm_parse is mended already; this is
 * also for text written before it was. */
char *dcm_json_mend_decimals(const char *s, size_t n, size_t *len);

/* The DICOM JSON object DICOM_JSON (text, numbers, person names and sequences; bulk
 * data is not carried) as a PS3.19 native-model XML document, written by DCMTK:
 * malloc'd, or NULL with why. For answers a client asks for in XML. */
char *dcm_json_to_xml(const char *dicom_json, char *err, size_t errlen);

/* Dictionary: keyword ("PatientName") to tag and VR; tag to keyword. 0 or -1. */
int dcm_tag_by_keyword(const char *keyword, uint32_t *tag, char vr[3]);
int dcm_tag_info(uint32_t tag, char *keyword, size_t len, char vr[3]);

#ifdef __cplusplus
}
#endif
#endif
