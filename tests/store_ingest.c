/* store_ingest.c — the store's ingest rules (the reference's STOW-RS v1/v2 validation),
 * durability bookkeeping and precomputed data. Each block is named after its rule. */
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dcm.h" /* store/: the adapter's JSON mend */
#include "testlib.h"

#define CT_STUDY "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
#define CT_SERIES "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
#define CT_SOP "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"

static void valid_instance_is_stored_with_metadata(store_t *s)
{
    store_ingest_result r = test_ingest(s, CORPUS "/CT_small.dcm", NULL);
    CHECK(r.status == STORE_OK && r.failure_reason == 0 && r.warning_reason == 0, "CT_small stored cleanly: %d %d %s",
          r.status, r.failure_reason, r.message);
    CHECK(strcmp(r.study_uid, CT_STUDY) == 0 && strcmp(r.sop_instance_uid, CT_SOP) == 0, "result carries the UIDs");
    CHECK(r.watermark > 0, "a watermark is assigned");
    store_ingest_result_clear(&r);

    char *json = NULL, etag[64];
    size_t len;
    CHECK(store_metadata(s, NULL, CT_STUDY, NULL, NULL, &json, &len, etag, NULL) == STORE_OK, "study metadata found");
    CHECK(json && json[0] == '[' && strstr(json, "\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"CompressedSamples^CT1\"}]}"),
          "metadata holds PatientName as DICOM JSON");
    CHECK(json && !strstr(json, "\"7FE00010\""), "metadata leaves out PixelData");
    CHECK(json && !strstr(json, "\"00020010\""), "metadata leaves out the file meta group");
    CHECK(strchr(etag, '-') != NULL, "a study ETag is watermark-count: %s", etag);
    free(json);

    store_instance *in = NULL;
    size_t n = 0;
    CHECK(store_instances(s, NULL, CT_STUDY, CT_SERIES, CT_SOP, &in, &n, NULL) == STORE_OK && n == 1, "instance listed");
    if (n == 1) {
        CHECK(strcmp(in[0].transfer_syntax, "1.2.840.10008.1.2.1") == 0, "transfer syntax recorded: %s", in[0].transfer_syntax);
        int fd = store_open_object(s, &in[0]);
        CHECK(fd >= 0, "object file opens");
        char a[4096], b[4096];
        FILE *orig = fopen(CORPUS "/CT_small.dcm", "rb");
        ssize_t na = read(fd, a, sizeof a);
        size_t nb = fread(b, 1, sizeof b, orig);
        CHECK(na > 0 && (size_t)na == nb && memcmp(a, b, nb) == 0, "stored bytes are the original bytes");
        fclose(orig);
        close(fd);
        store_range *rg = NULL;
        size_t nr = 0;
        CHECK(store_frame_ranges(s, &in[0], 1, &rg, &nr, NULL) == STORE_OK && nr == 1, "native frame 1 has one range");
        if (nr == 1) {
            /* Explicit VR: (7FE0,0010) "OW" 00 00 length, then the frame. */
            unsigned char h[12];
            int f2 = store_open_object(s, &in[0]);
            bool ok = pread(f2, h, 12, (off_t)rg[0].offset - 12) == 12;
            close(f2);
            CHECK(ok && rg[0].length == 128 * 128 * 2 && memcmp(h, "\xe0\x7f\x10\x00OW\0\0\x00\x80\x00\x00", 12) == 0,
                  "frame 1 follows the PixelData header (off %llu len %llu)", (unsigned long long)rg[0].offset,
                  (unsigned long long)rg[0].length);
        }
        free(rg);
        CHECK(store_frame_ranges(s, &in[0], 2, &rg, &nr, NULL) == STORE_ENOTFOUND, "frame 2 of a 1-frame instance is not found");
    }
    free(in);
}

static void duplicate_gives_45070_and_changes_nothing(store_t *s)
{
    int64_t head = store_changefeed_head(s);
    long studies = test_find_count(s, STORE_LEVEL_INSTANCE, NULL, NULL);
    store_ingest_result r = test_ingest(s, CORPUS "/CT_small.dcm", NULL);
    CHECK(r.status == STORE_EEXIST && r.failure_reason == 45070, "second copy fails with 45070: %d", r.failure_reason);
    store_ingest_result_clear(&r);
    CHECK(store_changefeed_head(s) == head, "no change-feed row for the duplicate");
    CHECK(test_find_count(s, STORE_LEVEL_INSTANCE, NULL, NULL) == studies, "instance count unchanged");
}

