/* store_delete.c — deleting, "latest wins" study attributes, the change feed's derived
 * state, and crash repair of half-done commits. */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

#define STUDY "1.2.3.100"
#define SERIES_A "1.2.3.100.1"
#define SERIES_B "1.2.3.100.2"

static void ingest_variant(store_t *s, const char *name, const char *series, const char *sop, const char *extra)
{
    char args[512];
    snprintf(args, sizeof args, "-m '(0020,000D)=" STUDY "' -m '(0020,000E)=%s' -m '(0008,0018)=%s' %s", series, sop,
             extra ? extra : "");
    store_ingest_result r = test_ingest(s, test_make("CT_small.dcm", name, args), NULL);
    CHECK(r.status == STORE_OK, "%s stored: %s", name, r.message);
    store_ingest_result_clear(&r);
}

static char *changes(store_t *s)
{
    store_changefeed_query q = {.api_version = 1, .offset = 0, .limit = 100, .include_metadata = false};
    char *json = NULL;
    store_changefeed(s, &q, &json, NULL);
    return json;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

static void latest_instance_decides_study_attributes(store_t *s)
{
    ingest_variant(s, "a1.dcm", SERIES_A, "1.2.3.100.1.1", "-m '(0010,0010)=Older^Name' -m '(0008,0060)=CT'");
    ingest_variant(s, "b1.dcm", SERIES_B, "1.2.3.100.2.1", "-m '(0010,0010)=Newer^Name' -m '(0008,0060)=MR'");
    CHECK(test_find_count(s, STORE_LEVEL_STUDY, "PatientName", "Newer^Name") == 1, "the newest instance's name is searchable");
    CHECK(test_find_count(s, STORE_LEVEL_STUDY, "PatientName", "Older^Name") == 0, "the older name no longer matches");
    CHECK(test_find_count(s, STORE_LEVEL_STUDY, "ModalitiesInStudy", "MR") == 1, "ModalitiesInStudy has MR");
    CHECK(test_find_count(s, STORE_LEVEL_STUDY, "ModalitiesInStudy", "CT") == 1, "ModalitiesInStudy has CT");
}

static void deleting_the_newest_instance_restores_the_previous_attributes(store_t *s)
{
    size_t n = 0;
    CHECK(store_delete(s, NULL, STUDY, SERIES_B, "1.2.3.100.2.1", &n, NULL) == STORE_OK && n == 1, "instance deleted");
    CHECK(test_find_count(s, STORE_LEVEL_STUDY, "PatientName", "Older^Name") == 1, "the study's name is the remaining instance's");
    CHECK(test_find_count(s, STORE_LEVEL_STUDY, "ModalitiesInStudy", "MR") == 0, "MR left ModalitiesInStudy with its series");
    CHECK(test_find_count(s, STORE_LEVEL_SERIES, "SeriesInstanceUID", SERIES_B) == 0, "the emptied series is gone");
    char *json = changes(s);
    CHECK(json && count(json, "\"action\":\"delete\"") == 1, "one delete entry in the change feed");
    CHECK(json && count(json, "\"state\":\"deleted\"") == 2, "the create and the delete entry both say deleted");
    CHECK(json && count(json, "\"state\":\"current\"") == 1, "the remaining instance's entry is current");
    free(json);
}

static void deleted_instance_can_be_stored_again(store_t *s)
{
    ingest_variant(s, "b1again.dcm", SERIES_B, "1.2.3.100.2.1", "-m '(0008,0060)=MR'");
    char *json = changes(s);
    CHECK(json && count(json, "\"state\":\"replaced\"") == 2, "entries of the earlier version now say replaced");
    free(json);
}

static void deleting_a_study_removes_everything(store_t *s)
{
    size_t n = 0;
    store_instance *in = NULL;
    size_t ni = 0;
    store_instances(s, NULL, STUDY, NULL, NULL, &in, &ni, NULL);
    CHECK(store_delete(s, NULL, STUDY, NULL, NULL, &n, NULL) == STORE_OK && n == 2, "study deleted (%zu)", n);
    CHECK(test_find_count(s, STORE_LEVEL_STUDY, NULL, NULL) == 0, "no study left");
    CHECK(test_find_count(s, STORE_LEVEL_INSTANCE, NULL, NULL) == 0, "no instance left");
    for (size_t i = 0; i < ni; i++) {
        struct stat sb;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", store_dir(s), in[i].object);
        CHECK(stat(p, &sb) != 0, "object file %s is removed", in[i].object);
    }
    free(in);
    char *json = NULL, etag[64];
    size_t len;
    CHECK(store_metadata(s, NULL, STUDY, NULL, NULL, &json, &len, etag, NULL) == STORE_ENOTFOUND, "metadata is not found");
    CHECK(store_delete(s, NULL, STUDY, NULL, NULL, &n, NULL) == STORE_ENOTFOUND, "deleting again is not found");
    CHECK(store_delete(s, NULL, "1.2.x", NULL, NULL, &n, NULL) == STORE_EINVAL, "a bad UID is invalid");
    int64_t head = store_changefeed_head(s);
    CHECK(head == 6, "one sequence per change, none reused: head %lld", (long long)head);
}

/* A commit that died after renaming its objects but before COMMIT leaves objects that
 * no row names, and the process's tmp/<id>.open (made before its first rename). Opening
 * the archive alone then compares objects/ with the index and removes them. */
static int count_in_tmp(const char *dir, const char *suffix)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/tmp", dir);
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        size_t a = strlen(e->d_name), b = strlen(suffix);
        if (a > b && strcmp(e->d_name + a - b, suffix) == 0) n++;
    }
    if (d) closedir(d);
    return n;
}

