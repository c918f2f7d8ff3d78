/* params.c — query parameters of the JSON routes (change feed, extended query tags), by
 * the rules of the reference's ASP.NET model binding: names are case-insensitive, unknown
 * names are ignored, a value that does not convert or is out of range is a 400. A known
 * name given twice is refused too, rather than silently taking one of the values. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

typedef struct {
    const char *name;
    const char *value;
    int count;
} lookup;

static enum MHD_Result find(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    lookup *l = cls;
    if (strcasecmp(key, l->name) == 0 && l->count++ == 0) l->value = value ? value : "";
    return MHD_YES;
}

/* The value of NAME: 0 when absent, 1 when found (*VALUE), -1 when given twice (MSG). */
static int param(web_request *rq, const char *name, const char **value, char *msg, size_t len)
{
    lookup l = {name, NULL, 0};
    MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, find, &l);
    if (l.count > 1) {
        snprintf(msg, len, "The parameter %s is given more than once.", name);
        return -1;
    }
    *value = l.value;
    return l.count;
}

bool web_param_int(web_request *rq, const char *name, int64_t min, int64_t max, int64_t *out, char *msg, size_t len)
{
    const char *v;
    int found = param(rq, name, &v, msg, len);
    if (found <= 0) return found == 0;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!(isdigit((unsigned char)v[0]) || ((v[0] == '-' || v[0] == '+') && isdigit((unsigned char)v[1]))) || *end ||
        errno == ERANGE) {
        snprintf(msg, len, "The value '%.64s' is not valid for %s: it must be a whole number.", v, name);
        return false;
    }
    if (n < min || n > max) {
        snprintf(msg, len, "The field %s must be between %lld and %lld.", name, (long long)min, (long long)max);
        return false;
    }
    *out = n;
    return true;
}

bool web_param_bool(web_request *rq, const char *name, bool *out, char *msg, size_t len)
{
    const char *v;
    int found = param(rq, name, &v, msg, len);
    if (found <= 0) return found == 0;
    if (strcasecmp(v, "true") == 0 || strcasecmp(v, "false") == 0) {
        *out = strcasecmp(v, "true") == 0;
        return true;
    }
    snprintf(msg, len, "The value '%.64s' is not valid for %s: it must be true or false.", v, name);
    return false;
}

/* ---- ISO 8601 date and time with a zone ----------------------------------------------- */

/* Exactly N digits at *P (advanced); -1 when not. */
static int digits(const char **p, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (!isdigit((unsigned char)**p)) return -1;
        v = v * 10 + (**p - '0');
    }
    return v;
}

/* Days from 1970-01-01 to Y-M-D of the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* The zone at P: Z, ±hh, ±hh:mm or ±hhmm, at most 14 hours as .NET allows; the offset
 * in seconds east of UTC. 1 parsed, 0 no zone at all, -1 malformed. */
static int zone(const char *p, int64_t *offset)
{
    if ((*p == 'Z' || *p == 'z') && !p[1]) {
        *offset = 0;
        return 1;
    }
    if (!*p) return 0;
    if (*p != '+' && *p != '-') return -1;
    int sign = *p++ == '-' ? -1 : 1;
    int h = digits(&p, 2), m = 0;
    if (h < 0) return -1;
    bool colon = *p == ':';
    if (colon) p++;
    if ((*p || colon) && (m = digits(&p, 2)) < 0) return -1;
    if (*p || m > 59 || h * 60 + m > 14 * 60) return -1;
    *offset = sign * (int64_t)(h * 3600 + m * 60);
    return 1;
}

/* TEXT as YYYY-MM-DDThh:mm[:ss[.fraction]] and a zone; microseconds since the epoch
 * (UTC), fractions beyond them cut. 1 parsed, 0 no zone, -1 not such a date and time. */
static int parse_time(const char *text, int64_t *us)
{
    const char *p = text;
    int y = digits(&p, 4);
    if (y < 1 || *p++ != '-') return -1;
    int mo = digits(&p, 2);
    if (mo < 1 || mo > 12 || *p++ != '-') return -1;
    int d = digits(&p, 2);
    if (d < 1 || d > days_in_month(y, mo)) return -1;
    if (*p != 'T' && *p != 't' && *p != ' ') return *p ? -1 : 0; /* a date alone has no zone */
    p++;
    int h = digits(&p, 2);
    if (h < 0 || h > 23 || *p++ != ':') return -1;
    int mi = digits(&p, 2), s = 0;
    if (mi < 0 || mi > 59) return -1;
    int64_t frac = 0;
    if (*p == ':') {
        p++;
        if ((s = digits(&p, 2)) < 0 || s > 59) return -1;
        if (*p == '.' || *p == ',') {
            p++;
            if (!isdigit((unsigned char)*p)) return -1;
            int nf = 0;
            for (; isdigit((unsigned char)*p); p++)
                if (nf < 6) frac = frac * 10 + (*p - '0'), nf++;
            for (; nf < 6; nf++) frac *= 10;
        }
    }
    int64_t offset;
    int z = zone(p, &offset);
    if (z <= 0) return z;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset;
    *us = secs * 1000000 + frac;
    return 1;
}

bool web_param_time(web_request *rq, const char *name, int64_t *us, char *msg, size_t len)
{
    const char *v;
    int found = param(rq, name, &v, msg, len);
    if (found <= 0) return found == 0;
    char text[80];
    snprintf(text, sizeof text, "%s", v);
    size_t n = strlen(text);
    while (n && isspace((unsigned char)text[n - 1])) text[--n] = 0;
    if (!n) return true; /* empty: as absent (the reference's binder skips blank values) */
    /* An unencoded '+' of an offset arrives as a space (form encoding); unless strict,
     * take it as the '+' it was. */
    char *sp = n > 16 ? strchr(text + 16, ' ') : NULL;
    if (sp && !rq->srv->strict && isdigit((unsigned char)sp[1])) *sp = '+';
    int r = strlen(v) < sizeof text ? parse_time(text, us) : -1;
    if (r == 0) {
        snprintf(msg, len, "The value '%.64s' of %s has no time zone: add Z or an offset such as +02:00.", v, name);
        return false;
    }
    if (r < 0) {
        snprintf(msg, len,
                 "The value '%.64s' of %s is not a valid date and time: use ISO 8601 with a time zone, such as "
                 "2024-01-31T08:00:00Z.",
                 v, name);
        return false;
    }
    return true;
}