static void identical_ok_accepts_the_same_bytes_only(store_t *s)
{
    int64_t head = store_changefeed_head(s);
    store_ingest_opts o = {.identical_ok = true};
    store_ingest_result r = test_ingest(s, CORPUS "/CT_small.dcm", &o);
    CHECK(r.status == STORE_OK && r.already_stored && r.watermark > 0,
          "identical_ok: the same bytes again are already stored: status %d (%s)", r.status, r.message);
    store_ingest_result_clear(&r);
    CHECK(store_changefeed_head(s) == head, "identical_ok: no change-feed row for it");
    const char *other = test_make("CT_small.dcm", "ct_other.dcm", "-m \"(0010,0010)=Other^Bytes\"");
    r = test_ingest(s, other, &o);
    CHECK(r.status == STORE_EEXIST && r.failure_reason == 45070 && !r.already_stored,
          "identical_ok: other bytes under the same UIDs still fail with 45070: %d", r.failure_reason);
    CHECK(strstr(r.message, "other content") != NULL, "and say so: %s", r.message);
    store_ingest_result_clear(&r);
    CHECK(store_changefeed_head(s) == head, "identical_ok: nothing changed");
}

/* Uploads PATH and finishes it, not committed yet. */
static store_item *finished(store_t *s, const char *path, const store_ingest_opts *o)
{
    store_err err;
    store_upload *up = store_upload_begin(s, &err);
    FILE *f = fopen(path, "rb");
    if (!up || !f) abort();
    store_upload_copy_fd(up, fileno(f));
    fclose(f);
    return store_upload_finish(up, o);
}

static void copies_committed_together_are_settled_by_their_bytes(store_t *s)
{
    /* A CD copied twice into one ingest: the copies meet in one group commit, where only
     * the commit can see that they share UIDs. */
    const char *a = test_make("CT_small.dcm", "twin_a.dcm", "-m '(0008,0018)=1.2.3.4.77'");
    char a_path[2048];
    snprintf(a_path, sizeof a_path, "%s", a);
    const char *other = test_make("CT_small.dcm", "twin_c.dcm", "-m '(0008,0018)=1.2.3.4.77' -m '(0010,0010)=Other^Bytes'");
    char other_path[2048];
    snprintf(other_path, sizeof other_path, "%s", other);
    int64_t head = store_changefeed_head(s);
    store_ingest_opts o = {.identical_ok = true};
    store_item *v[3] = {finished(s, a_path, &o), finished(s, a_path, &o), finished(s, other_path, &o)};
    store_commit(s, v, 3);
    const store_ingest_result *r0 = store_item_result(v[0]), *r1 = store_item_result(v[1]), *r2 = store_item_result(v[2]);
    CHECK(r0->status == STORE_OK && !r0->already_stored, "the first copy is stored: %d %s", r0->status, r0->message);
    CHECK(r1->status == STORE_OK && r1->already_stored && r1->watermark == r0->watermark,
          "identical_ok: the same bytes in the same group are already stored: %d %s", r1->status, r1->message);
    CHECK(r2->status == STORE_EEXIST && r2->failure_reason == 45070 && strstr(r2->message, "other bytes"),
          "other bytes under the same UIDs in the same group fail 45070 and say so: %d %s", r2->failure_reason,
          r2->message);
    CHECK(store_changefeed_head(s) == head + 1, "one change-feed row for the three copies");
    for (int i = 0; i < 3; i++) store_item_free(v[i]);

    /* Without identical_ok (STOW) a copy is a duplicate, as the reference answers. */
    const char *b = test_make("CT_small.dcm", "twin_b.dcm", "-m '(0008,0018)=1.2.3.4.78'");
    store_item *w[2] = {finished(s, b, NULL), finished(s, b, NULL)};
    store_commit(s, w, 2);
    CHECK(store_item_result(w[0])->status == STORE_OK && store_item_result(w[1])->failure_reason == 45070,
          "without identical_ok the second copy of a group fails 45070: %d", store_item_result(w[1])->failure_reason);
    for (int i = 0; i < 2; i++) store_item_free(w[i]);
}

