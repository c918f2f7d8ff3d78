/* web_mediatype.c — the media-type and Accept parsing rules (web/mediatype.h): types and
 * parameters, quoting, case, whitespace, q-values, Accept lists, and what is refused. */
#include <math.h>
#include <string.h>

#include "mediatype.h"
#include "testlib.h"

static bool q_is(double q, double expected)
{
    return fabs(q - expected) < 1e-9;
}

static void type_without_parameters(void)
{
    web_media_type mt;
    CHECK(web_media_type_parse("application/dicom", true, &mt) == 0, "a bare type parses");
    CHECK(strcmp(mt.type, "application/dicom") == 0 && mt.n_params == 0 && q_is(mt.q, 1.0),
          "type kept, no params, q 1: %s %zu %g", mt.type, mt.n_params, mt.q);
    CHECK(web_media_type_param(&mt, "type") == NULL, "an absent parameter is NULL");
    CHECK(web_media_type_parse("*/*", true, &mt) == 0 && strcmp(mt.type, "*/*") == 0, "*/* parses");
    CHECK(web_media_type_parse("image/*", true, &mt) == 0 && strcmp(mt.type, "image/*") == 0, "image/* parses");
    CHECK(web_media_type_parse("application/vnd.api+json", true, &mt) == 0 && strcmp(mt.type, "application/vnd.api+json") == 0,
          "structured syntax suffix parses");
}

static void type_with_parameters(void)
{
    web_media_type mt;
    CHECK(web_media_type_parse("multipart/related; type=\"application/dicom\"; boundary=abc", true, &mt) == 0,
          "STOW Content-Type parses");
    CHECK(strcmp(mt.type, "multipart/related") == 0 && mt.n_params == 2, "type and two params: %zu", mt.n_params);
    const char *t = web_media_type_param(&mt, "type"), *b = web_media_type_param(&mt, "boundary");
    CHECK(t && strcmp(t, "application/dicom") == 0, "quoted value unquoted: %s", t ? t : "(null)");
    CHECK(b && strcmp(b, "abc") == 0, "token value kept: %s", b ? b : "(null)");
    CHECK(strcmp(mt.params[0].name, "type") == 0 && strcmp(mt.params[1].name, "boundary") == 0, "params keep their order");

    CHECK(web_media_type_parse("application/dicom;transfer-syntax=1.2.840.10008.1.2.4.50", true, &mt) == 0 &&
              strcmp(web_media_type_param(&mt, "transfer-syntax"), "1.2.840.10008.1.2.4.50") == 0,
          "no space after ';' is fine");
    CHECK(web_media_type_parse("application/dicom; transfer-syntax=*", true, &mt) == 0 &&
              strcmp(web_media_type_param(&mt, "transfer-syntax"), "*") == 0,
          "'*' is a token value");
    CHECK(web_media_type_parse("a/b; x=\"\"", true, &mt) == 0 && strcmp(web_media_type_param(&mt, "x"), "") == 0,
          "an empty quoted value is a value");
}

static void quoted_values_resolve_escapes_and_hide_separators(void)
{
    web_media_type mt;
    CHECK(web_media_type_parse("a/b; x=\"say \\\"hi\\\"\"; y=z", true, &mt) == 0, "escaped quotes parse");
    CHECK(strcmp(web_media_type_param(&mt, "x"), "say \"hi\"") == 0, "escaped quotes resolved: %s", web_media_type_param(&mt, "x"));
    CHECK(strcmp(web_media_type_param(&mt, "y"), "z") == 0, "the parameter after it is found");

    CHECK(web_media_type_parse("a/b; x=\"one; two, three=4\"; y=\"back\\\\slash\"", true, &mt) == 0, "separators in quotes parse");
    CHECK(mt.n_params == 2 && strcmp(web_media_type_param(&mt, "x"), "one; two, three=4") == 0,
          "';' ',' '=' inside quotes are value: %s", web_media_type_param(&mt, "x"));
    CHECK(strcmp(web_media_type_param(&mt, "y"), "back\\slash") == 0, "an escaped backslash is one backslash");
    CHECK(web_media_type_parse("a/b; x=\"\\a\\b\"", true, &mt) == 0 && strcmp(web_media_type_param(&mt, "x"), "ab") == 0,
          "any escaped character stands for itself");
    CHECK(web_media_type_parse("a/b; x=\"tab\there\"", true, &mt) == 0, "a tab inside quotes is allowed");
}

