/* store_xqt.c — extended query tags through the store's API: the reference's rules for
 * adding them, the reindex of instances stored before (and of those stored during it),
 * queries on the new tags at each level, indexing errors that disable a tag and make
 * re-enabled queries report it, updates, deletes, operations as v1 and v2 say them, and
 * a reindex left unfinished by a closed store resumed by the next one. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "testlib.h"

#define ROOT "1.2.826.0.1.3680043.9.7777.67"

/* CT_small as study S (1 or 2), instance K, with PatientAge AGE and InstanceNumber K,
 * and the private element (0009,1001) holding TEXT under creator TESTPC. */
static const char *make(int study, int k, const char *age, const char *text)
{
    char args[900], name[64];
    snprintf(args, sizeof args,
             "-m \"(0020,000d)=" ROOT ".%d\" -m \"(0020,000e)=" ROOT ".%d.1\" -m \"(0008,0018)=" ROOT ".%d.1.%d\""
             " -m \"(0010,1010)=%s\" -m \"(0020,0013)=%d\" -i \"(0009,0010)=TESTPC\" -i \"(0009,1001)=%s\"",
             study, study, study, k, age, k, text);
    snprintf(name, sizeof name, "s%d_%d.dcm", study, k);
    return test_make("CT_small.dcm", name, args);
}

static void ingest(store_t *s, int study, int k, const char *age, const char *text)
{
    const char *path = make(study, k, age, text);
    store_ingest_result r = test_ingest(s, path ? path : "/nonexistent", NULL);
    CHECK(r.status == STORE_OK, "instance %d.%d stored: %s", study, k, r.message ? r.message : "");
    store_ingest_result_clear(&r);
}

static store_status add(store_t *s, const char *json, char id[33], char why[512])
{
    store_err err = {0};
    store_status st = store_xqt_add(s, json, strlen(json), id, &err);
    snprintf(why, 512, "%s", st == STORE_OK ? "" : err.msg);
    return st;
}

static void refused(store_t *s, const char *json, store_status want, const char *reason)
{
    char id[33], why[512];
    store_status st = add(s, json, id, why);
    CHECK(st == want && strstr(why, reason), "%s is refused (%d) saying '%s': %d %s", json, want, reason, st, why);
}

static char *tag_json(store_t *s, const char *path)
{
    char *json = NULL;
    store_err err = {0};
    store_status st = store_xqt_get(s, path, "", &json, &err);
    CHECK(st == STORE_OK, "get %s: %s", path, err.msg);
    return json;
}

