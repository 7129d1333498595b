// Runs the Durable Streams conformance suite (streams.test.mjs) against a server:
//
//   node tests/conformance/run-streams.mjs --target URL [--key KEY]
//
// The suite sends no auth, so it talks to an in-process auth proxy that adds
// `authorization: Bearer KEY` (when given) and forwards everything else unchanged. vitest runs as a
// child process with inherited stdio; the last line is machine-readable:
//
//   STREAMS_CONFORMANCE {"passed":N,"failed":M,"skipped":K,"total":T}
//
// Exits non-zero if any test failed or vitest itself failed.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startAuthProxy } from "../harness/auth-proxy.mjs";

const { values: args } = parseArgs({ options: { target: { type: "string" }, key: { type: "string" } } });
if (!args.target) {
  console.error("usage: node tests/conformance/run-streams.mjs --target URL [--key KEY]");
  process.exit(2);
}

const root = fileURLToPath(new URL("../..", import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), "streams-conformance-"));
const reportPath = join(scratch, "report.json");

const proxy = await startAuthProxy({
  target: args.target,
  headers: args.key ? { authorization: `Bearer ${args.key}` } : {},
});

// vitest's own entry point, run by this same node binary.
const vitest = spawn(
  process.execPath,
  [
    join(root, "node_modules/vitest/vitest.mjs"),
    "run",
    "--config",
    "tests/conformance/vitest.config.mjs",
    "--reporter=default",
    "--reporter=json",
    `--outputFile.json=${reportPath}`,
  ],
  { cwd: root, stdio: "inherit", env: { ...process.env, CONFORMANCE_TEST_URL: proxy.url } },
);
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => vitest.kill(signal));
// A signal-killed vitest has no exit code: count that as a failure.
const code = await new Promise((resolve) => vitest.on("exit", (c) => resolve(c ?? 1)));
await proxy.close();

let report = null;
try {
  report = JSON.parse(readFileSync(reportPath, "utf8"));
} catch (err) {
  console.error(`no vitest report (${err.message}); vitest exited with ${code}`);
}
rmSync(scratch, { recursive: true, force: true });
if (!report) process.exit(code || 1);
const counts = {
  passed: report.numPassedTests,
  failed: report.numFailedTests,
  skipped: report.numPendingTests + report.numTodoTests,
  total: report.numTotalTests,
};
console.log(`STREAMS_CONFORMANCE ${JSON.stringify(counts)}`);
process.exit(counts.failed > 0 || code !== 0 ? 1 : 0);
