// Generates the Node part of the labelled grouping corpus with the real
// Node SDK (@sentry/node, as pinned in ../sentry_clients/package.json).
//
// Regenerate with (from the repository root):
//
//   (cd errorflow-collector/tests/sentry_clients && npm ci)
//   node errorflow-collector/tests/corpus_gen/node_gen.js \
//       > errorflow-collector/tests/fixtures/corpus/node.jsonl
//
// How it works: as python_gen.py. A small shop application (APP below) is
// written into three "deploy" directories with different releases and with
// blank lines inserted at different places (line numbers and paths move,
// the code does not), and each deploy runs in its own `node` process with
// `Sentry.init({ transport })`, where the transport is the SDK's own
// `createTransport` with a request function that writes each event item of
// the serialised envelope instead of sending it. The site's label travels
// in a scope tag (`corpus_label`, removed before writing), so that events
// captured asynchronously (unhandled rejections) keep the right label.
// Services: `node-shop` with the defaults, `node-worker` with
// `attachStacktrace: true`. Values vary per occurrence with a fixed seed.
"use strict";

const { execFileSync } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const APP = {
  "src/errors.js": `
class PaymentError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "PaymentError";
  }
}
{pad:1}
class NotFoundError extends Error {
  constructor(message) {
    super(message);
    this.name = "NotFoundError";
  }
}
module.exports = { PaymentError, NotFoundError };
`,
  "src/orders.js": `
const { PaymentError } = require("./errors");
const ORDERS = new Map();
const INVOICES = {};
const CUSTOMERS = {};
{pad:1}
function getOrder(id) {
  return ORDERS.get(id).items;
}
{pad:2}
function getInvoice(id) {
  return INVOICES[id].items;
}

function getCustomer(id) {
  return CUSTOMERS[id].name;
}
{pad:3}
function parseOrder(raw) {
  return JSON.parse(raw);
}

function loadOrder(id) {
  try {
    return parseOrder(\`{"id": \${id},\`);
  } catch (e) {
    throw new PaymentError(\`cannot load order \${id}\`, { cause: e });
  }
}
module.exports = { getOrder, getInvoice, getCustomer, parseOrder, loadOrder };
`,
  "src/payments.js": `
const Sentry = require("@sentry/node");
const { PaymentError } = require("./errors");
{pad:1}
function charge(amount) {
  throw new PaymentError(\`charge of \${amount} EUR declined\`);
}

async function refund(id) {
  await null;
  throw new PaymentError(\`refund \${id} rejected: order already settled\`);
}
{pad:2}
async function fetchRate(currency, ms) {
  await null;
  throw new Error(\`request to https://fx.example.com/v1/rates/\${currency}?t=\${Date.now()} failed after \${ms}ms\`);
}

async function settle(batch) {
  await null;
  return Promise.reject(\`settlement batch \${batch} timed out\`);
}
{pad:3}
function reportSlowGateway(ms) {
  Sentry.captureMessage(\`payment gateway answered in \${ms}ms\`, "warning");
}
module.exports = { charge, refund, fetchRate, settle, reportSlowGateway };
`,
  "src/users.js": `
const { NotFoundError } = require("./errors");
{pad:1}
function validateEmail(email) {
  if (!/^[^@]+@[^@]+$/.test(email)) {
    throw new RangeError(\`invalid email "\${email}"\`);
  }
}

function findUser(id) {
  throw new NotFoundError(\`user \${id} not found\`);
}
{pad:2}
function findTeam(id) {
  throw new NotFoundError(\`team \${id} not found\`);
}

function avatarUrl(user) {
  return user.profile.avatar.url;
}
module.exports = { validateEmail, findUser, findTeam, avatarUrl };
`,
  "src/jobs.js": `
const Sentry = require("@sentry/node");
{pad:1}
function checkQueue(depth) {
  Sentry.captureMessage(\`queue depth \${depth} above threshold\`, "error");
}

function heartbeat(worker) {
  Sentry.captureMessage("worker heartbeat missed", "error");
}
{pad:2}
function watchdog(worker) {
  Sentry.captureMessage("worker heartbeat missed", "error");
}

function resize(width) {
  return new Array(width);
}
module.exports = { checkQueue, heartbeat, watchdog, resize };
`,
};

