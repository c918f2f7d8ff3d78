/* errlog.h — the error log a person reads: one JSON object per line per entry that could
 * not be synced (or was synced with invalid optional values left out), appended.
 *
 *   {"time": "2026-01-01T10:00:00Z", "sequence": 12, "action": "create",
 *    "studyInstanceUid": ..., "seriesInstanceUid": ..., "sopInstanceUid": ...,
 *    "kind": "fhir" | "dicom" | "invalidValue" | "transient" | "gap",
 *    "fhirStatus": 400, "error": "the OperationOutcome's text or what was wrong",
 *    "tag": "00100040", "value": "X"}                    (members that apply only)
 *
 * The kinds match the reference's tables: fhir = FhirFailToStoreException, dicom =
 * DicomFailToStoreException (a required value), invalidValue = InvalidDicomTagException
 * (an optional value left out, the entry still synced), transient = TransientFailure
 * (retries ran out), gap = sequences the feed never delivered. */
#ifndef DICOMCAST_ERRLOG_H
#define DICOMCAST_ERRLOG_H

#include <jansson.h>

/* Opens PATH for appending (created 0644). Returns 0, or -1 (errno set). */
int errlog_open(const char *path);
void errlog_close(void);

/* Appends LINE (an object; a "time" member is added) as one line, in one write(2) so that
 * a crash never leaves half a line. Steals LINE. */
void errlog_write(json_t *line);

/* A line for change-feed ENTRY: its sequence, action and UIDs, KIND and ERROR. */
json_t *errlog_entry_line(json_t *entry, const char *kind, const char *error);

#endif
