/* loadgen.c — the load test's HTTP clients: CLIENTS keep-alive connections driven by one
 * thread with libcurl's multi interface, each sending one request at a time for SECONDS, a
 * mix of STOW (one and several instances), QIDO (the three levels, with filters), WADO
 * (instance, series, frames, metadata, rendered), delete (instance, series, study) and the
 * change feed. Then it checks the archive: every instance it stored and did not delete is
 * retrieved and compared byte for byte, every one it deleted answers 404.
 *
 *   loadgen URL TEMPLATE_DIR SECONDS CLIENTS STATE_FILE [SEED]
 *
 * Instances are made from tests/load/loaddata.py's templates (kind1..3.dcm) by replacing
 * their fixed-width placeholders, so there is no limit to their number and the expected
 * bytes of any instance can be made again. The generator knows what it stored: each
 * instance is unstored, being stored, stored, being deleted or deleted (or unknown after
 * a failed request), and an answer is judged against that:
 *   - a 404 of a GET is expected only when every instance the request was about had its
 *     delete sent before the answer came; one instance stored all along makes it an error
 *   - a QIDO for one SOP Instance UID stored all along must return it; QIDO may otherwise
 *     match nothing (200 [] or 204)
 *   - an instance retrieved (single part) must be byte-identical to what was stored
 *   - STOW must give 200, delete 204 (or 404 when each of its instances was also covered by
 *     another delete sent before the answer: an instance's delete and its series' race);
 *     every other request 200; a transport error is an error
 * Prints one JSON object on stdout: per route requests, errors, expected (the 404s above, and
 * 204 of the change feed before anything was stored),
 * latency percentiles; the first errors; the verification. STATE_FILE gets one line per
 * instance: "stored|deleted|unknown SOP_UID STUDY_UID". Exit 0 when there was no error, 1 otherwise. */
#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROOT "1.2.826.0.1.3680043.9.7777"
#define BOUNDARY "loadgen-7f3e2b91"
#define PATIENTS 50
#define MAX_TARGETS 32
#define MAX_ERRORS 20

enum { UNSTORED, STORING, STORED, DELETING, DELETED, UNKNOWN };

/* pos: in stored[]; acked: when its STOW was answered; dels: deletes sent that cover it */
typedef struct { int study, series, kind; uint8_t state, dels; int pos; double acked; } inst_t;
typedef struct { int study, kind, n, planned, busy; int inst[6]; } series_t;   /* busy: STOWs in flight */
typedef struct { int n; int series[3]; } study_t;

enum route {
    R_STOW1, R_STOWN, R_QIDO_STUDY, R_QIDO_SERIES, R_QIDO_INST, R_QIDO_SOP, R_WADO_INST, R_WADO_SERIES,
    R_WADO_FRAMES, R_WADO_META, R_WADO_RENDERED, R_DEL_INST, R_DEL_SERIES, R_DEL_STUDY, R_CHANGEFEED,
    R_VERIFY, R_VERIFY_DELETED, R_VERIFY_UNKNOWN, R_N
};
static const char *route_name[R_N] = {"stow_single", "stow_multi", "qido_studies", "qido_series", "qido_instances",
                                      "qido_sop", "wado_instance", "wado_series", "wado_frames", "wado_metadata",
                                      "wado_rendered", "delete_instance", "delete_series", "delete_study",
                                      "changefeed", "verify_stored", "verify_deleted",
                                      "verify_unknown"};
/* the mix, in per mille (verify_* are not drawn) */
static const int weight[R_N] = {150, 50, 90, 60, 60, 60, 150, 30, 60, 130, 40, 30, 8, 2, 20, 0, 0, 0};

typedef struct { double *ms; size_t n, cap; long requests, errors, expected; } stat_t;

typedef struct {
    CURL *h;
    struct curl_slist *hdrs;
    char url[1024];
    char *req, *resp;
    size_t req_len, resp_len, resp_cap;
    enum route r;
    int targets[MAX_TARGETS], nt;
    bool scoped; /* about one study, series or instance (a 404 may then be expected) */
    bool feed_empty; /* sent before any STOW was answered: the change feed may be empty (204) */
    double t0;
} slot_t;