const MAIN = `
"use strict";
const fs = require("fs");
const Sentry = require("@sentry/node");

const OUT = process.env.CORPUS_OUT;
const service = process.env.CORPUS_SERVICE;

// The SDK's own transport machinery, with a request function that writes
// the envelope's event items instead of sending them.
function capturingTransport(options) {
  return Sentry.createTransport(options, async (request) => {
    const body = typeof request.body === "string" ? request.body : Buffer.from(request.body).toString("utf8");
    const lines = body.split("\\n");
    for (let i = 1; i + 1 < lines.length; i += 2) {
      const header = JSON.parse(lines[i]);
      if (header.type !== "event") continue;
      const event = JSON.parse(lines[i + 1]);
      const label = event.tags && event.tags.corpus_label;
      delete event.tags.corpus_label;
      fs.appendFileSync(OUT, JSON.stringify({ label, event }) + "\\n");
    }
    return { statusCode: 200 };
  });
}

Sentry.init({
  dsn: "http://00000000000000000000000000000000@127.0.0.1:1/1",
  transport: capturingTransport,
  release: service + "@" + process.env.CORPUS_RELEASE,
  environment: "production",
  serverName: service + "-1",
  attachStacktrace: process.env.CORPUS_ATTACH === "1",
  tracesSampleRate: 0,
  maxBreadcrumbs: 0,
  integrations: (defaults) => defaults.filter((i) => i.name !== "OnUncaughtException"),
});
Sentry.setTag("service", service);

const orders = require("./src/orders");
const payments = require("./src/payments");
const users = require("./src/users");
const jobs = require("./src/jobs");

// A small deterministic generator (mulberry32) for the varying values.
let seed = Number(process.env.CORPUS_SEED);
function rand() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = (xs) => xs[int(0, xs.length - 1)];
const uuid = () => "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, () => int(0, 15).toString(16));

const SCENARIOS = {
  "orders.getOrder": () => orders.getOrder(int(1, 99999)),
  "orders.getInvoice": () => orders.getInvoice("inv-" + int(1, 99999)),
  "orders.getCustomer": () => orders.getCustomer(uuid()),
  "orders.parseOrder": () => orders.parseOrder(pick(["not json", "{\\"a\\": 1,", "", "{'a': 1}", "[1, 2"])),
  "orders.loadOrder": () => orders.loadOrder(int(1, 99999)),
  "payments.charge": () => payments.charge((int(100, 99999) / 100).toFixed(2)),
  "payments.refund": async () => { payments.refund(int(1, 99999)); },
  "payments.fetchRate": async () => { payments.fetchRate(pick(["USD", "GBP", "JPY", "CHF"]), int(100, 30000)); },
  "payments.settle": async () => { payments.settle(int(1, 9999)); },
  "payments.reportSlowGateway": () => payments.reportSlowGateway(int(2000, 60000)),
  "users.validateEmail": () => users.validateEmail(pick(["bob", "ada at example.com", "x@", "@@", "li.wei"]) + int(1, 99)),
  "users.findUser": () => users.findUser(uuid()),
  "users.findTeam": () => users.findTeam(int(1, 5000)),
  "users.avatarUrl": () => users.avatarUrl({ profile: {} }),
  "jobs.checkQueue": () => jobs.checkQueue(int(1000, 90000)),
  "jobs.heartbeat": () => jobs.heartbeat(int(1, 16)),
  "jobs.watchdog": () => jobs.watchdog(int(1, 16)),
  "jobs.resize": () => jobs.resize(-int(1, 1000)),
};

async function run(label, fn) {
  Sentry.setTag("corpus_label", service + "/" + label);
  let done;
  const onRejection = () => setTimeout(done, 20);
  const rejected = new Promise((resolve) => {
    done = resolve;
    process.once("unhandledRejection", onRejection);
    setTimeout(resolve, 300);
  });
  try {
    const p = fn();
    if (p && typeof p.then === "function") {
      await p;
      await rejected;
    }
  } catch (e) {
    Sentry.captureException(e);
  }
  process.removeListener("unhandledRejection", onRejection);
  await Sentry.flush(2000);
}

async function main() {
  for (const arg of process.argv.slice(2)) {
    const [site, count] = arg.split("=");
    for (let i = 0; i < Number(count); i++) {
      await run(site, SCENARIOS[site]);
    }
  }
  await Sentry.flush(5000);
}
main();
`;

