// The Worker's MCP server driven by the official TypeScript SDK (@modelcontextprotocol/sdk):
// its Client over StreamableHTTPClientTransport, with the org's API key in a header.
//
//   node tests/conformance/mcp-client.mjs --target URL --key KEY
//
// Connects (initialize, the initialized notification, the SDK's optional GET stream refused
// with 405), lists the tools, creates a task with tasks_create, finds it with tasks_list and
// gets a validation failure back as a tool error. Prints one `MCP_CLIENT {json}` line with
// what it saw and exits 0, or prints the error and exits 1.
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const { values: args } = parseArgs({ options: { target: { type: "string" }, key: { type: "string" } } });
if (!args.target || !args.key) {
  console.error("usage: node tests/conformance/mcp-client.mjs --target URL --key KEY");
  process.exit(2);
}

const text = (result) => JSON.parse(result.content.find((c) => c.type === "text").text);

try {
  const url = new URL(`${args.target.replace(/\/$/, "")}/mcp`);
  const transport = new StreamableHTTPClientTransport(url, {
    requestInit: { headers: { "X-API-Key": args.key } },
  });
  const client = new Client({ name: "tether-e2e", version: "0.0.0" });
  await client.connect(transport);
  const server = client.getServerVersion();
  const { tools } = await client.listTools();
  const title = `From the MCP SDK ${Date.now()}`;
  const created = await client.callTool({
    name: "tasks_create",
    arguments: { title, priority: "high", labels: ["mcp"] },
  });
  const listed = await client.callTool({ name: "tasks_list", arguments: { label: "mcp" } });
  const refused = await client.callTool({ name: "tasks_create", arguments: { title: "" } });
  await client.close();
  console.log(
    "MCP_CLIENT " +
      JSON.stringify({
        server,
        protocol_version: transport.protocolVersion,
        tools: tools.map((t) => ({ name: t.name, schema_type: t.inputSchema.type })),
        created: { is_error: created.isError ?? false, task: text(created) },
        listed: { is_error: listed.isError ?? false, page: text(listed) },
        refused: { is_error: refused.isError ?? false, body: text(refused) },
      }),
  );
} catch (e) {
  console.error(`MCP client failed: ${e?.stack ?? e}`);
  process.exit(1);
}
