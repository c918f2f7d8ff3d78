/* store_fuzz.c — no input can crash the ingest or leave a partial instance.
 *
 * Deterministic mutations (bit flips, byte runs, truncations, length fields set to huge
 * values) of real corpus files are ingested one by one. Each must end stored or rejected
 * with a reason; afterwards fsck must find the archive consistent. Under the sanitizer
 * build this also checks the adapter's memory safety on hostile input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

static const char *const seeds[] = {"CT_small.dcm", "MR_small_RLE.dcm", "JPEG-lossy.dcm", "rtplan.dcm",
                                    "SC_rgb_rle_2frame.dcm", "test-SR.dcm", "ExplVR_BigEnd.dcm", "waveform_ecg.dcm"};

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*len);
    if (b && fread(b, 1, *len, f) != *len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

static void mutate(unsigned char *b, size_t *len)
{
    switch (next() % 5) {
    case 0: /* flip a few bits */
        for (int i = 0; i < 1 + (int)(next() % 8); i++) b[next() % *len] ^= (unsigned char)(1u << (next() % 8));
        break;
    case 1: /* a run of random bytes */
    {
        size_t at = next() % *len, n = 1 + next() % 64;
        for (size_t i = at; i < at + n && i < *len; i++) b[i] = (unsigned char)next();
        break;
    }
    case 2: /* truncate */
        *len = 1 + next() % *len;
        break;
    case 3: /* a 32-bit length field set to something huge, just after the header */
    {
        size_t at = 132 + next() % (*len > 400 ? 268 : 1);
        if (at + 4 <= *len) {
            uint32_t v = next() | 0x80000000u;
            memcpy(b + at, &v, 4);
        }
        break;
    }
    default: /* zero a stretch */
    {
        size_t at = next() % *len, n = 1 + next() % 512;
        memset(b + at, 0, at + n <= *len ? n : *len - at);
    }
    }
}

int main(void)
{
    store_t *s = test_archive("fuzz");
    if (!s) return 1;
    int stored = 0, rejected = 0, silent = 0;
    for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
        char src[1024];
        snprintf(src, sizeof src, "%s/%s", CORPUS, seeds[k]);
        size_t orig_len;
        unsigned char *orig = slurp(src, &orig_len);
        CHECK(orig != NULL, "corpus file %s readable", seeds[k]);
        if (!orig) continue;
        for (int i = 0; i < 150; i++) {
            unsigned char *b = malloc(orig_len);
            memcpy(b, orig, orig_len);
            size_t len = orig_len;
            mutate(b, &len);
            if (next() % 2) mutate(b, &len);
            const char *path = test_write("m.dcm", b, len);
            store_ingest_result r = test_ingest(s, path, NULL);
            if (r.status == STORE_OK) stored++;
            else rejected++;
            if (r.status != STORE_OK && r.message[0] == 0) silent++;
            store_ingest_result_clear(&r);
            free(b);
        }
        free(orig);
    }
    printf("fuzz: %d stored, %d rejected\n", stored, rejected);

    /* Hostile query values: invalid UTF-8 (each byte folds to U+FFFD, 3 bytes), every
     * kind of filter; answered or refused, never a crash (ASan checks the buffers). */
    char junk[257];
    memset(junk, 0xFF, sizeof junk - 1);
    junk[sizeof junk - 1] = 0;
    const char *keys[] = {"PatientID", "PatientName", "StudyDescription", "AccessionNumber", "ModalitiesInStudy"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        for (int fuzzy = 0; fuzzy < 2; fuzzy++) {
            store_param p[2] = {{keys[k], junk}, {"fuzzymatching", fuzzy ? "true" : "false"}};
            store_query q = {.level = STORE_LEVEL_STUDY, .params = p, .n_params = 2};
            store_find_result fr;
            store_status st = store_find(s, &q, &fr, NULL);
            CHECK(st == STORE_OK || st == STORE_EINVAL, "%s=<invalid UTF-8> (fuzzy %d): answered or refused (%d)", keys[k],
                  fuzzy, st);
            store_find_result_clear(&fr);
        }
    CHECK(silent == 0, "every rejection says why (%d did not)", silent);
    store_fsck_report rep;
    CHECK(store_fsck(s, false, NULL, NULL, &rep, NULL) == STORE_OK, "fsck is clean after hostile input");
    CHECK((int)rep.instances == stored, "exactly the accepted instances are indexed (%zu vs %d)", rep.instances, stored);
    store_close(s);
    return test_summary();
}
