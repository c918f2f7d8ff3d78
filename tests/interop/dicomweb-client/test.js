'use strict';
// dcmjs-org's dicomweb-client (pinned in package-lock.json) against `dicomfs serve`.
// Run by tests/interop/dicomweb_client.py, which makes the data, starts the server (behind
// a recording relay) and passes:
//   DICOMWEB_URL  the base URL (http://127.0.0.1:PORT/v2)
//   DATA          the directory with manifest.json (tests/interop/interoputil.py)
// Every call of the client is made the way an application makes it; each check prints
// "ok   ..." or "FAIL ..." and the script exits 1 when any failed. In Node the client needs
// an XMLHttpRequest: xhr2 (pinned too), as the client's issue #101 suggests.

const fs = require('fs');
const path = require('path');

global.XMLHttpRequest = require('xhr2');
const { api } = require('dicomweb-client');

const URL_BASE = process.env.DICOMWEB_URL;
const DATA = process.env.DATA;
if (!URL_BASE || !DATA || !/^http:\/\/127\.0\.0\.1:\d+\//.test(URL_BASE)) {
  console.log('FAIL DICOMWEB_URL (http://127.0.0.1:PORT/...) and DATA must be set');
  process.exit(1);
}
const M = JSON.parse(fs.readFileSync(path.join(DATA, 'manifest.json'), 'utf8'));

// ---- Checks ------------------------------------------------------------------------------

let passed = 0;
let failed = 0;
const failures = [];

function ok(cond, what, detail) {
  if (cond) {
    passed += 1;
    console.log(`ok   ${what}`);
  } else {
    failed += 1;
    failures.push(what);
    console.log(`FAIL ${what}${detail ? `\n     ${detail}` : ''}`);
  }
  return !!cond;
}

function note(text) {
  console.log(`#    ${text}`);
}

const STUDY_RULE = ' (PS3.18 8.7.3: without a transfer-syntax parameter application/dicom means Explicit VR LE, ' +
  'which is how every instance here is stored; dicomfs follows the reference instead and refuses ' +
  'several instances unless transfer-syntax=*, web/wado.c)';

function errText(e) {
  if (!e) return '';
  if (e.status !== undefined) {
    let body = e.response;
    if (body instanceof ArrayBuffer) body = Buffer.from(body).toString('utf8');
    else if (body && typeof body === 'object') body = JSON.stringify(body);
    const req = e.request;
    const ct = req && req.getResponseHeader ? req.getResponseHeader('Content-Type') : null;
    return `HTTP ${e.status}, Content-Type ${ct}, body ${JSON.stringify(String(body || '').slice(0, 300))}`;
  }
  return String(e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e);
}

// One client call: prints the call, returns {value} or {error}; a rejection is a FAIL
// unless EXPECT_ERROR (then the caller checks the error).
async function call(name, fn, expectError = false) {
  console.log(`==   ${name}`);
  try {
    const value = await fn();
    if (expectError) ok(false, `${name}: rejected`, 'it resolved');
    return { value };
  } catch (error) {
    if (!expectError) ok(false, `${name}: resolves`, errText(error));
    return { error };
  }
}

// ---- Helpers -----------------------------------------------------------------------------

function bytesOf(name) {
  return fs.readFileSync(M[name].path);
}

function arrayBufferOf(name) {
  const b = bytesOf(name);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
}

function frameOf(name, k) {
  return fs.readFileSync(M[name].frame_files[k - 1]);
}

function buf(x) {
  if (x instanceof ArrayBuffer) return Buffer.from(x);
  if (ArrayBuffer.isView(x)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  return null;
}

function same(x, expected) {
  const b = buf(x);
  return b !== null && b.equals(expected);
}

function values(obj, tag) {
  const el = obj && obj[tag];
  return (el && el.Value) || [];
}

function first(obj, tag) {
  return values(obj, tag)[0];
}

function uidsOf(list, tag) {
  return (Array.isArray(list) ? list : []).map(o => first(o, tag)).sort();
}

function eqSet(a, b) {
  return JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());
}

