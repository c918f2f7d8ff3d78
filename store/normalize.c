/* normalize.c — index and query value normalisation (see normalize.h). */
#include "normalize.h"

#include <ctype.h>
#include <locale.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

/* Base letters of U+00C0..U+017F; '*' = two letters (below), '.' = no accent to drop. */
static const char latin[] =
    "aaaaaa*ceeeeiiiidnooooo.ouuuuy**"
    "aaaaaa*ceeeeiiiidnooooo.ouuuuy*y"
    "aaaaaaccccccccddddeeeeeeeeeegggggggghhhhiiiiiiiiii**jjkkkllllllllllnnnnnnnnnoooooo**"
    "rrrrrrssssssssttttttuuuuuuuuuuuuwwyyyzzzzzzs";
_Static_assert(sizeof latin == 193, "one letter per code point U+00C0..U+017F");

static const char *latin_pair(uint32_t cp)
{
    switch (cp) {
    case 0xC6: case 0xE6: return "ae";
    case 0xDE: case 0xFE: return "th";
    case 0xDF: return "ss";
    case 0x132: case 0x133: return "ij";
    case 0x152: case 0x153: return "oe";
    }
    return NULL;
}

static uint32_t decode(const unsigned char **p)
{
    const unsigned char *s = *p;
    uint32_t cp;
    int n;
    if (s[0] < 0x80) { cp = s[0]; n = 1; }
    else if ((s[0] & 0xE0) == 0xC0 && (s[1] & 0xC0) == 0x80) { cp = (s[0] & 0x1F) << 6 | (s[1] & 0x3F); n = 2; }
    else if ((s[0] & 0xF0) == 0xE0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
        cp = (s[0] & 0x0F) << 12 | (s[1] & 0x3F) << 6 | (s[2] & 0x3F); n = 3;
    } else if ((s[0] & 0xF8) == 0xF0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80) {
        cp = (uint32_t)(s[0] & 0x07) << 18 | (s[1] & 0x3F) << 12 | (s[2] & 0x3F) << 6 | (s[3] & 0x3F); n = 4;
    } else { cp = 0xFFFD; n = 1; }
    *p = s + n;
    return cp;
}

static char *encode(char *o, uint32_t cp)
{
    if (cp < 0x80) *o++ = (char)cp;
    else if (cp < 0x800) { *o++ = (char)(0xC0 | cp >> 6); *o++ = (char)(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) { *o++ = (char)(0xE0 | cp >> 12); *o++ = (char)(0x80 | (cp >> 6 & 0x3F)); *o++ = (char)(0x80 | (cp & 0x3F)); }
    else { *o++ = (char)(0xF0 | cp >> 18); *o++ = (char)(0x80 | (cp >> 12 & 0x3F)); *o++ = (char)(0x80 | (cp >> 6 & 0x3F)); *o++ = (char)(0x80 | (cp & 0x3F)); }
    return o;
}

static locale_t utf8;
static pthread_once_t utf8_once = PTHREAD_ONCE_INIT;

static void utf8_init(void) { utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0); }

/* For case folding beyond Latin; (locale_t)0 when the system has no C.UTF-8. */
static locale_t utf8_locale(void)
{
    pthread_once(&utf8_once, utf8_init);
    return utf8;
}

char *norm_fold(const char *in)
{
    size_t len = strlen(in);
    /* A 2-byte letter can become two 1-byte ones, and an invalid byte U+FFFD (3 bytes). */
    char *out = malloc(len * 3 + 1);
    if (!out) abort();
    char *o = out;
    const unsigned char *p = (const unsigned char *)in;
    locale_t loc = utf8_locale();
    while (*p) {
        uint32_t cp = decode(&p);
        if (cp < 0x80) { *o++ = (char)tolower((int)cp); continue; }
        if (cp >= 0xC0 && cp <= 0x17F) {
            char c = latin[cp - 0xC0];
            const char *pair = c == '*' ? latin_pair(cp) : NULL;
            if (pair) { *o++ = pair[0]; *o++ = pair[1]; continue; }
            if (c != '.') { *o++ = c; continue; }
        }
        if (loc) cp = (uint32_t)towlower_l((wint_t)cp, loc);
        o = encode(o, cp);
    }
    *o = 0;
    /* trim */
    char *s = out;
    while (*s == ' ') s++;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ') n--;
    memmove(out, s, n);
    out[n] = 0;
    return out;
}

char *norm_person_name(const char *in)
{
    char *f = norm_fold(in);
    /* Drop empty trailing components of each group: "doe^john^^" == "doe^john". */
    char *o = f;
    const char *p = f;
    while (*p) {
        const char *end = strchr(p, '=');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n > 0 && (p[n - 1] == '^' || p[n - 1] == ' ')) n--;
        memmove(o, p, n);
        o += n;
        if (!end) break;
        *o++ = '=';
        p = end + 1;
    }
    *o = 0;
    while (o > f && o[-1] == '=') *--o = 0;
    return f;
}

