'use strict';
// OHIF Viewer 3 (the prebuilt viewer of npm @ohif/app, pinned in package-lock.json) in
// Debian's headless Chromium, driven by playwright-core, against `dicomfs serve`.
// Run by ohif.py, once per configuration variant:
//
//   DICOMWEB_URL  http://127.0.0.1:PORT of dicomfs (or of the tap in front of it); OHIF's
//                 qidoRoot, wadoRoot and wadoUriRoot are DICOMWEB_URL/v2
//   VARIANT       "quoted" (OHIF's default Accept for frames) or "unquoted"
//                 (omitQuotationForMultipartRequest: true)
//   EXPECT        JSON: study, patient (as OHIF shows it), description, instances,
//                 modalities, series: [{uid, modality, instances, sops}]
//   ARTIFACTS     directory for the screenshots (the test's scratch directory)
//   CHROMIUM      the browser (default /usr/bin/chromium)
//
// The viewer is served from node_modules/@ohif/app/dist by a static server in this script
// (index.html for unknown paths: OHIF is a single-page app) with our own app-config.js.
// The browser may talk to 127.0.0.1 only: every other host goes to a dead proxy and resolves
// to nothing (Chromium flags). Playwright's request interception (page.route) is not used
// on purpose: while it is on, Playwright answers CORS preflights itself (204 with
// permissive headers), which would hide dicomfs's own OPTIONS answers.
//
// Prints one line per check ("ok   ..." / "FAIL ...") and every request OHIF made to
// dicomfs (method, status, Accept, URL); exits 1 when a check failed.
const fs = require('fs');
const http = require('http');
const path = require('path');
const { chromium } = require('playwright-core');
const { PNG } = require('pngjs');

const DICOMWEB = (process.env.DICOMWEB_URL || '').replace(/\/+$/, '');
const VARIANT = process.env.VARIANT || 'quoted';
const EXPECT = JSON.parse(process.env.EXPECT || '{}');
const ARTIFACTS = process.env.ARTIFACTS || '.';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DIST = path.join(__dirname, 'node_modules', '@ohif', 'app', 'dist');
const STEP_MS = 30000; // the longest any one step may wait (study list, first image)

const FRAME_ACCEPT = {
  quoted: 'multipart/related; type="application/octet-stream"; transfer-syntax="*"',
  unquoted: 'multipart/related; type=application/octet-stream; transfer-syntax=*',
};

let passed = 0;
let failed = 0;
function ok(cond, what, detail) {
  if (cond) {
    passed++;
    console.log(`ok   [${VARIANT}] ${what}`);
  } else {
    failed++;
    console.log(`FAIL [${VARIANT}] ${what}` + (detail ? `\n     ${detail}` : ''));
  }
  return !!cond;
}
const note = text => console.log(`#    ${text}`);

// ---- app-config.js ------------------------------------------------------------------------
// One DICOMweb data source, configured as OHIF's documentation configures the Azure DICOM
// service (platform/docs/docs/deployment/azure.md), with the roots on dicomfs's /v2. No
// OIDC (dicomfs serves without authentication here), no dialogs, no external hosts.
function appConfig() {
  const v2 = `${DICOMWEB}/v2`;
  const configuration = {
    friendlyName: 'dicomfs',
    name: 'dicomfs',
    qidoRoot: v2,
    wadoRoot: v2,
    wadoUriRoot: v2,
    singlepart: 'bulkdata,pdf,video',
    imageRendering: 'wadors',
    thumbnailRendering: 'wadors',
    supportsWildcard: true,
    enableStudyLazyLoad: true,
    supportsFuzzyMatching: false,
    supportsStow: true,
  };
  if (VARIANT === 'unquoted') configuration.omitQuotationForMultipartRequest = true;
  const config = {
    routerBasename: '/',
    extensions: [],
    modes: [],
    showStudyList: true,
    maxNumberOfWebWorkers: 2,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: false,
    showLoadingIndicator: true,
    investigationalUseDialog: { option: 'never' },
    defaultDataSourceName: 'dicomfs',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'dicomfs',
        configuration,
      },
    ],
  };
  return `window.config = ${JSON.stringify(config, null, 2)};\n`;
}