static inst_t *I;
static int nI, capI;
static series_t *S;
static int nS, capS;
static study_t *T;
static int nT, capT;
static int *stored; /* the STORED instances, any order */
static int nstored, capstored;
static int cur_series = -1;
static long acked; /* STOWs answered 200 */
static char *tpl[4];
static size_t tpl_len[4];
static const char *base;
static stat_t st[R_N];
static char errors[MAX_ERRORS][600];
static int nerrors;
static char unknown[MAX_ERRORS][120]; /* instances after a failed STOW or delete: their status at the end */
static int nunknown;
static uint64_t rng = 88172645463325252ull;

static uint64_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}
static int rndn(int n) { return n > 0 ? (int)(rnd() % (uint64_t)n) : 0; }

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

#define GROW(p, n, cap)                                                                                              \
    do {                                                                                                             \
        if ((n) >= (cap)) {                                                                                          \
            (cap) = (cap) ? (cap) * 2 : 1024;                                                                        \
            (p) = realloc((p), (size_t)(cap) * sizeof *(p));                                                         \
            if (!(p)) abort();                                                                                       \
        }                                                                                                            \
    } while (0)

static void set_state(int i, int state)
{
    if (I[i].state == STORED && state != STORED) { /* swap-remove from stored[] */
        int last = stored[--nstored];
        stored[I[i].pos] = last;
        I[i].pos < nstored ? (void)(I[last].pos = I[i].pos) : (void)0;
    } else if (I[i].state != STORED && state == STORED) {
        GROW(stored, nstored, capstored);
        I[i].pos = nstored;
        stored[nstored++] = i;
    }
    I[i].state = (uint8_t)state;
}

static void study_uid(char *b, int study) { sprintf(b, ROOT ".71.1%08d", study); }
static void series_uid(char *b, int series) { sprintf(b, ROOT ".72.1%08d", series); }
static void sop_uid(char *b, int i) { sprintf(b, ROOT ".73.%d%08d", I[i].kind, i); }

/* Replaces every occurrence of OLD in BUF with NEW (same length). */
static void replace(char *buf, size_t len, const char *old, const char *new)
{
    size_t n = strlen(old);
    for (char *p = buf; (p = memmem(p, len - (size_t)(p - buf), old, n)); p += n) memcpy(p, new, n);
}

/* Instance I's bytes, from its kind's template (loaddata.py's placeholders). */
static char *instance_bytes(int i, size_t *len)
{
    int k = I[i].kind, study = I[i].study + 1, series = I[i].series + 1, p = study % PATIENTS;
    char *b = malloc(tpl_len[k]);
    if (!b) abort();
    memcpy(b, tpl[k], tpl_len[k]);
    char v[80], ph[80];
    sprintf(v, ROOT ".71.1%08d", study), replace(b, tpl_len[k], ROOT ".71.100000000", v);
    sprintf(v, ROOT ".72.1%08d", series), replace(b, tpl_len[k], ROOT ".72.100000000", v);
    sprintf(ph, ROOT ".73.%d00000000", k), sop_uid(v, i), replace(b, tpl_len[k], ph, v);
    sprintf(v, "LPID%08d", p), replace(b, tpl_len[k], "LPID00000000", v);
    sprintf(v, "LOAD^P%010d", p), replace(b, tpl_len[k], "LOAD^P0000000000", v);
    sprintf(v, "202001%02d", 1 + study % 28), replace(b, tpl_len[k], "20200101", v);
    *len = tpl_len[k];
    return b;
}

/* A new instance in the open series (a new series when it is full: in the same study or,
 * as often, a new one). */
