/* normalize.h — how values are written into the index and how query values are
 * brought to the same form, so that matching is a plain comparison in SQL.
 *
 * Text is folded (lower case, Latin accents removed: "Müller" -> "muller"); dates and
 * times are padded to fixed width so that ranges compare as strings. All functions
 * return malloc'd strings (or fill fixed buffers) and never fail on odd input: what
 * cannot be normalised is returned folded as it is. */
#ifndef DICOMFS_NORMALIZE_H
#define DICOMFS_NORMALIZE_H

#include <stdbool.h>
#include <stddef.h>

/* Lower case, accents removed, surrounding spaces trimmed. */
char *norm_fold(const char *utf8);

/* A person name: folded, each component group's trailing '^' and spaces removed. */
char *norm_person_name(const char *utf8);

/* Splits a folded name into words (runs of letters and digits). Returns the count and
 * fills WORDS with pointers into *STORAGE (one malloc'd block; free it). */
size_t norm_words(const char *folded, char ***words, char **storage);

/* DA "YYYYMMDD" -> same; false when not a date. */
bool norm_date(const char *in, char out[9]);
/* TM "HH[MM[SS[.f..]]]" (colons tolerated) -> "HHMMSS.ffffff". */
bool norm_time(const char *in, char out[14]);
/* DT "YYYY[MM[DD[HH[MM[SS[.f]]]]]]" with an optional zone (ignored for values, refused
 * for queries by the caller) -> "YYYYMMDDHHMMSS.ffffff". */
bool norm_datetime(const char *in, char out[22], bool *had_zone);

/* Whether a normalised value names a real moment: D is "YYYYMMDD" (20200229 yes, 20210229
 * no), T "HHMMSS" (hours 00-23, minutes 00-59, seconds 00-60 for a leap second). The
 * index keeps what was stored; queries refuse what cannot exist. False puts the reason
 * ("there is no month 13") in WHY. */
bool norm_date_exists(const char *d, char *why, size_t n);
bool norm_time_exists(const char *t, char *why, size_t n);

#endif