// ---- The static server ----------------------------------------------------------------------
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon', '.woff2': 'font/woff2',
  '.woff': 'font/woff', '.ttf': 'font/ttf', '.txt': 'text/plain', '.xml': 'application/xml',
};

function startStatic(config) {
  const server = http.createServer((req, res) => {
    let p;
    try {
      p = decodeURIComponent(new URL(req.url, 'http://127.0.0.1').pathname);
    } catch (e) {
      res.writeHead(400);
      return res.end();
    }
    if (p === '/app-config.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript', 'Cache-Control': 'no-store' });
      return res.end(config);
    }
    let file = path.join(DIST, path.normalize(p));
    let st = null;
    if (file.startsWith(DIST + path.sep)) {
      try {
        st = fs.statSync(file);
      } catch (e) {
        st = null;
      }
    }
    if (!st || !st.isFile()) {
      file = path.join(DIST, 'index.html'); // the single-page app's routes
      st = fs.statSync(file);
    }
    res.writeHead(200, {
      'Content-Type': TYPES[path.extname(file).toLowerCase()] || 'application/octet-stream',
      'Content-Length': st.size,
    });
    if (req.method === 'HEAD') return res.end();
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// ---- Pixels ---------------------------------------------------------------------------------
// "Drawn" means: a good part of the area is not black and there are many grey levels (a
// CT or MR slice), not a black, blank or one-colour canvas.
function pixelStats(rgba, width, height) {
  let lit = 0;
  const levels = new Set();
  for (let i = 0; i < width * height * 4; i += 4) {
    const m = Math.max(rgba[i], rgba[i + 1], rgba[i + 2]);
    if (m > 24) lit++;
    levels.add(m);
  }
  const total = width * height;
  return { width, height, lit, total, fraction: total ? lit / total : 0, levels: levels.size };
}
const drawn = s => s && s.total > 0 && s.fraction > 0.1 && s.levels >= 32;
const describeStats = s =>
  s ? `${s.width}x${s.height}, ${(100 * s.fraction).toFixed(1)}% not black, ${s.levels} levels` : 'no canvas';

// The viewport's 2D canvas (cornerstone3D renders offscreen with WebGL and copies each
// image into it), read in the page.
async function canvasStats(page) {
  return page.evaluate(() => {
    const c = document.querySelector('[data-cy="viewport-pane"] canvas.cornerstone-canvas') ||
      document.querySelector('canvas.cornerstone-canvas');
    if (!c || !c.width || !c.height) return null;
    const ctx = c.getContext('2d');
    if (!ctx) return null;
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    // As pixelStats (the page cannot call it), plus a hash to tell images apart.
    let lit = 0;
    let hash = 0;
    const levels = new Set();
    for (let i = 0; i < d.length; i += 4) {
      const m = Math.max(d[i], d[i + 1], d[i + 2]);
      if (m > 24) lit++;
      levels.add(m);
      if (i % 388 === 0) hash = (hash * 31 + m) >>> 0;
    }
    const total = c.width * c.height;
    return { width: c.width, height: c.height, lit, total, fraction: lit / total, levels: levels.size, hash };
  });
}

// What the user sees: a screenshot of the canvas's area with OHIF's overlays (texts,
// orientation markers, tour pop-ups) hidden, decoded with pngjs.
async function screenStats(page, file) {
  const canvas = page.locator('[data-cy="viewport-pane"] canvas.cornerstone-canvas').first();
  const style = await page.addStyleTag({
    content: '[data-cy^="viewport-overlay"], [data-cy="viewport-pane"] svg, .shepherd-element,' +
      ' .viewport-element svg { visibility: hidden !important; }',
  });
  try {
    const buf = await canvas.screenshot({ path: file, timeout: 10000 });
    const png = PNG.sync.read(buf);
    return pixelStats(png.data, png.width, png.height);
  } finally {
    await style.evaluate(e => e.remove());
  }
}

async function waitFor(fn, ms) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last.done || Date.now() > deadline) return last;
    await new Promise(r => setTimeout(r, 250));
  }
}

// ---- The run ----------------------------------------------------------------------------------
function isLoopback(u) {
  try {
    const url = new URL(u);
    if (url.protocol === 'data:' || url.protocol === 'blob:' || url.protocol === 'about:') return true;
    return url.hostname === '127.0.0.1';
  } catch (e) {
    return false;
  }
}

