// Sends errorflow's end-to-end scenarios with the official Node SDK.
//
// Run with: SENTRY_DSN=http://KEY@127.0.0.1:8000/1 node node_client.js
// (`.ci/run` runs `npm ci` here.) Each scenario's event is recognisable by
// its exception value; the Rust test asserts them through the REST API.
"use strict";

const Sentry = require("@sentry/node");

Sentry.init({
  dsn: process.env.SENTRY_DSN,
  release: "node-shop@2.0.0",
  environment: "e2e",
  serverName: "node-host",
  tracesSampleRate: 0,
  // The test process exits on its own; do not let the SDK exit it.
  integrations: (defaults) =>
    defaults.filter((i) => i.name !== "OnUncaughtException"),
});
Sentry.setTag("service", "node-shop");

class PaymentError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "PaymentError";
  }
}

function parseOrder(raw) {
  return JSON.parse(raw);
}

function loadOrder(id) {
  try {
    return parseOrder(`{"id": ${id},`);
  } catch (e) {
    throw new PaymentError(`cannot load order ${id}`, { cause: e });
  }
}

async function fetchPrice(sku) {
  throw new TypeError(`price of ${sku} is not a number`);
}

async function main() {
  // 1. A thrown error, caught and captured.
  try {
    null.checkout();
  } catch (e) {
    Sentry.captureException(e);
  }

  // 2. A rejected promise, captured by the unhandled-rejection integration.
  const rejected = new Promise((resolve) => {
    process.once("unhandledRejection", () => setTimeout(resolve, 50));
  });
  fetchPrice("A-100");
  await rejected;

  // 3. An error with a `cause`, twice with different ids (one incident).
  for (const id of [7, 8]) {
    try {
      loadOrder(id);
    } catch (e) {
      Sentry.captureException(e);
    }
  }

  await Sentry.flush(10000);
}

main();
