/* cmd_tags.c — `dicomfs tags` (extended query tags) and `dicomfs operations` (the
 * reindex operations adding tags starts). The JSON printed is the body the HTTP endpoint
 * answers for the same request, with hrefs relative to the archive ("/operations/<id>"
 * where HTTP says "http://host:port/v2/operations/<id>"). */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char tags_usage[] =
    "usage: dicomfs tags ARCHIVE list [--offset N] [--limit N]\n"
    "       dicomfs tags ARCHIVE add JSON|-|@FILE [--wait]\n"
    "       dicomfs tags ARCHIVE get PATH\n"
    "       dicomfs tags ARCHIVE update PATH JSON|-|@FILE\n"
    "       dicomfs tags ARCHIVE delete PATH\n"
    "       dicomfs tags ARCHIVE errors PATH [--offset N] [--limit N]\n\n"
    "Extended query tags: more attributes QIDO-RS (dicomfs find, the mount's search/)\n"
    "can search, as the Azure DICOM service's /extendedquerytags. PATH is a tag as 8 hex\n"
    "digits (00101010) or its keyword (PatientAge). JSON is given as an argument, read\n"
    "from standard input (-) or from a file (@FILE). 'dicomfs tags ARCHIVE CMD --help'\n"
    "describes one command.\n";

static const struct {
    const char *name, *help;
} tag_cmds[] = {
    {"list", "usage: dicomfs tags ARCHIVE list [--offset N] [--limit N]\n\n"
             "Prints the extended query tags as a JSON array, as GET /extendedquerytags does\n"
             "(limit 1..200, default 100; offset skips that many).\n"},
    {"add", "usage: dicomfs tags ARCHIVE add JSON|-|@FILE [--wait]\n\n"
            "Adds the tags of JSON, the body of POST /extendedquerytags: an array of\n"
            "{\"path\": \"00101010\", \"vr\": \"AS\", \"level\": \"Study\"} (\"privateCreator\" for\n"
            "private tags), and starts the reindex operation that indexes the instances\n"
            "stored before. Prints {\"id\", \"href\"} of that operation, as the 202 answer does\n"
            "('dicomfs operations ARCHIVE ID' follows it). --wait waits until the reindex\n"
            "has ended, then prints the operation (exit 1 if it failed). A tag is searchable\n"
            "once its status is ready. Exit 1 when a rule refuses the tags, when one exists\n"
            "already or another reindex is running (stderr says which).\n"},
    {"get", "usage: dicomfs tags ARCHIVE get PATH\n\n"
            "Prints one extended query tag (path, vr, level, status, queryStatus, errors...),\n"
            "as GET /extendedquerytags/{PATH} does. Exit 1 when PATH is no such tag.\n"},
    {"update", "usage: dicomfs tags ARCHIVE update PATH JSON|-|@FILE\n\n"
               "Changes a tag as PATCH /extendedquerytags/{PATH} does: JSON is\n"
               "{\"queryStatus\": \"enabled\"} or {\"queryStatus\": \"disabled\"}. Prints the tag.\n"},
    {"delete", "usage: dicomfs tags ARCHIVE delete PATH\n\n"
               "Removes the extended query tag and its index values (searches by it are then\n"
               "refused). Prints nothing.\n"},
    {"errors", "usage: dicomfs tags ARCHIVE errors PATH [--offset N] [--limit N]\n\n"
               "Prints the values of PATH the reindex could not index, oldest first, as GET\n"
               "/extendedquerytags/{PATH}/errors does (limit 1..200, default 100).\n"},
};

static const char operations_usage[] =
    "usage: dicomfs operations ARCHIVE ID [--v1]\n\n"
    "Prints the operation ID (a reindex started by 'dicomfs tags add'), as GET\n"
    "/operations/{ID} does: status, percentComplete, the tags it adds (resources).\n"
    "--v1: the v1 status names (\"completed\" where v2 says \"succeeded\").\n";

