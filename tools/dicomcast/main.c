/* main.c — dicomcast: follows a DICOMweb change feed and keeps a FHIR R4 server in step.
 *
 * The loop, as the reference's DICOMcast runs it: read latest, read the window
 * (synced, synced+limit], apply each entry as one transaction, save the checkpoint after
 * each, and move on; past a window with missing sequences (a gap) once it has been read
 * again and they are still missing. Options: usage() below and docs/CLI.md. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cast.h"
#include "checkpoint.h"
#include "errlog.h"
#include "feed.h"
#include "fhir.h"
#include "http.h"
#include "retry.h"
#include "sync.h"

const char *cast_strstatus(cast_status_t st)
{
    switch (st) {
    case CAST_OK: return "ok";
    case CAST_TRANSIENT: return "transient failure";
    case CAST_FHIR_ERROR: return "refused by the FHIR server";
    case CAST_DICOM_ERROR: return "invalid DICOM data";
    case CAST_FATAL: return "fatal";
    }
    return "?";
}

typedef struct {
    const char *dicomweb, *fhir, *state, *errors;
    const char *dicomweb_token, *dicomweb_token_file, *fhir_token, *fhir_token_file;
    const char *patient_system;
    bool issuer_as_system, once, progress;
    double poll, retry_limit, timeout;
    int batch, gap_retries;
} options_t;

typedef struct {
    long long synced, latest;
    long done, skipped, failed, problems;
    double started, last_progress;
} stats_t;

static void usage(FILE *f)
{
    fputs("usage: dicomcast --dicomweb URL --fhir URL --state FILE [options]\n"
          "Keeps a FHIR R4 server in step with a DICOMweb change feed (dicomfs serve, or the Azure\n"
          "DICOM service): Patient, Endpoint and ImagingStudy, one transaction per entry.\n"
          "\n"
          "  --dicomweb URL            the DICOMweb service's base URL (the feed is URL/v1/changefeed;\n"
          "                            also the Endpoint's address)\n"
          "  --fhir URL                the FHIR R4 server's base URL\n"
          "  --state FILE              the checkpoint (created when missing)\n"
          "  --once                    sync up to the latest entry, then exit 0\n"
          "  --poll SECONDS            wait between polls of an idle feed (default 60)\n"
          "  --dicomweb-token TOKEN    bearer token for the change feed\n"
          "  --dicomweb-token-file F   ... read from F before every request\n"
          "  --fhir-token TOKEN        bearer token for the FHIR server\n"
          "  --fhir-token-file F       ... read from F at start\n"
          "  --patient-system URI      Patient.identifier.system for PatientID (default none)\n"
          "  --issuer-as-system        IssuerOfPatientID as the system, where the instance has one\n"
          "  --error-log FILE          JSON lines of entries not synced (default STATE.errors.jsonl)\n"
          "  --retry-limit SECONDS     give up retrying an entry after this long (default 600; -1: never)\n"
          "  --batch N                 entries per change-feed request, 1..100 (default 10)\n"
          "  --gap-retries N           re-reads of a window with missing sequences (default 2)\n"
          "  --timeout SECONDS         per HTTP request (default 30)\n"
          "  --progress / --no-progress  a progress line on stderr (default: when it is a terminal)\n"
          "  --help\n"
          "Exit status: 0 done (--once) or stopped by SIGTERM/SIGINT; 1 an error; 2 bad usage.\n",
          f);
}

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    got_signal = sig;
    cast_stop_requested = 1;
}

static char *strip_slash(const char *s)
{
    char *c = strdup(s);
    size_t n = strlen(c);
    while (n > 1 && c[n - 1] == '/')
        c[--n] = '\0';
    return c;
}

static bool parse_number(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "dicomcast: %s: '%s' is not a number in %g..%g\n", opt, s, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

static int parse_options(int argc, char **argv, options_t *o)
{
    enum { O_DW = 1000, O_FHIR, O_STATE, O_ONCE, O_POLL, O_DWT, O_DWTF, O_FT, O_FTF, O_SYS, O_ISSUER, O_ERR,
           O_RETRY, O_BATCH, O_GAP, O_TIMEOUT, O_PROG, O_NOPROG, O_HELP };
    static const struct option longs[] = {
        {"dicomweb", 1, 0, O_DW}, {"fhir", 1, 0, O_FHIR}, {"state", 1, 0, O_STATE}, {"once", 0, 0, O_ONCE},
        {"poll", 1, 0, O_POLL}, {"dicomweb-token", 1, 0, O_DWT}, {"dicomweb-token-file", 1, 0, O_DWTF},
        {"fhir-token", 1, 0, O_FT}, {"fhir-token-file", 1, 0, O_FTF}, {"patient-system", 1, 0, O_SYS},
        {"issuer-as-system", 0, 0, O_ISSUER}, {"error-log", 1, 0, O_ERR}, {"retry-limit", 1, 0, O_RETRY},
        {"batch", 1, 0, O_BATCH}, {"gap-retries", 1, 0, O_GAP}, {"timeout", 1, 0, O_TIMEOUT},
        {"progress", 0, 0, O_PROG}, {"no-progress", 0, 0, O_NOPROG}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    *o = (options_t){.poll = 60, .retry_limit = 600, .timeout = 30, .batch = 10, .gap_retries = 2,
                     .progress = isatty(2)};
    double v;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case O_DW: o->dicomweb = optarg; break;
        case O_FHIR: o->fhir = optarg; break;
        case O_STATE: o->state = optarg; break;
        case O_ONCE: o->once = true; break;
        case O_POLL: if (!parse_number("--poll", optarg, 0.01, 86400, &o->poll)) return 2; break;
        case O_DWT: o->dicomweb_token = optarg; break;
        case O_DWTF: o->dicomweb_token_file = optarg; break;
        case O_FT: o->fhir_token = optarg; break;
        case O_FTF: o->fhir_token_file = optarg; break;
        case O_SYS: o->patient_system = optarg; break;
        case O_ISSUER: o->issuer_as_system = true; break;
        case O_ERR: o->errors = optarg; break;
        case O_RETRY: if (!parse_number("--retry-limit", optarg, -1, 1e9, &o->retry_limit)) return 2; break;
        case O_BATCH: if (!parse_number("--batch", optarg, 1, 100, &v)) return 2; o->batch = (int)v; break;
        case O_GAP: if (!parse_number("--gap-retries", optarg, 0, 100, &v)) return 2; o->gap_retries = (int)v; break;
        case O_TIMEOUT: if (!parse_number("--timeout", optarg, 1, 3600, &o->timeout)) return 2; break;
        case O_PROG: o->progress = true; break;
        case O_NOPROG: o->progress = false; break;
        case 'h':
        case O_HELP: usage(stdout); exit(0);
        default:
            fprintf(stderr, "dicomcast: %s: unknown option or missing value (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dicomcast: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (!o->dicomweb || !o->fhir || !o->state) {
        fprintf(stderr, "dicomcast: --dicomweb, --fhir and --state are required (see --help)\n");
        return 2;
    }
    if (o->dicomweb_token && o->dicomweb_token_file) {
        fprintf(stderr, "dicomcast: --dicomweb-token and --dicomweb-token-file exclude each other\n");
        return 2;
    }
    if (o->fhir_token && o->fhir_token_file) {
        fprintf(stderr, "dicomcast: --fhir-token and --fhir-token-file exclude each other\n");
        return 2;
    }
    return 0;
}

static void progress(const options_t *o, stats_t *st, bool final)
{
    double now = cast_now();
    if (!final && now - st->last_progress < 0.5)
        return;
    st->last_progress = now;
    double secs = now - st->started;
    double rate = secs > 0 ? st->done / secs : 0;
    long long lag = st->latest > st->synced ? st->latest - st->synced : 0;
    if (o->progress && !final)
        fprintf(stderr, "\rdicomcast: %ld entries synced (%.1f/s), sequence %lld, %lld behind latest   ",
                st->done, rate, st->synced, lag);
    else if (final)
        fprintf(stderr, "%sdicomcast: %ld entries synced, %ld skipped, %ld failed (see the error log), "
                "%ld values left out; sequence %lld of %lld; %.1f s (%.1f entries/s)\n",
                o->progress ? "\r" : "", st->done, st->skipped, st->failed, st->problems, st->synced,
                st->latest, secs, rate);
}

/* After a transient failure of a feed read: says so and waits; false when the retries
 * ran out (or a stop was requested). */
