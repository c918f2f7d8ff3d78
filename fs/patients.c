/* patients.c — the human-readable view:
 *   /patients/<Name> (<PatientID>)/<StudyDate> <Description>/<Modality> <Number> <Description>/<N>.dcm
 *
 * A path is resolved level by level from what the store says now, so the view never
 * keeps state of its own. Each step lists only the siblings that can share the name:
 * the patients with that PatientID, the patient's studies, the study's series, the
 * series' instances with that InstanceNumber. Names come from names.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "names.h"

/* Finds the entry named SEG among the entries Q lists: by its tagged name, else by its
 * plain name (the first to arrive of those that share it). 0, -ENOENT or -EIO. */
static int find_named(store_t *s, const store_browse_query *q, const char *seg, size_t len, store_browse_entry *out)
{
    store_browse_entry *e = NULL;
    size_t n = 0;
    if (store_browse(s, q, &e, &n, NULL) != STORE_OK) return -EIO;
    int rc = -ENOENT;
    names_buf name;
    for (int pass = 0; pass < 2 && rc; pass++)
        for (size_t i = 0; i < n && rc; i++) { /* arrival order */
            if (pass == 0) names_tagged(q->level, &e[i], name);
            else names_plain(q->level, &e[i], name);
            if (strlen(name) == len && memcmp(name, seg, len) == 0) {
                *out = e[i];
                rc = 0;
            }
        }
    free(e);
    return rc;
}

int patients_resolve(store_t *s, const char *const *seg, const size_t *len, size_t count, patients_node *out)
{
    memset(out, 0, sizeof *out);
    out->depth = (int)count;
    if (count == 0) return 0;
    if (count > 4) return -ENOENT;
    char name[NAMES_MAX + 1];
    if (len[0] > NAMES_MAX) return -ENOENT;
    memcpy(name, seg[0], len[0]);
    name[len[0]] = 0;
    if (!names_patient_id(name, out->patient_id, sizeof out->patient_id)) return -ENOENT;
    store_browse_query q = {.level = STORE_BROWSE_PATIENTS, .patient_id = out->patient_id};
    int rc = find_named(s, &q, seg[0], len[0], &out->entry);
    if (rc) return rc;
    snprintf(out->patient_name, sizeof out->patient_name, "%s", out->entry.text);
    if (count == 1) return 0;

    q = (store_browse_query){.level = STORE_BROWSE_STUDIES, .patient_id = out->patient_id,
                             .patient_name = out->patient_name};
    if ((rc = find_named(s, &q, seg[1], len[1], &out->entry))) return rc;
    snprintf(out->study, sizeof out->study, "%s", out->entry.uid);
    if (count == 2) return 0;

    q = (store_browse_query){.level = STORE_BROWSE_SERIES, .study = out->study};
    if ((rc = find_named(s, &q, seg[2], len[2], &out->entry))) return rc;
    snprintf(out->series, sizeof out->series, "%s", out->entry.uid);
    if (count == 3) return 0;

    /* "<number>[ ~k].dcm": only the instances with that number can have the name. */
    if (len[3] > NAMES_MAX) return -ENOENT;
    memcpy(name, seg[3], len[3]);
    name[len[3]] = 0;
    q = (store_browse_query){.level = STORE_BROWSE_INSTANCES, .study = out->study, .series = out->series};
    q.by_number = names_instance_number(name, &q.number);
    rc = find_named(s, &q, seg[3], len[3], &out->entry);
    if (rc == -ENOENT && q.by_number) { /* a SOP Instance UID that looks like a number */
        q.by_number = false;
        rc = find_named(s, &q, seg[3], len[3], &out->entry);
    }
    if (!rc) snprintf(out->sop, sizeof out->sop, "%s", out->entry.uid);
    return rc;
}

void patients_stat(const patients_node *n, struct stat *st)
{
    if (n->depth == 4) fs_file_stat(st, n->entry.size, n->entry.updated_us);
    else fs_dir_stat(st, n->entry.updated_us);
}

int patients_list(store_t *s, const patients_node *dir, fs_fill_fn fill, void *ctx)
{
    store_browse_query q = {0};
    switch (dir->depth) {
    case 0: q.level = STORE_BROWSE_PATIENTS; break;
    case 1: q = (store_browse_query){.level = STORE_BROWSE_STUDIES, .patient_id = dir->patient_id,
                                      .patient_name = dir->patient_name}; break;
    case 2: q = (store_browse_query){.level = STORE_BROWSE_SERIES, .study = dir->study}; break;
    case 3: q = (store_browse_query){.level = STORE_BROWSE_INSTANCES, .study = dir->study, .series = dir->series}; break;
    default: return -ENOTDIR;
    }
    store_browse_entry *e = NULL;
    size_t n = 0;
    if (store_browse(s, &q, &e, &n, NULL) != STORE_OK) return -EIO;
    names_buf *names = malloc((n ? n : 1) * sizeof *names);
    if (!names) abort();
    names_for(q.level, e, n, names);
    for (size_t i = 0; i < n; i++) {
        patients_node child = {.depth = dir->depth + 1, .entry = e[i]};
        struct stat st;
        patients_stat(&child, &st);
        fill(ctx, names[i], &st);
    }
    free(names);
    free(e);
    return 0;
}
