// Starts the Durable Streams reference server (@durable-streams/server, in memory) on
// 127.0.0.1, for the side-by-side benchmark and for checking test tooling against it.
//
//   PORT=0 node tests/harness/reference-streams.mjs
//
// Prints `TETHER_READY {"url": "..."}` when ready. Stops when stdin closes (so it never outlives
// the process that started it) or on SIGTERM/SIGINT.
import { DurableStreamTestServer } from "@durable-streams/server";

const server = new DurableStreamTestServer({
  host: "127.0.0.1",
  port: Number(process.env.PORT || 0),
  longPollTimeout: Number(process.env.LONG_POLL_TIMEOUT_MS || 30_000),
});
const url = await server.start();
console.log(`TETHER_READY ${JSON.stringify({ url })}`);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await server.stop().catch(() => {});
  process.exit(0);
}
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