static void repair_removes_uncommitted_objects(void)
{
    store_t *s = test_archive("repair");
    ingest_variant(s, "r1.dcm", SERIES_A, "1.2.3.100.1.9", NULL);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", store_dir(s));
    CHECK(count_in_tmp(dir, ".open") == 1, "a process that stored something has its .open mark");
    store_close(s);
    CHECK(count_in_tmp(dir, ".open") == 0, "a clean close removes it");

    char orphan[4200], pending[4200], part[4200];
    snprintf(orphan, sizeof orphan, "%s/objects/ab/abababababababababababababababab.dcm", dir);
    snprintf(pending, sizeof pending, "%s/tmp/0123456789abcdef.open", dir);
    snprintf(part, sizeof part, "%s/tmp/dead.part", dir);
    FILE *f = fopen(orphan, "w");
    fputs("half", f);
    fclose(f);
    f = fopen(pending, "w"); /* left by a process that did not close the archive */
    fclose(f);
    f = fopen(part, "w");
    fputs("partial upload", f);
    fclose(f);

    store_err err;
    s = store_open(dir, 0, &err);
    CHECK(s != NULL, "archive reopens");
    struct stat sb;
    CHECK(stat(orphan, &sb) != 0, "the uncommitted object is removed");
    CHECK(stat(pending, &sb) != 0 && stat(part, &sb) != 0, "temp files are removed");
    store_fsck_report r;
    CHECK(store_fsck(s, false, NULL, NULL, &r, NULL) == STORE_OK && r.instances == 1, "fsck is clean, the instance kept");

    /* An orphan after a clean close (say, a copy made by hand) is left to fsck. */
    f = fopen(orphan, "w");
    fputs("stray", f);
    fclose(f);
    store_close(s);
    s = store_open(dir, 0, &err);
    CHECK(s != NULL && stat(orphan, &sb) == 0, "a clean archive's open does not scan objects/");
    /* Earlier versions' per-object markers still mean "repair". */
    snprintf(pending, sizeof pending, "%s/tmp/abababababababababababababababab.pending", dir);
    f = fopen(pending, "w");
    fclose(f);
    store_close(s);
    s = store_open(dir, 0, &err);
    CHECK(s != NULL && stat(orphan, &sb) != 0 && stat(pending, &sb) != 0, "an old .pending marker repairs too");
    f = fopen(orphan, "w");
    fputs("stray", f);
    fclose(f);
    CHECK(store_fsck(s, false, NULL, NULL, &r, NULL) == STORE_ECORRUPT && r.orphans == 1, "fsck reports the stray object");
    CHECK(store_fsck(s, true, NULL, NULL, &r, NULL) == STORE_OK && stat(orphan, &sb) != 0, "fsck --repair removes it");
    store_close(s);
}

int main(void)
{
    store_t *s = test_archive("d");
    if (!s) return 1;
    latest_instance_decides_study_attributes(s);
    deleting_the_newest_instance_restores_the_previous_attributes(s);
    deleted_instance_can_be_stored_again(s);
    deleting_a_study_removes_everything(s);
    store_fsck_report r;
    CHECK(store_fsck(s, false, NULL, NULL, &r, NULL) == STORE_OK, "fsck is clean after deletes");
    store_close(s);
    repair_removes_uncommitted_objects();
    return test_summary();
}