static void an_archive_is_created_only_in_a_missing_or_empty_folder(void)
{
    /* A CD's folder given where the archive belongs must stay as it was. */
    const char *cd = test_path("cd");
    char dir[2048], cmd[8192];
    snprintf(dir, sizeof dir, "%s", cd);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/CT_small.dcm' '%s/'", dir, CORPUS, dir);
    CHECK(system(cmd) == 0, "a folder with a file in it");
    store_err err = {0};
    store_t *s = store_open(dir, STORE_OPEN_CREATE, &err);
    CHECK(!s && err.status == STORE_EEXIST && strstr(err.msg, "not empty"),
          "creating an archive in a folder of other files is refused: %s", err.msg);
    store_close(s);
    snprintf(cmd, sizeof cmd, "test \"$(ls -A '%s')\" = CT_small.dcm", dir);
    CHECK(system(cmd) == 0, "and the folder is untouched (no index.db, objects/, tmp/, lock)");

    char empty[2048];
    snprintf(empty, sizeof empty, "%s", test_path("empty"));
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", empty);
    CHECK(system(cmd) == 0, "an empty folder");
    s = store_open(empty, STORE_OPEN_CREATE, &err);
    CHECK(s != NULL, "an archive is created in an empty folder: %s", s ? "" : err.msg);
    store_close(s);
    s = store_open(empty, STORE_OPEN_CREATE, &err);
    CHECK(s != NULL, "and opened again as an existing archive: %s", s ? "" : err.msg);
    store_close(s);
    s = store_open(test_path("missing/archive"), STORE_OPEN_CREATE, &err);
    CHECK(!s, "a missing parent folder is not created: %s", err.msg);
    store_close(s);

    /* A creation cut short (objects/ and tmp/ made, no index.db yet) is finished. */
    char cut[2048];
    snprintf(cut, sizeof cut, "%s", test_path("cut"));
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/objects/00' '%s/tmp' && touch '%s/lock'", cut, cut, cut);
    CHECK(system(cmd) == 0, "a folder with an archive's first entries");
    s = store_open(cut, STORE_OPEN_CREATE, &err);
    CHECK(s != NULL, "a creation cut short is completed: %s", s ? "" : err.msg);
    store_close(s);
}

static void expect_failure(store_t *s, const char *path, int reason, const char *rule, const store_ingest_opts *o)
{
    int64_t head = store_changefeed_head(s);
    store_ingest_result r = test_ingest(s, path, o);
    CHECK(r.status != STORE_OK && r.failure_reason == reason, "%s: got %d (%s)", rule, r.failure_reason, r.message);
    CHECK(r.message[0] != 0, "%s: the rejection says why", rule);
    store_ingest_result_clear(&r);
    CHECK(store_changefeed_head(s) == head, "%s: nothing was indexed", rule);
}

static void bad_input_is_rejected_with_reason(store_t *s)
{
    expect_failure(s, test_write("text.dcm", "hello, this is not DICOM at all\n", 32), 272, "text file gives 272", NULL);
    expect_failure(s, test_write("empty.dcm", "", 0), 272, "empty file gives 272", NULL);
    expect_failure(s, CORPUS "/MR_truncated.dcm", 272, "truncated file gives 272", NULL);
    expect_failure(s, test_make("CT_small.dcm", "nostudy.dcm", "-ea '(0020,000D)'"), 43264,
                   "missing StudyInstanceUID gives 43264", NULL);
    expect_failure(s, test_make("CT_small.dcm", "badsop.dcm", "-m '(0008,0018)=1.2.3a'"), 43264,
                   "SOPInstanceUID with a letter gives 43264", NULL);
    expect_failure(s, test_make("CT_small.dcm", "dotuid.dcm", "-m '(0020,000E)=1.2.3.'"), 43264,
                   "UID ending in a dot gives 43264", NULL);
    char long_uid[80];
    memset(long_uid, '1', 65);
    long_uid[65] = 0;
    char args[200];
    snprintf(args, sizeof args, "-m '(0008,0018)=%s'", long_uid);
    expect_failure(s, test_make("CT_small.dcm", "longuid.dcm", args), 43264, "65-character UID gives 43264", NULL);
    expect_failure(s, test_make("CT_small.dcm", "nopid.dcm", "-ea '(0010,0020)' -m '(0008,0018)=1.2.3.4.1'"), 43264,
                   "missing PatientID gives 43264", NULL);
    store_ingest_opts other = {.expected_study_uid = "1.2.3.4.5"};
    expect_failure(s, test_make("CT_small.dcm", "other.dcm", "-m '(0008,0018)=1.2.3.4.2'"), 43264,
                   "instance of another study than the request's gives 43264", &other);
    expect_failure(s, CORPUS "/dicomdirtests/DICOMDIR", 272, "a DICOMDIR is not an instance", NULL);
    store_ingest_result r = test_ingest(s, CORPUS "/dicomdirtests/DICOMDIR", NULL);
    CHECK(r.dicomdir, "a DICOMDIR is recognised as such");
    store_ingest_result_clear(&r);
}

