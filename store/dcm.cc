/* dcm.cc — the DCMTK adapter (see dcm.h). The only C++ and the only DCMTK user.
 *
 * Facts this file relies on are in docs/ARCHITECTURE.md ("DCMTK"): values over 4 KB load
 * lazily by reopening the file by name, so everything here finishes before the store
 * renames the file; non-DICOM input parses as implicit-VR garbage, so we check for a
 * plausible start ourselves; the JSON writer needs charset conversion first and writes
 * NaN as a bare token, so non-finite floats are treated as invalid values. */
#include "dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmdata/dcjson.h>
#include <dcmtk/dcmdata/dcistrmf.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/dcmjpls/djencode.h>
#include <dcmtk/dcmimage/diregist.h>
#include <dcmtk/dcmimage/dipipng.h>
#include <dcmtk/dcmimgle/dcmimage.h>
#include <dcmtk/dcmjpeg/dipijpeg.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/oflog/oflog.h>

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static bool init_ok;

static void global_init(void)
{
    OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
    /* Elements written as UN but known to the dictionary are read with their real VR,
     * as fo-dicom does; otherwise such files lose their UIDs. */
    dcmEnableUnknownVRConversion.set(OFTrue);
    /* First use loads the external dictionary; without it, implicit-VR files would
     * parse into garbage silently. */
    init_ok = dcmDataDict.isDictionaryLoaded();
    DJDecoderRegistration::registerCodecs();
    DJEncoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DJLSEncoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
    DcmRLEEncoderRegistration::registerCodecs();
}

extern "C" int dcm_global_init(char *err, size_t errlen)
{
    pthread_once(&init_once, global_init);
    if (!init_ok) {
        snprintf(err, errlen, "the DICOM data dictionary could not be loaded (DCMDICTPATH?)");
        return -1;
    }
    return 0;
}

static char *dup_string(const std::string &s)
{
    char *p = (char *)malloc(s.size() + 1);
    if (!p) abort();
    memcpy(p, s.c_str(), s.size() + 1);
    return p;
}

static void read_attr(DcmDataset *ds, const DcmTagKey &key, dcm_attr *out)
{
    DcmElement *el = NULL;
    out->present = ds->findAndGetElement(key, el).good() && el != NULL;
    out->value[0] = 0;
    out->len = 0;
    out->truncated = false;
    out->has_nul = false;
    if (!out->present) return;
    OFString v;
    if (el->getOFStringArray(v).bad()) return;
    size_t n = v.length();
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\0')) n--;
    size_t lead = 0;
    while (lead < n && v[lead] == ' ') lead++;
    size_t len = n - lead;
    if (len >= sizeof out->value) {
        len = sizeof out->value - 1;
        out->truncated = true;
    }
    out->has_nul = memchr(v.c_str() + lead, 0, len) != NULL;
    out->len = len;
    memcpy(out->value, v.c_str() + lead, len);
    out->value[len] = 0;
}

/* ---- The file being parsed ----------------------------------------------------------- */

/* DCMTK opens the file by name itself; our own small reads (the first bytes, frame
 * headers) use the caller's descriptor when there is one instead of reopening it. */
struct source {
    const char *path;
    int fd; /* -1: open PATH for each read */
};