static int mint(void)
{
    if (cur_series < 0 || S[cur_series].n == S[cur_series].planned) {
        int study;
        if (cur_series >= 0 && T[S[cur_series].study].n < 3 && rndn(2))
            study = S[cur_series].study;
        else {
            GROW(T, nT, capT);
            study = nT++;
            T[study].n = 0;
        }
        GROW(S, nS, capS);
        cur_series = nS++;
        int r = rndn(100);
        S[cur_series] = (series_t){.study = study, .kind = r < 70 ? 1 : r < 98 ? 2 : 3, .planned = 1 + rndn(6)};
        T[study].series[T[study].n++] = cur_series;
    }
    GROW(I, nI, capI);
    int i = nI++;
    series_t *se = &S[cur_series];
    I[i] = (inst_t){.study = se->study, .series = cur_series, .kind = se->kind, .state = UNSTORED};
    se->inst[se->n++] = i;
    return i;
}

static void record_error(slot_t *s, long status, const char *why)
{
    st[s->r].errors++;
    if (nerrors < MAX_ERRORS) {
        char body[200] = "";
        size_t n = s->resp_len < 150 ? s->resp_len : 150;
        for (size_t k = 0; k < n; k++) body[k] = (s->resp[k] >= 32 && s->resp[k] < 127) ? s->resp[k] : '.';
        body[n] = 0;
        snprintf(errors[nerrors++], sizeof errors[0], "%s %s: %s (status %ld, body '%s')", route_name[s->r],
                 s->url + strlen(base), why, status, body);
    }
}

static size_t on_data(char *p, size_t sz, size_t n, void *cls)
{
    slot_t *s = cls;
    size_t len = sz * n;
    if (s->resp_len + len + 1 > s->resp_cap) {
        while (s->resp_len + len + 1 > s->resp_cap) s->resp_cap = s->resp_cap ? s->resp_cap * 2 : 65536;
        s->resp = realloc(s->resp, s->resp_cap);
        if (!s->resp) abort();
    }
    memcpy(s->resp + s->resp_len, p, len);
    s->resp_len += len;
    s->resp[s->resp_len] = 0;
    return len;
}

static void add_target(slot_t *s, int i)
{
    if (s->nt < MAX_TARGETS) s->targets[s->nt++] = i;
}

/* Targets of a series or study request: its instances stored now. */
static void target_series(slot_t *s, int se)
{
    for (int k = 0; k < S[se].n; k++) {
        int st = I[S[se].inst[k]].state;
        /* a series or study delete also removes the instances whose own delete is on its way */
        if (st == STORED || (st == DELETING && (s->r == R_DEL_SERIES || s->r == R_DEL_STUDY))) add_target(s, S[se].inst[k]);
    }
}

static bool series_quiet(int se) /* no STOW in flight or to come: it may be deleted */
{
    return se != cur_series && S[se].busy == 0;
}

static void append_part(slot_t *s, int i)
{
    size_t len;
    char *b = instance_bytes(i, &len);
    size_t need = s->req_len + len + 200;
    s->req = realloc(s->req, need);
    if (!s->req) abort();
    s->req_len += (size_t)sprintf(s->req + s->req_len, "--" BOUNDARY "\r\nContent-Type: application/dicom\r\n\r\n");
    memcpy(s->req + s->req_len, b, len);
    s->req_len += len;
    s->req_len += (size_t)sprintf(s->req + s->req_len, "\r\n");
    free(b);
}

static enum route draw(void)
{
    int x = rndn(1000), acc = 0;
    for (int r = 0; r < R_N; r++)
        if (x < (acc += weight[r])) return (enum route)r;
    return R_QIDO_STUDY;
}

/* Sets up slot S for a request of route R (or a STOW when nothing is stored yet); returns
 * false when R cannot be done now (the caller draws again). */
