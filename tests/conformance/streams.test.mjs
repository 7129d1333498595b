// The Durable Streams server conformance suite (@durable-streams/server-conformance-tests) as a
// vitest file: its own CLI is broken when installed from npm. The server's base URL comes from
// CONFORMANCE_TEST_URL; run it through `node tests/conformance/run-streams.mjs`.
import { runConformanceTests } from "@durable-streams/server-conformance-tests";

const baseUrl = process.env.CONFORMANCE_TEST_URL;
if (!baseUrl) throw new Error("CONFORMANCE_TEST_URL is required (see tests/conformance/run-streams.mjs)");

runConformanceTests({ baseUrl });
