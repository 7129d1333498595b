// vitest settings for the Durable Streams conformance suite (streams.test.mjs); run it through
// `node tests/conformance/run-streams.mjs`, which sets CONFORMANCE_TEST_URL.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    root: fileURLToPath(new URL("../..", import.meta.url)),
    include: ["tests/conformance/*.test.mjs"],
    // A few tests wait out a whole server-side long-poll (30 s in the reference server) under the
    // default per-test timeout, so it must be well above that.
    testTimeout: 90_000,
    hookTimeout: 90_000,
    // The suite is one file; its tests run in order, except the groups it marks concurrent itself.
    // Running everything concurrently (sequence.concurrent) cut ~85 s to ~30 s but made the
    // TTL tests, which leave 0.5 s of slack, flaky on 2 cores.
  },
});