static bool prepare(slot_t *s, enum route r)
{
    char a[80], b[80], c[80];
    const char *accept = "application/dicom+json", *method = "GET", *ctype = NULL;
    s->r = r;
    s->nt = 0;
    s->req_len = 0;
    s->resp_len = 0;
    s->feed_empty = false;
    s->scoped = r != R_STOW1 && r != R_STOWN && r != R_CHANGEFEED;
    int i = nstored ? stored[rndn(nstored)] : -1;
    if (i < 0 && r != R_STOW1 && r != R_STOWN && r != R_QIDO_STUDY && r != R_CHANGEFEED) return false;
    if (i >= 0) study_uid(a, I[i].study + 1), series_uid(b, I[i].series + 1), sop_uid(c, i);
    switch (r) {
    case R_STOW1:
    case R_STOWN: {
        int n = r == R_STOW1 ? 1 : 2 + rndn(4);
        for (int k = 0; k < n; k++) {
            int j = mint();
            set_state(j, STORING);
            add_target(s, j);
            S[I[j].series].busy++;
            append_part(s, j);
        }
        s->req = realloc(s->req, s->req_len + 64);
        s->req_len += (size_t)sprintf(s->req + s->req_len, "--" BOUNDARY "--\r\n");
        method = "POST";
        ctype = "Content-Type: multipart/related; type=\"application/dicom\"; boundary=" BOUNDARY;
        if (rndn(2)) { /* to the study's URL: every part is of it (a series' instances are) */
            bool one = true;
            for (int k = 1; k < s->nt; k++) one &= I[s->targets[k]].study == I[s->targets[0]].study;
            study_uid(a, I[s->targets[0]].study + 1);
            snprintf(s->url, sizeof s->url, one ? "%s/v2/studies/%s" : "%s/v2/studies", base, a);
        } else
            snprintf(s->url, sizeof s->url, "%s/v2/studies", base);
        break;
    }
    case R_QIDO_STUDY:
        switch (rndn(4)) {
        case 0: snprintf(s->url, sizeof s->url, "%s/v2/studies?PatientID=LPID%08d", base, rndn(PATIENTS)); break;
        case 1:
            snprintf(s->url, sizeof s->url, "%s/v2/studies?StudyDate=202001%02d-202001%02d&limit=20&offset=%d", base,
                     1 + rndn(14), 15 + rndn(14), rndn(3) * 20);
            break;
        case 2: snprintf(s->url, sizeof s->url, "%s/v2/studies?PatientName=LOAD^P000000%d*&fuzzymatching=false",
                         base, rndn(10)); break;
        default: snprintf(s->url, sizeof s->url, "%s/v2/studies?limit=50&includefield=all", base);
        }
        s->scoped = false;
        break;
    case R_QIDO_SERIES:
        if (rndn(2)) snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/series", base, a), target_series(s, I[i].series);
        else snprintf(s->url, sizeof s->url, "%s/v2/series?Modality=%s&limit=20", base, rndn(2) ? "CT" : "MR"),
             s->scoped = false;
        break;
    case R_QIDO_INST:
        snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/series/%s/instances?includefield=00200013", base, a, b);
        target_series(s, I[i].series);
        break;
    case R_QIDO_SOP:
        snprintf(s->url, sizeof s->url, "%s/v2/instances?SOPInstanceUID=%s", base, c);
        add_target(s, i);
        break;
    case R_WADO_INST:
        snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/series/%s/instances/%s", base, a, b, c);
        accept = "application/dicom; transfer-syntax=*";
        add_target(s, i);
        break;
    case R_WADO_SERIES:
        snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/series/%s", base, a, b);
        accept = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
        target_series(s, I[i].series);
        break;
    case R_WADO_FRAMES:
        snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/series/%s/instances/%s/frames/%s", base, a, b, c,
                 I[i].kind == 2 ? "1,3" : "1");
        accept = "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*";
        add_target(s, i);
        break;
    case R_WADO_META:
        switch (rndn(3)) {
        case 0:
            snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/metadata", base, a);
            for (int k = 0; k < T[I[i].study].n; k++) target_series(s, T[I[i].study].series[k]);
            break;
        case 1: snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/series/%s/metadata", base, a, b);
            target_series(s, I[i].series);
            break;
        default: snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/series/%s/instances/%s/metadata", base, a, b, c);
            add_target(s, i);
        }
        break;
    case R_WADO_RENDERED:
        if (I[i].kind == 3) return false; /* a 1 MiB 16-bit JPEG each time: not this mix's point */
        snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/series/%s/instances/%s/%s", base, a, b, c,
                 rndn(2) ? "rendered" : "frames/1/rendered");
        accept = rndn(2) ? "image/jpeg" : "image/png";
        add_target(s, i);
        break;
    case R_DEL_INST:
        if (!series_quiet(I[i].series)) return false;
        snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/series/%s/instances/%s", base, a, b, c);
        add_target(s, i);
        break;
    case R_DEL_SERIES:
        if (!series_quiet(I[i].series)) return false;
        snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/series/%s", base, a, b);
        target_series(s, I[i].series);
        break;
    case R_DEL_STUDY:
        for (int k = 0; k < T[I[i].study].n; k++)
            if (!series_quiet(T[I[i].study].series[k])) return false;
        snprintf(s->url, sizeof s->url, "%s/v2/studies/%s", base, a);
        for (int k = 0; k < T[I[i].study].n; k++) target_series(s, T[I[i].study].series[k]);
        break;
    case R_CHANGEFEED:
        if (rndn(2)) snprintf(s->url, sizeof s->url, "%s/v2/changefeed/latest", base);
        else snprintf(s->url, sizeof s->url, "%s/v2/changefeed?startTime=2020-01-01T00:00:00Z&limit=50&offset=%d",
                      base, rndn(200));
        accept = "application/json";
        s->feed_empty = acked == 0;
        break;
    default: return false;
    }
    if (r == R_DEL_INST || r == R_DEL_SERIES || r == R_DEL_STUDY) {
        method = "DELETE";
        if (!s->nt) return false;
        for (int k = 0; k < s->nt; k++) {
            if (I[s->targets[k]].state == STORED) set_state(s->targets[k], DELETING);
            I[s->targets[k]].dels++;
        }
    }
    curl_easy_reset(s->h);
    curl_easy_setopt(s->h, CURLOPT_PRIVATE, s); /* how a finished transfer finds its slot */
    curl_slist_free_all(s->hdrs);
    char h[200];
    snprintf(h, sizeof h, "Accept: %s", accept);
    s->hdrs = curl_slist_append(NULL, h);
    if (ctype) s->hdrs = curl_slist_append(s->hdrs, ctype);
    s->hdrs = curl_slist_append(s->hdrs, "Expect:");
    curl_easy_setopt(s->h, CURLOPT_URL, s->url);
    curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, s->hdrs);
    curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(s->h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->h, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(s->h, CURLOPT_POST, 1L);
        curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, s->req);
        curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->req_len);
    } else if (!strcmp(method, "DELETE"))
        curl_easy_setopt(s->h, CURLOPT_CUSTOMREQUEST, "DELETE");
    s->t0 = now_ms();
    return true;
}