static void type_and_parameter_names_are_case_insensitive(void)
{
    web_media_type mt;
    CHECK(web_media_type_parse("Multipart/RELATED; TYPE=\"Application/DICOM\"; Boundary=AbC", true, &mt) == 0, "mixed case parses");
    CHECK(strcmp(mt.type, "multipart/related") == 0, "type lower-cased: %s", mt.type);
    CHECK(strcmp(mt.params[0].name, "type") == 0 && strcmp(mt.params[1].name, "boundary") == 0, "names lower-cased");
    CHECK(strcmp(web_media_type_param(&mt, "Type"), "Application/DICOM") == 0, "values keep their case");
    CHECK(strcmp(web_media_type_param(&mt, "BOUNDARY"), "AbC") == 0, "lookup ignores case");
}

static void whitespace_around_separators_is_allowed(void)
{
    web_media_type mt;
    CHECK(web_media_type_parse(" \t multipart/related \t; \t type=\"application/dicom\" ;boundary=x \t", true, &mt) == 0,
          "spaces and tabs around ';' and at the ends");
    CHECK(strcmp(mt.type, "multipart/related") == 0 && mt.n_params == 2, "parsed through the whitespace");
    CHECK(strcmp(web_media_type_param(&mt, "boundary"), "x") == 0, "trailing whitespace is not in the value");
    CHECK(web_media_type_parse("a/b; x = y", true, &mt) == 0 && strcmp(web_media_type_param(&mt, "x"), "y") == 0,
          "whitespace around '=' tolerated");
    CHECK(web_media_type_parse("a/b;", true, &mt) == 0 && mt.n_params == 0, "a trailing ';' is tolerated");
    CHECK(web_media_type_parse("a/b;; x=1 ;", true, &mt) == 0 && mt.n_params == 1, "empty parameters are skipped");
    CHECK(web_media_type_parse("a /b", true, &mt) == -1, "no whitespace inside type/subtype");
    CHECK(web_media_type_parse("a/ b", true, &mt) == -1, "no whitespace after '/'");
    CHECK(web_media_type_parse("a/b c", true, &mt) == -1, "no second word after the type");
}

static void q_values(void)
{
    web_media_type mt;
    CHECK(web_media_type_parse("a/b; q=0.5", true, &mt) == 0 && q_is(mt.q, 0.5), "q=0.5: %g", mt.q);
    CHECK(mt.n_params == 0 && web_media_type_param(&mt, "q") == NULL, "q goes to .q, not to params");
    CHECK(web_media_type_parse("a/b;q=0", true, &mt) == 0 && q_is(mt.q, 0.0), "q=0 parses as 0");
    CHECK(web_media_type_parse("a/b", true, &mt) == 0 && q_is(mt.q, 1.0), "missing q is 1");
    CHECK(web_media_type_parse("a/b; Q=0.123", true, &mt) == 0 && q_is(mt.q, 0.123), "Q is q, three decimals: %g", mt.q);
    CHECK(web_media_type_parse("a/b; q=1.000", true, &mt) == 0 && q_is(mt.q, 1.0), "q=1.000");
    CHECK(web_media_type_parse("a/b; q=1", true, &mt) == 0 && q_is(mt.q, 1.0), "q=1");
    CHECK(web_media_type_parse("a/b; q=0.", true, &mt) == 0 && q_is(mt.q, 0.0), "q=0. (no digits) is RFC-valid");
    CHECK(web_media_type_parse("a/b; x=1; q=0.7; ext=2", true, &mt) == 0 && q_is(mt.q, 0.7) && mt.n_params == 2,
          "params on both sides of q are kept");
    static const char *invalid[] = {"a/b; q=", "a/b; q=abc", "a/b; q=1.5", "a/b; q=2", "a/b; q=-0.5",
                                    "a/b; q=0.1234", "a/b; q=.5", "a/b; q=0,5", "a/b; q=0.5x", "a/b; q=1.001"};
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++)
        CHECK(web_media_type_parse(invalid[i], true, &mt) == -1, "invalid q refused: %s", invalid[i]);
}

