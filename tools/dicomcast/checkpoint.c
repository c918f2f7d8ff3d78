/* checkpoint.c — the state file (checkpoint.h). */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int checkpoint_load(const char *path, const char *dicomweb, const char *fhir, long long *seq,
                    char *err, size_t errlen)
{
    *seq = 0;
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return 0;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        snprintf(err, errlen, "state file %s: %s", path, je.text);
        return -1;
    }
    int rc = -1;
    json_t *s = json_object_get(root, "syncedSequence");
    const char *dw = json_string_value(json_object_get(root, "dicomweb"));
    const char *fh = json_string_value(json_object_get(root, "fhir"));
    if (!json_is_integer(s) || json_integer_value(s) < 0)
        snprintf(err, errlen, "state file %s: no syncedSequence (a non-negative integer)", path);
    else if (dw && strcmp(dw, dicomweb) != 0)
        snprintf(err, errlen, "state file %s belongs to the change feed of %s, not %s (use another --state)",
                 path, dw, dicomweb);
    else if (fh && strcmp(fh, fhir) != 0)
        snprintf(err, errlen, "state file %s belongs to the FHIR server %s, not %s (use another --state)",
                 path, fh, fhir);
    else {
        *seq = json_integer_value(s);
        rc = 0;
    }
    json_decref(root);
    return rc;
}

static int fsync_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -1;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    free(copy);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int checkpoint_save(const char *path, const char *dicomweb, const char *fhir, long long seq,
                    char *err, size_t errlen)
{
    json_t *root = json_pack("{s:I,s:s,s:s}", "syncedSequence", (json_int_t)seq, "dicomweb", dicomweb,
                             "fhir", fhir);
    char *text = root ? json_dumps(root, JSON_SORT_KEYS) : NULL;
    json_decref(root);
    if (!text) {
        snprintf(err, errlen, "state file %s: out of memory", path);
        return -1;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = strlen(text);
    int ok = fd >= 0;
    if (ok) {
        ok = write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1;
        /* fsync before rename: the new name must never point at unwritten blocks. */
        ok = ok && fsync(fd) == 0;
        ok = close(fd) == 0 && ok;
    }
    free(text);
    /* ... and the directory after it: the rename itself must survive a crash. */
    if (!ok || rename(tmp, path) != 0 || fsync_dir(path) != 0) {
        snprintf(err, errlen, "state file %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}