static bool read_at(const source &src, long long off, void *buf, size_t n)
{
    int fd = src.fd >= 0 ? src.fd : open(src.path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + (long long)got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (src.fd < 0) close(fd);
    return got == n;
}

static long long source_size(const source &src)
{
    struct stat sb;
    if (src.fd >= 0) return fstat(src.fd, &sb) == 0 ? (long long)sb.st_size : -1;
    return stat(src.path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* ---- Recognising DICOM -------------------------------------------------------------- */

/* A Part-10 file has "DICM" at 128. Without it DCMTK still parses bare datasets, and
 * also parses any text as implicit-VR garbage; accept a bare dataset only when it
 * starts with a group a real one starts with. */
static bool looks_like_dicom(const source &src, char *err, size_t errlen)
{
    unsigned char b[132];
    long long size = source_size(src);
    if (size < 0) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return false;
    }
    size_t n = size < (long long)sizeof b ? (size_t)size : sizeof b;
    if (n > 0 && !read_at(src, 0, b, n)) {
        snprintf(err, errlen, "cannot read: %s", strerror(errno));
        return false;
    }
    if (n == 0) {
        snprintf(err, errlen, "not a DICOM file: the file is empty");
        return false;
    }
    if (n == 132 && memcmp(b + 128, "DICM", 4) == 0) return true;
    if (n >= 8) {
        unsigned le = b[0] | b[1] << 8, be = b[0] << 8 | b[1];
        if (le == 0x0002 || le == 0x0008 || be == 0x0008 || le == 0x0000) return true;
    }
    snprintf(err, errlen, "not a DICOM file: no DICM prefix at offset 128 and no dataset at the start");
    return false;
}

/* ---- Character sets ----------------------------------------------------------------- */

/* The length of the well-formed UTF-8 sequence at P (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF, as JSON parsers demand), or 0. */
static int utf8_length(const unsigned char *p, const unsigned char *e)
{
    if (*p < 0x80) return 1;
    int len = *p >= 0xC2 && *p <= 0xDF ? 2 : *p >= 0xE0 && *p <= 0xEF ? 3 : *p >= 0xF0 && *p <= 0xF4 ? 4 : 0;
    if (!len || e - p < len) return 0;
    unsigned char lo = 0x80, hi = 0xBF; /* the second byte's range */
    if (*p == 0xE0) lo = 0xA0;
    else if (*p == 0xED) hi = 0x9F;
    else if (*p == 0xF0) lo = 0x90;
    else if (*p == 0xF4) hi = 0x8F;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}

static bool valid_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *e = p + n;
    for (int len; p < e; p += len)
        if (!(len = utf8_length(p, e))) return false;
    return true;
}

static std::string via_iconv(const char *from, const std::string &in, bool *ok)
{
    *ok = false;
    iconv_t cd = iconv_open("UTF-8", from);
    if (cd == (iconv_t)-1) return in;
    std::string out(in.size() * 4 + 16, '\0');
    char *ip = (char *)in.data(), *op = &out[0];
    size_t il = in.size(), ol = out.size();
    size_t r = iconv(cd, &ip, &il, &op, &ol);
    if (r != (size_t)-1) r = iconv(cd, NULL, NULL, &op, &ol);
    iconv_close(cd);
    if (r == (size_t)-1) return in;
    out.resize(out.size() - ol);
    *ok = true;
    return out;
}

/* DICOM's Japanese code extensions (ISO 2022 IR 13, 87, 159), which DCMTK 3.6.7
 * cannot convert: escape sequences switch between ASCII/JIS X 0201 Roman, JIS X 0208
 * and JIS X 0212 (two 7-bit bytes per character, decoded by glibc's ISO-2022-JP-2), and
 * 8-bit bytes 0xA1..0xDF are JIS X 0201 half-width katakana (U+FF61..U+FF9F). */
static std::string decode_iso2022_jp(const std::string &in, bool *ok)
{
    std::string out;
    *ok = true;
    size_t i = 0;
    std::string mode = "\x1b(B"; /* the escape that selected the current G0 set */
    while (i < in.size()) {
        unsigned char c = (unsigned char)in[i];
        if (c == 0x1b) {
            size_t len = in.compare(i, 4, "\x1b$(D") == 0 ? 4 : 3;
            if (i + len > in.size()) { *ok = false; return in; }
            mode = in.substr(i, len);
            i += len;
            continue;
        }
        bool two_byte = mode[1] == '$';
        if (!two_byte) {
            if (c >= 0xA1 && c <= 0xDF) {
                uint32_t cp = 0xFF61 + (c - 0xA1);
                out += (char)(0xE0 | cp >> 12);
                out += (char)(0x80 | (cp >> 6 & 0x3F));
                out += (char)(0x80 | (cp & 0x3F));
            } else if (c < 0x80) {
                out += (char)c;
            } else {
                *ok = false;
                return in;
            }
            i++;
            continue;
        }
        size_t end = in.find('\x1b', i);
        if (end == std::string::npos) end = in.size();
        bool part_ok;
        std::string chunk = mode + in.substr(i, end - i) + "\x1b(B";
        out += via_iconv("ISO-2022-JP-2", chunk, &part_ok);
        if (!part_ok) { *ok = false; return in; }
        i = end;
    }
    return out;
}

/* Replaces bytes that are not UTF-8 with U+FFFD so the JSON stays valid. */
static std::string scrub_utf8(const std::string &in)
{
    std::string out;
    const unsigned char *p = (const unsigned char *)in.data(), *e = p + in.size();
    while (p < e) {
        int len = utf8_length(p, e);
        if (len) {
            out.append((const char *)p, (size_t)len);
            p += len;
        } else {
            out += "\xEF\xBF\xBD";
            p++;
        }
    }
    return out;
}

static bool is_text_vr(DcmEVR vr)
{
    switch (vr) {
    case EVR_PN: case EVR_LO: case EVR_SH: case EVR_ST: case EVR_LT: case EVR_UT: case EVR_UC:
        return true;
    default:
        return false;
    }
}

/* DCMTK converts most character sets; it cannot do ISO 2022 IR 87/159 (Japanese) and
 * refuses bytes that do not fit the declared set. Then convert value by value with
 * glibc's iconv from the best guess, and scrub what still is not UTF-8. */
static void reencode_text(DcmDataset *ds, const char *const guess[3]);

static void convert_to_utf8(DcmDataset *ds)
{
    if (ds->convertToUTF8().good()) return;
    OFString cs;
    ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, cs);
    const char *guess[3] = {"ISO-8859-1", NULL, NULL};
    if (cs.find("IR 87") != OFString_npos || cs.find("IR 13") != OFString_npos ||
        cs.find("IR 159") != OFString_npos) {
        guess[0] = "DICOM-JAPANESE"; /* decode_iso2022_jp */
        guess[1] = "ISO-8859-1";
    } else if (cs.find("192") != OFString_npos) {
        guess[0] = NULL; /* already meant to be UTF-8: only scrub */
    }
    reencode_text(ds, guess);
}

/* Converts each text value that is not UTF-8 from the first GUESS that works, else
 * replaces its bad bytes; then declares the dataset UTF-8. */
static void reencode_text(DcmDataset *ds, const char *const guess[3])
{
    /* No guesses: the JSON came out invalid, so every string value is scrubbed, not only the
     * text VRs (a required PatientID declared DT with a byte 0x88 is never dropped). */
    bool scrub_all = !guess[0];
    DcmStack stack;
    while (ds->nextObject(stack, OFTrue).good()) {
        DcmElement *el = dynamic_cast<DcmElement *>(stack.top());
        if (!el || !(is_text_vr(el->ident()) || (scrub_all && el->isaString()))) continue;
        char *raw = NULL;
        Uint32 len = el->getLength();
        if (len == 0 || el->getString(raw).bad() || !raw) continue;
        /* A NUL ends the value: the JSON writer would carry the bytes after it (\u0000 and
         * all), which the store's own readers (jansson) and strict clients refuse. */
        size_t n = strnlen(raw, len);
        std::string in(raw, n);
        bool nul = n < len; /* NUL padding too: the writer would carry it as \u0000 */
        if (!nul && valid_utf8(in.data(), in.size()) && in.find('\x1b') == std::string::npos) continue;
        bool ok = false;
        std::string out = in;
        for (int i = 0; i < 3 && guess[i] && !ok; i++)
            out = strcmp(guess[i], "DICOM-JAPANESE") == 0 ? decode_iso2022_jp(in, &ok) : via_iconv(guess[i], in, &ok);
        if (!ok) out = scrub_utf8(in);
        el->putString(out.c_str(), (Uint32)out.size());
    }
    ds->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
}