static bool any_stored(slot_t *s)
{
    for (int k = 0; k < s->nt; k++)
        if (I[s->targets[k]].state == STORED) return true;
    return false;
}

/* Judges the answer of slot S (see the top comment). */
static void complete(slot_t *s, CURLcode cc)
{
    stat_t *t = &st[s->r];
    double ms = now_ms() - s->t0;
    GROW(t->ms, t->n, t->cap);
    t->ms[t->n++] = ms;
    t->requests++;
    long status = 0;
    curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        record_error(s, status, curl_easy_strerror(cc));
        status = -1;
    }
    switch (s->r) {
    case R_STOW1:
    case R_STOWN:
        for (int k = 0; k < s->nt; k++) {
            set_state(s->targets[k], status == 200 ? STORED : UNKNOWN);
            I[s->targets[k]].acked = now_ms();
            S[I[s->targets[k]].series].busy--;
        }
        acked += status == 200;
        if (status != 200 && status != -1) record_error(s, status, "STOW not 200");
        return;
    case R_DEL_INST:
    case R_DEL_SERIES:
    case R_DEL_STUDY:
    {
        /* 404 is expected when every instance of it was also covered by another delete (an
         * instance's and its series' or study's, sent at once): that one came first */
        bool raced = status == 404;
        for (int k = 0; k < s->nt; k++) raced &= I[s->targets[k]].dels >= 2;
        if (raced) {
            t->expected++;
            return; /* the other delete's answer tells */
        }
        for (int k = 0; k < s->nt; k++) set_state(s->targets[k], status == 204 ? DELETED : UNKNOWN);
        if (status != 204 && status != -1) {
            char why[160];
            snprintf(why, sizeof why, "delete not 204 (sent %.0f ms after the first target's STOW was answered, "
                     "answered in %.0f ms)", s->t0 - I[s->targets[0]].acked, ms);
            record_error(s, status, why);
        }
        return;
    }
    case R_VERIFY_DELETED:
        if (status != 404 && status != -1) record_error(s, status, "a deleted instance is not 404");
        return;
    case R_VERIFY_UNKNOWN: /* after a failed request: is it there? (to tell; no error of its own) */
        if (nunknown < MAX_ERRORS) {
            char c[80];
            sop_uid(c, s->targets[0]);
            snprintf(unknown[nunknown++], sizeof unknown[0], "%s: %ld", c, status);
        }
        return;
    default: break;
    }
    if (status == -1) return;
    if (status == 404 && s->scoped && !any_stored(s)) {
        t->expected++;
        return;
    }
    if (status == 204 && s->r == R_CHANGEFEED && s->feed_empty) {
        t->expected++;
        return;
    }
    bool qido = s->r >= R_QIDO_STUDY && s->r <= R_QIDO_SOP;
    if (qido && (status == 204 || status == 200)) {
        if (s->r == R_QIDO_SOP && any_stored(s)) {
            char c[80];
            sop_uid(c, s->targets[0]);
            if (status != 200 || !strstr(s->resp, c)) record_error(s, status, "a stored instance is not found");
        }
        return;
    }
    if (status != 200) {
        record_error(s, status, s->nt ? "not 200, and an instance of it was stored all along" : "not 200");
        return;
    }
    if (s->r == R_WADO_INST || s->r == R_VERIFY) {
        size_t len;
        char *want = instance_bytes(s->targets[0], &len);
        if (len != s->resp_len || memcmp(want, s->resp, len)) record_error(s, status, "bytes differ from those stored");
        free(want);
    }
}