static void empty_patient_id_v2_ok_v1_fails(store_t *s)
{
    const char *p = test_make("CT_small.dcm", "emptypid.dcm", "-m '(0010,0020)=' -m '(0008,0018)=1.2.3.4.3'");
    store_ingest_opts v1 = {.api_version = 1};
    expect_failure(s, p, 43264, "v1: empty PatientID gives 43264", &v1);
    store_ingest_result r = test_ingest(s, p, NULL);
    CHECK(r.status == STORE_OK, "v2: empty PatientID is accepted: %s", r.message);
    store_ingest_result_clear(&r);
}

static void expected_study_matches_ignoring_case_and_trailing_spaces(store_t *s)
{
    const char *p = test_make("CT_small.dcm", "same.dcm", "-m '(0008,0018)=1.2.3.4.4'");
    store_ingest_opts o = {.expected_study_uid = CT_STUDY "  "};
    store_ingest_result r = test_ingest(s, p, &o);
    CHECK(r.status == STORE_OK, "matching study in the request is accepted: %s", r.message);
    store_ingest_result_clear(&r);
}

static void invalid_attribute_warns_and_is_left_out(store_t *s)
{
    const char *p = test_make("CT_small.dcm", "baddate.dcm",
                              "-m '(0008,0018)=1.2.3.4.5' -m '(0020,000D)=1.2.3.4.50' -m '(0008,0020)=2020-09-22'");
    store_ingest_result r = test_ingest(s, p, NULL);
    CHECK(r.status == STORE_OK && r.warning_reason == 1, "v2: invalid StudyDate stores with warning 1 (%d)", r.warning_reason);
    CHECK(r.failed_attributes && strstr(r.failed_attributes, "DICOM100: (0008,0020)"),
          "the warning names the attribute: %s", r.failed_attributes ? r.failed_attributes : "(none)");
    store_ingest_result_clear(&r);
    char *json = NULL, etag[64];
    size_t len;
    store_metadata(s, NULL, "1.2.3.4.50", NULL, NULL, &json, &len, etag, NULL);
    CHECK(json && !strstr(json, "\"00080020\""), "the invalid StudyDate is not in the metadata");
    CHECK(json && strstr(json, "\"00100010\""), "the valid attributes are");
    free(json);
    CHECK(test_find_count(s, STORE_LEVEL_STUDY, "StudyDate", "20200922") == 0, "the invalid StudyDate is not indexed");
    CHECK(test_find_count(s, STORE_LEVEL_STUDY, "StudyInstanceUID", "1.2.3.4.50") == 1, "the study is searchable");

    store_ingest_opts v1 = {.api_version = 1};
    p = test_make("CT_small.dcm", "baddate1.dcm", "-m '(0008,0018)=1.2.3.4.6' -m '(0008,0020)=2020-09-22'");
    expect_failure(s, p, 43264, "v1: an invalid indexed attribute gives 43264", &v1);
}

static void implicit_vr_warns_45063(store_t *s)
{
    store_ingest_result r = test_ingest(s, CORPUS "/rtplan.dcm", NULL);
    CHECK(r.status == STORE_OK && r.warning_reason == 45063, "implicit VR stores with warning 45063 (%d %s)",
          r.warning_reason, r.message);
    store_ingest_result_clear(&r);
}