/* ---- Validation and bulk data ------------------------------------------------------- */

static bool is_bulk_vr(DcmEVR vr)
{
    switch (vr) {
    case EVR_OB: case EVR_OW: case EVR_OF: case EVR_OD: case EVR_OL: case EVR_OV:
    case EVR_UN: case EVR_ox: case EVR_px: case EVR_pixelSQ: case EVR_pixelItem:
        return true;
    default:
        return false;
    }
}

static bool is_required(const DcmTagKey &k)
{
    return k == DCM_SOPClassUID || k == DCM_SOPInstanceUID || k == DCM_StudyInstanceUID ||
           k == DCM_SeriesInstanceUID || k == DCM_PatientID;
}

/* Returns an empty string when the element is valid, else why not. */
static std::string check_element(DcmElement *el)
{
    DcmEVR vr = el->ident();
    if (vr == EVR_FL || vr == EVR_FD || vr == EVR_OF || vr == EVR_OD) {
        unsigned long vm = el->getVM();
        for (unsigned long i = 0; i < vm; i++) {
            Float64 d = 0;
            if (vr == EVR_FL) {
                Float32 f = 0;
                if (el->getFloat32(f, i).good()) d = f;
            } else {
                el->getFloat64(d, i);
            }
            if (!isfinite(d)) return "value is not a finite number";
        }
        return "";
    }
    if (vr == EVR_UI) {
        /* The reference's UID rule, not the standard's stricter one: real UIDs with
         * leading zeros in a component are common and must not be dropped. */
        OFString all;
        el->getOFStringArray(all);
        size_t start = 0;
        while (start <= all.length()) {
            size_t end = all.find('\\', start);
            if (end == OFString_npos) end = all.length();
            OFString v = all.substr(start, end - start);
            while (!v.empty() && (v[v.length() - 1] == ' ' || v[v.length() - 1] == '\0')) v.erase(v.length() - 1);
            if (!v.empty() && (v.length() > 64 || v.find_first_not_of("0123456789.") != OFString_npos ||
                               v[v.length() - 1] == '.'))
                return "a UID is digits and dots, ends with a digit, and has at most 64 characters";
            start = end + 1;
        }
        return "";
    }
    OFCondition c = el->checkValue("1-n", OFFalse);
    if (c.bad()) return c.text();
    if (vr == EVR_DS) { /* "1E999" is a DS, but as a JSON number every parser refuses it */
        unsigned long vm = el->getVM();
        for (unsigned long i = 0; i < vm; i++) {
            OFString v;
            if (el->getOFString(v, i, OFTrue).good() && !v.empty() && !isfinite(strtod(v.c_str(), NULL)))
                return "value is not a finite number";
        }
    }
    return "";
}

static std::string tag_text(const DcmTagKey &k)
{
    char b[16];
    snprintf(b, sizeof b, "(%04X,%04X)", k.getGroup(), k.getElement());
    return b;
}

