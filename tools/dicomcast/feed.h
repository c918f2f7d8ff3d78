/* feed.h — the change-feed client: GET {base}/v1/changefeed/latest and
 * GET {base}/v1/changefeed?offset=O&limit=L&includeMetadata=true, as the reference's
 * DICOMcast reads them (always API v1, whose offset/limit are a window of sequence numbers:
 * offset < sequence <= offset + limit). Works against dicomfs serve or Azure.
 *
 * The bearer token is the fixed --dicomweb-token or, with --dicomweb-token-file, the file's
 * content read again for every request (so that a token refreshed by another program is
 * picked up without a restart). */
#ifndef DICOMCAST_FEED_H
#define DICOMCAST_FEED_H

#include <jansson.h>
#include <stddef.h>

#include "cast.h"
#include "http.h"

typedef struct feed feed_t;

feed_t *feed_new(http_client_t *http, const char *base, const char *token, const char *token_file);
void feed_free(feed_t *f);

/* The highest sequence (0 for an empty feed: 204 or an empty body). */
cast_status_t feed_latest(feed_t *f, long long *seq, char *err, size_t errlen);

/* The entries of the window (OFFSET, OFFSET+LIMIT], with metadata, as a JSON array in
 * sequence order (new reference). Entries without an integer sequence are refused. */
cast_status_t feed_window(feed_t *f, long long offset, int limit, json_t **entries, char *err, size_t errlen);

#endif
