// Reads a chat session's JSON stream with the official client (@durable-streams/client) in
// JSON mode, live (long-poll), from the start until the stream is closed:
//
//   node tests/conformance/chat-reader.mjs --target URL --key KEY --path hosts/.../chat
//
// Prints `CHAT_ITEMS <JSON array of every event>` and exits 0 once the stream is closed, or
// says what went wrong and exits 1 (after 90 s without a close).
import { parseArgs } from "node:util";
import { stream } from "@durable-streams/client";

const { values: args } = parseArgs({
  options: { target: { type: "string" }, key: { type: "string" }, path: { type: "string" } },
});
if (!args.target || !args.key || !args.path) {
  console.error("usage: node tests/conformance/chat-reader.mjs --target URL --key KEY --path PATH");
  process.exit(2);
}
const url = `${args.target.replace(/\/$/, "")}/v1/stream/${args.path}`;
const timer = setTimeout(() => {
  console.error("timed out: the stream was not closed within 90 s");
  process.exit(1);
}, 90_000);

try {
  const res = await stream({
    url,
    headers: { authorization: `Bearer ${args.key}` },
    offset: "-1",
    live: "long-poll",
    json: true,
  });
  const items = [];
  await new Promise((resolve, reject) => {
    res.subscribeJson((batch) => {
      items.push(...batch.items);
      if (batch.streamClosed) resolve();
    });
    res.closed.then(resolve, reject);
  });
  clearTimeout(timer);
  console.log(`CHAT_ITEMS ${JSON.stringify(items)}`);
  process.exit(0);
} catch (err) {
  console.error(err);
  process.exit(1);
}
