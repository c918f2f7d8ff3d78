/* names.c — see names.h. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"

/* The length of the valid UTF-8 character at S (1 for an invalid byte, marked by *BAD). */
static size_t utf8_char(const unsigned char *s, bool *bad)
{
    size_t len = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    *bad = len == 0 || (len == 2 && s[0] < 0xC2);
    for (size_t i = 1; !*bad && i < len; i++)
        if ((s[i] & 0xC0) != 0x80) *bad = true;
    return *bad ? 1 : len;
}

void names_clean(const char *text, char *out, size_t cap)
{
    size_t o = 0;
    bool space = true; /* drops leading spaces and collapses runs */
    const unsigned char *s = (const unsigned char *)(text ? text : "");
    while (*s && cap > 1) {
        bool bad;
        size_t len = utf8_char(s, &bad);
        if (*s < 0x20 || *s == 0x7F || *s == ' ') {
            if (!space && o + 1 < cap) out[o++] = ' ';
            space = true;
        } else if (bad || *s == '/' || *s == '\\') {
            if (o + 1 >= cap) break;
            out[o++] = bad ? '?' : '_';
            space = false;
        } else {
            if (o + len >= cap) break;
            memcpy(out + o, s, len);
            o += len;
            space = false;
        }
        s += len;
    }
    while (o > 0 && out[o - 1] == ' ') o--;
    if (cap) out[o] = 0;
    if ((o == 1 && out[0] == '.') || (o == 2 && out[0] == '.' && out[1] == '.')) out[0] = '_', out[1] = 0;
}

void names_person(const char *pn, char *out, size_t cap)
{
    char group[NAMES_MAX + 1], part[5][NAMES_MAX + 1] = {{0}};
    snprintf(group, sizeof group, "%.*s", (int)strcspn(pn ? pn : "", "="), pn ? pn : "");
    char *p = group;
    for (int i = 0; i < 5 && p; i++) {
        char *caret = strchr(p, '^');
        if (caret) *caret = 0;
        names_clean(p, part[i], sizeof part[i]);
        p = caret ? caret + 1 : NULL;
    }
    char given[2 * NAMES_MAX + 2];
    snprintf(given, sizeof given, "%s%s%s", part[1], *part[1] && *part[2] ? " " : "", part[2]);
    if (*part[0] && *given) snprintf(out, cap, "%s, %s", part[0], given);
    else if (*part[0] || *given) snprintf(out, cap, "%s", *part[0] ? part[0] : given);
    else snprintf(out, cap, "Unnamed");
}

/* Percent-encodes what may not appear in a name, and the brackets that delimit the ID. */
static void encode_id(const char *id, char *out, size_t cap)
{
    size_t o = 0;
    for (const unsigned char *s = (const unsigned char *)id; *s && o + 4 < cap; s++) {
        if (*s < 0x20 || *s == 0x7F || strchr("%/\\()", *s)) o += (size_t)snprintf(out + o, cap - o, "%%%02X", *s);
        else out[o++] = (char)*s;
    }
    out[o] = 0;
}

/* " ~<arrival>": stable, unlike a rank, when siblings are added or deleted. */
static void suffix(const store_browse_entry *e, bool tagged, char out[32])
{
    if (tagged) snprintf(out, 32, " ~%" PRId64, e->arrival);
    else out[0] = 0;
}

/* Truncates a UTF-8 string to at most MAX bytes at a character boundary. */
static void cut(char *s, size_t max)
{
    size_t len = strlen(s);
    if (len <= max) return;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
    s[max] = 0;
    while (max > 0 && s[max - 1] == ' ') s[--max] = 0;
}

