// Smoke test of a Durable Streams server with the official client (@durable-streams/client),
// talking to it directly with the client's own auth header support (no proxy):
//
//   node tests/conformance/streams-smoke.mjs --target URL [--key KEY]
//
// For a text/plain and an application/json stream: create, append with an IdempotentProducer,
// catch-up reads from the start and from a mid offset, a long-poll reader and an SSE reader
// waiting at the tail that each receive a later append, then close with a final message.
// Prints `STREAMS_SMOKE ok` and exits 0, or says what differed and exits 1.
import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import { DurableStream, IdempotentProducer, stream } from "@durable-streams/client";

const { values: args } = parseArgs({ options: { target: { type: "string" }, key: { type: "string" } } });
if (!args.target) {
  console.error("usage: node tests/conformance/streams-smoke.mjs --target URL [--key KEY]");
  process.exit(2);
}
const headers = args.key ? { authorization: `Bearer ${args.key}` } : {};
const run = `${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
const streamUrl = (name) => `${args.target.replace(/\/$/, "")}/v1/stream/smoke-${run}-${name}`;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Resolves `promise`, or fails with `what` after `ms`.
function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Everything from `offset` up to the current tail, without live mode: text or JSON items.
async function catchUp(handle, json, offset) {
  const res = await handle.stream({ offset, live: false });
  return json ? res.json() : res.text();
}

// Appends through the producer and waits until the server has acknowledged it.
async function produce(producer, messages) {
  for (const m of messages) producer.append(m);
  await producer.flush();
}

// Opens a `mode` reader at the tail, appends `messages` only once its live request is on the
// wire, and checks that the reader receives exactly what was appended.
async function liveRead(handle, producer, json, mode, messages, expected) {
  const tail = (await handle.head()).offset;
  let liveRequestSent;
  const liveRequest = new Promise((resolve) => (liveRequestSent = resolve));
  // The client's first request is a catch-up; the `live=` one is where it starts waiting.
  const spy = (input, init) => {
    if (new URL(String(input)).searchParams.get("live") === mode) liveRequestSent();
    return fetch(input, init);
  };
  // The read-only stream() API: DurableStream#stream() ignores a per-call fetch.
  const res = await stream({ url: handle.url, headers, offset: tail, live: mode, fetch: spy });
  const received = [];
  const done = new Promise((resolve) => {
    const collect = (values) => {
      received.push(...values);
      if (received.length >= expected.length) resolve();
    };
    if (json) res.subscribeJson((batch) => collect(batch.items));
    else res.subscribeText((chunk) => collect(chunk.text ? [chunk.text] : []));
  });
  try {
    await within(10_000, `${mode} reader never sent its live request`, liveRequest);
    // Let the server register the waiting reader before the append arrives.
    await sleep(300);
    await produce(producer, messages);
    await within(10_000, `${mode} reader did not receive ${JSON.stringify(expected)}`, done);
  } finally {
    res.cancel();
  }
  assert.deepEqual(json ? received : received.join(""), json ? expected : expected.join(""), `${mode} reader`);
}

// The whole scenario on one stream. `encode`/`decode` map the logical messages to what the
// producer sends and what a catch-up read returns.
async function scenario(contentType, msgs) {
  const json = contentType === "application/json";
  const encode = (m) => (json ? JSON.stringify(m) : m);
  const whole = (list) => (json ? list : list.join(""));
  const [a, b, c, d, e, f, final] = msgs;

  const handle = await DurableStream.create({ url: streamUrl(json ? "json" : "text"), headers, contentType });
  const producer = new IdempotentProducer(handle, `smoke-${run}`, { onError: (err) => console.error(err) });

  await produce(producer, [a, b].map(encode));
  const mid = producer.lastSuccessfulOffset;
  assert.ok(mid, "the producer reports the offset of its acknowledged appends");
  await produce(producer, [c, d].map(encode));

  assert.deepEqual(await catchUp(handle, json, "-1"), whole([a, b, c, d]), "catch-up from the start");
  assert.deepEqual(await catchUp(handle, json, mid), whole([c, d]), "catch-up from the mid offset");

  await liveRead(handle, producer, json, "long-poll", [encode(e)], [e]);
  await liveRead(handle, producer, json, "sse", [encode(f)], [f]);

  await producer.close(encode(final));
  const res = await handle.stream({ offset: "-1", live: false });
  assert.deepEqual(await (json ? res.json() : res.text()), whole(msgs), "everything, in order, after close");
  assert.equal(res.streamClosed, true, "a read at the tail of a closed stream says it is closed");
  assert.equal((await handle.head()).streamClosed, true, "HEAD says the stream is closed");
}

try {
  await within(
    60_000,
    "the smoke test as a whole",
    (async () => {
      await scenario("text/plain", ["alpha\n", "beta\n", "gamma ✓\n", "delta\n", "epsilon\n", "zeta\n", "omega\n"]);
      await scenario("application/json", [{ n: 1 }, { n: 2, s: "two" }, [3], "four", { n: 5 }, { n: 6 }, { end: true }]);
    })(),
  );
} catch (err) {
  console.error(`STREAMS_SMOKE failed against ${args.target}:`, err);
  process.exit(1);
}
console.log("STREAMS_SMOKE ok");
