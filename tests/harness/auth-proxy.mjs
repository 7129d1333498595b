// A header-injecting HTTP proxy for running third-party suites (which send no auth) against the
// Worker without weakening its auth: every request is forwarded unchanged to `target`, plus the
// given headers. Bodies stream both ways unbuffered, so SSE and long-poll stay live. `target` is
// a plain-http URL (a local server); its path, if any, prefixes every request path.
//
//   const proxy = await startAuthProxy({ target: "http://127.0.0.1:8787", headers: { authorization: "Bearer tk_..." } });
//   ... use proxy.url ...
//   await proxy.close();
import http from "node:http";

// Per-connection headers (RFC 9110 7.6.1) are never forwarded; `host` is set for the target.
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
]);

// Copies a raw header list ([name, value, name, value, ...]) minus hop-by-hop ones, keeping
// repeated headers (e.g. several Set-Cookie) as separate values.
function forwardable(rawHeaders) {
  // Headers named in `Connection` are hop-by-hop for this message too.
  const dropped = new Set(HOP_BY_HOP);
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === "connection") {
      for (const name of rawHeaders[i + 1].split(",")) dropped.add(name.trim().toLowerCase());
    }
  }
  const out = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (!dropped.has(rawHeaders[i].toLowerCase())) out.push([rawHeaders[i], rawHeaders[i + 1]]);
  }
  return out;
}

export async function startAuthProxy({ target, headers = {} }) {
  const base = new URL(target);
  const agent = new http.Agent({ keepAlive: true });
  const added = Object.entries(headers).map(([k, v]) => [k.toLowerCase(), String(v)]);

  const server = http.createServer((req, res) => {
    // An added header replaces one of the same name from the client.
    const out = forwardable(req.rawHeaders).filter(([k]) => !added.some(([a]) => a === k.toLowerCase()));
    // With headers given as a raw list, node adds no Host of its own.
    out.push(["host", base.host], ...added);
    const upstream = http.request(
      {
        protocol: base.protocol,
        hostname: base.hostname,
        port: base.port,
        method: req.method,
        // The request target (path + query) is kept byte for byte, appended to target's path.
        path: base.pathname.replace(/\/$/, "") + req.url,
        headers: out.flat(),
        agent,
      },
      (up) => {
        const headersOut = forwardable(up.rawHeaders).flat();
        res.writeHead(up.statusCode, up.statusMessage, headersOut);
        // Send the head now: an SSE or long-poll response may not have a body byte for a while.
        res.flushHeaders();
        up.pipe(res);
        up.on("error", () => res.destroy());
      },
    );
    upstream.on("error", (err) => {
      if (res.headersSent) return res.destroy();
      res.writeHead(502, { "content-type": "text/plain" });
      res.end(`auth proxy: ${err.message}\n`);
    });
    // A client that goes away (e.g. an aborted long-poll) aborts the upstream request too.
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });

  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    close() {
      agent.destroy();
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
