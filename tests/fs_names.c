/* fs_names.c — unit tests of the /patients view's names (fs/names.c): safe, unique,
 * stable, and reversible where lookups need it. */
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "testlib.h"

static store_browse_entry patient(const char *id, const char *pn, int64_t arrival)
{
    store_browse_entry e = {.arrival = arrival};
    snprintf(e.patient_id, sizeof e.patient_id, "%s", id);
    snprintf(e.text, sizeof e.text, "%s", pn);
    return e;
}

static store_browse_entry study(const char *date, const char *desc, int64_t arrival)
{
    store_browse_entry e = {.arrival = arrival};
    snprintf(e.date, sizeof e.date, "%s", date);
    snprintf(e.text, sizeof e.text, "%s", desc);
    return e;
}

static bool safe(const char *name)
{
    if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strlen(name) > NAMES_MAX) return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7F || *p == '/' || *p == '\\') return false;
    return true;
}

static void test_person(void)
{
    char out[NAMES_MAX + 1];
    names_person("DOE^JOHN", out, sizeof out);
    CHECK(strcmp(out, "DOE, JOHN") == 0, "family, given: '%s'", out);
    names_person("DOE^JOHN^Q^DR^JR", out, sizeof out);
    CHECK(strcmp(out, "DOE, JOHN Q") == 0, "middle name kept, prefix and suffix left out: '%s'", out);
    names_person("DOE", out, sizeof out);
    CHECK(strcmp(out, "DOE") == 0, "family only: '%s'", out);
    names_person("^JOHN", out, sizeof out);
    CHECK(strcmp(out, "JOHN") == 0, "given only: '%s'", out);
    names_person("", out, sizeof out);
    CHECK(strcmp(out, "Unnamed") == 0, "empty: '%s'", out);
    names_person("^^^", out, sizeof out);
    CHECK(strcmp(out, "Unnamed") == 0, "only carets: '%s'", out);
    names_person("Müller^Jürgen", out, sizeof out);
    CHECK(strcmp(out, "Müller, Jürgen") == 0, "UTF-8 kept: '%s'", out);
    names_person("A/B^C\tD", out, sizeof out);
    CHECK(strcmp(out, "A_B, C D") == 0, "slash and tab made safe: '%s'", out);
}

static void test_clean(void)
{
    char out[64];
    names_clean("  a  b\x01" "c  ", out, sizeof out);
    CHECK(strcmp(out, "a b c") == 0, "spaces and controls collapse, trimmed: '%s'", out);
    names_clean("..", out, sizeof out);
    CHECK(strcmp(out, "_") == 0, "'..' is not a name: '%s'", out);
    names_clean("\xff\xfe ok", out, sizeof out);
    CHECK(strcmp(out, "?? ok") == 0, "invalid UTF-8 becomes '?': '%s'", out);
    names_clean("ääääääääää", out, 8);
    CHECK(strcmp(out, "äää") == 0, "cut at a character boundary: '%s'", out);
}

static void test_patients(void)
{
    store_browse_entry e[4] = {patient("P1", "DOE^JOHN", 1), patient("A/B (x)%", "SMITH^ANN", 2),
                               patient("P1", "DOE^JON", 3), patient("", "", 4)};
    names_buf n[4];
    names_for(STORE_BROWSE_PATIENTS, e, 4, n);
    CHECK(strcmp(n[0], "DOE, JOHN (P1)") == 0, "patient folder: '%s'", n[0]);
    CHECK(strcmp(n[1], "SMITH, ANN (A%2FB %28x%29%25)") == 0, "unsafe ID characters percent-encoded: '%s'", n[1]);
    CHECK(strcmp(n[2], "DOE, JON (P1)") == 0, "same ID, other name: a folder of its own: '%s'", n[2]);
    CHECK(strcmp(n[3], "Unnamed ()") == 0, "no name, no ID: '%s'", n[3]);
    char id[64];
    for (int i = 0; i < 4; i++) {
        CHECK(safe(n[i]), "safe name '%s'", n[i]);
        CHECK(names_patient_id(n[i], id, sizeof id) && strcmp(id, e[i].patient_id) == 0,
              "the folder name gives the PatientID back: '%s' -> '%s'", n[i], id);
    }
    CHECK(!names_patient_id("no id here", id, sizeof id), "a name without (ID) is not a patient folder");
    CHECK(!names_patient_id("X (bad%zz)", id, sizeof id), "a broken escape is refused");

    store_browse_entry twins[2] = {patient("P9", "TWIN^A", 5), patient("P9", "TWIN^A", 9)};
    names_buf t[2];
    names_for(STORE_BROWSE_PATIENTS, twins, 2, t);
    CHECK(strcmp(t[0], "TWIN, A ~5 (P9)") == 0 && strcmp(t[1], "TWIN, A ~9 (P9)") == 0,
          "equal names: both tagged with their arrival, before the ID: '%s' '%s'", t[0], t[1]);
    CHECK(names_patient_id(t[1], id, sizeof id) && strcmp(id, "P9") == 0, "a tagged folder still gives its ID");
}