static void encapsulated_frames_point_at_fragments(store_t *s)
{
    store_ingest_result r = test_ingest(s, CORPUS "/SC_rgb_rle_2frame.dcm", NULL);
    CHECK(r.status == STORE_OK, "RLE 2-frame stored: %s", r.message);
    store_instance *in = NULL;
    size_t n = 0;
    store_instances(s, NULL, r.study_uid, r.series_uid, r.sop_instance_uid, &in, &n, NULL);
    CHECK(n == 1 && in[0].frames == 2, "two frames recorded");
    for (uint32_t f = 1; n == 1 && f <= 2; f++) {
        store_range *rg = NULL;
        size_t nr = 0;
        CHECK(store_frame_ranges(s, &in[0], f, &rg, &nr, NULL) == STORE_OK && nr == 1, "RLE frame %u has one fragment", f);
        if (nr == 1) {
            /* An RLE fragment starts with its 64-byte header: 3 segments for RGB. */
            unsigned char hdr[8] = {0};
            int fd = store_open_object(s, &in[0]);
            CHECK(pread(fd, hdr, 8, (off_t)rg[0].offset) == 8 && hdr[0] == 3 && hdr[1] == 0 && hdr[4] == 64,
                  "frame %u begins with an RLE header", f);
            close(fd);
        }
        free(rg);
    }
    free(in);
    store_ingest_result_clear(&r);

    r = test_ingest(s, CORPUS "/JPEG-lossy.dcm", NULL);
    in = NULL;
    n = 0;
    store_instances(s, NULL, r.study_uid, r.series_uid, r.sop_instance_uid, &in, &n, NULL);
    store_range *rg = NULL;
    size_t nr = 0;
    if (n == 1 && store_frame_ranges(s, &in[0], 1, &rg, &nr, NULL) == STORE_OK && nr >= 1) {
        unsigned char soi[2];
        int fd = store_open_object(s, &in[0]);
        CHECK(pread(fd, soi, 2, (off_t)rg[0].offset) == 2 && soi[0] == 0xFF && soi[1] == 0xD8, "a JPEG frame starts with SOI");
        close(fd);
    } else {
        CHECK(0, "JPEG-lossy frame 1 has ranges");
    }
    free(rg);
    free(in);
    store_ingest_result_clear(&r);
}

static void charset_is_converted_to_utf8(store_t *s)
{
    store_ingest_result r = test_ingest(s, "/usr/lib/python3/dist-packages/pydicom/data/charset_files/chrGerm.dcm", NULL);
    CHECK(r.status == STORE_OK, "chrGerm stored: %s", r.message);
    char *json = NULL, etag[64];
    size_t len;
    store_metadata(s, NULL, r.study_uid, NULL, NULL, &json, &len, etag, NULL);
    CHECK(json && strstr(json, "\xc3\x84neas^R\xc3\xbc" "diger"), "Latin-1 name is UTF-8 in the metadata");
    CHECK(json && strstr(json, "ISO_IR 192"), "SpecificCharacterSet says UTF-8");
    free(json);
    CHECK(test_find_count(s, STORE_LEVEL_STUDY, "PatientName", "aneas^rudiger") == 1, "accents and case are ignored in matching");
    store_ingest_result_clear(&r);
}

/* Each row keeps its object's CRC-32 for fsck, taken as the bytes arrive when they come in
 * order and read back when they do not: both must be the bytes' own. */
static void checksum_is_the_bytes_however_they_were_written(store_t *s)
{
    const char *path = test_make("CT_small.dcm", "crc.dcm", NULL);
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) abort();
    static unsigned char bytes[1 << 20];
    size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    size_t len = strlen(CT_SOP), at[2];
    int found = 0;
    for (unsigned char *p = bytes; found < 2 && (p = memmem(p, n - (size_t)(p - bytes), CT_SOP, len)); p++)
        at[found++] = (size_t)(p - bytes);
    CHECK(found == 2, "the SOP Instance UID is found in the file meta and the data set");
    if (found != 2) return;
    for (int how = 0; how < 4; how++) {
        for (int k = 0; k < 2; k++) bytes[at[k] + len - 1] = (unsigned char)('3' + how); /* another instance */
        store_upload *up = store_upload_begin(s, NULL);
        if (!up) abort();
        size_t half = n / 2;
        if (how == 0) { /* in order, in small pieces (a STOW body, cp into the mount) */
            for (size_t off = 0; off < n; off += 1000) store_upload_write(up, bytes + off, n - off < 1000 ? n - off : 1000);
        } else if (how == 1) { /* the second half first */
            store_upload_pwrite(up, bytes + half, n - half, half);
            store_upload_pwrite(up, bytes, half, 0);
        } else if (how == 2) { /* too much, then truncated back */
            store_upload_write(up, bytes, n);
            store_upload_write(up, "junk", 4);
            store_upload_truncate(up, n);
        } else { /* rewritten in place */
            store_upload_write(up, bytes, n);
            store_upload_pwrite(up, bytes, 16, 0);
        }
        store_item *item = store_upload_finish(up, NULL);
        store_commit(s, &item, 1);
        CHECK(store_item_result(item)->status == STORE_OK, "upload %d is stored: %s", how, store_item_result(item)->message);
        store_item_free(item);
    }
    store_fsck_report rep;
    CHECK(store_fsck(s, false, NULL, NULL, &rep, NULL) == STORE_OK && rep.missing == 0,
          "fsck finds every checksum right (%zu wrong)", rep.missing);
}

