/* errlog.c — the JSON-lines error log (errlog.h). */
#include "errlog.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_fd = -1;

int errlog_open(const char *path)
{
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    return log_fd < 0 ? -1 : 0;
}

void errlog_close(void)
{
    if (log_fd >= 0)
        close(log_fd);
    log_fd = -1;
}

void errlog_write(json_t *line)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object_set_new(line, "time", json_string(stamp));
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (!text)
        return;
    size_t len = strlen(text);
    char *buf = malloc(len + 2);
    if (buf) {
        memcpy(buf, text, len);
        buf[len] = '\n';
        if (log_fd < 0 || write(log_fd, buf, len + 1) != (ssize_t)(len + 1))
            fprintf(stderr, "dicomcast: could not write the error log; the line was: %s\n", text);
        free(buf);
    }
    free(text);
}

json_t *errlog_entry_line(json_t *entry, const char *kind, const char *error)
{
    json_t *l = json_object();
    static const char *const keys[] = {"sequence", "action", "studyInstanceUid", "seriesInstanceUid",
                                       "sopInstanceUid"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        json_t *v = json_object_get(entry, keys[i]);
        if (v)
            json_object_set(l, keys[i], v);
    }
    json_object_set_new(l, "kind", json_string(kind));
    if (error)
        json_object_set_new(l, "error", json_string(error));
    return l;
}
