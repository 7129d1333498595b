// The official Electric client (@electric-sql/client: ShapeStream and Shape) syncing an org's
// tasks from the Worker's shape endpoint, with the org key in the client's `headers` option:
//
//   node tests/conformance/electric-client.mjs --target URL --key KEY
//
// 1. the initial sync equals the REST API's task list (values parsed by the served schema);
// 2. a live insert, update and delete made through the REST API reach the Shape;
// 3. a filtered shape (`id = $1` with params) holds just its row;
// 4. the stream is stopped, writes are made, the log is compacted to nothing
//    (`POST /v1/orgs/{id}/sync/compact {"keep": 0}`), and a ShapeStream resumed with the saved
//    offset and handle gets 409 must-refetch, resyncs, and its Shape equals the REST list.
// Prints `ELECTRIC_CLIENT {json}` (what it saw) and `ELECTRIC_CLIENT ok` and exits 0, or says
// what differed and exits 1.
import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import { Shape, ShapeStream } from "@electric-sql/client";

const { values: args } = parseArgs({ options: { target: { type: "string" }, key: { type: "string" } } });
if (!args.target || !args.key) {
  console.error("usage: node tests/conformance/electric-client.mjs --target URL --key KEY");
  process.exit(2);
}
const base = args.target.replace(/\/$/, "");
const headers = { authorization: `Bearer ${args.key}` };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function api(method, path, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...headers, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return json;
}

// Waits until `check()` is truthy, polling; fails with `what` after `ms`.
async function until(what, check, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(25);
  }
}

// The REST API's tasks as the shape should hold them: by id, the synced columns.
async function restTasks() {
  const all = [];
  let cursor = "";
  for (;;) {
    const page = await api("GET", `/v1/tasks?limit=200${cursor ? `&cursor=${cursor}` : ""}`);
    all.push(...page.data);
    if (!page.next_cursor) break;
    cursor = page.next_cursor;
  }
  return Object.fromEntries(
    all.map((t) => [
      t.id,
      { id: t.id, number: t.number, slug: t.slug, title: t.title, status_id: t.status.id, labels: t.labels, created_at: t.created_at },
    ]),
  );
}

function shapeTasks(rows) {
  return Object.fromEntries(
    rows.map((r) => [
      r.id,
      { id: r.id, number: r.number, slug: r.slug, title: r.title, status_id: r.status_id, labels: r.labels, created_at: r.created_at },
    ]),
  );
}

// A ShapeStream on the org's tasks that records each response's status and offset.
function stream(org, requests, extra = {}) {
  // Each request is recorded when it is sent (a live one may wait 20 s), its status when
  // it is answered.
  const fetchClient = async (input, init) => {
    const url = new URL(String(input instanceof Request ? input.url : input));
    const request = {
      status: null,
      offset: url.searchParams.get("offset"),
      live: url.searchParams.get("live") === "true",
      handle: url.searchParams.get("handle"),
    };
    requests.push(request);
    const res = await fetch(input, init);
    request.status = res.status;
    return res;
  };
  return new ShapeStream({
    url: `${base}/v1/orgs/${org}/shape`,
    params: { table: "tasks" },
    headers,
    fetchClient,
    onError: (e) => {
      console.error("ShapeStream error:", e);
    },
    ...extra,
  });
}

