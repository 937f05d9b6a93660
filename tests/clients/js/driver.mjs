// Kisi's JavaScript client (npm kisi-client, pinned in package.json) used the way an
// integrator's code uses it, pointed at the gateway: the only changes are the base URL and an
// added x-api-key header. Reads a JSON list of operations, runs them in order, and prints one
// JSON line per operation with what the client gave the caller: the resolved value, or the
// error it threw (class, message, status/code/reason when it is a KisiError).
//
//   node tests/clients/js/driver.mjs --base-url http://127.0.0.1:3000/kisi \
//        --api-key local-dev-key --ops ops.json        (or --ops - to read stdin)
//
// With --session it reads one JSON operation per stdin line instead and answers each as it
// comes, so a test can change the world between two calls of one long-lived client.
//
// Environment fallbacks: KISI_BASE_URL_UNDER_TEST, GATEWAY_API_KEY (omit the key to talk to
// Kisi or the simulator directly). Bounds: --op-timeout-ms per operation [20000] and
// --total-timeout-ms for the run [120000]; past either the driver reports and exits 3.
//
// Each output line: {"index", "op", "ok", "result" | "error", "wire", "elapsed_ms"}. "wire" is
// the status and a few headers of the last HTTP answer the client received, observed by a
// pass-through axios interceptor (the client itself hides them). Values of "secret" fields
// are replaced by their fingerprint (sha256: + 12 hex digits, as the simulator logs them).

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import Kisi from 'kisi-client';

const WIRE_HEADERS = [
  'content-type', 'retry-after', 'location', 'x-collection-range',
  'x-gateway-request-id', 'x-gateway-attempts', 'deprecation', 'sunset',
];

function parseArgs(argv) {
  const options = {
    baseUrl: process.env.KISI_BASE_URL_UNDER_TEST,
    apiKey: process.env.GATEWAY_API_KEY,
    ops: '-',
    session: false,
    opTimeoutMs: 20000,
    totalTimeoutMs: 120000,
  };
  const names = {
    '--base-url': 'baseUrl', '--api-key': 'apiKey', '--ops': 'ops',
    '--op-timeout-ms': 'opTimeoutMs', '--total-timeout-ms': 'totalTimeoutMs',
  };
  for (let i = 2; i < argv.length; i += 2) {
    if (argv[i] === '--session') {
      options.session = true;
      i -= 1;
      continue;
    }
    const name = names[argv[i]];
    if (name === undefined || argv[i + 1] === undefined) {
      throw new Error(`unknown or incomplete argument ${argv[i]}`);
    }
    options[name] = name.endsWith('Ms') ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!options.baseUrl) throw new Error('--base-url (or KISI_BASE_URL_UNDER_TEST) is required');
  for (const bound of ['opTimeoutMs', 'totalTimeoutMs']) {
    if (!(options[bound] > 0)) throw new Error(`--${bound} must be a positive number`);
  }
  return options;
}

function fingerprint(secret) {
  return `sha256:${createHash('sha256').update(String(secret)).digest('hex').slice(0, 12)}`;
}

function redact(value) {
  if (Array.isArray(value)) return value.map(redact);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).map(
    ([key, inner]) => [key, key === 'secret' && typeof inner === 'string'
      ? fingerprint(inner) : redact(inner)],
  ));
}

function describeError(error) {
  const cls = error?.name === 'DriverTimeout' ? 'DriverTimeout' : error?.constructor?.name ?? typeof error;
  const described = { class: cls, message: String(error?.message ?? error) };
  for (const field of ['status', 'code', 'reason']) {
    if (error && error[field] !== undefined) described[field] = redact(error[field]);
  }
  return described;
}