extern "C" void dcm_printable(const char *v, size_t len, size_t max, char *out, size_t cap)
{
    if (cap == 0) return;
    size_t o = 0, i = 0;
    for (; i < len && i < max; i++) {
        unsigned char c = (unsigned char)v[i];
        bool plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
        if (o + (plain ? 1 : 4) + 3 >= cap) break; /* room for "..." and the NUL */
        if (plain) out[o++] = (char)c;
        else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    if (i < len && o + 3 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = 0;
}

static std::string printable(const char *v, size_t len, size_t max)
{
    char out[4 * 64 + 8];
    dcm_printable(v, len, max < 64 ? max : 64, out, sizeof out);
    return out;
}

struct removal {
    DcmItem *parent;
    DcmObject *obj;
};

/* Walks every element (sequences included), collects the invalid ones and the bulk data,
 * then removes them from the in-memory dataset (never from the file). */
static void prune(DcmDataset *ds, bool validate, dcm_parsed *out)
{
    std::vector<removal> drop;
    std::string comments, tags;
    DcmStack stack;
    while (ds->nextObject(stack, OFTrue).good()) {
        DcmObject *obj = stack.top();
        DcmElement *el = dynamic_cast<DcmElement *>(obj);
        if (!el) continue;
        const DcmTagKey key = el->getTag();
        DcmObject *parent = stack.card() > 1 ? stack.elem(1) : NULL;
        if (!parent || (parent->ident() != EVR_item && parent->ident() != EVR_dataset)) continue;
        bool top = parent->ident() == EVR_dataset;
        if (is_bulk_vr(el->ident()) || key == DCM_PixelData) {
            drop.push_back({(DcmItem *)parent, obj});
            continue;
        }
        if (!validate || el->ident() == EVR_SQ || (top && is_required(key))) continue;
        std::string why = check_element(el);
        if (why.empty()) continue;
        OFString raw;
        el->getOFStringArray(raw);
        std::string value = printable(raw.c_str(), raw.length(), 64);
        if (!comments.empty()) comments += '\n';
        comments += "DICOM100: " + tag_text(key) + " - Content \"" + value +
                    "\" does not validate VR " + DcmVR(el->ident()).getVRName() + ": " + why;
        if (top) {
            char b[16];
            snprintf(b, sizeof b, "%04X%04X", key.getGroup(), key.getElement());
            if (!tags.empty()) tags += '\n';
            tags += b;
        }
        out->invalid_count++;
        drop.push_back({(DcmItem *)parent, obj});
    }
    /* Remove children before parents cannot happen here: only leaf elements are
     * collected, and a leaf's parent is an item that stays. */
    for (auto &r : drop) delete r.parent->remove(r.obj);
    if (!comments.empty()) out->invalid = dup_string(comments);
    if (!tags.empty()) out->invalid_tags = dup_string(tags);
}

/* ---- Frames ------------------------------------------------------------------------- */

/* The file offset of a deferred value, or -1 when the value was read in full. */
static long long deferred_offset(DcmElement *el)
{
    const DcmInputStreamFactory *f = el->getInputStream();
    if (!f || f->ident() != DFT_DcmInputFileStreamFactory) return -1;
    return (long long)((const DcmInputFileStreamFactory *)f)->getOffset();
}

/* Parses the file up to PixelData and returns the offset just past its header: the
 * value for native data, the first item header for encapsulated data. */
static long long pixel_value_offset_by_parse(const char *path)
{
    DcmInputFileStream in(path);
    if (in.status().bad()) return -1;
    DcmFileFormat ff;
    ff.transferInit();
    OFCondition c = ff.readUntilTag(in, EXS_Unknown, EGL_noChange, 4096, DCM_PixelData);
    ff.transferEnd();
    if (c.bad() && c != EC_StreamNotifyClient) return -1;
    return (long long)in.tell();
}


static uint32_t le32(const unsigned char *b) { return b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24; }

static void frames_native(const source &src, DcmDataset *ds, DcmElement *px, uint32_t count,
                          bool big_endian, dcm_frames *fr)
{
    Uint16 rows = 0, cols = 0, spp = 1, bits = 0;
    ds->findAndGetUint16(DCM_Rows, rows);
    ds->findAndGetUint16(DCM_Columns, cols);
    ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
    ds->findAndGetUint16(DCM_BitsAllocated, bits);
    uint64_t bits_per_frame = (uint64_t)rows * cols * spp * bits;
    if (bits_per_frame == 0 || bits_per_frame % 8 != 0) return; /* 1-bit frames are not byte aligned */
    uint64_t size = bits_per_frame / 8;
    if (count > px->getLength() / size) return; /* (not size * count: it can wrap) */
    long long off = deferred_offset(px);
    if (off < 0) off = pixel_value_offset_by_parse(src.path);
    if (off < 4) return;
    /* Check the four bytes before the value: they must be its length. */
    unsigned char b[4];
    bool ok = read_at(src, off - 4, b, 4);
    uint32_t len = big_endian ? (uint32_t)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3] : le32(b);
    if (!ok || len != px->getLength()) return;
    fr->kind = 1;
    fr->count = count;
    fr->offset = (uint64_t)off;
    fr->frame_size = size;
}

static void frames_encapsulated(const source &f, uint32_t count, dcm_frames *fr)
{
    long long pos = pixel_value_offset_by_parse(f.path);
    long long fsize = pos > 0 ? source_size(f) : -1;
    if (fsize < 0) return;
    std::vector<uint64_t> items; /* value offset, length */
    std::vector<long long> headers;
    unsigned char b[8];
    while (read_at(f, pos, b, 8)) {
        uint32_t tag = (uint32_t)(b[0] | b[1] << 8) << 16 | (b[2] | b[3] << 8);
        uint32_t len = le32(b + 4);
        if (tag == 0xFFFEE0DD) break;
        if (tag != 0xFFFEE000 || len == 0xFFFFFFFF || pos + 8 + (long long)len > fsize) {
            items.clear();
            break;
        }
        headers.push_back(pos);
        items.push_back((uint64_t)pos + 8);
        items.push_back(len);
        pos += 8 + (long long)len;
    }
    std::vector<unsigned char> bot;
    if (items.size() >= 2 && items[1] > 0) {
        bot.resize(items[1]);
        if (!read_at(f, (long long)items[0], bot.data(), bot.size())) items.clear();
    }
    if (items.size() < 4) return; /* need the offset table item and one fragment */
    uint32_t nfrag = (uint32_t)(items.size() / 2 - 1);
    if (count > nfrag) return; /* every frame has a fragment; also bounds a hostile count */
    std::vector<uint32_t> first(count + 1, 0);
    if (!bot.empty()) {
        if (bot.size() < 4ull * count) return;
        long long base = headers[1];
        uint32_t k = 0;
        for (uint32_t i = 0; i < count; i++) {
            long long start = base + le32(&bot[4 * i]);
            while (k < nfrag && headers[k + 1] < start) k++;
            if (k >= nfrag || headers[k + 1] != start) return;
            first[i] = k;
        }
        first[count] = nfrag;
    } else if (nfrag == count) {
        for (uint32_t i = 0; i <= count; i++) first[i] = i;
    } else if (count == 1) {
        first[1] = nfrag;
    } else {
        return; /* several frames, several fragments each, no table: decode to find them */
    }
    fr->kind = 2;
    fr->count = count;
    fr->n_fragments = nfrag;
    fr->fragments = (uint64_t *)malloc(sizeof(uint64_t) * 2 * nfrag);
    fr->first = (uint32_t *)malloc(sizeof(uint32_t) * (count + 1));
    if (!fr->fragments || !fr->first) abort();
    memcpy(fr->fragments, items.data() + 2, sizeof(uint64_t) * 2 * nfrag);
    memcpy(fr->first, first.data(), sizeof(uint32_t) * (count + 1));
}

static void find_frames(const source &src, DcmDataset *ds, E_TransferSyntax xfer, dcm_frames *fr)
{
    DcmElement *px = NULL;
    if (ds->findAndGetElement(DCM_PixelData, px).bad() || !px) return;
    Sint32 n = 1;
    OFString nf;
    if (ds->findAndGetOFString(DCM_NumberOfFrames, nf).good() && !nf.empty()) n = atoi(nf.c_str());
    if (n < 1) n = 1;
    fr->count = (uint32_t)n;
    DcmXfer x(xfer);
    if (x.getStreamCompression() != ESC_none || xfer == EXS_Unknown) return;
    if (x.isEncapsulated())
        frames_encapsulated(src, (uint32_t)n, fr);
    else
        frames_native(src, ds, px, (uint32_t)n, x.isBigEndian(), fr);
}

/* ---- Parse -------------------------------------------------------------------------- */

/* An ostream that appends to a std::string: DCMTK's writer goes straight into the
 * metadata text, and each element's span of it can be copied (no stringstream copies). */
struct append_buf : std::streambuf {
    std::string &s;
    explicit append_buf(std::string &to) : s(to) {}
    int_type overflow(int_type c) override
    {
        if (c != traits_type::eof()) s.push_back((char)c);
        return c;
    }
    std::streamsize xsputn(const char *p, std::streamsize n) override
    {
        s.append(p, (size_t)n);
        return n;
    }
};

static bool sorted_has(const uint32_t *v, size_t n, uint32_t tag)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v[mid] == tag) return true;
        if (v[mid] < tag) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