const seen = {};
try {
  await Promise.race([
    (async () => {
      const me = await api("GET", "/v1/me");
      const org = me.org.id;
      for (const title of ["alpha", "beta", "gamma"]) await api("POST", "/v1/tasks", { title, labels: ["sync"] });

      // 1. Initial sync.
      const requests = [];
      const controller = new AbortController();
      const s1 = stream(org, requests, { signal: controller.signal });
      const ops = [];
      s1.subscribe((messages) => {
        for (const m of messages) if (m.headers?.operation) ops.push(m.headers.operation);
      });
      const shape = new Shape(s1);
      const initial = await shape.rows;
      assert.deepEqual(shapeTasks(initial), await restTasks(), "the initial sync equals the REST list");
      const first = initial.find((r) => r.title === "alpha");
      assert.equal(typeof first.number, "number", "int4 parsed to a number");
      assert.deepEqual(first.labels, ["sync"], "jsonb parsed");
      seen.initial_rows = initial.length;

      // 2. Live insert, update and delete through the REST API.
      await until("the stream going live", () => requests.some((r) => r.live));
      const created = await api("POST", "/v1/tasks", { title: "live insert" });
      await until("the live insert", () => shape.currentRows.some((r) => r.id === created.id));
      await api("PATCH", `/v1/tasks/${created.id}`, { title: "live update", priority: "high" });
      await until("the live update", () =>
        shape.currentRows.some((r) => r.id === created.id && r.title === "live update" && r.priority === "high"),
      );
      await api("DELETE", `/v1/tasks/${first.id}`);
      await until("the live delete", () => !shape.currentRows.some((r) => r.id === first.id));
      assert.deepEqual(shapeTasks(shape.currentRows), await restTasks(), "live changes keep the shape equal to REST");
      seen.live_ops = ops.slice(initial.length);
      assert.deepEqual(seen.live_ops, ["insert", "update", "delete"]);

      // 3. A filtered shape with a param.
      const filtered = new Shape(
        new ShapeStream({
          url: `${base}/v1/orgs/${org}/shape`,
          params: { table: "tasks", where: "id = $1", params: [created.id] },
          headers,
          subscribe: false,
        }),
      );
      const only = await filtered.rows;
      assert.deepEqual(only.map((r) => r.title), ["live update"], "the filtered shape holds its row");
      filtered.stream.unsubscribeAll();

      // 4. Stop, write, compact everything, resume from the saved offset and handle.
      const saved = { offset: s1.lastOffset, handle: s1.shapeHandle };
      controller.abort();
      s1.unsubscribeAll();
      seen.saved = saved;
      const later = await api("POST", "/v1/tasks", { title: "while away" });
      await api("PATCH", `/v1/tasks/${created.id}`, { title: "renamed while away" });
      await api("DELETE", `/v1/tasks/${initial.find((r) => r.title === "beta").id}`);
      seen.compacted = await api("POST", `/v1/orgs/${org}/sync/compact`, { keep: 0 });
      assert.equal(seen.compacted.min_lsn, seen.compacted.tail_lsn + 1, "nothing left in the log");

      const resumed = [];
      const s2 = stream(org, resumed, { offset: saved.offset, handle: saved.handle });
      const controls = [];
      s2.subscribe((messages) => {
        for (const m of messages) if (m.headers?.control) controls.push(m.headers.control);
      });
      const shape2 = new Shape(s2);
      await until("the resumed shape up to date after its refetch", () => controls.includes("up-to-date") && shape2.isUpToDate, 20_000);
      const rows = await shape2.rows;
      seen.resumed_requests = resumed.map((r) => `${r.status} offset=${r.offset}${r.live ? " live" : ""}`);
      assert.equal(resumed[0].status, 409, "the saved offset is compacted away: 409");
      assert.equal(resumed[0].offset, saved.offset);
      assert.equal(resumed[0].handle, saved.handle);
      assert.ok(controls.includes("must-refetch"), "the client published must-refetch");
      assert.equal(resumed[1].offset, "-1", "then a resync from the start");
      assert.notEqual(s2.shapeHandle, saved.handle, "with a new handle");
      assert.deepEqual(shapeTasks(rows), await restTasks(), "the resynced shape equals the REST list");
      assert.ok(rows.some((r) => r.id === later.id));
      seen.final_rows = rows.length;
      s2.unsubscribeAll();
    })(),
    sleep(90_000).then(() => {
      throw new Error("timed out after 90 s: the scenario as a whole");
    }),
  ]);
} catch (err) {
  console.log(`ELECTRIC_CLIENT ${JSON.stringify(seen)}`);
  console.error(`ELECTRIC_CLIENT failed against ${base}:`, err);
  process.exit(1);
}
console.log(`ELECTRIC_CLIENT ${JSON.stringify(seen)}`);
console.log("ELECTRIC_CLIENT ok");
process.exit(0);