static int cmp_double(const void *x, const void *y)
{
    double d = *(const double *)x - *(const double *)y;
    return (d > 0) - (d < 0);
}

static void print_stats(FILE *f, double seconds)
{
    fprintf(f, "{\"seconds\": %.1f, \"routes\": {", seconds);
    bool first = true;
    for (int r = 0; r < R_N; r++) {
        stat_t *t = &st[r];
        if (!t->requests) continue;
        qsort(t->ms, t->n, sizeof *t->ms, cmp_double);
#define PCT(p) t->ms[(size_t)((p) * (t->n - 1) + 0.5)]
        fprintf(f, "%s\n  \"%s\": {\"requests\": %ld, \"per_second\": %.1f, \"p50_ms\": %.1f, \"p95_ms\": %.1f, "
                "\"p99_ms\": %.1f, \"max_ms\": %.1f, \"errors\": %ld, \"expected\": %ld}",
                first ? "" : ",", route_name[r], t->requests, r >= R_VERIFY ? 0 : t->requests / seconds, PCT(0.5),
                PCT(0.95), PCT(0.99), t->ms[t->n - 1], t->errors, t->expected);
        first = false;
    }
    int counts[6] = {0};
    for (int i = 0; i < nI; i++) counts[I[i].state]++;
    fprintf(f, "},\n \"instances\": {\"stored\": %d, \"deleted\": %d, \"unknown\": %d, \"studies\": %d, \"series\": %d},\n"
            " \"errors\": [", counts[STORED], counts[DELETED], counts[UNKNOWN] + counts[STORING] + counts[DELETING], nT, nS);
    for (int k = 0; k < nerrors; k++) {
        fputs(k ? ",\n  \"" : "\n  \"", f);
        for (const char *p = errors[k]; *p; p++) fprintf(f, *p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
        fputc('"', f);
    }
    fputs("],\n \"unknown_at_end\": [", f);
    for (int k = 0; k < nunknown; k++) fprintf(f, "%s\"%s\"", k ? ", " : "", unknown[k]);
    fputs("]}\n", f);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *b = malloc((size_t)n);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) { perror(path); exit(2); }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Runs the clients until SECONDS pass (the mix) or, with VERIFY, until every instance is
 * checked. */
static void run(CURLM *m, slot_t *slots, int clients, double seconds, bool verify)
{
    double end = now_ms() + seconds * 1000;
    int next = 0, running = 0, active = 0;
    for (;;) {
        for (int k = 0; k < clients; k++) {
            slot_t *s = &slots[k];
            if (s->r != R_N) continue; /* busy */
            bool ok = false;
            if (verify) {
                while (next < nI && I[next].state != STORED && I[next].state != DELETED && I[next].state != UNKNOWN)
                    next++;
                if (next < nI) {
                    int i = next++;
                    char a[80], b[80], c[80];
                    study_uid(a, I[i].study + 1), series_uid(b, I[i].series + 1), sop_uid(c, i);
                    prepare(s, R_CHANGEFEED); /* sets up the handle; the URL is ours */
                    s->r = I[i].state == STORED ? R_VERIFY : I[i].state == DELETED ? R_VERIFY_DELETED : R_VERIFY_UNKNOWN;
                    s->nt = 1, s->targets[0] = i;
                    snprintf(s->url, sizeof s->url, "%s/v2/studies/%s/series/%s/instances/%s", base, a, b, c);
                    curl_slist_free_all(s->hdrs);
                    s->hdrs = curl_slist_append(NULL, "Accept: application/dicom; transfer-syntax=*");
                    curl_easy_setopt(s->h, CURLOPT_URL, s->url);
                    curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, s->hdrs);
                    ok = true;
                }
            } else if (now_ms() < end)
                for (int tries = 0; !ok && tries < 20; tries++) ok = prepare(s, draw());
            if (!ok) {
                s->r = R_N;
                continue;
            }
            curl_multi_add_handle(m, s->h);
            active++;
        }
        if (!active) break;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int q;
        bool done = false;
        while ((msg = curl_multi_info_read(m, &q))) {
            if (msg->msg != CURLMSG_DONE) continue;
            slot_t *s = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            CURLcode cc = msg->data.result;
            curl_multi_remove_handle(m, s->h);
            complete(s, cc);
            s->r = R_N;
            active--;
            done = true;
        }
        if (!done) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: loadgen URL TEMPLATE_DIR SECONDS CLIENTS STATE_FILE [SEED]\n");
        return 2;
    }
    base = argv[1];
    double seconds = atof(argv[3]);
    int clients = atoi(argv[4]);
    if (argc > 6) rng ^= strtoull(argv[6], NULL, 10) * 2654435761u;
    for (int k = 1; k <= 3; k++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/kind%d.dcm", argv[2], k);
        tpl[k] = slurp(p, &tpl_len[k]);
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)clients);
    slot_t *slots = calloc((size_t)clients, sizeof *slots);
    for (int k = 0; k < clients; k++) {
        slots[k].h = curl_easy_init();
        slots[k].r = R_N;
    }
    double t0 = now_ms();
    run(m, slots, clients, seconds, false);
    double mix_seconds = (now_ms() - t0) / 1000;
    run(m, slots, clients, 0, true);
    print_stats(stdout, mix_seconds);
    FILE *f = fopen(argv[5], "w");
    if (!f) { perror(argv[5]); return 2; }
    for (int i = 0; i < nI; i++) {
        char a[80], c[80];
        study_uid(a, I[i].study + 1), sop_uid(c, i);
        fprintf(f, "%s %s %s\n", I[i].state == STORED ? "stored" : I[i].state == DELETED ? "deleted" : "unknown", c, a);
    }
    fclose(f);
    long errs = 0;
    for (int r = 0; r < R_N; r++) errs += st[r].errors;
    return errs ? 1 : 0;
}