/* The metadata, the requested attributes (attrs) and the requested first values in one
 * walk over the top-level elements: each element is written by DCMTK once (its writer is
 * the biggest cost of ingest) and its text copied into attrs when requested. The
 * metadata is what writeJsonExt(braces) writes: "{" elements joined by "," "}", group
 * lengths left out (tests/metadata_json.py and the corpus compare the two). */
static OFCondition write_json(DcmDataset *ds, const dcm_request *req, dcm_parsed *out, std::string &meta)
{
    DcmJsonFormatCompact fmt(OFFalse);
    meta.assign(1, '{');
    std::string attrs(1, '{');
    append_buf buf(meta);
    std::ostream os(&buf);
    std::vector<DcmElement *> found(req->n_value_tags, (DcmElement *)NULL);
    OFCondition c = EC_Normal;
    for (DcmObject *obj = ds->nextInContainer(NULL); obj; obj = ds->nextInContainer(obj)) {
        DcmElement *el = OFstatic_cast(DcmElement *, obj);
        uint32_t tag = (uint32_t)el->getGTag() << 16 | el->getETag();
        if (el->getETag() == 0) continue; /* group lengths: writeJsonExt leaves them out too */
        size_t from = meta.size();
        if (from > 1) meta.push_back(',');
        size_t text = meta.size();
        c = el->writeJson(os, fmt);
        if (c.bad()) return c;
        if (meta.size() == text) meta.resize(from); /* wrote nothing: no separator either */
        else if (sorted_has(req->attr_tags, req->n_attr_tags, tag)) {
            if (attrs.size() > 1) attrs.push_back(',');
            attrs.append(meta, text, std::string::npos);
        }
        for (size_t i = 0; i < req->n_value_tags; i++)
            if (req->value_tags[i] == tag) found[i] = el;
    }
    meta.push_back('}');
    attrs.push_back('}');
    for (std::string *text : {&meta, &attrs}) {
        size_t n = 0;
        if (char *mended = dcm_json_mend_decimals(text->data(), text->size(), &n)) {
            text->assign(mended, n);
            free(mended);
        }
    }
    out->attrs_json = dup_string(attrs);

    out->values = (dcm_value *)calloc(req->n_value_tags ? req->n_value_tags : 1, sizeof *out->values);
    if (!out->values) abort();
    for (size_t i = 0; i < req->n_value_tags; i++) { /* in the request's order */
        DcmElement *el = found[i];
        OFString v;
        if (!el || el->ident() == EVR_SQ || el->getVM() == 0 || el->getOFString(v, 0, OFTrue).bad() || v.empty())
            continue;
        dcm_value *dv = &out->values[out->n_values++];
        dv->tag = req->value_tags[i];
        dv->text = dup_string(v.c_str());
        dv->multiple = el->getVM() > 1;
    }
    return EC_Normal;
}