static bool again(retry_t *r, const char *err)
{
    fprintf(stderr, "dicomcast: %s; retrying in %.0f s\n", err, retry_backoff(r->attempt));
    return retry_wait(r);
}

static void log_result(json_t *entry, cast_status_t st, sync_result_t *res, stats_t *stats)
{
    size_t i;
    json_t *p;
    if (st == CAST_OK) {
        json_array_foreach(res->problems, i, p) {
            json_t *l = errlog_entry_line(entry, "invalidValue", json_string_value(json_object_get(p, "error")));
            json_object_set(l, "tag", json_object_get(p, "tag"));
            if (json_object_get(p, "value"))
                json_object_set(l, "value", json_object_get(p, "value"));
            errlog_write(l);
            stats->problems++;
        }
        return;
    }
    const char *kind = st == CAST_FHIR_ERROR ? "fhir" : st == CAST_DICOM_ERROR ? "dicom" : "transient";
    json_t *l = errlog_entry_line(entry, kind, res->fhir.text);
    if (res->fhir.status)
        json_object_set_new(l, "fhirStatus", json_integer(res->fhir.status));
    if (*res->error_tag)
        json_object_set_new(l, "tag", json_string(res->error_tag));
    errlog_write(l);
    stats->failed++;
    fprintf(stderr, "%sdicomcast: sequence %lld not synced (%s): %s\n", "",
            (long long)json_integer_value(json_object_get(entry, "sequence")), cast_strstatus(st), res->fhir.text);
}