static void name_of(store_browse_level level, const store_browse_entry *e, bool tagged, char *out)
{
    char sfx[32], a[NAMES_MAX + 1], b[NAMES_MAX + 1], id[NAMES_MAX + 1];
    char big[4 * NAMES_MAX]; /* composed here, then cut to fit (the parts were cut already) */
    suffix(e, tagged, sfx);
    switch (level) {
    case STORE_BROWSE_PATIENTS:
        names_person(e->text, a, sizeof a);
        encode_id(e->patient_id, id, sizeof id);
        long room = (long)NAMES_MAX - (long)(strlen(sfx) + strlen(id) + 3); /* the name keeps its ID */
        cut(a, room > 16 ? (size_t)room : 16);
        snprintf(big, sizeof big, "%s%s (%s)", a, sfx, id);
        break;
    case STORE_BROWSE_STUDIES: {
        const char *d = e->date;
        bool iso = strlen(d) == 8 && strspn(d, "0123456789") == 8;
        if (iso) snprintf(a, sizeof a, "%.4s-%.2s-%.2s", d, d + 4, d + 6);
        else names_clean(*d ? d : "no date", a, sizeof a);
        names_clean(e->text, b, sizeof b);
        cut(b, NAMES_MAX > strlen(a) + strlen(sfx) + 1 ? NAMES_MAX - strlen(a) - strlen(sfx) - 1 : 0);
        snprintf(big, sizeof big, "%s%s%s%s", a, *b ? " " : "", b, sfx);
        break;
    }
    case STORE_BROWSE_SERIES: {
        char mod[32], num[32] = "";
        names_clean(e->modality, mod, sizeof mod);
        if (e->has_number) snprintf(num, sizeof num, "%" PRId64, e->number);
        names_clean(e->text, b, sizeof b);
        snprintf(a, sizeof a, "%s%s%s", mod, *mod && *num ? " " : "", num);
        cut(b, NAMES_MAX > strlen(a) + strlen(sfx) + 1 ? NAMES_MAX - strlen(a) - strlen(sfx) - 1 : 0);
        snprintf(big, sizeof big, "%s%s%s%s", a, *a && *b ? " " : "", b, sfx);
        if (!*a && !*b) snprintf(big, sizeof big, "series%s", sfx);
        break;
    }
    case STORE_BROWSE_INSTANCES:
        if (e->has_number) snprintf(big, sizeof big, "%" PRId64 "%s.dcm", e->number, sfx);
        else snprintf(big, sizeof big, "%s%s.dcm", e->uid, sfx);
        break;
    }
    cut(big, NAMES_MAX);
    memcpy(out, big, strlen(big) + 1);
}

static int by_name(const void *a, const void *b, void *names)
{
    const names_buf *n = names;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int c = strcmp(n[i], n[j]);
    return c ? c : (i > j) - (i < j); /* equal names: arrival order */
}

void names_for(store_browse_level level, const store_browse_entry *e, size_t n, names_buf *out)
{
    for (size_t i = 0; i < n; i++) name_of(level, &e[i], false, out[i]);
    size_t *ix = malloc((n ? n : 1) * sizeof *ix);
    if (!ix) abort();
    for (size_t i = 0; i < n; i++) ix[i] = i;
    qsort_r(ix, n, sizeof *ix, by_name, out);
    for (size_t g = 0; g < n;) {
        size_t h = g + 1;
        while (h < n && strcmp(out[ix[g]], out[ix[h]]) == 0) h++;
        for (size_t k = g; h - g > 1 && k < h; k++) name_of(level, &e[ix[k]], true, out[ix[k]]);
        g = h;
    }
    free(ix);
}

void names_tagged(store_browse_level level, const store_browse_entry *e, names_buf out)
{
    name_of(level, e, true, out);
}

void names_plain(store_browse_level level, const store_browse_entry *e, names_buf out)
{
    name_of(level, e, false, out);
}

static int hexval(char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

bool names_patient_id(const char *name, char *id, size_t cap)
{
    size_t len = strlen(name);
    const char *open = strrchr(name, '(');
    if (!open || len < 3 || name[len - 1] != ')' || open == name || open[-1] != ' ') return false;
    size_t o = 0;
    for (const char *p = open + 1; p < name + len - 1; p++) {
        if (o + 1 >= cap) return false;
        if (*p == '%') {
            if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2])) return false;
            id[o++] = (char)(hexval(p[1]) << 4 | hexval(p[2]));
            p += 2;
        } else {
            id[o++] = *p;
        }
    }
    id[o] = 0;
    return true;
}

bool names_instance_number(const char *name, int64_t *number)
{
    char *end;
    if (!(*name >= '0' && *name <= '9') && *name != '-') return false;
    long long v = strtoll(name, &end, 10);
    if (end == name) return false;
    if (strncmp(end, " ~", 2) == 0) {
        char *k_end;
        if (strtoll(end + 2, &k_end, 10) < 1) return false;
        end = k_end;
    }
    if (strcmp(end, ".dcm") != 0) return false;
    *number = v;
    return true;
}
