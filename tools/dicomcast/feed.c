/* feed.c — the change-feed client (feed.h). */
#include "feed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct feed {
    http_client_t *http;
    char *base;
    char *token;
    char *token_file;
};

feed_t *feed_new(http_client_t *http, const char *base, const char *token, const char *token_file)
{
    feed_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->http = http;
    f->base = strdup(base);
    f->token = token ? strdup(token) : NULL;
    f->token_file = token_file ? strdup(token_file) : NULL;
    return f;
}

void feed_free(feed_t *f)
{
    if (!f)
        return;
    free(f->base);
    free(f->token);
    free(f->token_file);
    free(f);
}

/* The token for this request: the fixed one, or the token file's first line. */
static int current_token(feed_t *f, char *buf, size_t len, char *err, size_t errlen)
{
    buf[0] = '\0';
    if (!f->token_file) {
        if (f->token)
            snprintf(buf, len, "%s", f->token);
        return 0;
    }
    FILE *fp = fopen(f->token_file, "r");
    if (!fp || !fgets(buf, (int)len, fp)) {
        snprintf(err, errlen, "--dicomweb-token-file %s: cannot read a token", f->token_file);
        if (fp)
            fclose(fp);
        return -1;
    }
    fclose(fp);
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

/* Transport failures, 5xx, 408 and 429 may pass; other statuses will not. */
static cast_status_t classify(const http_response_t *r)
{
    if (r->status == 0 || r->status >= 500 || r->status == 408 || r->status == 429)
        return CAST_TRANSIENT;
    return CAST_FATAL;
}

static cast_status_t get(feed_t *f, const char *url, http_response_t *r, char *err, size_t errlen)
{
    char token[8192];
    if (current_token(f, token, sizeof token, err, errlen) != 0)
        return CAST_FATAL;
    if (http_request(f->http, "GET", url, token, "application/json", NULL, NULL, NULL, r) != 0) {
        snprintf(err, errlen, "change feed: %s", r->error);
        return CAST_TRANSIENT;
    }
    if (r->status == 200 || r->status == 204)
        return CAST_OK;
    cast_status_t st = classify(r);
    snprintf(err, errlen, "change feed: GET %s: HTTP %ld: %.300s%s", url, r->status, r->body,
             r->status == 401 || r->status == 403 ? " (check --dicomweb-token: the feed needs the read role)" : "");
    http_response_clear(r);
    return st;
}

cast_status_t feed_latest(feed_t *f, long long *seq, char *err, size_t errlen)
{
    char url[4096];
    snprintf(url, sizeof url, "%s/v1/changefeed/latest?includeMetadata=false", f->base);
    http_response_t r;
    cast_status_t st = get(f, url, &r, err, errlen);
    if (st != CAST_OK)
        return st;
    *seq = 0;
    if (r.status == 204 || r.len == 0) {
        http_response_clear(&r);
        return CAST_OK;
    }
    json_error_t je;
    json_t *o = json_loadb(r.body, r.len, 0, &je);
    http_response_clear(&r);
    json_t *s = json_object_get(o, "sequence");
    if (json_is_null(o) || (json_is_object(o) && json_object_size(o) == 0)) {
        json_decref(o);
        return CAST_OK;
    }
    if (!json_is_integer(s)) {
        snprintf(err, errlen, "change feed: %s is not an entry with a sequence%s%s", url, o ? "" : ": ",
                 o ? "" : je.text);
        json_decref(o);
        return CAST_FATAL;
    }
    *seq = json_integer_value(s);
    json_decref(o);
    return CAST_OK;
}

cast_status_t feed_window(feed_t *f, long long offset, int limit, json_t **entries, char *err, size_t errlen)
{
    char url[4096];
    snprintf(url, sizeof url, "%s/v1/changefeed?offset=%lld&limit=%d&includeMetadata=true", f->base, offset,
             limit);
    http_response_t r;
    *entries = NULL;
    cast_status_t st = get(f, url, &r, err, errlen);
    if (st != CAST_OK)
        return st;
    json_error_t je;
    json_t *a = r.len ? json_loadb(r.body, r.len, 0, &je) : json_array();
    http_response_clear(&r);
    if (!json_is_array(a)) {
        snprintf(err, errlen, "change feed: %s did not answer a JSON array%s%s", url, a ? "" : ": ",
                 a ? "" : je.text);
        json_decref(a);
        /* A torn or garbled page is most likely a proxy or a restart: try again. */
        return CAST_TRANSIENT;
    }
    size_t i;
    json_t *e;
    long long prev = offset;
    json_array_foreach(a, i, e) {
        json_t *s = json_object_get(e, "sequence");
        if (!json_is_integer(s) || json_integer_value(s) <= prev) {
            snprintf(err, errlen, "change feed: %s: entry %zu has no sequence above %lld", url, i, prev);
            json_decref(a);
            return CAST_FATAL;
        }
        prev = json_integer_value(s);
    }
    *entries = a;
    return CAST_OK;
}
