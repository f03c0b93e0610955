// npm run bench, HTTP part: small GETs from the guest through interception
// (acceptHttp with a header-setting middleware) against the same requests
// relayed raw (accept()), to the same origin in the same run. Run by
// scripts/bench.sh inside the namespaces of tests/e2e-net/in-netns.sh
// (SANDBOX_NETNS_INSIDE).
//
// The client is the guest's curl fetching one URL many times on one
// keep-alive connection; it reports each request's time, so the figures are
// per request, not per curl process. The origin's sockets live in the
// origins' namespace of tests/e2e-net/in-netns.sh (origins.mjs).
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineSandbox, network, rootfs } from "@torkbot/sandbox";
import { listenInOrigins } from "../tests/e2e-net/origins.mjs";
import { pki } from "../tests/e2e-net/pki.mjs";
import { record } from "./promises.mjs";

if (process.env.SANDBOX_NETNS_INSIDE !== "1") throw new Error("bench/http.mjs runs inside the namespace scripts/bench.sh makes");

const ORIGIN = "198.51.100.10";
const NAME = "bench.origin.test";
const requests = Number(process.env.BENCH_HTTP_REQUESTS ?? 300);
const rounds = Number(process.env.BENCH_HTTP_ROUNDS ?? 3);

const dir = mkdtempSync(join(tmpdir(), "sandbox-bench-http-"));
const servers = [];
let lane;
try {
  const { ca, key, cert } = pki(dir, "bench", NAME);
  const reply = (req, res) => {
    req.resume();
    res.end("ok\n");
  };
  // Intercepted and raw ports of one origin: the same server code, so the
  // difference is the path through the host.
  for (const [port, tls] of [[8080, false], [8081, false], [8082, false], [8443, true], [8444, true], [8445, true]]) {
    const server = tls ? createHttpsServer({ key, cert }, reply) : createHttpServer(reply);
    server.keepAliveTimeout = 60_000;
    await listenInOrigins(server, port, ORIGIN);
    servers.push(server);
  }
  process.env.NODE_EXTRA_CA_CERTS = ca;
  lane = await defineSandbox({
    rootfs: rootfs.builtIn("debian:13-slim"),
    network: network.policy((conn) => {
      if (conn.transport !== "tcp") return;
      if (conn.dst.port === 8080 || conn.dst.port === 8443) {
        conn.acceptHttp((request) => {
          request.headers.set("authorization", "Bearer bench-token");
        });
      } else if (conn.dst.port === 8082 || conn.dst.port === 8445) {
        conn.acceptHttp(); // interception without a middleware: no JavaScript per request
      } else {
        conn.accept();
      }
    }),
  }).boot();

  /**
   * Per-request seconds of `requests` GETs of url on one connection, and
   * their sum (curl's own start-up, the same for both, is left out).
   */
  async function run(url, extra) {
    const script = `curl -sS --http1.1 ${extra} -w '%{time_total}\\n' ${`-o /dev/null "${url}" `.repeat(requests)}`;
    const r = await lane.exec("sh", ["-c", script]);
    if (r.exitCode !== 0) throw new Error(`curl ${url}: ${r.stderr}`);
    const times = r.stdout.trim().split("\n").map(Number);
    if (times.length !== requests || times.some(Number.isNaN)) throw new Error(`curl ${url} printed ${JSON.stringify(r.stdout.slice(0, 200))}`);
    return { times, busy: times.reduce((a, b) => a + b, 0) };
  }
  const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
  // [name, curl arguments of: intercepted with middleware, intercepted without, raw]
  const cases = [
    ["HTTP/1.1 GET", [`http://${ORIGIN}:8080/`, ""], [`http://${ORIGIN}:8082/`, ""], [`http://${ORIGIN}:8081/`, ""]],
    // --resolve: no DNS flow is timed. Raw HTTPS skips verification (-k):
    // the guest has no copy of the origin's CA.
    ["HTTPS GET",
      [`https://${NAME}:8443/`, `--resolve ${NAME}:8443:${ORIGIN}`],
      [`https://${NAME}:8445/`, `--resolve ${NAME}:8445:${ORIGIN}`],
      [`https://${NAME}:8444/`, `-k --resolve ${NAME}:8444:${ORIGIN}`]],
  ];
  console.log(`\nHTTP interception: ${requests} small GETs on one keep-alive connection, best of ${rounds} rounds; baseline = raw accept() of the same flow`);
  const fmt = (x) => x.toFixed(2).padStart(8);
  for (const [name, ...variants] of cases) {
    const best = (results) => results.reduce((a, b) => (a.busy < b.busy ? a : b));
    const results = variants.map(() => []);
    for (let i = 0; i < rounds; i++) {
      for (const [j, [url, args]] of variants.entries()) results[j].push(await run(url, args));
    }
    const [mw, bare, raw] = results.map(best);
    console.log(`${name.padEnd(14)} ${"middleware".padStart(10)} ${"no mw".padStart(8)} ${"raw".padStart(8)}   ratios to raw`);
    const row = (label, f, unit) => {
      const [a, b, c] = [f(mw), f(bare), f(raw)];
      console.log(`  ${label.padEnd(12)} ${fmt(a)} ${fmt(b)} ${fmt(c)} ${unit.padEnd(3)} ${(a / c).toFixed(2)} / ${(b / c).toFixed(2)}`);
      return [a / c, b / c];
    };
    const [withMiddleware, without] = row("requests/s", (r) => requests / r.busy, "/s");
    record(12, `${name} requests/s with a middleware`, withMiddleware);
    record(12, `${name} requests/s without`, without);
    row("p50", (r) => pct(r.times, 0.5) * 1e3, "ms");
    row("p99", (r) => pct(r.times, 0.99) * 1e3, "ms");
  }
} finally {
  await lane?.close();
  for (const s of servers) s.close();
  rmSync(dir, { recursive: true, force: true });
}
