/* names.h — the names of the /patients view, and the way back from a name.
 *
 *   /patients/<Name> (<PatientID>)/<StudyDate> <StudyDescription>/
 *             <Modality> <SeriesNumber> <SeriesDescription>/<InstanceNumber>.dcm
 *
 * Names are UTF-8, never contain '/', '\' or control characters, are never "." or "..",
 * and fit NAME_MAX. Siblings whose names would be equal are told apart: each of them gets
 * " ~<arrival number>", which depends on the entry alone. Every entry answers to both its
 * tagged and its plain name (a plain name shared by several means the first to arrive),
 * so a name once listed keeps meaning the same entry while it exists, when siblings
 * arrive or go (rm -r relies on that). The PatientID is
 * percent-encoded where it has unsafe characters, so a patient folder's name gives the
 * PatientID back exactly; an instance's name gives its InstanceNumber back (or its SOP
 * Instance UID when it has none). Pure functions: no store access. */
#ifndef DICOMFS_FS_NAMES_H
#define DICOMFS_FS_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define NAMES_MAX 255 /* bytes, NAME_MAX */

typedef char names_buf[NAMES_MAX + 1];

/* The names of N siblings of one level, given in arrival order (as store_browse returns
 * them), with duplicates told apart. */
void names_for(store_browse_level level, const store_browse_entry *e, size_t n, names_buf *out);

/* An entry's tagged name ("... ~<arrival>") and its plain name, the two it answers to. */
void names_tagged(store_browse_level level, const store_browse_entry *e, names_buf out);
void names_plain(store_browse_level level, const store_browse_entry *e, names_buf out);

/* The PatientID a patient folder's name carries; false when NAME is not such a name. */
bool names_patient_id(const char *name, char *id, size_t cap);

/* What an instance file's name says: its InstanceNumber (true), or false when the name
 * is not "<number>[ ~k].dcm" (then it may be "<SOP Instance UID>.dcm"). */
bool names_instance_number(const char *name, int64_t *number);

/* Copies TEXT into OUT (CAP bytes) as a safe name part: '/', '\' become '_', control
 * characters and runs of spaces one space, invalid UTF-8 '?', trimmed, cut at a
 * character boundary. */
void names_clean(const char *text, char *out, size_t cap);

/* A DICOM person name for people: "FAMILY^GIVEN^MIDDLE" -> "FAMILY, GIVEN MIDDLE". */
void names_person(const char *pn, char *out, size_t cap);

#endif