const SERVICES = [
  ["node-shop", false, null],
  ["node-worker", true, ["jobs.checkQueue", "jobs.heartbeat", "jobs.watchdog", "payments.reportSlowGateway", "orders.getOrder", "payments.refund"]],
];
const DEPLOYS = [["2.0.0", 0], ["2.0.1", 3], ["2.1.0", 7]];

function render(source, shift) {
  const out = [];
  for (const line of source.split("\n")) {
    const m = /^\{pad:(\d+)\}$/.exec(line);
    if (m) {
      const n = ((shift * Number(m[1])) % 5) + (shift ? 1 : 0);
      for (let i = 0; i < n; i++) out.push("");
    } else {
      out.push(line);
    }
  }
  return out.join("\n");
}

// Deterministic per-deploy counts and seeds.
let state = 6;
function next() {
  state = (state * 1103515245 + 12345) % 2147483648;
  return state;
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), "errorflow-corpus-node-"));
const out = path.join(root, "events.jsonl");
const nodeModules = path.resolve(__dirname, "../sentry_clients/node_modules");
const allSites = [...MAIN.matchAll(/^  "([\w.]+)": /gm)].map((m) => m[1]);
try {
  for (const [service, attach, sites] of SERVICES) {
    for (const [release, shift] of DEPLOYS) {
      const deploy = path.join(root, "releases", `${service}-${release}`);
      for (const [file, source] of Object.entries(APP)) {
        fs.mkdirSync(path.dirname(path.join(deploy, file)), { recursive: true });
        fs.writeFileSync(path.join(deploy, file), render(source, shift));
      }
      fs.writeFileSync(path.join(deploy, "main.js"), MAIN);
      const args = (sites || allSites).map((s) => `${s}=${1 + ((next() >>> 16) % 4)}`);
      execFileSync("node", ["main.js", ...args], {
        cwd: deploy,
        stdio: ["ignore", "ignore", "inherit"],
        env: {
          ...process.env,
          NODE_PATH: nodeModules,
          CORPUS_OUT: out,
          CORPUS_SERVICE: service,
          CORPUS_RELEASE: release,
          CORPUS_ATTACH: attach ? "1" : "0",
          CORPUS_SEED: String(next()),
        },
      });
    }
  }
  const slim = (event) => {
    for (const k of ["modules", "breadcrumbs", "debug_meta", "spans"]) delete event[k];
    if (event.sdk) {
      delete event.sdk.integrations;
      delete event.sdk.packages;
    }
    const stacks = [];
    for (const e of (event.exception || {}).values || []) stacks.push(e.stacktrace);
    for (const t of (event.threads || {}).values || []) stacks.push(t.stacktrace);
    stacks.push(event.stacktrace);
    for (const s of stacks) {
      for (const f of (s || {}).frames || []) {
        delete f.pre_context;
        delete f.post_context;
        delete f.vars;
      }
    }
    return event;
  };
  for (const line of fs.readFileSync(out, "utf8").split("\n")) {
    if (!line) continue;
    const record = JSON.parse(line);
    record.event = slim(record.event);
    process.stdout.write(JSON.stringify(record) + "\n");
  }
} finally {
  fs.rmSync(root, { recursive: true, force: true });
}