function describeList(list) {
  if (!Array.isArray(list)) return `not an array: ${typeof list} ${String(list).slice(0, 200)}`;
  return `${list.length} item(s): ${JSON.stringify(list).slice(0, 400)}`;
}

function inst(name) {
  return {
    studyInstanceUID: M[name].study,
    seriesInstanceUID: M[name].series,
    sopInstanceUID: M[name].sop,
  };
}

// The transfer syntax and the SOP Instance UID in a Part 10 file's meta header.
function metaOf(b) {
  const out = {};
  if (!b || b.length < 132 || b.toString('latin1', 128, 132) !== 'DICM') return null;
  let pos = 132;
  while (pos + 8 <= b.length) {
    const group = b.readUInt16LE(pos);
    if (group !== 2) break;
    const elem = b.readUInt16LE(pos + 2);
    const vr = b.toString('latin1', pos + 4, pos + 6);
    let len;
    let hdr;
    if (['OB', 'OW', 'OF', 'SQ', 'UT', 'UN'].includes(vr)) {
      len = b.readUInt32LE(pos + 8);
      hdr = 12;
    } else {
      len = b.readUInt16LE(pos + 6);
      hdr = 8;
    }
    const val = b.toString('latin1', pos + hdr, pos + hdr + len).replace(/[\0 ]+$/, '');
    if (elem === 0x0010) out.ts = val;
    if (elem === 0x0003) out.sop = val;
    pos += hdr + len;
  }
  return out;
}

// Image signatures and sizes.
function jpegInfo(b) {
  if (!b || b.length < 4 || b[0] !== 0xff || b[1] !== 0xd8) return null;
  if (b[b.length - 2] !== 0xff || b[b.length - 1] !== 0xd9) return null;
  let pos = 2;
  while (pos + 4 <= b.length) {
    if (b[pos] !== 0xff) return null;
    const marker = b[pos + 1];
    const len = b.readUInt16BE(pos + 2);
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      return { height: b.readUInt16BE(pos + 5), width: b.readUInt16BE(pos + 7), components: b[pos + 9] };
    }
    pos += 2 + len;
  }
  return null;
}

function pngInfo(b) {
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (!b || b.length < 33 || !b.subarray(0, 8).equals(sig)) return null;
  if (b.toString('latin1', 12, 16) !== 'IHDR') return null;
  if (b.toString('latin1', b.length - 8, b.length - 4) !== 'IEND') return null;
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20), colorType: b[25] };
}

// DICOM RLE (PS3.5 annex G) of one frame -> its native bytes, colour-by-pixel (8 bit).
function rleDecode(frame, pixels) {
  const n = frame.readUInt32LE(0);
  const offsets = [];
  for (let i = 0; i < n; i += 1) offsets.push(frame.readUInt32LE(4 + 4 * i));
  offsets.push(frame.length);
  const segs = [];
  for (let s = 0; s < n; s += 1) {
    const seg = frame.subarray(offsets[s], offsets[s + 1]);
    const out = Buffer.alloc(pixels);
    let i = 0;
    let o = 0;
    while (i < seg.length && o < pixels) {
      const c = seg[i];
      i += 1;
      if (c < 128) {
        seg.copy(out, o, i, i + c + 1);
        o += c + 1;
        i += c + 1;
      } else if (c > 128) {
        out.fill(seg[i], o, Math.min(pixels, o + 257 - c));
        o += 257 - c;
        i += 1;
      }
    }
    segs.push(out);
  }
  const res = Buffer.alloc(pixels * n);
  for (let p = 0; p < pixels; p += 1) for (let s = 0; s < n; s += 1) res[p * n + s] = segs[s][p];
  return res;
}

