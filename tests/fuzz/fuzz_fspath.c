/* fuzz_fspath.c — the mount's paths: fs/ops.c's classification of every path FUSE hands
 * over, the /patients names (fs/names.c, fs/patients.c: resolving a name back to its
 * entry) and the /search/<level>/<query> folders (fs/search.c over store_find_refs),
 * on a small archive made once per process. No FUSE mount: ops.c's static classify()
 * is compiled into this file (#include), the modules are called as ops.c calls them.
 *
 * Input: a path ("/patients/Doe, John (P1)/20200101 Chest"). Checks:
 *   - segments are non-empty, hold no '/', and at most MAX_SEGMENTS are kept;
 *   - archive nodes carry valid UIDs; drops are under /inbox or an unreserved root name;
 *   - /patients: resolving never fails with -EIO; every name a folder lists is safe
 *     (names.h: no '/', '\' or control characters, not "." or "..", fits NAME_MAX) and
 *     resolves back to a child of that folder (names are reversible);
 *   - /search: a query folder is valid, -EINVAL with a reason, or -ENOENT (level), and
 *     each link listed in a valid one resolves with search_link;
 *   - names_clean output is safe and a fixed point (cleaning it again changes nothing). */
#include "../../fs/ops.c"

#include "fuzzlib.h"
#include "names.h"

static store_t *archive;
static fs_mount mount;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    archive = fuzz_archive("fspath", true);
    mount.store = archive;
    mount.search = search_new();
    return 0;
}

static void check_name(const char *name)
{
    size_t n = strlen(name);
    FUZZ_ASSERT(n > 0 && n <= NAMES_MAX, "name of %zu bytes", n);
    FUZZ_ASSERT(strcmp(name, ".") != 0 && strcmp(name, "..") != 0, "name '%s'", name);
    for (const char *p = name; *p; p++)
        FUZZ_ASSERT(*p != '/' && *p != '\\' && (unsigned char)*p >= 0x20 && *p != 0x7f, "unsafe name '%s'", name);
}

typedef struct {
    char (*names)[NAMES_MAX + 1];
    size_t n, cap;
} listing;

static void collect(void *ctx, const char *name, const struct stat *st)
{
    (void)st;
    listing *l = ctx;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->names = realloc(l->names, l->cap * sizeof *l->names);
        if (!l->names) abort();
    }
    snprintf(l->names[l->n++], NAMES_MAX + 1, "%s", name);
}

/* The /patients node of N: resolve, and if it is a folder, list it and resolve each child. */
static void patients(const node *n)
{
    patients_node pn;
    int rc = patients_resolve(archive, n->seg + 1, n->len + 1, n->count - 1, &pn);
    FUZZ_ASSERT(rc == 0 || rc == -ENOENT, "patients_resolve: %d", rc);
    if (rc || pn.depth >= 4) return;
    listing l = {0};
    FUZZ_ASSERT(patients_list(archive, &pn, collect, &l) == 0, "a resolved folder does not list");
    for (size_t i = 0; i < l.n; i++) {
        check_name(l.names[i]);
        const char *seg[MAX_SEGMENTS];
        size_t len[MAX_SEGMENTS], count = n->count - 1;
        memcpy(seg, n->seg + 1, count * sizeof *seg);
        memcpy(len, n->len + 1, count * sizeof *len);
        seg[count] = l.names[i];
        len[count] = strlen(l.names[i]);
        patients_node child;
        rc = patients_resolve(archive, seg, len, count + 1, &child);
        FUZZ_ASSERT(rc == 0 && child.depth == pn.depth + 1, "listed name '%s' does not resolve: %d", l.names[i], rc);
    }
    free(l.names);
}

static void search(const node *n)
{
    char *level = segment(n, 1), *query = segment(n, 2), *why = NULL;
    int rc = search_check(&mount, level, query, &why);
    FUZZ_ASSERT(rc == 0 || rc == -ENOENT || (rc == -EINVAL && why && *why), "search_check: %d", rc);
    free(why);
    if (rc == 0) {
        listing l = {0};
        FUZZ_ASSERT(search_list(&mount, level, query, collect, &l) == 0, "a valid query does not list");
        for (size_t i = 0; i < l.n; i++) {
            check_name(l.names[i]);
            char *target = NULL;
            FUZZ_ASSERT(search_link(&mount, level, query, l.names[i], &target) == 0 && target, "link '%s'",
                        l.names[i]);
            free(target);
        }
        free(l.names);
    }
    free(level);
    free(query);
}

static void names(const char *text)
{
    char a[NAMES_MAX + 1], b[NAMES_MAX + 1];
    names_clean(text, a, sizeof a);
    if (a[0] && strcmp(a, ".") != 0 && strcmp(a, "..") != 0) check_name(a);
    names_clean(a, b, sizeof b);
    FUZZ_ASSERT(strcmp(a, b) == 0, "names_clean is not idempotent: '%s' -> '%s'", a, b);
    names_person(text, a, sizeof a);
    FUZZ_ASSERT(strlen(a) < sizeof a, "names_person overflow");
    char id[260];
    if (names_patient_id(text, id, sizeof id)) FUZZ_ASSERT(strlen(id) < sizeof id, "patient id overflow");
    int64_t number;
    names_instance_number(text, &number);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0;
    char *path = fuzz_strndup(data, size);
    node n = classify(path);
    FUZZ_ASSERT(n.count <= MAX_SEGMENTS, "%zu segments", n.count);
    for (size_t i = 0; i < n.count; i++) {
        FUZZ_ASSERT(n.len[i] > 0 && !memchr(n.seg[i], '/', n.len[i]), "segment %zu", i);
        FUZZ_ASSERT(n.seg[i] >= path && n.seg[i] + n.len[i] <= path + strlen(path), "segment %zu outside the path", i);
    }
    switch (n.kind) {
    case N_STUDY: case N_STUDY_META: case N_SERIES_DIR:
        FUZZ_ASSERT(store_valid_uid(n.study), "study UID '%s'", n.study);
        break;
    case N_SERIES: case N_SERIES_META: case N_INSTANCES:
        FUZZ_ASSERT(store_valid_uid(n.study) && store_valid_uid(n.series), "series UIDs");
        break;
    case N_INSTANCE:
        FUZZ_ASSERT(store_valid_uid(n.study) && store_valid_uid(n.series) && store_valid_uid(n.sop), "instance UIDs");
        break;
    case N_CHANGE:
        FUZZ_ASSERT(n.seq > 0, "change %lld", n.seq);
        break;
    case N_DROP:
        /* (a path deeper than MAX_SEGMENTS is a drop with count 0 but seg[0] set) */
        FUZZ_ASSERT(n.len[0] > 0 && ((n.len[0] == 5 && !strncmp(n.seg[0], "inbox", 5)) || !reserved(n.seg[0], n.len[0])),
                    "a drop under a reserved folder");
        break;
    case N_PATIENTS:
        patients(&n);
        break;
    case N_SEARCH_QUERY:
        search(&n);
        break;
    default:
        break;
    }
    for (size_t i = 0; i < n.count; i++) {
        char *s = segment(&n, i);
        names(s);
        free(s);
    }
    free(path);
    return 0;
}
