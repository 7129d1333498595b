// Starts the built Worker (edge/build) in workerd through Miniflare, configured from
// wrangler.toml, on 127.0.0.1. Used by the Rust end-to-end tests and the benchmarks.
//
//   PORT=0 PERSIST_DIR=/tmp/x JWT_SECRET=... BOOTSTRAP_TOKEN=... node tests/harness/workerd.mjs
//
// Prints `TETHER_READY {"url": "..."}` when ready. Stops when stdin closes (so it never outlives
// the test that started it) or on SIGTERM/SIGINT.
import { Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const persist = process.env.PERSIST_DIR || false;

const { workerOptions } = unstable_getMiniflareWorkerOptions(join(root, "wrangler.toml"));
// Secrets come from this process's environment only, never from a developer's .dev.vars.
const { JWT_SECRET: _jwt, BOOTSTRAP_TOKEN: _boot, ...vars } = workerOptions.bindings ?? {};
const mf = new Miniflare({
  ...workerOptions,
  host: "127.0.0.1",
  port: Number(process.env.PORT || 0),
  modules: true,
  scriptPath: join(root, "edge/build/index.js"),
  modulesRoot: join(root, "edge/build"),
  modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
  bindings: {
    ...vars,
    JWT_SECRET: process.env.JWT_SECRET,
    ...(process.env.BOOTSTRAP_TOKEN ? { BOOTSTRAP_TOKEN: process.env.BOOTSTRAP_TOKEN } : {}),
    ...(process.env.TOKEN_TTL_SECS ? { TOKEN_TTL_SECS: process.env.TOKEN_TTL_SECS } : {}),
  },
  d1Persist: persist && join(persist, "d1"),
  durableObjectsPersist: persist && join(persist, "do"),
  cachePersist: false,
  // Tests fire the cron with `GET /cdn-cgi/handler/scheduled?cron=...&time=<ms>` (a tick at a
  // chosen time); this harness only ever listens on 127.0.0.1.
  unsafeTriggerHandlers: true,
  verbose: !!process.env.VERBOSE,
});

const url = await mf.ready;

// Apply the D1 migrations the way `wrangler d1 migrations apply` does, recording each in
// d1_migrations so a persisted directory can be reopened by either tool.
const db = await mf.getD1Database("DB");
await db.exec(
  "CREATE TABLE IF NOT EXISTS d1_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)",
);
const applied = new Set((await db.prepare("SELECT name FROM d1_migrations").all()).results.map((r) => r.name));
const dir = join(root, "functions/migrations");
for (const name of readdirSync(dir).filter((f) => f.endsWith(".sql")).sort()) {
  if (applied.has(name)) continue;
  const sql = readFileSync(join(dir, name), "utf8")
    .split("\n")
    .filter((l) => !l.trim().startsWith("--"))
    .join("\n");
  const statements = sql.split(";").map((s) => s.trim()).filter(Boolean);
  await db.batch([
    ...statements.map((s) => db.prepare(s)),
    db.prepare("INSERT INTO d1_migrations (name) VALUES (?)").bind(name),
  ]);
}

console.log("TETHER_READY " + JSON.stringify({ url: url.toString().replace(/\/$/, "") }));

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await mf.dispose().catch(() => {});
  process.exit(0);
}
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