async function main() {
  if (!DICOMWEB.startsWith('http://127.0.0.1:')) throw new Error(`DICOMWEB_URL must be a loopback URL, not ${DICOMWEB}`);
  if (!FRAME_ACCEPT[VARIANT]) throw new Error(`VARIANT must be quoted or unquoted, not ${VARIANT}`);
  if (!fs.existsSync(path.join(DIST, 'index.html'))) throw new Error(`${DIST}/index.html is missing: npm ci in ${__dirname}`);
  const staticServer = await startStatic(appConfig());
  const origin = `http://127.0.0.1:${staticServer.address().port}`;
  note(`OHIF viewer (${VARIANT}) at ${origin}, data source ${DICOMWEB}/v2`);

  const userDataDir = fs.mkdtempSync(path.join(ARTIFACTS, `chromium-${VARIANT}-`));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    serviceWorkers: 'block',
    timeout: 30000,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-default-apps', '--disable-extensions', '--no-pings', '--disable-domain-reliability',
      '--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication',
      // Software WebGL 2 for cornerstone3D.
      '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
      // Nothing but loopback: other hosts go to a closed port (loopback bypasses
      // proxies) and resolve to nothing.
      '--proxy-server=http://127.0.0.1:9',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    ],
  });

  // OHIF's first-visit tour would cover the viewport and catch the clicks: a returning
  // user has seen it.
  await context.addInitScript(() => {
    try {
      localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
    } catch (e) {
      /* no storage: the tour shows */
    }
  });

  const blocked = []; // requests for other hosts (they fail: see the flags above)

  // Every request to dicomfs as the browser made it, with its answer.
  const requests = [];
  const byRequest = new Map();
  context.on('request', req => {
    if (!isLoopback(req.url())) blocked.push(req.url());
    if (!req.url().startsWith(DICOMWEB + '/')) return;
    const e = {
      method: req.method(), url: req.url(), accept: req.headers().accept || '',
      status: null, failure: null,
    };
    byRequest.set(req, e);
    requests.push(e);
  });
  context.on('response', res => {
    const e = byRequest.get(res.request());
    if (e) {
      e.status = res.status();
      e.contentType = res.headers()['content-type'] || '';
    }
  });
  context.on('requestfailed', req => {
    const e = byRequest.get(req);
    if (e) e.failure = (req.failure() && req.failure().errorText) || 'failed';
  });
  const pending = () => requests.filter(e => e.status === null && e.failure === null).length;

  const page = context.pages()[0] || (await context.newPage());
  const consoleErrors = [];
  page.on('console', m => {
    if (m.type() === 'error') consoleErrors.push(m.text().slice(0, 400));
  });
  page.on('pageerror', e => consoleErrors.push('page error: ' + String(e.message).slice(0, 400)));

  const shots = new Set(); // the steps that have their failure screenshot
  const shot = async name => {
    const f = path.join(ARTIFACTS, `ohif-${VARIANT}-${name}.png`);
    try {
      await page.screenshot({ path: f, timeout: 10000 });
      note(`screenshot: ${f}`);
    } catch (e) {
      note(`screenshot ${f} failed: ${e.message}`);
    }
  };
  // A screenshot of the page when a step first fails, for debugging (in the test's scratch
  // directory, in the build directory).
  const snap = async name => {
    if (shots.has(name)) return;
    shots.add(name);
    await shot(`failure-${name}`);
  };
  const fail = async (what, detail, name) => {
    ok(false, what, detail);
    await snap(name);
  };

  const studyUid = EXPECT.study;
  try {
    // ---- 1. The study list --------------------------------------------------------------------
    const t0 = Date.now();
    await page.goto(origin + '/', { waitUntil: 'domcontentloaded', timeout: STEP_MS });
    const row = page.locator('tbody tr', { hasText: EXPECT.patient });
    let rowFound = true;
    try {
      await row.first().waitFor({ state: 'visible', timeout: STEP_MS });
    } catch (e) {
      rowFound = false;
    }
    if (!rowFound) {
      await fail(`the study list shows a row for ${EXPECT.patient}`,
        `no such row after ${STEP_MS / 1000} s; page text: ${(await page.innerText('body').catch(() => '')).slice(0, 600)}`,
        'studylist');
    } else {
      ok(true, `the study list shows a row for ${EXPECT.patient} (${Date.now() - t0} ms)`);
      ok((await row.count()) === 1, 'exactly one row for the study', `${await row.count()} rows`);
      const cells = (await row.first().locator('td').allInnerTexts()).map(s => s.trim());
      note(`study row: ${JSON.stringify(cells)}`);
      const numbers = cells.filter(s => /^\d+$/.test(s));
      if (!ok(numbers.length === 1 && Number(numbers[0]) === EXPECT.instances,
        `the row shows the number of instances, ${EXPECT.instances} (NumberOfStudyRelatedInstances, 00201208)`,
        `numeric cells ${JSON.stringify(numbers)} in ${JSON.stringify(cells)}`)) {
        await snap('studylist');
      }
      const mods = cells.find(s => EXPECT.modalities.every(m => s.split(/[\\/, ]+/).includes(m)));
      if (!ok(!!mods, `the row shows the modalities ${EXPECT.modalities.join(', ')} (ModalitiesInStudy, 00080061)`,
        JSON.stringify(cells))) await snap('studylist');
      if (!ok(cells.includes(EXPECT.description), `the row shows the description ${JSON.stringify(EXPECT.description)}`,
        JSON.stringify(cells))) await snap('studylist');
    }
    const qidoStudies = requests.filter(e => /\/v2\/studies\?/.test(e.url));
    ok(qidoStudies.length > 0, 'the study list searched with QIDO-RS GET /v2/studies?...',
      'no such request');

    // ---- 2. The viewer ------------------------------------------------------------------------
    const t1 = Date.now();
    await page.goto(`${origin}/viewer?StudyInstanceUIDs=${encodeURIComponent(studyUid)}`,
      { waitUntil: 'domcontentloaded', timeout: STEP_MS });
    // Drawn, and settled: the same image in the same canvas size twice in a row (the canvas
    // is resized to the viewport once the layout is done).
    let prev = null;
    const first = await waitFor(async () => {
      const s = await canvasStats(page).catch(() => null);
      const settled = drawn(s) && prev && prev.hash === s.hash && prev.width === s.width && prev.height === s.height;
      prev = s;
      return { done: settled, s };
    }, STEP_MS);
    if (!ok(drawn(first.s), `the viewport draws the first image, not black (${Date.now() - t1} ms)`,
      `after ${STEP_MS / 1000} s: ${describeStats(first.s)}`)) {
      await snap('viewer');
    } else {
      note(`viewport canvas: ${describeStats(first.s)}`);
      const seen = await screenStats(page, path.join(ARTIFACTS, `ohif-${VARIANT}-viewport.png`)).catch(e => {
        note(`viewport screenshot failed: ${e.message}`);
        return null;
      });
      ok(drawn(seen), 'the screenshot of the viewport (overlays hidden) is not black', describeStats(seen));
    }

    // The study browser: one thumbnail per series, with its modality and instance count.
    const thumbs = page.locator('[data-cy="study-browser-thumbnail"]');
    await waitFor(async () => ({ done: (await thumbs.count()) >= EXPECT.series.length }), 10000);
    const thumbTexts = (await thumbs.allInnerTexts()).map(s => s.replace(/\s+/g, ' ').trim());
    note(`study browser thumbnails: ${JSON.stringify(thumbTexts)}`);
    if (!ok(thumbTexts.length === EXPECT.series.length, `the study browser shows ${EXPECT.series.length} series`,
      `${thumbTexts.length} thumbnails`)) await snap('studybrowser');
    for (const s of EXPECT.series) {
      const t = thumbTexts.find(x => x.split(' ').includes(s.modality));
      const m = t && t.match(/(\d+)\s*$/);
      if (!ok(m && Number(m[1]) === s.instances,
        `the ${s.modality} series' thumbnail says ${s.instances} instances`, JSON.stringify(t))) await snap('studybrowser');
    }

    // Open the other series in the viewport (double-click its thumbnail): a new image.
    const other = EXPECT.series.find(s => s.modality !== EXPECT.series[0].modality) || EXPECT.series[1];
    if (drawn(first.s) && other) {
      const before = first.s.hash;
      const thumb = thumbs.filter({ has: page.locator('[data-cy="series-modality-label"]', { hasText: other.modality }) });
      try {
        await thumb.first().dblclick({ timeout: 10000 });
        const next = await waitFor(async () => {
          const s = await canvasStats(page).catch(() => null);
          return { done: drawn(s) && s.hash !== before, s };
        }, STEP_MS);
        if (!ok(drawn(next.s) && next.s.hash !== before,
          `double-clicking the ${other.modality} thumbnail draws that series (not black, a new image)`,
          describeStats(next.s))) await snap('series');
      } catch (e) {
        await fail(`double-clicking the ${other.modality} thumbnail draws that series`, e.message, 'series');
      }
    }

    // Let what is in flight finish, so that every answer is recorded.
    await waitFor(async () => ({ done: pending() === 0 }), 10000);
  } catch (e) {
    await fail('the run went through', e.stack || String(e), 'exception');
  }

  // ---- 3. What OHIF asked of dicomfs ---------------------------------------------------------
  note(`---- [${VARIANT}] ${requests.length} request(s) OHIF made to dicomfs (as the browser saw them) ----`);
  for (const e of requests) {
    const answer = e.status !== null ? String(e.status) : e.failure ? `FAILED (${e.failure})` : 'no answer';
    note(`${e.method} ${answer}  ${e.url.slice(DICOMWEB.length)}`);
    note(`      Accept: ${e.accept}${e.contentType ? `   -> Content-Type: ${e.contentType}` : ''}`);
  }
  const bad = requests.filter(e => e.status !== null && e.status >= 400);
  ok(bad.length === 0, 'dicomfs answered every request OHIF made with a status below 400',
    bad.map(e => `${e.status} ${e.method} ${e.url.slice(DICOMWEB.length)} [Accept: ${e.accept}]`).join('\n     '));
  const broken = requests.filter(e => e.failure !== null);
  ok(broken.length === 0, 'no request to dicomfs failed in the browser (network, CORS)',
    broken.map(e => `${e.failure}: ${e.method} ${e.url.slice(DICOMWEB.length)}`).join('\n     '));
  const still = requests.filter(e => e.status === null && e.failure === null);
  if (still.length) note(`${still.length} request(s) still without an answer when the browser closed`);

  const frames = requests.filter(e => /\/frames\/\d/.test(e.url));
  ok(frames.length > 0, 'OHIF retrieved frames (WADO-RS .../frames/N)', 'no frames request');
  const wrongAccept = frames.filter(e => e.accept !== FRAME_ACCEPT[VARIANT]);
  ok(frames.length > 0 && wrongAccept.length === 0,
    `every frames request had Accept: ${FRAME_ACCEPT[VARIANT]}`,
    wrongAccept.map(e => `Accept: ${e.accept}`).join('\n     '));
  for (const s of EXPECT.series) {
    const got = frames.filter(e => e.url.includes(`/series/${s.uid}/`) && e.status === 200);
    ok(got.length > 0, `frames of the ${s.modality} series were retrieved (200)`, `${got.length} requests`);
    const meta = requests.filter(e => e.url.includes(`/series/${s.uid}/metadata`) || e.url.endsWith(`/studies/${studyUid}/metadata`));
    ok(meta.some(e => e.status === 200), `the ${s.modality} series' metadata was retrieved (200)`,
      meta.map(e => `${e.status} ${e.url.slice(DICOMWEB.length)}`).join(', ') || 'no metadata request');
  }

  if (blocked.length) {
    note(`OHIF tried ${blocked.length} request(s) to hosts other than 127.0.0.1 (all refused by the browser):`);
    for (const u of [...new Set(blocked)]) note(`  ${u}`);
  } else {
    note('the browser asked for nothing but 127.0.0.1');
  }
  if (consoleErrors.length) {
    note(`${consoleErrors.length} console error(s) in the page:`);
    for (const m of consoleErrors.slice(0, 20)) note(`  ${m.replace(/\n/g, ' ')}`);
  }
  if (failed && !shots.size) await shot('failure');

  await context.close().catch(() => {});
  staticServer.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
  console.log(`ohif.test.js [${VARIANT}]: ${passed} checks passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch(e => {
  console.log(`FAIL [${VARIANT}] ${e.stack || e}`);
  process.exit(1);
});