size_t norm_words(const char *folded, char ***words, char **storage)
{
    size_t len = strlen(folded), count = 0, cap = 8;
    char *s = malloc(len + 1);
    char **w = malloc(cap * sizeof *w);
    if (!s || !w) abort();
    memcpy(s, folded, len + 1);
    char *p = s;
    while (*p) {
        /* Separators are ASCII punctuation and spaces; non-ASCII bytes are letters. */
        while (*p && (unsigned char)*p < 0x80 && !isalnum((unsigned char)*p)) *p++ = 0;
        if (!*p) break;
        if (count == cap) {
            cap *= 2;
            w = realloc(w, cap * sizeof *w);
            if (!w) abort();
        }
        w[count++] = p;
        while (*p && ((unsigned char)*p >= 0x80 || isalnum((unsigned char)*p))) p++;
    }
    *words = w;
    *storage = s;
    return count;
}

static bool digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return false;
    return true;
}

bool norm_date(const char *in, char out[9])
{
    while (*in == ' ') in++;
    size_t n = strlen(in);
    while (n > 0 && in[n - 1] == ' ') n--;
    if (n != 8 || !digits(in, 8)) return false;
    memcpy(out, in, 8);
    out[8] = 0;
    return true;
}

/* Copies digits of HHMMSS and the fraction, padding with zeros. */
static bool time_part(const char *in, char out[14])
{
    char d[6] = {'0', '0', '0', '0', '0', '0'};
    size_t k = 0;
    const char *p = in;
    while (*p && *p != '.' && k < 6) {
        if (*p == ':') { p++; continue; }
        if (!isdigit((unsigned char)*p)) return false;
        d[k++] = *p++;
    }
    if (k == 0 || k % 2) return false;
    char f[6] = {'0', '0', '0', '0', '0', '0'};
    if (*p == '.') {
        p++;
        for (size_t i = 0; *p && isdigit((unsigned char)*p); p++)
            if (i < 6) f[i++] = *p;
    }
    if (*p && *p != ' ') return false;
    memcpy(out, d, 6);
    out[6] = '.';
    memcpy(out + 7, f, 6);
    out[13] = 0;
    return true;
}

bool norm_time(const char *in, char out[14])
{
    while (*in == ' ') in++;
    return *in && time_part(in, out);
}

bool norm_datetime(const char *in, char out[22], bool *had_zone)
{
    while (*in == ' ') in++;
    char buf[64];
    size_t n = strcspn(in, "+- ");
    *had_zone = in[n] == '+' || in[n] == '-';
    if (n >= sizeof buf || n < 4) return false;
    memcpy(buf, in, n);
    buf[n] = 0;
    size_t date_len = strcspn(buf, ".");
    if (date_len > 14) date_len = 14;
    if (!digits(buf, date_len < 8 ? date_len : 8) || (date_len != 4 && date_len != 6 && date_len < 8))
        return false;
    char d[9] = "00000101";
    memcpy(d, buf, date_len < 8 ? date_len : 8);
    memcpy(out, d, 8);
    char t[14] = "000000.000000";
    if (date_len > 8 && !time_part(buf + 8, t)) return false;
    memcpy(out + 8, t, 6);
    memcpy(out + 14, t + 6, 7);
    out[21] = 0;
    return true;
}

/* The number written by the two digits at P. */
static int two(const char *p) { return (p[0] - '0') * 10 + (p[1] - '0'); }

bool norm_date_exists(const char *d, char *why, size_t n)
{
    static const char *const months[] = {"January", "February", "March", "April", "May", "June", "July",
                                         "August", "September", "October", "November", "December"};
    int year = two(d) * 100 + two(d + 2), month = two(d + 4), day = two(d + 6);
    if (month < 1 || month > 12) {
        snprintf(why, n, "there is no month %02d", month);
        return false;
    }
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    int last = days[month - 1] + (month == 2 && leap);
    if (day < 1 || day > last) {
        snprintf(why, n, "there is no day %02d in %s %04d (it has %d days)", day, months[month - 1], year, last);
        return false;
    }
    return true;
}

bool norm_time_exists(const char *t, char *why, size_t n)
{
    int hour = two(t), minute = two(t + 2), second = two(t + 4);
    if (hour > 23) snprintf(why, n, "there is no hour %02d (00 to 23)", hour);
    else if (minute > 59) snprintf(why, n, "there is no minute %02d (00 to 59)", minute);
    else if (second > 60) snprintf(why, n, "there is no second %02d (00 to 60)", second);
    else return true;
    return false;
}
