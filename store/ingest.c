/* ingest.c — from an upload to an item ready to commit: parse once with DCMTK, apply
 * the reference's STOW validation, precompute what reads need (metadata JSON, returned
 * attributes, index values, frame offsets). Runs in the caller's thread, so several
 * uploads are parsed in parallel; only commit.c serialises. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"

#define WRITEBACK_MIN (256 * 1024) /* smaller uploads are written by the group's one sync */

/* The CRC-32 of the upload's bytes, so that fsck can tell a file changed behind the
 * archive's back even when its size did not: kept as the bytes came (upload.c), or when
 * they did not come in order, one pass over the page cache they were just written to. */
static bool checksum(int fd, uint64_t size, uint32_t *crc)
{
    unsigned char buf[65536];
    uLong c = crc32(0L, Z_NULL, 0);
    for (uint64_t off = 0; off < size;) {
        ssize_t n = pread(fd, buf, sizeof buf, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        c = crc32(c, buf, (uInt)n);
        off += (uint64_t)n;
    }
    *crc = (uint32_t)c;
    return true;
}

void item_reject(store_item *item, store_status st, int reason, const char *fmt, ...)
{
    item->final = true;
    item->result.status = st;
    item->result.failure_reason = reason;
    item->result.warning_reason = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(item->result.message, sizeof item->result.message, fmt, ap);
    va_end(ap);
    if (item->tmp[0]) {
        unlink(item->tmp);
        item->tmp[0] = 0;
    }
}

const store_ingest_result *store_item_result(const store_item *item) { return &item->result; }

void store_ingest_result_clear(store_ingest_result *r)
{
    free(r->failed_attributes);
    r->failed_attributes = NULL;
}

void store_item_free(store_item *item)
{
    if (!item) return;
    if (item->tmp[0]) unlink(item->tmp);
    store_ingest_result_clear(&item->result);
    free(item->metadata);
    free(item->attrs);
    for (int i = 0; i < 3; i++) {
        ix_list_free(&item->ix[i]);
        free(item->ix_key[i]);
    }
    free(item->frames);
    free(item);
}

static void add_failed(store_item *item, const char *line)
{
    char *old = item->result.failed_attributes;
    size_t a = old ? strlen(old) : 0, b = strlen(line);
    char *p = malloc(a + b + 2);
    if (!p) abort();
    if (old) {
        memcpy(p, old, a);
        p[a++] = '\n';
    }
    memcpy(p + a, line, b + 1);
    free(old);
    item->result.failed_attributes = p;
}

/* Checks one required UID; false (and the item rejected) when it fails. */
static bool check_uid(store_item *item, const dcm_attr *a, const char *name, const char *tag)
{
    char line[400], shown[100];
    dcm_printable(a->value, a->len, 70, shown, sizeof shown); /* inner NULs shown as \x00 */
    if (!a->present || a->value[0] == 0)
        snprintf(line, sizeof line, "DICOM100: %s - %s is missing or empty; it is required", tag, name);
    else if (a->truncated || a->has_nul || !store_valid_uid(a->value))
        snprintf(line, sizeof line, "DICOM100: %s - Content \"%s\" does not validate VR UI: "
                 "a UID is digits and dots, ends with a digit, and has at most 64 characters", tag, shown);
    else
        return true;
    add_failed(item, line);
    item_reject(item, STORE_EREJECTED, STORE_FAIL_VALIDATION, "%s", line);
    return false;
}

static bool validate_required(store_item *item, const dcm_parsed *p, const store_ingest_opts *o)
{
    if (!check_uid(item, &p->sop_class_uid, "SOPClassUID", "(0008,0016)") ||
        !check_uid(item, &p->study_uid, "StudyInstanceUID", "(0020,000D)") ||
        !check_uid(item, &p->series_uid, "SeriesInstanceUID", "(0020,000E)") ||
        !check_uid(item, &p->sop_instance_uid, "SOPInstanceUID", "(0008,0018)"))
        return false;
    bool v1 = o && o->api_version == 1;
    if (!p->patient_id.present || (v1 && p->patient_id.value[0] == 0)) {
        const char *line = v1 ? "DICOM100: (0010,0020) - PatientID is missing or empty; it is required"
                              : "DICOM100: (0010,0020) - PatientID is missing; it is required (it may be empty)";
        add_failed(item, line);
        item_reject(item, STORE_EREJECTED, STORE_FAIL_VALIDATION, "%s", line);
        return false;
    }
    if (o && o->expected_study_uid) {
        const char *want = o->expected_study_uid;
        size_t n = strlen(want);
        while (n > 0 && want[n - 1] == ' ') n--;
        if (strlen(p->study_uid.value) != n || strncasecmp(p->study_uid.value, want, n) != 0) {
            char line[400];
            snprintf(line, sizeof line, "DICOM100: (0020,000D) - StudyInstanceUID %.64s does not match the study %.*s in the request",
                     p->study_uid.value, (int)(n > 64 ? 64 : n), want);
            add_failed(item, line);
            item_reject(item, STORE_EREJECTED, STORE_FAIL_VALIDATION, "%s", line);
            return false;
        }
    }
    return true;
}

/* v1 refuses an instance whose indexed attributes are invalid; v2 only warns. */
static bool validate_indexed_v1(store_t *s, store_item *item, const dcm_parsed *p)
{
    if (!p->invalid_tags) return true;
    for (size_t i = 0; i < s->n_index_tags; i++) {
        char hex[9];
        tags_hex(s->index_tags[i].tag, hex);
        if (strstr(p->invalid_tags, hex)) {
            add_failed(item, p->invalid);
            item_reject(item, STORE_EREJECTED, STORE_FAIL_VALIDATION,
                        "indexed attribute (%.4s,%.4s) has an invalid value", hex, hex + 4);
            return false;
        }
    }
    return true;
}

static void copy_uids(store_item *item, const dcm_parsed *p)
{
    store_ingest_result *r = &item->result;
    snprintf(r->sop_class_uid, sizeof r->sop_class_uid, "%.64s", p->sop_class_uid.value);
    snprintf(r->sop_instance_uid, sizeof r->sop_instance_uid, "%.64s", p->sop_instance_uid.value);
    snprintf(r->study_uid, sizeof r->study_uid, "%.64s", p->study_uid.value);
    snprintf(r->series_uid, sizeof r->series_uid, "%.64s", p->series_uid.value);
}

static void prepare(store_t *s, store_item *item, int fd, const uint32_t *crc, const store_ingest_opts *o)
{
    dcm_parsed p;
    char why[400];
    bool v1 = o && o->api_version == 1;
    dcm_request req = {.validate = true};
    index_request(s, &req);
    if (dcm_parse_fd(item->tmp, fd, &req, &p, why, sizeof why) != 0) {
        item_reject(item, STORE_EREJECTED, STORE_FAIL_PROCESSING, "%s", why);
        return;
    }
    if (p.dicomdir) {
        item->result.dicomdir = true;
        item_reject(item, STORE_EREJECTED, STORE_FAIL_PROCESSING, "a DICOMDIR (media directory), not an instance");
        dcm_parsed_free(&p);
        return;
    }
    copy_uids(item, &p);
    if (!validate_required(item, &p, o) || (v1 && !validate_indexed_v1(s, item, &p))) {
        dcm_parsed_free(&p);
        return;
    }
    index_extract(s, p.values, p.n_values, item);
    item->attrs = p.attrs_json;
    p.attrs_json = NULL;
    snprintf(item->transfer_syntax, sizeof item->transfer_syntax, "%s", p.transfer_syntax);
    item->frame_count = p.frames.count;
    item->frames = frames_encode(&p.frames, &item->frames_len);
    item->metadata = p.metadata_json;
    p.metadata_json = NULL;

    store_ingest_result *r = &item->result;
    if (!v1 && p.invalid_count > 0) {
        r->warning_reason = STORE_WARN_ATTRIBUTES;
        add_failed(item, p.invalid);
        snprintf(r->message, sizeof r->message, "%u attribute(s) with invalid values were left out of the metadata and the index",
                 p.invalid_count);
    }
    if (p.implicit_vr) {
        r->warning_reason = STORE_WARN_NOT_SOP_CLASS;
        if (!r->message[0]) snprintf(r->message, sizeof r->message, "implicit VR transfer syntax");
    }
    char id[33];
    store_random_hex(id, 16);
    snprintf(item->object, sizeof item->object, "objects/%.2s/%s.dcm", id, id);
    dcm_parsed_free(&p);
    if (crc)
        item->crc32 = *crc;
    else if (!checksum(fd, item->size, &item->crc32))
        item_reject(item, STORE_EIO, STORE_FAIL_PROCESSING, "the upload could not be read back from the archive's disk");
}

/* True when the files A and B hold the same bytes. */
static bool same_bytes(int a, int b)
{
    char x[65536], y[65536];
    for (;;) {
        ssize_t n = read(a, x, sizeof x);
        if (n < 0) return false;
        ssize_t got = 0;
        while (got < n) { /* B in the same amounts */
            ssize_t m = read(b, y + got, (size_t)(n - got));
            if (m <= 0) return false;
            got += m;
        }
        if (n == 0) return read(b, y, 1) == 0;
        if (memcmp(x, y, (size_t)n) != 0) return false;
    }
}

/* identical_ok: an instance stored before with these very bytes is settled now as
 * already stored; one stored with other bytes fails now, as the commit would. */
static void settle_identical(store_t *s, store_item *item)
{
    store_ingest_result *r = &item->result;
    store_instance *in = NULL;
    size_t n = 0;
    if (store_instances(s, item->partition, r->study_uid, r->series_uid, r->sop_instance_uid, &in, &n, NULL) != STORE_OK) {
        free(in);
        return; /* not stored yet: commit it */
    }
    bool same = false;
    if (in[0].size == item->size) {
        int a = open(item->tmp, O_RDONLY | O_CLOEXEC), b = store_open_object(s, &in[0]);
        same = a >= 0 && b >= 0 && same_bytes(a, b);
        if (a >= 0) close(a);
        if (b >= 0) close(b);
    }
    if (same) {
        unlink(item->tmp);
        item->tmp[0] = 0;
        item->final = true;
        r->status = STORE_OK;
        r->already_stored = true;
        r->watermark = in[0].watermark;
    } else {
        item_reject(item, STORE_EEXIST, STORE_FAIL_EXISTS,
                    "the instance %s of series %s in study %s is already stored with other content (the same UIDs, "
                    "other bytes); delete it first", r->sop_instance_uid, r->series_uid, r->study_uid);
    }
    free(in);
}

void store_item_settle(store_t *s, store_item *item)
{
    if (!item->final && item->identical_ok) settle_identical(s, item);
}

static bool same_files(const char *a_path, const char *b_path)
{
    int a = open(a_path, O_RDONLY | O_CLOEXEC), b = open(b_path, O_RDONLY | O_CLOEXEC);
    bool same = a >= 0 && b >= 0 && same_bytes(a, b);
    if (a >= 0) close(a);
    if (b >= 0) close(b);
    return same;
}

void item_settle_duplicate(store_t *s, store_item *item, const store_item *first)
{
    store_ingest_result *r = &item->result;
    if (item->identical_ok && first) {
        if (first->size == item->size && same_files(first->tmp, item->tmp)) {
            unlink(item->tmp);
            item->tmp[0] = 0;
            item->final = true;
            r->status = STORE_OK;
            r->already_stored = true;
            r->watermark = first->result.watermark;
            return;
        }
    } else if (item->identical_ok) {
        settle_identical(s, item);
        if (item->final) return;
    }
    if (item->identical_ok)
        item_reject(item, STORE_EEXIST, STORE_FAIL_EXISTS,
                    "another upload with the same UIDs but other bytes was stored first: the instance %s of series %s "
                    "in study %s; delete it to store this one", r->sop_instance_uid, r->series_uid, r->study_uid);
    else
        item_reject(item, STORE_EEXIST, STORE_FAIL_EXISTS,
                    "the instance %s of series %s in study %s is already stored; delete it first",
                    r->sop_instance_uid, r->series_uid, r->study_uid);
}

store_item *store_upload_finish(store_upload *up, const store_ingest_opts *o)
{
    store_item *item = calloc(1, sizeof *item);
    if (!item) abort();
    item->size = up->size;
    memcpy(item->tmp, up->path, sizeof item->tmp);
    snprintf(item->partition, sizeof item->partition, "%s", o && o->partition ? o->partition : STORE_DEFAULT_PARTITION);
    store_t *s = up->store;
    store_status failed = up->failed;
    /* Start writing a large upload's bytes to the disk now, while it is parsed and the
     * group gathers: the commit's sync then finds them written (I/O beside CPU). */
    if (!failed && up->size >= WRITEBACK_MIN) sync_file_range(up->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    if (failed)
        item_reject(item, failed, STORE_FAIL_PROCESSING, "the upload could not be written to the archive's disk%s",
                    failed == STORE_ENOSPC ? ": the disk is full" : "");
    else {
        uint32_t crc;
        prepare(s, item, up->fd, upload_crc(up, &crc) ? &crc : NULL, o);
    }
    /* Items keep no descriptor: a STOW of thousands of parts must not run out of them. */
    close(up->fd);
    free(up);
    upload_done(s);
    item->identical_ok = o && o->identical_ok;
    store_item_settle(s, item);
    return item;
}

/* ---- Conveniences ----------------------------------------------------------------- */

static void take_result(store_item *item, store_ingest_result *out)
{
    *out = item->result;
    item->result.failed_attributes = NULL;
    store_item_free(item);
}

store_status store_ingest_fd(store_t *s, int fd, const store_ingest_opts *o, store_ingest_result *out)
{
    memset(out, 0, sizeof *out);
    store_err err;
    store_upload *up = store_upload_begin(s, &err);
    if (!up) {
        out->status = err.status;
        out->failure_reason = STORE_FAIL_PROCESSING;
        snprintf(out->message, sizeof out->message, "%s", err.msg);
        return out->status;
    }
    store_upload_copy_fd(up, fd);
    store_item *item = store_upload_finish(up, o);
    store_commit(s, &item, 1);
    take_result(item, out);
    return out->status;
}

store_status store_ingest_path(store_t *s, const char *path, const store_ingest_opts *o, store_ingest_result *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        memset(out, 0, sizeof *out);
        out->status = STORE_EINVAL;
        out->failure_reason = STORE_FAIL_PROCESSING;
        snprintf(out->message, sizeof out->message, "cannot open %s: %s", path, strerror(errno));
        return out->status;
    }
    store_status st = store_ingest_fd(s, fd, o, out);
    close(fd);
    return st;
}