/* One entry with retries. Returns CAST_OK when it is done (synced, skipped or logged),
 * CAST_FATAL to stop (and a stop request as CAST_TRANSIENT: not done, not logged). */
static cast_status_t process(const options_t *o, sync_t *s, json_t *entry, stats_t *stats)
{
    retry_t r;
    retry_init(&r, o->retry_limit);
    long long seq = json_integer_value(json_object_get(entry, "sequence"));
    for (;;) {
        sync_result_t res;
        cast_status_t st = sync_entry(s, entry, &res);
        if (st == CAST_TRANSIENT) {
            double wait = retry_backoff(r.attempt);
            fprintf(stderr, "%sdicomcast: sequence %lld: %s; retrying in %.0f s\n", o->progress ? "\n" : "", seq,
                    res.fhir.text, wait);
            if (!retry_wait(&r)) {
                if (cast_stop_requested) {
                    json_decref(res.problems);
                    return CAST_TRANSIENT;
                }
                log_result(entry, st, &res, stats);
                json_decref(res.problems);
                return CAST_OK;
            }
            json_decref(res.problems);
            continue;
        }
        if (st == CAST_FATAL) {
            fprintf(stderr, "dicomcast: sequence %lld: %s\n", seq, res.fhir.text);
            json_decref(res.problems);
            return CAST_FATAL;
        }
        if (st == CAST_OK && res.skipped)
            stats->skipped++;
        else if (st == CAST_OK)
            stats->done++;
        log_result(entry, st, &res, stats);
        json_decref(res.problems);
        return CAST_OK;
    }
}

/* The sequences of (LO, HI] missing from ENTRIES, logged as one gap line per run. */
static long count_holes(json_t *entries, long long lo, long long hi, bool log)
{
    long holes = 0;
    long long next = lo + 1;
    size_t i, n = json_array_size(entries);
    for (i = 0; i <= n; i++) {
        long long s = i < n ? json_integer_value(json_object_get(json_array_get(entries, i), "sequence")) : hi + 1;
        if (s > hi + 1)
            s = hi + 1;
        if (s > next) {
            holes += s - next;
            if (log) {
                char why[200];
                snprintf(why, sizeof why, "the change feed never delivered sequence%s %lld%s%.0lld",
                         s - next > 1 ? "s" : "", next, s - next > 1 ? " to " : "", s - next > 1 ? s - 1 : 0);
                json_t *l = json_pack("{s:I,s:s,s:s}", "sequence", (json_int_t)next, "kind", "gap", "error", why);
                errlog_write(l);
                fprintf(stderr, "dicomcast: %s (a gap: skipped)\n", why);
            }
        }
        if (s >= next)
            next = s + 1;
    }
    return holes;
}