extern "C" char *dcm_json_mend_decimals(const char *s, size_t n, size_t *len)
{
    /* DCMTK's compact writer puts a DS element's values (numbers, null, or strings for
     * values that are no number) right after this; inside a string a quote would be
     * escaped, so the text cannot occur there. */
    static const char mark[] = "\"vr\":\"DS\",\"Value\":[";
    const size_t m = sizeof mark - 1;
    const char *hit = (const char *)memmem(s, n, mark, m);
    if (!hit) return NULL;
    /* Each value gains at most one byte (a 0), and a value takes two with its comma. */
    char *out = (char *)malloc(2 * n + 1);
    if (!out) abort();
    size_t r = 0, w = 0;
    bool changed = false;
    while (r < n) {
        size_t upto = hit ? (size_t)(hit - s) + m : n;
        memcpy(out + w, s + r, upto - r);
        w += upto - r;
        r = upto;
        while (hit && r < n && s[r] != ']') { /* one value: up to , or ] */
            if (s[r] == '"') { /* DCMTK writes a DS that is no number as a string: kept */
                size_t end = r + 1;
                while (end < n && s[end] != '"') end += s[end] == '\\' ? 2 : 1;
                end = end < n ? end + 1 : n;
                memcpy(out + w, s + r, end - r);
                w += end - r;
                r = end;
                if (r < n && s[r] == ',') out[w++] = s[r++];
                continue;
            }
            if (s[r] == '-') out[w++] = s[r++];
            if (r < n && (s[r] == 'e' || s[r] == 'E' || s[r] == '.')) { /* "0e-6" was cut to e-6 */
                out[w++] = '0';
                changed = true;
            }
            for (; r < n && s[r] != ',' && s[r] != ']'; r++) {
                if (s[r] == '.' && !(r + 1 < n && s[r + 1] >= '0' && s[r + 1] <= '9')) changed = true;
                else out[w++] = s[r];
            }
            if (r < n && s[r] == ',') out[w++] = s[r++];
        }
        if (hit) hit = (const char *)memmem(s + r, n - r, mark, m);
    }
    out[w] = 0;
    if (!changed) {
        free(out);
        return NULL;
    }
    *len = w;
    return out;
}

static void free_values(dcm_parsed *out)
{
    free(out->attrs_json);
    out->attrs_json = NULL;
    for (size_t i = 0; i < out->n_values; i++) free(out->values[i].text);
    free(out->values);
    out->values = NULL;
    out->n_values = 0;
}

extern "C" int dcm_parse(const char *path, const dcm_request *req, dcm_parsed *out, char *err, size_t errlen)
{
    return dcm_parse_fd(path, -1, req, out, err, errlen);
}