function parseStowResponse(value) {
  if (value === undefined || value === null) return null;
  if (typeof value === 'object' && !(value instanceof ArrayBuffer)) return value;
  try {
    return JSON.parse(typeof value === 'string' ? value : Buffer.from(value).toString('utf8'));
  } catch (e) {
    return null;
  }
}

// ---- The run -------------------------------------------------------------------------------

async function main() {
  const client = new api.DICOMwebClient({ url: URL_BASE, verbose: false });
  // What a browser's XMLHttpRequest adds when the caller sets no Accept header.
  const browserLike = new api.DICOMwebClient({ url: URL_BASE, verbose: false, headers: { Accept: '*/*' } });
  // Only to keep the later checks meaningful when a store fails.
  const fallback = new api.DICOMwebClient({
    url: URL_BASE, verbose: false, headers: { Accept: 'application/dicom+json' },
  });
  const A = M.ct1.study;
  const S1 = M.ct1.series;
  const S2 = M.ct3.series;

  // ---- storeInstances -----------------------------------------------------------------
  async function store(what, c, names, extra = {}) {
    const r = await call(what, () => c.storeInstances({ datasets: names.map(arrayBufferOf), ...extra }));
    let stored = false;
    if (r.value !== undefined) {
      const body = parseStowResponse(r.value);
      const refs = uidsOf(values(body, '00081199'), '00081155');
      stored = ok(eqSet(refs, names.map(n => M[n].sop)) && values(body, '00081198').length === 0,
        `${what}: the response lists every instance in ReferencedSOPSequence, none failed`,
        JSON.stringify(body).slice(0, 500));
    }
    if (!stored) {
      note(`${what} failed; storing the same files with Accept: application/dicom+json so that the checks below still run`);
      const f = await call(`${what} (fallback, Accept: application/dicom+json)`,
        () => fallback.storeInstances({ datasets: names.map(arrayBufferOf), ...extra }));
      if (f.error) note(`fallback failed too: ${errText(f.error)}`);
    }
  }
  await store('storeInstances [mr] (the client sends no Accept header)', client, ['mr']);
  await store('storeInstances [dose, rle] in one request (no Accept header)', client, ['dose', 'rle']);
  await store(`storeInstances [ct1, ct2, ct3] to /studies/${A} with Accept: */* (as a browser sends it)`,
    browserLike, ['ct1', 'ct2', 'ct3'], { studyInstanceUID: A });

  {
    const r = await call('storeInstances [mr] again (duplicate)', () => client.storeInstances({ datasets: [arrayBufferOf('mr')] }), true);
    if (r.error) {
      const body = parseStowResponse(r.error.response);
      const failedSeq = values(body, '00081198');
      ok(r.error.status === 409 && failedSeq.length === 1 && first(failedSeq[0], '00081155') === M.mr.sop &&
         first(failedSeq[0], '00081197') === 45070,
      'duplicate store: 409, FailedSOPSequence names the instance with FailureReason 45070', errText(r.error));
    }
  }

  // ---- searchForStudies ----------------------------------------------------------------
  {
    const r = await call('searchForStudies()', () => client.searchForStudies());
    if (r.value) {
      ok(eqSet(uidsOf(r.value, '0020000D'), new Set(Object.values(M).map(m => m.study))),
        'searchForStudies(): exactly the 4 stored studies', describeList(r.value));
    }
  }
  {
    const q = { PatientID: M.ct1.patient_id, includefield: 'ModalitiesInStudy,NumberOfStudyRelatedSeries,NumberOfStudyRelatedInstances' };
    const r = await call(`searchForStudies({queryParams: ${JSON.stringify(q)}})`, () => client.searchForStudies({ queryParams: q }));
    if (r.value) {
      const s = r.value[0];
      ok(r.value.length === 1 && first(s, '0020000D') === A && values(s, '00080061').includes('CT') &&
         first(s, '00201206') === 2 && first(s, '00201208') === 3,
      'study A found by PatientID, with ModalitiesInStudy CT, 2 series, 3 instances (includefield)', describeList(r.value));
    }
  }
  {
    const q = { StudyInstanceUID: M.mr.study, limit: 5, fuzzymatching: false };
    const r = await call(`searchForStudies({queryParams: ${JSON.stringify(q)}})`, () => client.searchForStudies({ queryParams: q }));
    if (r.value) {
      ok(r.value.length === 1 && first(r.value[0], '0020000D') === M.mr.study && first(r.value[0], '00100020') === M.mr.patient_id,
        'study B found by StudyInstanceUID with its PatientID', describeList(r.value));
    }
  }

  // ---- searchForSeries -----------------------------------------------------------------
  {
    const r = await call('searchForSeries({studyInstanceUID: A})', () => client.searchForSeries({ studyInstanceUID: A }));
    if (r.value) ok(eqSet(uidsOf(r.value, '0020000E'), [S1, S2]), 'study A has its 2 series', describeList(r.value));
  }
  {
    const q = { Modality: 'CT', includefield: 'NumberOfSeriesRelatedInstances' };
    const r = await call(`searchForSeries({queryParams: ${JSON.stringify(q)}})`, () => client.searchForSeries({ queryParams: q }));
    if (r.value) {
      const counts = {};
      r.value.forEach(s => { counts[first(s, '0020000E')] = first(s, '00201209'); });
      ok(eqSet(Object.keys(counts), [S1, S2]) && counts[S1] === 2 && counts[S2] === 1,
        'Modality=CT: the 2 CT series, with 2 and 1 instances (includefield)', describeList(r.value));
    }
  }
  {
    const q = { SeriesInstanceUID: M.dose.series };
    const r = await call('searchForSeries({studyInstanceUID: C, queryParams: {SeriesInstanceUID}})',
      () => client.searchForSeries({ studyInstanceUID: M.dose.study, queryParams: q }));
    if (r.value) {
      ok(r.value.length === 1 && first(r.value[0], '0020000E') === M.dose.series && first(r.value[0], '00080060') === 'RTDOSE',
        'the dose series, Modality RTDOSE', describeList(r.value));
    }
  }

  // ---- searchForInstances --------------------------------------------------------------
  {
    const r = await call('searchForInstances({studyInstanceUID: A})', () => client.searchForInstances({ studyInstanceUID: A }));
    if (r.value) ok(eqSet(uidsOf(r.value, '00080018'), [M.ct1.sop, M.ct2.sop, M.ct3.sop]), 'study A: its 3 instances', describeList(r.value));
  }
  {
    const r = await call('searchForInstances({studyInstanceUID: A, seriesInstanceUID: S1})',
      () => client.searchForInstances({ studyInstanceUID: A, seriesInstanceUID: S1 }));
    if (r.value) ok(eqSet(uidsOf(r.value, '00080018'), [M.ct1.sop, M.ct2.sop]), 'series S1: its 2 instances', describeList(r.value));
  }
  {
    const q = { SOPInstanceUID: M.dose.sop, includefield: 'NumberOfFrames,Rows,Columns' };
    const r = await call(`searchForInstances({queryParams: ${JSON.stringify(q)}})`, () => client.searchForInstances({ queryParams: q }));
    if (r.value) {
      const d = r.value[0];
      ok(r.value.length === 1 && first(d, '00080018') === M.dose.sop && first(d, '00280008') === 15 &&
         first(d, '00280010') === 10 && first(d, '00280011') === 10,
      'the dose instance with NumberOfFrames 15, Rows 10, Columns 10 (includefield)', describeList(r.value));
    }
  }
  {
    const q = { limit: 2, offset: 1 };
    const r = await call(`searchForInstances({studyInstanceUID: A, queryParams: ${JSON.stringify(q)}})`,
      () => client.searchForInstances({ studyInstanceUID: A, queryParams: q }));
    if (r.value) {
      ok(r.value.length === 2 && r.value.every(i => [M.ct1.sop, M.ct2.sop, M.ct3.sop].includes(first(i, '00080018'))),
        'limit=2&offset=1: 2 of study A\'s instances', describeList(r.value));
    }
  }

  // ---- Metadata ------------------------------------------------------------------------
  let bulkDataURI = null;
  function scanBulk(list) {
    (list || []).forEach(o => Object.keys(o || {}).forEach(t => { if (o[t] && o[t].BulkDataURI && !bulkDataURI) bulkDataURI = o[t].BulkDataURI; }));
  }
  {
    const r = await call('retrieveStudyMetadata({studyInstanceUID: A})', () => client.retrieveStudyMetadata({ studyInstanceUID: A }));
    if (r.value) {
      scanBulk(r.value);
      ok(eqSet(uidsOf(r.value, '00080018'), [M.ct1.sop, M.ct2.sop, M.ct3.sop]) &&
         r.value.every(o => first(o, '0020000D') === A && first(o, '00280010') === 128 && first(o, '00100020') === M.ct1.patient_id),
      'study metadata: 3 instances of study A, Rows 128, PatientID', describeList(r.value));
      ok(r.value.every(o => !o['7FE00010'] || !o['7FE00010'].InlineBinary),
        'study metadata: Pixel Data not inlined', '');
    }
  }
  {
    const r = await call('retrieveSeriesMetadata({studyInstanceUID: A, seriesInstanceUID: S2})',
      () => client.retrieveSeriesMetadata({ studyInstanceUID: A, seriesInstanceUID: S2 }));
    if (r.value) {
      scanBulk(r.value);
      ok(r.value.length === 1 && first(r.value[0], '00080018') === M.ct3.sop && first(r.value[0], '0008103E') === 'interop second series',
        'series metadata: ct3 with its SeriesDescription', describeList(r.value));
    }
  }
  {
    const r = await call('retrieveInstanceMetadata(dose)', () => client.retrieveInstanceMetadata(inst('dose')));
    if (r.value) {
      scanBulk(r.value);
      const d = r.value[0];
      ok(r.value.length === 1 && first(d, '00080018') === M.dose.sop && first(d, '00280008') === 15 && first(d, '00080060') === 'RTDOSE',
        'instance metadata: dose, NumberOfFrames 15, Modality RTDOSE', describeList(r.value));
    }
  }

  // ---- retrieveInstance / Series / Study -----------------------------------------------
  {
    const r = await call('retrieveInstance(ct1) (Accept: multipart/related; type="application/dicom")',
      () => client.retrieveInstance(inst('ct1')));
    if (r.value !== undefined) ok(same(r.value, bytesOf('ct1')), 'ct1 (Explicit VR LE) comes back byte-identical', `got ${buf(r.value) ? buf(r.value).length : typeof r.value} bytes`);
  }
  // dicomweb-client 0.11.3 cannot ask for another transfer syntax here: with any mediaTypes,
  // retrieveInstance/Series/Study compare the common type 'application/' with
  // 'application/dicom' and throw before any request. So only the default Accept is used.
  note('retrieveInstance/Series/Study with mediaTypes throw in the client itself (0.11.3 compares "application/" with "application/dicom"); only their default Accept is exercised');
  {
    const r = await call('retrieveInstance(rle) (default: Explicit VR LE)', () => client.retrieveInstance(inst('rle')));
    if (r.value !== undefined) {
      const meta = metaOf(buf(r.value));
      ok(meta && meta.ts === '1.2.840.10008.1.2.1' && meta.sop === M.rle.sop,
        'rle by default: a Part 10 file of the same instance transcoded to Explicit VR LE', JSON.stringify(meta));
    }
  }
  {
    const r = await call('retrieveSeries({A, S1})', () => client.retrieveSeries({ studyInstanceUID: A, seriesInstanceUID: S1 }));
    if (r.error && r.error.status === 406) note(`retrieveSeries: 406${STUDY_RULE}`);
    if (r.value) {
      ok(Array.isArray(r.value) && r.value.length === 2 &&
         ['ct1', 'ct2'].every(n => r.value.some(p => same(p, bytesOf(n)))),
      'series S1: ct1 and ct2, byte-identical', describeList(r.value.map(p => buf(p) && buf(p).length)));
    }
  }
  {
    const r = await call('retrieveStudy({A})', () => client.retrieveStudy({ studyInstanceUID: A }));
    if (r.error && r.error.status === 406) note(`retrieveStudy: 406${STUDY_RULE}`);
    if (r.value) {
      ok(Array.isArray(r.value) && r.value.length === 3 &&
         ['ct1', 'ct2', 'ct3'].every(n => r.value.some(p => same(p, bytesOf(n)))),
      'study A: its 3 instances, byte-identical', describeList(r.value.map(p => buf(p) && buf(p).length)));
    }
  }
  {
    const r = await call('retrieveStudy({D}) (default: Explicit VR LE)', () => client.retrieveStudy({ studyInstanceUID: M.rle.study }));
    if (r.value) {
      const meta = r.value.length === 1 ? metaOf(buf(r.value[0])) : null;
      ok(meta && meta.ts === '1.2.840.10008.1.2.1' && meta.sop === M.rle.sop,
        'study D (one RLE instance) by default: that instance transcoded to Explicit VR LE', JSON.stringify(meta));
    }
  }

  // ---- Frames --------------------------------------------------------------------------
  {
    const r = await call('retrieveInstanceFrames(ct1, [1])', () => client.retrieveInstanceFrames({ ...inst('ct1'), frameNumbers: [1] }));
    if (r.value) ok(r.value.length === 1 && same(r.value[0], frameOf('ct1', 1)), 'ct1 frame 1 equals its Pixel Data (32768 bytes)',
      describeList(r.value.map(p => buf(p) && buf(p).length)));
  }
  {
    const r = await call('retrieveInstanceFrames(dose, [7])', () => client.retrieveInstanceFrames({ ...inst('dose'), frameNumbers: [7] }));
    if (r.value) ok(r.value.length === 1 && same(r.value[0], frameOf('dose', 7)), 'dose frame 7 equals its slice of Pixel Data', '');
  }
  {
    const fr = [1, 5, 15];
    const r = await call('retrieveInstanceFrames(dose, [1, 5, 15])', () => client.retrieveInstanceFrames({ ...inst('dose'), frameNumbers: fr }));
    if (r.value) {
      ok(r.value.length === 3 && fr.every((k, i) => same(r.value[i], frameOf('dose', k))),
        'dose frames 1, 5, 15: three parts, in order, each its slice of Pixel Data',
        describeList(r.value.map(p => buf(p) && buf(p).length)));
    }
  }
  {
    const mt = [{ mediaType: 'application/octet-stream', transferSyntaxUID: '*' }];
    const r = await call('retrieveInstanceFrames(rle, [1, 2], transfer-syntax=*)',
      () => client.retrieveInstanceFrames({ ...inst('rle'), frameNumbers: [1, 2], mediaTypes: mt }));
    if (r.value) {
      ok(r.value.length === 2 && same(r.value[0], frameOf('rle', 1)) && same(r.value[1], frameOf('rle', 2)),
        'rle frames 1, 2 with transfer-syntax=*: the RLE fragments as stored', '');
    }
  }
  {
    const r = await call('retrieveInstanceFrames(rle, [2]) (default: uncompressed)', () => client.retrieveInstanceFrames({ ...inst('rle'), frameNumbers: [2] }));
    if (r.value) {
      const want = rleDecode(frameOf('rle', 2), M.rle.rows * M.rle.columns);
      ok(r.value.length === 1 && same(r.value[0], want), 'rle frame 2 decoded: its RGB pixels, colour-by-pixel (30000 bytes)',
        describeList(r.value.map(p => buf(p) && buf(p).length)));
    }
  }
  {
    // Two base types: the client asks with a list of two multipart media types.
    const mt = [{ mediaType: 'application/octet-stream', transferSyntaxUID: '1.2.840.10008.1.2.1' },
      { mediaType: 'image/jp2', transferSyntaxUID: '1.2.840.10008.1.2.4.90' }];
    const r = await call('retrieveInstanceFrames(ct1, [1], octet-stream or image/jp2)',
      () => client.retrieveInstanceFrames({ ...inst('ct1'), frameNumbers: [1], mediaTypes: mt }));
    if (r.value) {
      const p = buf(r.value[0]);
      const isJ2k = p && p.length > 2 && p[0] === 0xff && p[1] === 0x4f;
      ok(r.value.length === 1 && (p.equals(frameOf('ct1', 1)) || isJ2k),
        'ct1 frame 1 asked as octet-stream or image/jp2: the pixel bytes (or a JPEG 2000 codestream)', '');
    }
  }

  // ---- Rendered ------------------------------------------------------------------------
  {
    const r = await call('retrieveInstanceRendered(ct1) (no Accept header)', () => client.retrieveInstanceRendered(inst('ct1')));
    if (r.value) {
      const j = jpegInfo(buf(Array.isArray(r.value) ? r.value[0] : r.value));
      ok(j && j.width === 128 && j.height === 128, 'rendered ct1 without Accept: a 128x128 JPEG', JSON.stringify(j));
    }
  }
  {
    const r = await call('retrieveInstanceRendered(ct1, image/png)',
      () => client.retrieveInstanceRendered({ ...inst('ct1'), mediaTypes: [{ mediaType: 'image/png' }] }));
    if (r.value) {
      const p = pngInfo(buf(Array.isArray(r.value) ? r.value[0] : r.value));
      ok(p && p.width === 128 && p.height === 128 && p.colorType === 0, 'rendered ct1 as PNG: 128x128 grey', JSON.stringify(p));
    }
  }
  {
    // Two acceptable types: the client sends "Accept: image/png, image/jpeg"; either will do.
    const mt = [{ mediaType: 'image/png' }, { mediaType: 'image/jpeg' }];
    const r = await call('retrieveInstanceRendered(ct1, image/png or image/jpeg)',
      () => client.retrieveInstanceRendered({ ...inst('ct1'), mediaTypes: mt }));
    if (r.value) {
      const b = buf(Array.isArray(r.value) ? r.value[0] : r.value);
      const i = pngInfo(b) || jpegInfo(b);
      ok(i && i.width === 128 && i.height === 128, 'rendered ct1 asked as PNG or JPEG: a 128x128 image of one of them', JSON.stringify(i));
    }
  }
  {
    const r = await call('retrieveInstanceRendered(mr, image/jpeg, quality=50)',
      () => client.retrieveInstanceRendered({ ...inst('mr'), mediaTypes: [{ mediaType: 'image/jpeg' }], queryParams: { quality: 50 } }));
    if (r.value) {
      const j = jpegInfo(buf(Array.isArray(r.value) ? r.value[0] : r.value));
      ok(j && j.width === 64 && j.height === 64, 'rendered mr at quality 50: a 64x64 JPEG', JSON.stringify(j));
    }
  }
  {
    const r = await call('retrieveInstanceFramesRendered(dose, [3], image/png)',
      () => client.retrieveInstanceFramesRendered({ ...inst('dose'), frameNumbers: [3], mediaTypes: [{ mediaType: 'image/png' }] }));
    if (r.value) {
      const p = pngInfo(buf(Array.isArray(r.value) ? r.value[0] : r.value));
      ok(p && p.width === 10 && p.height === 10, 'rendered dose frame 3 as PNG: 10x10', JSON.stringify(p));
    }
  }
  {
    const r = await call('retrieveInstanceFramesRendered(rle, [2], image/jpeg)',
      () => client.retrieveInstanceFramesRendered({ ...inst('rle'), frameNumbers: [2], mediaTypes: [{ mediaType: 'image/jpeg' }] }));
    if (r.value) {
      const j = jpegInfo(buf(Array.isArray(r.value) ? r.value[0] : r.value));
      ok(j && j.width === 100 && j.height === 100 && j.components === 3, 'rendered rle frame 2: a 100x100 colour JPEG', JSON.stringify(j));
    }
  }
  {
    // Without mediaTypes the client sets no Accept header (and, without queryParams, no
    // binary response type either, so queryParams are given).
    const r = await call('retrieveInstanceFramesRendered(mr, [1], no Accept header, quality=80)',
      () => client.retrieveInstanceFramesRendered({ ...inst('mr'), frameNumbers: [1], queryParams: { quality: 80 } }));
    if (r.value) {
      const j = jpegInfo(buf(Array.isArray(r.value) ? r.value[0] : r.value));
      ok(j && j.width === 64 && j.height === 64, 'rendered mr frame 1 without Accept: a 64x64 JPEG', JSON.stringify(j));
    }
  }

  // ---- Thumbnails (not part of the reference service's API) --------------------------------
  {
    const r = await call('retrieveInstanceThumbnail(ct1)', () => client.retrieveInstanceThumbnail(inst('ct1')), true);
    if (r.error) ok(r.error.status >= 400 && r.error.status < 500, `thumbnail: refused with a 4xx (got ${r.error.status}), as the reference, which has no thumbnail resource`, errText(r.error));
  }
  {
    const r = await call('retrieveInstanceFramesThumbnail(dose, [1])',
      () => client.retrieveInstanceFramesThumbnail({ ...inst('dose'), frameNumbers: [1] }), true);
    if (r.error) ok(r.error.status >= 400 && r.error.status < 500, `frame thumbnail: refused with a 4xx (got ${r.error.status})`, errText(r.error));
  }

  // ---- Bulk data -----------------------------------------------------------------------
  if (bulkDataURI) {
    const r = await call(`retrieveBulkData(${bulkDataURI})`, () => client.retrieveBulkData({ BulkDataURI: bulkDataURI }));
    if (r.value) ok(Array.isArray(r.value) && r.value.length >= 1 && buf(r.value[0]).length > 0, 'bulk data retrieved', '');
  } else {
    note('the metadata holds no BulkDataURI (dicomfs leaves bulk data out of the metadata, as documented),');
    note('so retrieveBulkData is called on the dose instance\'s frame URL instead (same Accept, same decoding)');
    const uri = `${URL_BASE}/studies/${M.dose.study}/series/${M.dose.series}/instances/${M.dose.sop}/frames/2,3`;
    const r = await call('retrieveBulkData(<dose frames/2,3 URL>)', () => client.retrieveBulkData({ BulkDataURI: uri }));
    if (r.value) {
      ok(r.value.length === 2 && same(r.value[0], frameOf('dose', 2)) && same(r.value[1], frameOf('dose', 3)),
        'retrieveBulkData on frames 2,3: the two frames\' bytes', describeList(r.value.map(p => buf(p) && buf(p).length)));
    }
  }
  note('buildInstanceWadoURIUrl only builds a WADO-URI link (no request); the reference service has no WADO-URI');

  console.log(`dicomweb_client (node): ${passed} checks passed, ${failed} failed`);
  if (failed) {
    console.log('failed checks:');
    failures.forEach(f => console.log(`  - ${f}`));
  }
  process.exit(failed ? 1 : 0);
}

main().catch(e => {
  console.log(`FAIL the script stopped: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