static void test_studies_series_instances(void)
{
    store_browse_entry s[4] = {study("20200115", "CT HEAD W/O", 10), study("", "", 11), study("20200115", "CT HEAD W/O", 12),
                               study("2020", "odd\tdate", 13)};
    names_buf n[4];
    names_for(STORE_BROWSE_STUDIES, s, 4, n);
    CHECK(strcmp(n[0], "2020-01-15 CT HEAD W_O ~10") == 0, "equal study folders are both tagged: '%s'", n[0]);
    CHECK(strcmp(n[1], "no date") == 0, "no date, no description: '%s'", n[1]);
    CHECK(strcmp(n[2], "2020-01-15 CT HEAD W_O ~12") == 0, "the second too: '%s'", n[2]);
    CHECK(strcmp(n[3], "2020 odd date") == 0, "an odd date is shown as it is: '%s'", n[3]);
    /* adding a study before the first in time but later in arrival changes no name */
    store_browse_entry s2[5] = {s[0], s[1], s[2], s[3], study("20200115", "CT HEAD W/O", 14)};
    names_buf n2[5];
    names_for(STORE_BROWSE_STUDIES, s2, 5, n2);
    CHECK(strcmp(n2[0], n[0]) == 0 && strcmp(n2[2], n[2]) == 0 && strcmp(n2[4], "2020-01-15 CT HEAD W_O ~14") == 0,
          "names stay when more arrive");
    names_buf tagged, plain;
    names_tagged(STORE_BROWSE_STUDIES, &s[1], tagged);
    names_plain(STORE_BROWSE_STUDIES, &s[0], plain);
    CHECK(strcmp(tagged, "no date ~11") == 0 && strcmp(plain, "2020-01-15 CT HEAD W_O") == 0,
          "every entry has a tagged and a plain name: '%s' '%s'", tagged, plain);
    names_buf one;
    names_for(STORE_BROWSE_STUDIES, &s[0], 1, &one);
    CHECK(strcmp(one, "2020-01-15 CT HEAD W_O") == 0, "alone, a study folder is plain: '%s'", one);

    store_browse_entry se[3] = {{.modality = "CT", .has_number = true, .number = 3, .text = "Axial", .arrival = 1},
                                {.arrival = 2},
                                {.modality = "MR", .text = "T1", .arrival = 3}};
    names_buf sn[3];
    names_for(STORE_BROWSE_SERIES, se, 3, sn);
    CHECK(strcmp(sn[0], "CT 3 Axial") == 0, "series folder: '%s'", sn[0]);
    CHECK(strcmp(sn[1], "series") == 0, "a series with nothing to show: '%s'", sn[1]);
    CHECK(strcmp(sn[2], "MR T1") == 0, "no series number: '%s'", sn[2]);

    store_browse_entry in[3] = {{.uid = "1.2.3", .has_number = true, .number = 7, .arrival = 100},
                                {.uid = "1.2.4", .has_number = true, .number = 7, .arrival = 101},
                                {.uid = "1.2.5", .arrival = 102}};
    names_buf inn[3];
    names_for(STORE_BROWSE_INSTANCES, in, 3, inn);
    CHECK(strcmp(inn[0], "7 ~100.dcm") == 0 && strcmp(inn[1], "7 ~101.dcm") == 0 && strcmp(inn[2], "1.2.5.dcm") == 0,
          "instance files: '%s' '%s' '%s'", inn[0], inn[1], inn[2]);
    int64_t num = 0;
    CHECK(names_instance_number("7.dcm", &num) && num == 7, "number back from '7.dcm'");
    CHECK(names_instance_number("7 ~101.dcm", &num) && num == 7, "number back from a tagged name");
    CHECK(!names_instance_number("1.2.5.dcm", &num), "a UID name is not a number");
    CHECK(!names_instance_number("7.txt", &num) && !names_instance_number("7 ~.dcm", &num), "odd names refused");
}

static void test_long(void)
{
    store_browse_entry e = study("20200101", "", 1);
    memset(e.text, 'x', sizeof e.text - 1); /* the longest value the store hands out */
    names_buf n;
    names_for(STORE_BROWSE_STUDIES, &e, 1, &n);
    CHECK(strlen(n) <= NAMES_MAX && safe(n), "a long description is cut to NAME_MAX (%zu bytes)", strlen(n));
    store_browse_entry p = patient("ID", "", 1);
    memset(p.text, 'y', sizeof p.text - 1);
    names_for(STORE_BROWSE_PATIENTS, &p, 1, &n);
    char id[16];
    CHECK(strlen(n) <= NAMES_MAX && names_patient_id(n, id, sizeof id) && strcmp(id, "ID") == 0,
          "a long patient name is cut, the ID kept: %zu bytes", strlen(n));
}

int main(void)
{
    test_person();
    test_clean();
    test_patients();
    test_studies_series_instances();
    test_long();
    return test_summary();
}