static void rules_of_adding(store_t *s)
{
    refused(s, "[{\"path\":\"PatientName\",\"level\":\"study\"}]", STORE_EINVAL, "The query tag 'PatientName' is already supported.");
    refused(s, "[]", STORE_EINVAL, "no extended query tags");
    refused(s, "{\"path\":\"PatientAge\"}", STORE_EINVAL, "must be a JSON array");
    refused(s, "[{\"path\":\"PatientAge\"", STORE_EINVAL, "not valid JSON");
    refused(s, "[{\"path\":\"PatientAge\",\"level\":\"study\"},{\"path\":\"00101010\",\"level\":\"study\"}]", STORE_EINVAL,
            "given more than once");
    refused(s, "[{\"path\":\"NoSuchKeyword\",\"level\":\"study\"}]", STORE_EINVAL, "not a tag");
    refused(s, "[{\"path\":\"00101002.00100020\",\"level\":\"study\"}]", STORE_EINVAL, "not a tag");
    refused(s, "[{\"path\":\"ReferencedSOPSequence\",\"level\":\"instance\"}]", STORE_EINVAL, "sequence");
    refused(s, "[{\"path\":\"PatientAge\",\"vr\":\"LO\",\"level\":\"study\"}]", STORE_EINVAL, "does not match");
    refused(s, "[{\"path\":\"PatientComments\",\"level\":\"study\"}]", STORE_EINVAL, "not allowed");
    refused(s, "[{\"path\":\"PatientAge\"}]", STORE_EINVAL, "needs a level");
    refused(s, "[{\"path\":\"PatientAge\",\"level\":\"patient\"}]", STORE_EINVAL, "needs a level");
    refused(s, "[{\"path\":\"00091001\",\"vr\":\"LO\",\"level\":\"instance\"}]", STORE_EINVAL, "needs a privateCreator");
    refused(s, "[{\"path\":\"00091001\",\"privateCreator\":\"TESTPC\",\"level\":\"instance\"}]", STORE_EINVAL, "needs a vr");
    refused(s, "[{\"path\":\"00090010\",\"vr\":\"LO\",\"privateCreator\":\"X\",\"level\":\"instance\"}]", STORE_EINVAL,
            "private creator element");
    refused(s, "[{\"path\":\"PatientAge\",\"privateCreator\":\"X\",\"level\":\"study\"}]", STORE_EINVAL,
            "cannot have a privateCreator");
    char many[20000] = "[";
    for (int i = 0; i < 129; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s{\"path\":\"0009%04X\",\"vr\":\"LO\","
                 "\"privateCreator\":\"P\",\"level\":\"instance\"}", i ? "," : "", 0x1100 + i);
    strcat(many, "]");
    refused(s, many, STORE_EINVAL, "At most 128");
}

static long count(store_t *s, store_level level, const char *key, const char *value)
{
    return test_find_count(s, level, key, value);
}

static void reindex_and_search(store_t *s)
{
    char id[33], why[512];
    /* study level (AS), instance level (IS), and a private SL of CT_small's own. */
    const char *json = "[{\"path\":\"PatientAge\",\"level\":\"study\"},{\"path\":\"00200013\",\"level\":\"Instance\"},"
                       "{\"path\":\"00091027\",\"vr\":\"SL\",\"privateCreator\":\"TESTPC\",\"level\":\"instance\"}]";
    CHECK(add(s, json, id, why) == STORE_OK && strlen(id) == 32, "three tags added, operation %s: %s", id, why);
    char id2[33];
    refused(s, "[{\"path\":\"PatientAge\",\"level\":\"study\"}]", STORE_EEXIST, "");
    (void)id2;
    store_err err = {0};
    CHECK(store_operations_wait(s, 20000, &err) == STORE_OK, "the reindex finishes: %s", err.msg);
    char *op = NULL;
    bool finished = false;
    CHECK(store_operation(s, id, 2, "/v2", &op, &finished, &err) == STORE_OK && finished && strstr(op, "\"succeeded\"") &&
              strstr(op, "\"percentComplete\":100") && strstr(op, "/v2/extendedquerytags/00101010"),
          "v2 operation: succeeded, 100%%, resources: %s", op ? op : err.msg);
    free(op);
    op = NULL;
    CHECK(store_operation(s, id, 1, "", &op, &finished, &err) == STORE_OK && strstr(op, "\"completed\""),
          "v1 says completed: %s", op ? op : err.msg);
    free(op);
    char hyphens[40];
    snprintf(hyphens, sizeof hyphens, "%.8s-%.4s-%.4s-%.4s-%.12s", id, id + 8, id + 12, id + 16, id + 20);
    op = NULL;
    CHECK(store_operation(s, hyphens, 2, "", &op, &finished, &err) == STORE_OK, "a GUID with hyphens names it too");
    free(op);
    CHECK(store_operation(s, "0123456789abcdef0123456789abcdef", 2, "", &op, &finished, &err) == STORE_ENOTFOUND,
          "an unknown operation: not found");
    CHECK(store_operation(s, "xyz", 2, "", &op, &finished, &err) == STORE_EINVAL, "a malformed id: invalid");

    char *t = tag_json(s, "PatientAge");
    CHECK(t && strstr(t, "\"status\":\"ready\"") && strstr(t, "\"queryStatus\":\"enabled\"") &&
              strstr(t, "\"level\":\"study\"") && strstr(t, "\"vr\":\"AS\"") && !strstr(t, "operation"),
          "PatientAge is ready and enabled: %s", t);
    free(t);
    t = tag_json(s, "00091027");
    CHECK(t && strstr(t, "\"privateCreator\":\"TESTPC\""), "the private tag keeps its creator: %s", t);
    free(t);

    CHECK(count(s, STORE_LEVEL_STUDY, "PatientAge", "042Y") == 1, "PatientAge=042Y finds study 1 (reindexed)");
    CHECK(count(s, STORE_LEVEL_STUDY, "00101010", "051Y") == 1, "00101010=051Y finds study 2");
    CHECK(count(s, STORE_LEVEL_STUDY, "PatientAge", "099Y") == 0, "PatientAge=099Y finds nothing");
    CHECK(count(s, STORE_LEVEL_INSTANCE, "InstanceNumber", "2") == 1, "InstanceNumber=2 finds one instance");
    CHECK(count(s, STORE_LEVEL_INSTANCE, "00091027", "862399669") == 3, "the private SL finds all three");
    CHECK(count(s, STORE_LEVEL_SERIES, "PatientAge", "042Y") == 1, "a study tag filters series too");

    /* stored after the tags exist: indexed at commit */
    ingest(s, 1, 4, "042Y", "abc");
    CHECK(count(s, STORE_LEVEL_INSTANCE, "InstanceNumber", "4") == 1, "an instance stored later is found by InstanceNumber");

    /* includefield returns the new tag */
    store_param p[2] = {{"InstanceNumber", "2"}, {"includefield", "PatientAge"}};
    store_query q = {.level = STORE_LEVEL_INSTANCE, .params = p, .n_params = 2};
    store_find_result r = {0};
    CHECK(store_find(s, &q, &r, &err) == STORE_OK && r.count == 1 && strstr(r.json, "\"00101010\"") &&
              strstr(r.json, "042Y") && !r.erroneous[0],
          "includefield=PatientAge returns it: %s", r.json ? r.json : err.msg);
    store_find_result_clear(&r);

    char *list = NULL;
    CHECK(store_xqt_list(s, 0, 100, "", &list, &err) == STORE_OK && strstr(list, "00101010") && strstr(list, "00200013"),
          "list has the tags: %s", list);
    free(list);
    CHECK(store_xqt_list(s, 0, 201, "", &list, &err) == STORE_EINVAL, "limit 201 refused");
}

static void errors_disable_and_mark(store_t *s)
{
    char id[33], why[512];
    /* (0009,1001) holds "abc" / "12": as SS only "12" can be indexed. */
    CHECK(add(s, "[{\"path\":\"00091001\",\"vr\":\"SS\",\"privateCreator\":\"TESTPC\",\"level\":\"instance\"}]", id, why) ==
              STORE_OK, "private SS tag added: %s", why);
    store_err err = {0};
    CHECK(store_operations_wait(s, 20000, &err) == STORE_OK, "its reindex finishes");
    char *t = tag_json(s, "00091001");
    CHECK(t && strstr(t, "\"queryStatus\":\"disabled\"") && strstr(t, "\"errors\":{\"count\":3"),
          "three values could not be indexed: disabled, errors counted: %s", t);
    free(t);
    char *errs = NULL;
    CHECK(store_xqt_errors(s, "00091001", 0, 100, &errs, &err) == STORE_OK && strstr(errs, "\"sopInstanceUid\":\"" ROOT) &&
              strstr(errs, "cannot be indexed as SS") && strstr(errs, "createdTime"),
          "the errors name the instances: %s", errs ? errs : err.msg);
    free(errs);
    CHECK(count(s, STORE_LEVEL_INSTANCE, "00091001", "12") < 0, "a disabled tag cannot be queried");
    char *out = NULL;
    const char *enable = "{\"QueryStatus\":\"Enabled\"}";
    CHECK(store_xqt_update(s, "00091001", enable, strlen(enable), "", &out, &err) == STORE_OK &&
              strstr(out, "\"queryStatus\":\"enabled\""), "re-enabled: %s", out ? out : err.msg);
    free(out);
    store_param p = {"00091001", "12"};
    store_query q = {.level = STORE_LEVEL_INSTANCE, .params = &p, .n_params = 1};
    store_find_result r = {0};
    CHECK(store_find(s, &q, &r, &err) == STORE_OK && r.count == 1 && strcmp(r.erroneous, "00091001") == 0,
          "the query finds the one indexable value and reports the tag as erroneous: %zu '%s'", r.count, r.erroneous);
    store_find_result_clear(&r);
    const char *twice = "{\"QUERYSTATUS\":\"enabled\",\"queryStatus\":\"disabled\"}";
    out = NULL;
    CHECK(store_xqt_update(s, "00091001", twice, strlen(twice), "", &out, &err) == STORE_EINVAL,
          "queryStatus given twice in different cases: refused, not decided by member order");
    const char *bad = "{\"queryStatus\":\"maybe\"}";
    out = NULL;
    CHECK(store_xqt_update(s, "00091001", bad, strlen(bad), "", &out, &err) == STORE_EINVAL, "queryStatus maybe: refused");
    CHECK(store_xqt_update(s, "00101040", enable, strlen(enable), "", &out, &err) == STORE_ENOTFOUND,
          "updating a tag that is not extended: not found");
}

static void deleting(store_t *s)
{
    store_err err = {0};
    CHECK(store_xqt_delete(s, "00091001", &err) == STORE_OK, "delete: %s", err.msg);
    char *json = NULL;
    CHECK(store_xqt_get(s, "00091001", "", &json, &err) == STORE_ENOTFOUND, "gone");
    CHECK(store_xqt_errors(s, "00091001", 0, 10, &json, &err) == STORE_ENOTFOUND, "its errors are gone with it");
    CHECK(count(s, STORE_LEVEL_INSTANCE, "00091001", "12") < 0, "no longer searchable");
    CHECK(store_xqt_delete(s, "00091001", &err) == STORE_ENOTFOUND, "a second delete: not found");
    CHECK(store_xqt_delete(s, "Nope", &err) == STORE_EINVAL, "a bad path: invalid");
    char id[33], why[512];
    CHECK(add(s, "[{\"path\":\"00091001\",\"vr\":\"LO\",\"privateCreator\":\"TESTPC\",\"level\":\"instance\"}]", id, why) ==
              STORE_OK, "added again as LO: %s", why);
    CHECK(store_operations_wait(s, 20000, &err) == STORE_OK && count(s, STORE_LEVEL_INSTANCE, "00091001", "ABC") == 3,
          "as LO the three 'abc' instances are found (case-insensitive)");
}

/* A private tag is the element of its creator's block, wherever the dataset reserved it:
 * another creator's element at the same tag is not it (DCMTK's dcmodify cannot write an
 * unknown private element into another block, so the moved block is not tested here). (00091001 is an LO tag of TESTPC
 * by now, see deleting().) */
static void private_creator_blocks(store_t *s)
{
    const char *other = test_make("CT_small.dcm", "other.dcm",
                                  "-m \"(0020,000d)=" ROOT ".5\" -m \"(0020,000e)=" ROOT ".5.1\" -m \"(0008,0018)=" ROOT
                                  ".5.1.1\" -m \"(0009,0010)=OTHER\" -i \"(0009,1001)=VALOTHER\"");
    store_ingest_result r = test_ingest(s, other ? other : "/nonexistent", NULL);
    CHECK(r.status == STORE_OK, "an instance whose (0009,1001) belongs to creator OTHER stored");
    store_ingest_result_clear(&r);
    CHECK(count(s, STORE_LEVEL_INSTANCE, "00091001", "VALOTHER") == 0, "another creator's (0009,1001) is not TESTPC's");
    CHECK(count(s, STORE_LEVEL_INSTANCE, "00091001", "ABC") == 3, "TESTPC's still are");
    refused(s, "[{\"path\":\"00031001\",\"vr\":\"LO\",\"privateCreator\":\"X\",\"level\":\"instance\"}]",
            STORE_EINVAL, "neither standard nor private");
    refused(s, "[{\"path\":\"00090005\",\"vr\":\"LO\",\"privateCreator\":\"X\",\"level\":\"instance\"}]",
            STORE_EINVAL, "not a private data element");
}

/* A reindex that no process could run (another holds reindex.lock, as a process that
 * died mid-reindex would have until the kernel released it) waits as notStarted; the
 * next open of the archive runs it over every instance, in several batches. */
static void resume_after_close(void)
{
    store_t *s = test_archive("resume");
    for (int k = 0; k < 300; k++) {
        char args[300], name[64];
        snprintf(args, sizeof args, "-m \"(0008,0018)=" ROOT ".9.%d\" -m \"(0020,0013)=%d\"", k, k);
        snprintf(name, sizeof name, "r%d.dcm", k);
        const char *p = test_make("CT_small.dcm", name, args);
        store_ingest_result r = test_ingest(s, p ? p : "/nonexistent", NULL);
        store_ingest_result_clear(&r);
    }
    char lock[4200];
    snprintf(lock, sizeof lock, "%s/reindex.lock", test_path("resume"));
    int fd = open(lock, O_RDWR | O_CREAT, 0644);
    CHECK(fd >= 0 && flock(fd, LOCK_EX) == 0, "the test holds reindex.lock");
    char id[33], why[512];
    CHECK(add(s, "[{\"path\":\"InstanceNumber\",\"level\":\"instance\"}]", id, why) == STORE_OK, "added: %s", why);
    char *op = NULL;
    bool finished = true;
    store_err err = {0};
    CHECK(store_operation(s, id, 2, "", &op, &finished, &err) == STORE_OK && !finished && strstr(op, "\"notStarted\""),
          "while another process holds the lock: notStarted: %s", op);
    free(op);
    CHECK(count(s, STORE_LEVEL_INSTANCE, "InstanceNumber", "7") < 0, "a tag being added cannot be queried yet");
    store_close(s);
    close(fd); /* the other process is gone */
    s = store_open(test_path("resume"), 0, &err);
    CHECK(s != NULL, "reopened: %s", err.msg);
    if (!s) return;
    CHECK(store_operations_wait(s, 60000, &err) == STORE_OK, "the reindex resumes and finishes: %s", err.msg);
    CHECK(count(s, STORE_LEVEL_INSTANCE, "InstanceNumber", "299") == 1 && count(s, STORE_LEVEL_INSTANCE, "InstanceNumber", "0") == 1,
          "the first and the last instance are indexed");
    op = NULL;
    CHECK(store_operation(s, id, 2, "", &op, &finished, &err) == STORE_OK && finished && strstr(op, "\"percentComplete\":100"),
          "finished: %s", op);
    free(op);
    store_close(s);
}

/* A series-level tag deleted and added again: an instance stored into a series after the
 * add (so not the reindex's to do) while the reindex has not yet run must still make the
 * series found by it — the crash test once found such a series missing. */
static void readded_tag_reaches_a_series_stored_meanwhile(void)
{
    store_t *s = test_archive("readd");
    const char *args = "-m \"(0020,000d)=" ROOT ".5\" -m \"(0020,000e)=" ROOT ".5.1\" -i \"(0018,1030)=PX\"";
    char a[300], b[300];
    snprintf(a, sizeof a, "%s -m \"(0008,0018)=" ROOT ".5.1.1\"", args);
    snprintf(b, sizeof b, "%s -m \"(0008,0018)=" ROOT ".5.1.2\"", args);
    const char *tag = "[{\"path\":\"ProtocolName\",\"level\":\"series\"}]";
    char id[33], why[512];
    store_err err = {0};
    CHECK(add(s, tag, id, why) == STORE_OK && store_operations_wait(s, 20000, &err) == STORE_OK, "added: %s", why);
    /* Stored with the tag in place: its commit writes the series' values and their summary. */
    const char *p = test_make("CT_small.dcm", "readd_a.dcm", a);
    store_ingest_result r = test_ingest(s, p ? p : "/nonexistent", NULL);
    CHECK(r.status == STORE_OK, "the first instance is stored: %s", r.message);
    store_ingest_result_clear(&r);
    CHECK(count(s, STORE_LEVEL_SERIES, "ProtocolName", "PX") == 1, "the series is found by the tag");
    CHECK(store_xqt_delete(s, "00181030", &err) == STORE_OK, "deleted: %s", err.msg);
    char lock[4200];
    snprintf(lock, sizeof lock, "%s/reindex.lock", test_path("readd"));
    int fd = open(lock, O_RDWR | O_CREAT, 0644);
    CHECK(fd >= 0 && flock(fd, LOCK_EX) == 0, "the test holds reindex.lock: the reindex waits");
    CHECK(add(s, tag, id, why) == STORE_OK, "added again: %s", why);
    p = test_make("CT_small.dcm", "readd_b.dcm", b);
    r = test_ingest(s, p ? p : "/nonexistent", NULL);
    CHECK(r.status == STORE_OK, "a second instance is stored into the series meanwhile: %s", r.message);
    store_ingest_result_clear(&r);
    store_close(s);
    close(fd);
    s = store_open(test_path("readd"), 0, &err);
    CHECK(s != NULL, "reopened: %s", err.msg);
    if (!s) return;
    CHECK(store_operations_wait(s, 20000, &err) == STORE_OK, "the reindex runs: %s", err.msg);
    CHECK(count(s, STORE_LEVEL_SERIES, "ProtocolName", "PX") == 1, "the series is found by the tag added again (%ld)",
          count(s, STORE_LEVEL_SERIES, "ProtocolName", "PX"));
    store_close(s);
}

int main(void)
{
    test_scratch();
    store_t *s = test_archive("xqt");
    ingest(s, 1, 1, "042Y", "abc");
    ingest(s, 1, 2, "042Y", "12");
    ingest(s, 2, 3, "051Y", "abc");
    rules_of_adding(s);
    reindex_and_search(s);
    errors_disable_and_mark(s);
    deleting(s);
    private_creator_blocks(s);
    store_fsck_report rep = {0};
    store_err err = {0};
    CHECK(store_fsck(s, false, NULL, NULL, &rep, &err) == STORE_OK && rep.bad_index == 0, "fsck clean: %zu problems, %s",
          rep.bad_index, err.msg);
    store_close(s);
    resume_after_close();
    readded_tag_reaches_a_series_stored_meanwhile();
    return test_summary();
}