static void malformed_media_types_are_refused(void)
{
    web_media_type mt;
    static const char *bad[] = {
        "",
        "   ",
        "application",
        "application/",
        "/dicom",
        "*/dicom",
        "a/b/c",
        "a/b; x",
        "a/b; x=",
        "a/b; =y",
        "a/b; x=\"unterminated",
        "a/b; x=\"escape at end\\",
        "a/b; x=\"ctl\x01\"",
        "a/b; x=\"a\"b",
        "a/b; x=y z",
        "a/b, c/d",
        "a/b; x=\"a\r\nb\"",
        "\"a/b\"",
        "a/b; x=y; x",
        "a(b)/c",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(web_media_type_parse(bad[i], true, &mt) == -1, "refused: [%s]", bad[i]);
    CHECK(web_media_type_parse(NULL, true, &mt) == -1, "NULL text refused");
}

static void lengths_and_counts_are_bounded(void)
{
    web_media_type mt;
    char text[2048];
    /* type[128] holds 127 characters. */
    memset(text, 'a', 63);
    text[63] = '/';
    memset(text + 64, 'b', 63);
    text[127] = '\0';
    CHECK(web_media_type_parse(text, true, &mt) == 0 && strlen(mt.type) == 127, "a 127-character type fits");
    text[127] = 'b';
    text[128] = '\0';
    CHECK(web_media_type_parse(text, true, &mt) == -1, "a 128-character type is too long");

    strcpy(text, "a/b; ");
    memset(text + 5, 'n', 63);
    strcpy(text + 68, "=v");
    CHECK(web_media_type_parse(text, true, &mt) == 0 && strlen(mt.params[0].name) == 63, "a 63-character name fits");
    strcpy(text, "a/b; ");
    memset(text + 5, 'n', 64);
    strcpy(text + 69, "=v");
    CHECK(web_media_type_parse(text, true, &mt) == -1, "a 64-character name is too long");

    strcpy(text, "a/b; x=\"");
    memset(text + 8, 'v', 255);
    strcpy(text + 263, "\"");
    CHECK(web_media_type_parse(text, true, &mt) == 0 && strlen(mt.params[0].value) == 255, "a 255-character value fits");
    strcpy(text, "a/b; x=");
    memset(text + 7, 'v', 256);
    text[263] = '\0';
    CHECK(web_media_type_parse(text, true, &mt) == -1, "a 256-character value is too long");

    strcpy(text, "a/b");
    for (int i = 0; i < WEB_MT_MAX_PARAMS; i++) sprintf(text + strlen(text), "; p%d=%d", i, i);
    CHECK(web_media_type_parse(text, true, &mt) == 0 && mt.n_params == WEB_MT_MAX_PARAMS, "the maximum of params fits");
    strcat(text, "; one=more");
    CHECK(web_media_type_parse(text, true, &mt) == -1, "one param more is refused");
    strcpy(text, "a/b");
    for (int i = 0; i < WEB_MT_MAX_PARAMS; i++) sprintf(text + strlen(text), "; p%d=%d", i, i);
    strcat(text, "; q=0.5");
    CHECK(web_media_type_parse(text, true, &mt) == 0 && q_is(mt.q, 0.5), "q does not count against the params");
}

static void accept_lists_split_at_top_level_commas(void)
{
    web_media_type list[8];
    int n = web_accept_parse(
        "multipart/related; type=\"application/dicom\"; transfer-syntax=*, application/dicom+json;q=0.9", true, list, 8);
    CHECK(n == 2, "two entries: %d", n);
    if (n == 2) {
        CHECK(strcmp(list[0].type, "multipart/related") == 0 && q_is(list[0].q, 1.0), "first entry, q 1");
        CHECK(strcmp(web_media_type_param(&list[0], "type"), "application/dicom") == 0 &&
                  strcmp(web_media_type_param(&list[0], "transfer-syntax"), "*") == 0,
              "first entry's params");
        CHECK(strcmp(list[1].type, "application/dicom+json") == 0 && q_is(list[1].q, 0.9), "second entry, q 0.9");
    }

    n = web_accept_parse("multipart/related; type=\"application/dicom, application/octet-stream\", */*;q=0.1", true, list, 8);
    CHECK(n == 2 && strcmp(web_media_type_param(&list[0], "type"), "application/dicom, application/octet-stream") == 0,
          "a comma inside quotes does not split: %d", n);
    CHECK(n == 2 && strcmp(list[1].type, "*/*") == 0 && q_is(list[1].q, 0.1), "the entry after it parses");

    n = web_accept_parse("a/b; x=\"q\\\",r\", c/d", true, list, 8);
    CHECK(n == 2 && strcmp(web_media_type_param(&list[0], "x"), "q\",r") == 0, "an escaped quote does not end the quotes");

    n = web_accept_parse("text/html, application/xhtml+xml, application/xml;q=0.9, image/webp, */*;q=0.8", true, list, 8);
    CHECK(n == 5 && q_is(list[2].q, 0.9) && q_is(list[4].q, 0.8) && q_is(list[3].q, 1.0), "a browser Accept: %d", n);
    CHECK(n == 5 && strcmp(list[3].type, "image/webp") == 0, "entries keep their order");

    n = web_accept_parse("a/b;q=0, c/d", true, list, 8);
    CHECK(n == 2 && q_is(list[0].q, 0.0), "q=0 entries are returned (they say \"not acceptable\")");
}

static void accept_list_edges(void)
{
    web_media_type list[2];
    CHECK(web_accept_parse("", true, list, 2) == 0, "an empty Accept has no entries");
    CHECK(web_accept_parse(" , ,\t", true, list, 2) == 0, "only empty elements: no entries");
    CHECK(web_accept_parse("a/b,, ,c/d,", true, list, 2) == 2 && strcmp(list[1].type, "c/d") == 0, "empty elements are skipped");
    CHECK(web_accept_parse("a/b, c/d, e/f", true, list, 2) == 2 && strcmp(list[1].type, "c/d") == 0,
          "no more than MAX entries are returned");
    CHECK(web_accept_parse("a/b, c/d, junk", true, list, 2) == -1, "entries past MAX are still checked");
    CHECK(web_accept_parse("a/b, c/d", true, NULL, 0) == 0, "MAX 0 parses nothing but still validates");
    CHECK(web_accept_parse(NULL, true, list, 2) == -1, "a NULL header is refused");
}

static void malformed_accept_entries_fail_the_list(void)
{
    web_media_type list[4];
    static const char *bad[] = {
        "a/b, c",
        "a/b; q=x, c/d",
        "a/b; x=\"unterminated, c/d",
        "a/b c/d",
        "text/*;level",
        "a/b;q=0.5;q=2",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int n = web_accept_parse(bad[i], true, list, 4);
        CHECK(n == -1, "malformed Accept refused: [%s] -> %d", bad[i], n);
    }
    CHECK(web_accept_parse("text/html;q=0.5;", true, list, 4) == 1, "a trailing ';' is tolerated in Accept too");
}

/* Without STRICT, unquoted values may hold what clients put there unquoted, and a
 * malformed Accept entry is skipped rather than failing the list. */
static void lenient_values_and_lists(void)
{
    web_media_type mt, list[4];
    const char *ohif = "multipart/related; type=application/octet-stream; transfer-syntax=*";
    CHECK(web_media_type_parse(ohif, true, &mt) == -1, "strict: an unquoted '/' is refused");
    CHECK(web_media_type_parse(ohif, false, &mt) == 0 &&
              strcmp(web_media_type_param(&mt, "type"), "application/octet-stream") == 0 &&
              strcmp(web_media_type_param(&mt, "transfer-syntax"), "*") == 0,
          "lenient: OHIF's unquoted type parses");
    CHECK(web_media_type_parse("multipart/related; boundary=a=b:c/d?e; type=application/dicom", false, &mt) == 0 &&
              strcmp(web_media_type_param(&mt, "boundary"), "a=b:c/d?e") == 0,
          "lenient: a boundary with '=', ':', '/' and '?' unquoted");
    CHECK(web_media_type_parse("a/b; x=\"quoted\"; y=un/quoted", false, &mt) == 0 &&
              strcmp(web_media_type_param(&mt, "x"), "quoted") == 0,
          "lenient: quoted values still unquote");
    CHECK(web_media_type_parse("a/b; x=y z", false, &mt) == -1, "lenient: whitespace still ends a value");
    CHECK(web_media_type_parse("a/b; x=\"a\"b", false, &mt) == -1, "lenient: text after a quoted value is refused");
    int n = web_accept_parse(ohif, false, list, 4);
    CHECK(n == 1 && strcmp(web_media_type_param(&list[0], "type"), "application/octet-stream") == 0,
          "lenient Accept: OHIF's frames request: %d", n);
    n = web_accept_parse("junk, a/b; q=x, application/dicom+json", false, list, 4);
    CHECK(n == 1 && strcmp(list[0].type, "application/dicom+json") == 0, "lenient Accept: malformed entries skipped: %d", n);
    CHECK(web_accept_parse("junk, a/b; q=x, application/dicom+json", true, list, 4) == -1, "strict Accept: refused");
}

int main(void)
{
    lenient_values_and_lists();
    type_without_parameters();
    type_with_parameters();
    quoted_values_resolve_escapes_and_hide_separators();
    type_and_parameter_names_are_case_insensitive();
    whitespace_around_separators_is_allowed();
    q_values();
    malformed_media_types_are_refused();
    lengths_and_counts_are_bounded();
    accept_lists_split_at_top_level_commas();
    accept_list_edges();
    malformed_accept_entries_fail_the_list();
    return test_summary();
}