/* Parses an option's number; false (and a message) when it is not one. */
static bool number(const char *cmd, const char *opt, const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno) {
        fprintf(stderr, "dicomfs %s: %s needs a number, not '%s'\n", cmd, opt, s);
        return false;
    }
    *out = v;
    return true;
}

/* The JSON of an argument: itself, standard input ("-") or a file ("@FILE"). NULL (and a
 * message) when it cannot be read. */
static char *read_input(const char *arg, size_t *len)
{
    FILE *f = NULL;
    if (strcmp(arg, "-") == 0) f = stdin;
    else if (arg[0] == '@' && !(f = fopen(arg + 1, "rb"))) {
        fprintf(stderr, "dicomfs tags: %s: %s\n", arg + 1, strerror(errno));
        return NULL;
    }
    if (!f) {
        char *copy = strdup(arg);
        if (!copy) abort();
        *len = strlen(copy);
        return copy;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) abort();
    for (size_t got; (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (cap - n - 1 == 0 && !(buf = realloc(buf, cap *= 2))) abort();
    }
    bool bad = ferror(f);
    if (f != stdin) fclose(f);
    if (bad) {
        fprintf(stderr, "dicomfs tags: cannot read %s\n", strcmp(arg, "-") == 0 ? "standard input" : arg + 1);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int refused(const char *cmd, const store_err *err)
{
    fprintf(stderr, "dicomfs %s: %s\n", cmd, err->msg);
    return 1;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* add --wait: until the operation has ended (it may run in another process that has the
 * archive open, which store_operations_wait does not see: then poll). */
static int wait_and_print(store_t *s, const char *id)
{
    for (;;) {
        store_err err = {0};
        int64_t t0 = now_ms();
        /* EBUSY is "still running after a second": ask again, however long it takes. */
        store_status st = store_operations_wait(s, 1000, &err);
        if (st != STORE_OK && st != STORE_EBUSY) return refused("tags", &err);
        char *json = NULL;
        bool finished = false;
        if (store_operation(s, id, 2, "", &json, &finished, &err) != STORE_OK) return refused("tags", &err);
        if (finished) {
            printf("%s\n", json);
            json_t *op = json_loads(json, 0, NULL);
            const char *status = json_string_value(json_object_get(op, "status"));
            int rc = status && strcmp(status, "failed") == 0 ? 1 : 0;
            if (rc) fprintf(stderr, "dicomfs tags: the reindex operation %s failed\n", id);
            json_decref(op);
            free(json);
            return rc;
        }
        free(json);
        if (now_ms() - t0 < 100) nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
    }
}

static int tags_help(const char *sub, FILE *out)
{
    for (size_t i = 0; sub && i < sizeof tag_cmds / sizeof tag_cmds[0]; i++)
        if (strcmp(sub, tag_cmds[i].name) == 0) {
            fputs(tag_cmds[i].help, out);
            return 0;
        }
    fputs(tags_usage, out);
    return 0;
}

int cmd_tags(int argc, char **argv)
{
    const char *pos[8];
    size_t npos = 0;
    long long offset = 0, limit = 100;
    bool wait = false, paging = false, help = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) help = true;
        else if (strcmp(a, "--wait") == 0) wait = true;
        else if (strncmp(a, "--offset", 8) == 0 || strncmp(a, "--limit", 7) == 0) {
            bool off = a[2] == 'o';
            const char *name = off ? "--offset" : "--limit", *v = NULL;
            size_t nl = strlen(name);
            if (a[nl] == '=') v = a + nl + 1;
            else if (a[nl] == 0 && i + 1 < argc) v = argv[++i];
            else if (a[nl] != 0) goto unknown;
            if (!v) {
                fprintf(stderr, "dicomfs tags: %s needs a number\n", name);
                return 2;
            }
            if (!number("tags", name, v, off ? &offset : &limit)) return 2;
            paging = true;
        } else if (strncmp(a, "--", 2) == 0 || (a[0] == '-' && a[1])) {
        unknown:
            fprintf(stderr, "dicomfs tags: unknown option '%s'\n", a);
            return 2;
        } else if (npos < sizeof pos / sizeof pos[0]) {
            pos[npos++] = a;
        } else {
            fputs(tags_usage, stderr);
            return 2;
        }
    }
    if (help) return tags_help(npos >= 2 ? pos[1] : NULL, stdout);
    if (npos < 2) {
        fputs(tags_usage, stderr);
        return 2;
    }
    const char *archive = pos[0], *sub = pos[1];
    int want = -1; /* positional arguments after the subcommand */
    bool pages = false;
    if (strcmp(sub, "list") == 0) want = 0, pages = true;
    else if (strcmp(sub, "add") == 0) want = 1;
    else if (strcmp(sub, "get") == 0 || strcmp(sub, "delete") == 0) want = 1;
    else if (strcmp(sub, "update") == 0) want = 2;
    else if (strcmp(sub, "errors") == 0) want = 1, pages = true;
    if (want < 0) {
        fprintf(stderr, "dicomfs tags: unknown command '%s' (list, add, get, update, delete, errors)\n", sub);
        return 2;
    }
    if ((int)npos - 2 != want || (paging && !pages) || (wait && strcmp(sub, "add") != 0)) {
        tags_help(sub, stderr);
        return 2;
    }
    int lim = limit > INT_MAX ? INT_MAX : limit < INT_MIN ? INT_MIN : (int)limit;

    char *body = NULL;
    size_t body_len = 0;
    if (strcmp(sub, "add") == 0 || strcmp(sub, "update") == 0) {
        body = read_input(pos[npos - 1], &body_len);
        if (!body) return 2;
    }
    store_t *s = cli_open("tags", archive, false);
    if (!s) {
        free(body);
        return 2;
    }
    store_err err = {0};
    store_status st;
    char *json = NULL;
    int rc = 0;
    if (strcmp(sub, "list") == 0) {
        st = store_xqt_list(s, offset, lim, "", &json, &err);
    } else if (strcmp(sub, "get") == 0) {
        st = store_xqt_get(s, pos[2], "", &json, &err);
    } else if (strcmp(sub, "update") == 0) {
        st = store_xqt_update(s, pos[2], body, body_len, "", &json, &err);
    } else if (strcmp(sub, "delete") == 0) {
        st = store_xqt_delete(s, pos[2], &err);
    } else if (strcmp(sub, "errors") == 0) {
        st = store_xqt_errors(s, pos[2], offset, lim, &json, &err);
    } else { /* add */
        char id[33] = "";
        st = store_xqt_add(s, body, body_len, id, &err);
        if (st == STORE_OK && wait) {
            rc = wait_and_print(s, id);
        } else if (st == STORE_OK) {
            printf("{\"id\":\"%s\",\"href\":\"/operations/%s\"}\n", id, id);
        } else if (st == STORE_EEXIST && id[0] && !strstr(err.msg, id)) {
            fprintf(stderr, "dicomfs tags: %s (operation %s)\n", err.msg, id);
            st = STORE_OK; /* reported */
            rc = 1;
        }
    }
    if (st != STORE_OK) rc = refused("tags", &err);
    else if (json) printf("%s\n", json);
    free(json);
    free(body);
    store_close(s);
    return rc;
}

int cmd_operations(int argc, char **argv)
{
    const char *pos[2];
    size_t npos = 0;
    int version = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(operations_usage, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--v1") == 0) version = 1;
        else if (strcmp(argv[i], "--v2") == 0) version = 2;
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "dicomfs operations: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (npos < 2) pos[npos++] = argv[i];
        else npos = 3;
    }
    if (npos != 2) {
        fputs(operations_usage, stderr);
        return 2;
    }
    store_t *s = cli_open("operations", pos[0], false);
    if (!s) return 2;
    store_err err = {0};
    char *json = NULL;
    bool finished = false;
    int rc = 0;
    if (store_operation(s, pos[1], version, "", &json, &finished, &err) == STORE_OK) printf("%s\n", json);
    else rc = refused("operations", &err);
    free(json);
    store_close(s);
    return rc;
}