// An integrator's client: Kisi's defaults, the gateway's base URL, one added header.
function makeClient(baseUrl, apiKey, wire) {
  const kisi = new Kisi({ baseURL: baseUrl });
  if (apiKey) kisi.client.defaults.headers.common['x-api-key'] = apiKey;
  const observe = (response) => {
    if (!response) return;
    const headers = {};
    for (const name of WIRE_HEADERS) {
      if (response.headers?.[name] !== undefined) headers[name] = response.headers[name];
    }
    wire.last = { status: response.status, headers };
  };
  kisi.client.interceptors.response.use(
    (response) => { observe(response); return response; },
    (error) => { observe(error?.response); return Promise.reject(error); },
  );
  return kisi;
}

const itemPath = (op) => `${op.resource}/${encodeURIComponent(op.id)}`;

const OPERATIONS = {
  sign_in: (kisi, op) => kisi.signIn({ email: op.email, password: op.password, ...(op.domain ? { domain: op.domain } : {}) }),
  sign_out: (kisi) => kisi.signOut(),
  set_key: async (kisi, op) => { kisi.setLoginSecret(op.secret ?? null); return null; },
  set_header: async (kisi, op) => {
    if (op.value === null || op.value === undefined) delete kisi.client.defaults.headers.common[op.name];
    else kisi.client.defaults.headers.common[op.name] = op.value;
    return null;
  },
  list: (kisi, op) => kisi.get(op.resource, op.query ?? {}),
  fetch: (kisi, op) => kisi.get(itemPath(op)),
  create: (kisi, op) => kisi.post(op.resource, op.body ?? {}),
  // kisi-client has no patch(): put() is the only update it offers.
  update: (kisi, op) => kisi.put(itemPath(op), op.body ?? {}),
  delete: (kisi, op) => kisi.delete(itemPath(op)),
  unlock: (kisi, op) => kisi.post(`locks/${encodeURIComponent(op.id)}/unlock`, op.body ?? {}),
  get: (kisi, op) => kisi.get(op.path, op.query ?? {}),
  post: (kisi, op) => kisi.post(op.path, op.body ?? {}),
  delete_path: (kisi, op) => kisi.delete(op.path, op.query ?? {}),
};

function withTimeout(promise, ms) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`driver: operation exceeded ${ms} ms`), { name: 'DriverTimeout' })), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

// --session: one JSON operation per stdin line, each answered as it comes.
async function* sessionOps() {
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    if (line.trim()) yield JSON.parse(line);
  }
}

function emit(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function main() {
  const options = parseArgs(process.argv);
  const ops = options.session ? sessionOps() : JSON.parse(readFileSync(options.ops === '-' ? 0 : options.ops, 'utf8'));
  if (!options.session && !Array.isArray(ops)) throw new Error('the operations must be a JSON list');
  const total = setTimeout(() => {
    emit({ op: 'driver', ok: false, error: { class: 'DriverTimeout', message: `run exceeded ${options.totalTimeoutMs} ms` } });
    process.exit(3);
  }, options.totalTimeoutMs);
  const wire = { last: null };
  const kisi = makeClient(options.baseUrl, options.apiKey, wire);
  let index = -1;
  for await (const op of ops) {
    index += 1;
    const run = OPERATIONS[op?.op];
    wire.last = null;
    const started = Date.now();
    const line = { index, op: op?.op };
    if (run === undefined) {
      Object.assign(line, { ok: false, error: { class: 'DriverError', message: `unknown operation ${JSON.stringify(op?.op)}` } });
    } else {
      try {
        Object.assign(line, { ok: true, result: redact((await withTimeout(run(kisi, op), options.opTimeoutMs)) ?? null) });
      } catch (error) {
        Object.assign(line, { ok: false, error: describeError(error) });
        if (error?.name === 'DriverTimeout') {
          emit({ ...line, wire: wire.last, elapsed_ms: Date.now() - started });
          process.exit(3);
        }
      }
    }
    emit({ ...line, wire: wire.last, elapsed_ms: Date.now() - started });
  }
  clearTimeout(total);
}

main().catch((error) => {
  emit({ op: 'driver', ok: false, error: describeError(error) });
  process.exit(2);
});