static int run(const options_t *o, feed_t *feed, sync_t *s, stats_t *stats)
{
    char err[2048];
    long long target = -1;
    int gap_tries = 0;
    while (!cast_stop_requested) {
        retry_t r;
        cast_status_t st;
        retry_init(&r, o->retry_limit);
        while ((st = feed_latest(feed, &stats->latest, err, sizeof err)) == CAST_TRANSIENT && again(&r, err))
            ;
        if (st != CAST_OK) {
            if (cast_stop_requested)
                break;
            fprintf(stderr, "dicomcast: %s\n", err);
            return 1;
        }
        if (o->once && target < 0)
            target = stats->latest;
        long long goal = o->once ? target : stats->latest;
        if (stats->synced >= goal) {
            if (o->once)
                break;
            progress(o, stats, false);
            cast_sleep(o->poll);
            continue;
        }
        json_t *entries;
        long long lo = stats->synced;
        long long hi = lo + o->batch < stats->latest ? lo + o->batch : stats->latest;
        retry_init(&r, o->retry_limit);
        while ((st = feed_window(feed, lo, o->batch, &entries, err, sizeof err)) == CAST_TRANSIENT && again(&r, err))
            ;
        if (st != CAST_OK) {
            if (cast_stop_requested)
                break;
            fprintf(stderr, "dicomcast: %s\n", err);
            return 1;
        }
        /* A window with sequences missing below latest may be a page cut short or an entry
         * still being committed (Azure's sequences come from an identity column): read it
         * again before taking them as a gap; the reference just moves on. */
        if (count_holes(entries, lo, hi, false) && gap_tries < o->gap_retries) {
            gap_tries++;
            json_decref(entries);
            cast_sleep(1);
            continue;
        }
        gap_tries = 0;
        size_t i;
        json_t *e;
        bool stopped = false;
        json_array_foreach(entries, i, e) {
            if (cast_stop_requested) {
                stopped = true;
                break;
            }
            long long seq = json_integer_value(json_object_get(e, "sequence"));
            if (process(o, s, e, stats) != CAST_OK) {
                json_decref(entries);
                return cast_stop_requested ? 0 : 1;
            }
            stats->synced = seq;
            if (checkpoint_save(o->state, o->dicomweb, o->fhir, seq, err, sizeof err) != 0) {
                fprintf(stderr, "dicomcast: %s\n", err);
                json_decref(entries);
                return 1;
            }
            if (seq > stats->latest)
                stats->latest = seq;
            progress(o, stats, false);
        }
        if (!stopped) {
            count_holes(entries, lo, hi, true);
            if (hi > stats->synced) {
                stats->synced = hi;
                if (checkpoint_save(o->state, o->dicomweb, o->fhir, hi, err, sizeof err) != 0) {
                    fprintf(stderr, "dicomcast: %s\n", err);
                    json_decref(entries);
                    return 1;
                }
            }
        }
        json_decref(entries);
    }
    return 0;
}

static char *read_token_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char buf[8192];
    if (!f || !fgets(buf, sizeof buf, f)) {
        fprintf(stderr, "dicomcast: --fhir-token-file %s: %s\n", path, f ? "empty" : strerror(errno));
        if (f)
            fclose(f);
        return NULL;
    }
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    return strdup(buf);
}

int main(int argc, char **argv)
{
    options_t o;
    int rc = parse_options(argc, argv, &o);
    if (rc)
        return rc;
    char *dicomweb = strip_slash(o.dicomweb), *fhir_url = strip_slash(o.fhir);
    o.dicomweb = dicomweb;
    o.fhir = fhir_url;
    char *fhir_token = o.fhir_token_file ? read_token_file(o.fhir_token_file) : NULL;
    if (o.fhir_token_file && !fhir_token)
        return 1;

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[2048];
    stats_t stats = {0};
    if (checkpoint_load(o.state, o.dicomweb, o.fhir, &stats.synced, err, sizeof err) != 0) {
        fprintf(stderr, "dicomcast: %s\n", err);
        return 1;
    }
    char errors_default[4096];
    if (!o.errors) {
        snprintf(errors_default, sizeof errors_default, "%s.errors.jsonl", o.state);
        o.errors = errors_default;
    }
    if (errlog_open(o.errors) != 0) {
        fprintf(stderr, "dicomcast: error log %s: %s\n", o.errors, strerror(errno));
        return 1;
    }
    http_client_t *feed_http = http_client_new((long)o.timeout), *fhir_http = http_client_new((long)o.timeout);
    feed_t *feed = feed_new(feed_http, o.dicomweb, o.dicomweb_token, o.dicomweb_token_file);
    fhir_t *fhir = fhir_new(fhir_http, o.fhir, fhir_token ? fhir_token : o.fhir_token);
    if (!feed_http || !fhir_http || !feed || !fhir) {
        fprintf(stderr, "dicomcast: out of memory (or libcurl failed to start)\n");
        return 1;
    }
    fhir_error_t ferr = {0};
    if (fhir_check_metadata(fhir, &ferr) != CAST_OK) {
        fprintf(stderr, "dicomcast: %s\n", ferr.text);
        rc = 1;
    } else {
        sync_t s = {.fhir = fhir, .endpoint_address = o.dicomweb,
                    .patient_system = o.patient_system ? o.patient_system : "",
                    .issuer_as_system = o.issuer_as_system};
        stats.started = cast_now();
        rc = run(&o, feed, &s, &stats);
        progress(&o, &stats, true);
        if (got_signal)
            fprintf(stderr, "dicomcast: stopped by signal %d at sequence %lld\n", (int)got_signal, stats.synced);
    }
    feed_free(feed);
    fhir_free(fhir);
    http_client_free(feed_http);
    http_client_free(fhir_http);
    errlog_close();
    free(dicomweb);
    free(fhir_url);
    free(fhir_token);
    return rc;
}
