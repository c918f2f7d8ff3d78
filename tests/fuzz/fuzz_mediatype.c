/* fuzz_mediatype.c — Content-Type and Accept parsing (web/mediatype.c).
 *
 * The input is one header value, parsed as a media type and as an Accept list, strict
 * and lenient. Beyond "no crash" it checks:
 *   - results are well formed: a lower-case "type/subtype", at most WEB_MT_MAX_PARAMS
 *     lower-case parameter names, q in [0, 1], an Accept count within MAX;
 *   - strict is a subset of lenient: what strict accepts, lenient accepts the same way;
 *   - parse → serialise (every value quoted, q printed) → strict parse round-trips;
 *   - web_media_type_param finds each parameter's first value, case-insensitively. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzzlib.h"
#include "mediatype.h"

static void check_lower(const char *s, const char *what)
{
    for (; *s; s++) FUZZ_ASSERT(!isupper((unsigned char)*s), "%s not lower-cased", what);
}

static void well_formed(const web_media_type *mt)
{
    const char *slash = strchr(mt->type, '/');
    FUZZ_ASSERT(slash && slash > mt->type && slash[1] && !strchr(slash + 1, '/'), "type '%s'", mt->type);
    check_lower(mt->type, "type");
    FUZZ_ASSERT(mt->n_params <= WEB_MT_MAX_PARAMS, "%zu params", mt->n_params);
    FUZZ_ASSERT(mt->q >= 0.0 && mt->q <= 1.0, "q %g", mt->q);
    for (size_t i = 0; i < mt->n_params; i++) {
        FUZZ_ASSERT(mt->params[i].name[0] && strcmp(mt->params[i].name, "q") != 0, "param name '%s'",
                    mt->params[i].name);
        check_lower(mt->params[i].name, "param name");
        const char *v = web_media_type_param(mt, mt->params[i].name);
        size_t first = 0;
        while (strcasecmp(mt->params[first].name, mt->params[i].name) != 0) first++;
        FUZZ_ASSERT(v == mt->params[first].value, "param() misses %s", mt->params[i].name);
    }
}

static bool same(const web_media_type *a, const web_media_type *b)
{
    if (strcmp(a->type, b->type) != 0 || a->n_params != b->n_params || a->q != b->q) return false;
    for (size_t i = 0; i < a->n_params; i++)
        if (strcmp(a->params[i].name, b->params[i].name) != 0 || strcmp(a->params[i].value, b->params[i].value) != 0)
            return false;
    return true;
}

/* MT as text, every value a quoted-string, q with three decimals. */
static void serialise(const web_media_type *mt, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "%s", mt->type);
    for (size_t i = 0; i < mt->n_params && n < cap; i++) {
        n += (size_t)snprintf(out + n, cap - n, "; %s=\"", mt->params[i].name);
        for (const char *v = mt->params[i].value; *v && n + 3 < cap; v++) {
            if (*v == '"' || *v == '\\') out[n++] = '\\';
            out[n++] = *v;
        }
        if (n + 2 < cap) out[n++] = '"', out[n] = 0;
    }
    if (mt->q != 1.0 && n < cap) snprintf(out + n, cap - n, "; q=%.3f", mt->q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size);
    static web_media_type strict, lenient, again; /* ~2.7 KB each: off the stack */
    int rs = web_media_type_parse(text, true, &strict);
    int rl = web_media_type_parse(text, false, &lenient);
    if (rs == 0) {
        FUZZ_ASSERT(rl == 0 && same(&strict, &lenient), "strict accepts what lenient refuses or reads otherwise");
    }
    if (rl == 0) {
        well_formed(&lenient);
        static char buf[8 * 600 + 256];
        serialise(&lenient, buf, sizeof buf);
        FUZZ_ASSERT(web_media_type_parse(buf, true, &again) == 0 && same(&lenient, &again), "round trip of '%s'", buf);
    }

    enum { MAX = 6 };
    static web_media_type ls[MAX], ss[MAX];
    size_t max = size ? data[0] % (MAX + 1) : MAX; /* MAX 0 must work as well */
    int nl = web_accept_parse(text, false, ls, max);
    int ns = web_accept_parse(text, true, ss, max);
    FUZZ_ASSERT(nl >= 0 && (size_t)nl <= max, "lenient Accept count %d (max %zu)", nl, max);
    FUZZ_ASSERT(ns >= -1 && ns <= nl, "strict Accept count %d, lenient %d", ns, nl);
    if (ns >= 0) FUZZ_ASSERT(ns == nl, "strict Accept count %d, lenient %d", ns, nl);
    for (int i = 0; i < nl; i++) {
        well_formed(&ls[i]);
        if (ns >= 0) FUZZ_ASSERT(same(&ls[i], &ss[i]), "Accept entry %d differs between strict and lenient", i);
    }
    free(text);
    return 0;
}
