// Runs the official MCP conformance suite (@modelcontextprotocol/conformance, server mode)
// against the Worker's /mcp:
//
//   node tests/conformance/run-mcp.mjs --target URL --key KEY
//
// The suite sends no credentials, so it talks to an in-process auth proxy that adds
// `x-api-key: KEY` and forwards everything else unchanged. The suite's exit code is ours: it
// fails on any scenario that fails but is not in mcp-expected-failures.yml, and on any listed
// one that passes (a stale entry).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startAuthProxy } from "../harness/auth-proxy.mjs";

const { values: args } = parseArgs({ options: { target: { type: "string" }, key: { type: "string" } } });
if (!args.target || !args.key) {
  console.error("usage: node tests/conformance/run-mcp.mjs --target URL --key KEY");
  process.exit(2);
}

const root = fileURLToPath(new URL("../..", import.meta.url));
// The suite writes its results under the working folder: a scratch one, removed after.
const scratch = mkdtempSync(join(tmpdir(), "mcp-conformance-"));
const proxy = await startAuthProxy({ target: args.target, headers: { "x-api-key": args.key } });
const suite = spawn(
  process.execPath,
  [
    join(root, "node_modules/@modelcontextprotocol/conformance/dist/index.js"),
    "server",
    "--url",
    `${proxy.url}/mcp`,
    "--expected-failures",
    join(root, "tests/conformance/mcp-expected-failures.yml"),
  ],
  { cwd: scratch, stdio: "inherit" },
);
const code = await new Promise((resolve) => suite.on("exit", (c) => resolve(c ?? 1)));
await proxy.close();
rmSync(scratch, { recursive: true, force: true });
console.log(`MCP_CONFORMANCE {"exit":${code}}`);
process.exit(code);