extern "C" int dcm_parse_fd(const char *path, int fd, const dcm_request *req, dcm_parsed *out, char *err,
                            size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (dcm_global_init(err, errlen) != 0) return -1;
    const source src = {path, fd};
    if (!looks_like_dicom(src, err, errlen)) return -1;
    DcmFileFormat ff;
    OFCondition c = ff.loadFile(path, EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
    if (c.bad()) {
        snprintf(err, errlen, "not a readable DICOM file: %s", c.text());
        return -1;
    }
    DcmDataset *ds = ff.getDataset();
    DcmMetaInfo *meta = ff.getMetaInfo();
    if (ds->card() == 0) {
        snprintf(err, errlen, "not a DICOM file: no data elements");
        return -1;
    }
    E_TransferSyntax xfer = ds->getOriginalXfer();
    OFString ts;
    if (meta && meta->findAndGetOFString(DCM_TransferSyntaxUID, ts).good() && !ts.empty())
        snprintf(out->transfer_syntax, sizeof out->transfer_syntax, "%s", ts.c_str());
    else
        snprintf(out->transfer_syntax, sizeof out->transfer_syntax, "%s", DcmXfer(xfer).getXferID());
    out->implicit_vr = xfer == EXS_LittleEndianImplicit;

    OFString sc;
    if ((meta && meta->findAndGetOFString(DCM_MediaStorageSOPClassUID, sc).good() &&
         sc == UID_MediaStorageDirectoryStorage) ||
        ds->tagExists(DCM_DirectoryRecordSequence)) {
        out->dicomdir = true;
        return 0;
    }
    read_attr(ds, DCM_SOPClassUID, &out->sop_class_uid);
    read_attr(ds, DCM_SOPInstanceUID, &out->sop_instance_uid);
    read_attr(ds, DCM_StudyInstanceUID, &out->study_uid);
    read_attr(ds, DCM_SeriesInstanceUID, &out->series_uid);
    read_attr(ds, DCM_PatientID, &out->patient_id);

    try {
        find_frames(src, ds, xfer, &out->frames);
        convert_to_utf8(ds);
        prune(ds, req->validate, out);
        std::string json;
        c = write_json(ds, req, out, json);
        if (c.good() && (!valid_utf8(json.data(), json.size()) || json.find("\\u0000") != std::string::npos)) {
            /* Declared UTF-8 (or converted) yet not UTF-8 throughout, or a value with a NUL
             * inside: scrub, write again. */
            const char *none[3] = {NULL, NULL, NULL};
            reencode_text(ds, none);
            free_values(out);
            c = write_json(ds, req, out, json);
        }
        if (c.bad()) {
            snprintf(err, errlen, "cannot encode the metadata as DICOM JSON: %s", c.text());
            dcm_parsed_free(out);
            return -1;
        }
        out->metadata_json = dup_string(json);
    } catch (const std::exception &e) {
        snprintf(err, errlen, "cannot process the dataset: %s", e.what());
        dcm_parsed_free(out);
        return -1;
    }
    return 0;
}

extern "C" void dcm_parsed_free(dcm_parsed *p)
{
    free(p->metadata_json);
    free(p->invalid);
    free(p->invalid_tags);
    free(p->frames.fragments);
    free(p->frames.first);
    free(p->attrs_json);
    for (size_t i = 0; i < p->n_values; i++) free(p->values[i].text);
    free(p->values);
    p->values = NULL;
    p->n_values = 0;
    p->attrs_json = NULL;
    p->metadata_json = p->invalid = p->invalid_tags = NULL;
    p->frames.fragments = NULL;
    p->frames.first = NULL;
}

/* ---- Dictionary --------------------------------------------------------------------- */

extern "C" int dcm_tag_by_keyword(const char *keyword, uint32_t *tag, char vr[3])
{
    char ignored[256];
    if (dcm_global_init(ignored, sizeof ignored) != 0) return -1;
    const DcmDataDictionary &dict = dcmDataDict.rdlock();
    const DcmDictEntry *e = dict.findEntry(keyword);
    int rc = -1;
    if (e && e->getGroup() != 0xFFFF) {
        *tag = (uint32_t)e->getGroup() << 16 | e->getElement();
        snprintf(vr, 3, "%s", e->getVR().getVRName());
        rc = 0;
    }
    dcmDataDict.rdunlock();
    return rc;
}

extern "C" int dcm_tag_info(uint32_t tag, char *keyword, size_t len, char vr[3])
{
    char ignored[256];
    if (dcm_global_init(ignored, sizeof ignored) != 0) return -1;
    DcmTagKey key((Uint16)(tag >> 16), (Uint16)(tag & 0xFFFF));
    const DcmDataDictionary &dict = dcmDataDict.rdlock();
    const DcmDictEntry *e = dict.findEntry(key, NULL);
    int rc = -1;
    if (e) {
        if (keyword) snprintf(keyword, len, "%s", e->getTagName());
        if (vr) snprintf(vr, 3, "%s", e->getVR().getVRName());
        rc = 0;
    }
    dcmDataDict.rdunlock();
    return rc;
}

/* ---- Retrieval ---------------------------------------------------------------------- */

static void copy_out(const void *data, size_t n, unsigned char **out, size_t *len)
{
    *out = (unsigned char *)malloc(n ? n : 1);
    if (!*out) abort();
    memcpy(*out, data, n);
    *len = n;
}

extern "C" bool dcm_can_write(const char *ts)
{
    E_TransferSyntax x = DcmXfer(ts).getXfer();
    switch (x) {
    case EXS_LittleEndianImplicit: case EXS_LittleEndianExplicit: case EXS_BigEndianExplicit:
    case EXS_DeflatedLittleEndianExplicit: case EXS_JPEGProcess1: case EXS_JPEGProcess2_4:
    case EXS_JPEGProcess14: case EXS_JPEGProcess14SV1: case EXS_JPEGLSLossless: case EXS_JPEGLSLossy:
    case EXS_RLELossless:
        return true;
    default:
        return false;
    }
}

/* Loads PATH fully (no lazy values: the caller may hold the file only briefly). */
static bool load_full(DcmFileFormat &ff, const char *path, char *err, size_t errlen)
{
    OFCondition c = ff.loadFile(path, EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
    if (c.good()) c = ff.loadAllDataIntoMemory();
    if (c.bad()) snprintf(err, errlen, "cannot read the stored instance: %s", c.text());
    return c.good();
}

extern "C" int dcm_transcode(const char *path, const char *ts, unsigned char **out, size_t *len, char *err, size_t errlen)
{
    if (dcm_global_init(err, errlen) != 0) return -1;
    DcmFileFormat ff;
    if (!load_full(ff, path, err, errlen)) return -1;
    DcmXfer target(ts);
    E_TransferSyntax to = target.getXfer();
    if (to == EXS_Unknown || !dcm_can_write(ts)) {
        snprintf(err, errlen, "the archive cannot write transfer syntax %s", ts);
        return -1;
    }
    DcmDataset *ds = ff.getDataset();
    E_TransferSyntax from = ds->getOriginalXfer();
    try {
        OFCondition c = ds->chooseRepresentation(to, NULL);
        if (c.bad() || !ds->canWriteXfer(to, from)) {
            snprintf(err, errlen, "cannot transcode from %s to %s: %s", DcmXfer(from).getXferID(), ts,
                     c.bad() ? c.text() : "no codec for this pair");
            return -1;
        }
        /* Write to memory in 1 MiB steps: the stream asks to be drained when full. */
        std::string result;
        std::vector<unsigned char> buf(1 << 20);
        DcmOutputBufferStream os(buf.data(), (offile_off_t)buf.size());
        ff.transferInit();
        do {
            c = ff.write(os, to, EET_ExplicitLength, NULL, EGL_recalcGL, EPD_noChange, 0, 0, 0, EWM_updateMeta);
            void *data = NULL;
            offile_off_t n = 0;
            os.flushBuffer(data, n);
            result.append((const char *)data, (size_t)n);
        } while (c == EC_StreamNotifyClient);
        ff.transferEnd();
        if (c.bad()) {
            snprintf(err, errlen, "cannot write the transcoded instance: %s", c.text());
            return -1;
        }
        os.flush();
        void *data = NULL;
        offile_off_t n = 0;
        os.flushBuffer(data, n);
        result.append((const char *)data, (size_t)n);
        copy_out(result.data(), result.size(), out, len);
    } catch (const std::exception &e) {
        snprintf(err, errlen, "cannot transcode: %s", e.what());
        return -1;
    }
    return 0;
}

extern "C" int dcm_frame_native(const char *path, uint32_t frame, unsigned char **out, size_t *len, char *err,
                                size_t errlen)
{
    if (dcm_global_init(err, errlen) != 0) return -1;
    DcmFileFormat ff;
    if (!load_full(ff, path, err, errlen)) return -1;
    DcmDataset *ds = ff.getDataset();
    DcmElement *el = NULL;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el) {
        snprintf(err, errlen, "the instance has no pixel data");
        return -1;
    }
    DcmPixelData *px = OFstatic_cast(DcmPixelData *, el);
    Uint32 fsize = 0;
    if (px->getUncompressedFrameSize(ds, fsize).bad() || fsize == 0) {
        snprintf(err, errlen, "the frame size is unknown");
        return -1;
    }
    std::vector<unsigned char> buf((size_t)fsize + 1);
    Uint32 start = 0;
    OFString color;
    OFCondition c = px->getUncompressedFrame(ds, frame, start, buf.data(), (fsize + 1) & ~1u, color, NULL);
    if (c.bad()) {
        snprintf(err, errlen, "cannot decode frame %u: %s", frame + 1, c.text());
        return -1;
    }
    copy_out(buf.data(), fsize, out, len);
    return 0;
}

extern "C" int dcm_render(const char *path, uint32_t frame, bool png, int quality, unsigned char **out, size_t *len,
                          char *err, size_t errlen)
{
    if (dcm_global_init(err, errlen) != 0) return -1;
    DcmFileFormat ff;
    OFCondition c = ff.loadFile(path, EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
    if (c.bad()) {
        snprintf(err, errlen, "cannot read the stored instance: %s", c.text());
        return -1;
    }
    DcmDataset *ds = ff.getDataset();
    if (!ds->tagExists(DCM_PixelData)) return 1;
    /* Partial access decodes only the requested frame and leaves the dataset alone. */
    DicomImage img(ds, ds->getOriginalXfer(), CIF_UsePartialAccessToPixelData, (unsigned long)frame, 1UL);
    if (img.getStatus() != EIS_Normal) {
        snprintf(err, errlen, "cannot render: %s", DicomImage::getString(img.getStatus()));
        return -1;
    }
    if (img.isMonochrome()) {
        if (img.getWindowCount() > 0)
            img.setWindow(0);
        else
            img.setMinMaxWindow();
    }
    char *mem = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&mem, &size);
    if (!f) abort();
    int ok;
    if (png) {
        DiPNGPlugin plugin;
        plugin.setInterlaceType(E_pngInterlaceNone);
        ok = img.writePluginFormat(&plugin, f, 0);
    } else {
        DiJPEGPlugin plugin;
        plugin.setQuality((unsigned int)quality);
        ok = img.writePluginFormat(&plugin, f, 0);
    }
    fclose(f);
    if (!ok) {
        free(mem);
        snprintf(err, errlen, "cannot encode the rendered image");
        return -1;
    }
    *out = (unsigned char *)mem;
    *len = size;
    return 0;
}

/* ---- DICOM JSON to DICOM XML (PS3.19 native model) --------------------------------- */

/* One DICOM JSON value as DCMTK's string form: person names as "A=I=P", numbers as
 * JSON prints them. */
static bool json_value_text(json_t *v, std::string &out)
{
    if (json_is_string(v)) {
        out += json_string_value(v);
    } else if (json_is_integer(v)) {
        out += std::to_string(json_integer_value(v));
    } else if (json_is_real(v)) {
        char buf[40];
        snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        out += buf;
    } else if (json_is_object(v)) {
        static const char *const groups[] = {"Alphabetic", "Ideographic", "Phonetic"};
        std::string pn[3];
        int last = -1;
        for (int i = 0; i < 3; i++) {
            json_t *g = json_object_get(v, groups[i]);
            if (json_is_string(g)) pn[i] = json_string_value(g), last = i;
        }
        for (int i = 0; i <= last; i++) out += (i ? "=" : "") + pn[i];
    } else if (!json_is_null(v)) {
        return false;
    }
    return true;
}

/* Adds the elements of the DICOM JSON object OBJ to ITEM. Bulk data (InlineBinary,
 * BulkDataURI) is left out: the XML answers carry none. */
static bool json_to_item(json_t *obj, DcmItem *item, char *err, size_t errlen)
{
    const char *key;
    json_t *e;
    json_object_foreach(obj, key, e) {
        unsigned g, el;
        json_t *vr = json_object_get(e, "vr"), *values = json_object_get(e, "Value");
        if (strlen(key) != 8 || sscanf(key, "%4x%4x", &g, &el) != 2 || !json_is_string(vr)) {
            snprintf(err, errlen, "'%s' is not a DICOM JSON element", key);
            return false;
        }
        DcmTag tag((Uint16)g, (Uint16)el, DcmVR(json_string_value(vr)));
        if (tag.getEVR() == EVR_SQ) {
            DcmSequenceOfItems *sq = new DcmSequenceOfItems(tag);
            size_t i;
            json_t *v;
            json_array_foreach(values, i, v) {
                DcmItem *child = new DcmItem();
                sq->append(child);
                if (!json_to_item(v, child, err, errlen)) {
                    delete sq;
                    return false;
                }
            }
            item->insert(sq, OFTrue);
            continue;
        }
        DcmElement *elem = DcmItem::newDicomElement(tag);
        if (!elem) {
            snprintf(err, errlen, "cannot make element %s", key);
            return false;
        }
        std::string text;
        size_t i;
        json_t *v;
        json_array_foreach(values, i, v) {
            if (i) text += "\\";
            if (!json_value_text(v, text)) {
                delete elem;
                snprintf(err, errlen, "element %s has a value that is not text or a number", key);
                return false;
            }
        }
        if (!text.empty()) elem->putString(text.c_str());
        item->insert(elem, OFTrue);
    }
    return true;
}

extern "C" char *dcm_json_to_xml(const char *dicom_json, char *err, size_t errlen)
{
    if (dcm_global_init(err, errlen) != 0) return NULL;
    json_error_t jerr;
    json_t *root = json_loads(dicom_json, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        snprintf(err, errlen, "not a DICOM JSON object: %s", jerr.text);
        return NULL;
    }
    DcmDataset ds;
    bool ok = json_to_item(root, &ds, err, errlen);
    json_decref(root);
    if (!ok) return NULL;
    std::ostringstream out;
    out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    OFCondition c = ds.writeXML(out, DCMTypes::XF_useNativeModel | DCMTypes::XF_useXMLNamespace);
    if (c.bad()) {
        snprintf(err, errlen, "cannot write XML: %s", c.text());
        return NULL;
    }
    return dup_string(out.str());
}