/* The number at "TAG" Value[0] of the first object of the DICOM JSON array TEXT (NAN when
 * the text is not JSON or the value no number). */
static double json_number_at(const char *text, const char *tag, const char *inner)
{
    json_t *all = text ? json_loads(text, 0, NULL) : NULL;
    json_t *e = json_object_get(json_array_get(all, 0), tag);
    if (inner) e = json_object_get(json_array_get(json_object_get(e, "Value"), 0), inner);
    json_t *v = json_array_get(json_object_get(e, "Value"), 0);
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    json_decref(all);
    return d;
}

static int count_row(void *ctx, int n, char **values, char **names)
{
    (void)names;
    *(int *)ctx = n > 0 && values[0] ? atoi(values[0]) : -1;
    return 0;
}

static bool mends_to(const char *text, const char *want)
{
    size_t n = 0;
    char *got = dcm_json_mend_decimals(text, strlen(text), &n);
    bool ok = want ? got && n == strlen(want) && strcmp(got, want) == 0 : !got;
    if (!ok) printf("  mend of %s gave %s\n", text, got ? got : "(nothing)");
    free(got);
    return ok;
}

static void decimals_with_a_bare_dot_are_json_numbers(void)
{
    CHECK(mends_to("{\"1\":{\"vr\":\"DS\",\"Value\":[5.,1.e5,-e2,null,0.5,\"x.,e\\\"]\",e2]}}",
                   "{\"1\":{\"vr\":\"DS\",\"Value\":[5,1e5,-0e2,null,0.5,\"x.,e\\\"]\",0e2]}}"),
          "the mend fixes numbers only, never a string");
    CHECK(mends_to("{\"1\":{\"vr\":\"DS\",\"Value\":[5.5,-0.5]},\"2\":{\"vr\":\"FD\",\"Value\":[5.]}}", NULL),
          "valid DS values and other VRs are left alone");
    CHECK(mends_to("{\"1\":{\"vr\":\"DS\",\"Value\":[5.", "{\"1\":{\"vr\":\"DS\",\"Value\":[5"),
          "a text cut short is mended as far as it goes");

    /* DS allows "5." and "1.e5"; DCMTK 3.6.7 writes them as the JSON numbers 5. and 1.e5,
     * which no JSON parser takes: the metadata, the QIDO answers that carry the value
     * (PatientWeight with includefield=all), and what an older dicomfs stored. */
    const char *p = test_make("CT_small.dcm", "dot.dcm",
                              "-m '(0008,0018)=1.2.3.4.70' -m '(0020,000D)=1.2.3.4.71' -m '(0018,0050)=5.' "
                              "-i '(0010,1030)=70.' -i '(0010,1020)=-0001.E0' -i '(0008,1140)[0].(0018,0088)=3.' "
                              "-i '(3004,000E)=0e-6' -i '(0028,0030)=-0E2\\00.e1'");
    store_t *s = test_archive("dot");
    store_ingest_result r = test_ingest(s, p, NULL);
    CHECK(r.status == STORE_OK && r.warning_reason == 0, "DS 5. is valid and stored cleanly: %d %s", r.status,
          r.message);
    store_ingest_result_clear(&r);
    char *json = NULL, etag[64];
    size_t len;
    store_metadata(s, NULL, "1.2.3.4.71", NULL, NULL, &json, &len, etag, NULL);
    CHECK(json_number_at(json, "00180050", NULL) == 5, "SliceThickness 5. is the JSON number 5: %s",
          json ? strstr(json, "\"00180050\"") : "(none)");
    CHECK(json_number_at(json, "00101020", NULL) == -1, "PatientSize -0001.E0 is -1");
    CHECK(json_number_at(json, "00081140", "00180088") == 3, "3. inside a sequence is 3");
    CHECK(json_number_at(json, "3004000E", NULL) == 0, "DoseGridScaling 0e-6 (DCMTK: e-6) is 0: %s",
          json ? strstr(json, "\"3004000E\"") : "(none)");
    CHECK(json_number_at(json, "00280030", NULL) == 0, "PixelSpacing -0E2 (DCMTK: -E2) is 0");
    free(json);
    store_param all = {"includefield", "all"};
    store_query q = {.level = STORE_LEVEL_STUDY, .params = &all, .n_params = 1};
    store_find_result fr = {0};
    CHECK(store_find(s, &q, &fr, NULL) == STORE_OK && json_number_at(fr.json, "00101030", NULL) == 70,
          "QIDO with includefield=all has PatientWeight 70: %s", fr.json ? fr.json : "(none)");
    store_find_result_clear(&fr);
    store_close(s);

    /* What an older dicomfs stored: the DCMTK text, unmended. The first writable open
     * mends it, once. */
    char db_path[4096];
    snprintf(db_path, sizeof db_path, "%s/index.db", test_path("dot"));
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(db_path, &db) == SQLITE_OK &&
              sqlite3_exec(db,
                           "UPDATE metadata SET json=replace(replace(json, '\"DS\",\"Value\":[5]', '\"DS\",\"Value\":[5.]'),"
                           "  '\"DS\",\"Value\":[-1E0]', '\"DS\",\"Value\":[-1.E0]');"
                           "UPDATE metadata SET json=replace(json, '\"DS\",\"Value\":[0e-6]', '\"DS\",\"Value\":[e-6]');"
                           "UPDATE metadata SET json=CAST(json AS BLOB);" /* as the store writes it */
                           "UPDATE instance SET attrs=replace(attrs, '\"DS\",\"Value\":[70]', '\"DS\",\"Value\":[70.]');"
                           "DELETE FROM meta WHERE key='json_decimals'",
                           NULL, NULL, NULL) == SQLITE_OK && sqlite3_changes(db) == 1,
          "the index is made to look as an older dicomfs left it");
    sqlite3_close(db);
    s = store_open(test_path("dot"), 0, NULL);
    CHECK(s != NULL, "the older archive opens");
    int text_rows = -1;
    CHECK(sqlite3_open(db_path, &db) == SQLITE_OK &&
              sqlite3_exec(db, "SELECT count(*) FROM metadata WHERE typeof(json) != 'blob'", count_row, &text_rows,
                           NULL) == SQLITE_OK &&
              text_rows == 0,
          "the mended metadata is a blob still (%d rows are not)", text_rows);
    sqlite3_close(db);
    json = NULL;
    if (s) store_metadata(s, NULL, "1.2.3.4.71", NULL, NULL, &json, &len, etag, NULL);
    CHECK(json_number_at(json, "00180050", NULL) == 5 && json_number_at(json, "00101020", NULL) == -1 &&
              json_number_at(json, "3004000E", NULL) == 0,
          "its metadata is mended: %s", json ? json : "(none)");
    free(json);
    fr = (store_find_result){0};
    CHECK(s && store_find(s, &q, &fr, NULL) == STORE_OK && json_number_at(fr.json, "00101030", NULL) == 70,
          "its QIDO attributes are mended: %s", fr.json ? fr.json : "(none)");
    store_find_result_clear(&fr);
    store_fsck_report rep;
    CHECK(s && store_fsck(s, false, NULL, NULL, &rep, NULL) == STORE_OK, "fsck is clean after the mending");
    store_close(s);
}

int main(void)
{
    store_t *s = test_archive("a");
    if (!s) return 1;
    valid_instance_is_stored_with_metadata(s);
    duplicate_gives_45070_and_changes_nothing(s);
    identical_ok_accepts_the_same_bytes_only(s);
    bad_input_is_rejected_with_reason(s);
    empty_patient_id_v2_ok_v1_fails(s);
    expected_study_matches_ignoring_case_and_trailing_spaces(s);
    invalid_attribute_warns_and_is_left_out(s);
    implicit_vr_warns_45063(s);
    encapsulated_frames_point_at_fragments(s);
    charset_is_converted_to_utf8(s);
    copies_committed_together_are_settled_by_their_bytes(s);
    checksum_is_the_bytes_however_they_were_written(s);
    decimals_with_a_bare_dot_are_json_numbers();

    store_fsck_report rep;
    CHECK(store_fsck(s, false, NULL, NULL, &rep, NULL) == STORE_OK, "fsck is clean after all of the above");
    store_close(s);
    an_archive_is_created_only_in_a_missing_or_empty_folder();
    return test_summary();
}
