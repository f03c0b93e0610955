// HTTP(S) interception through the public API, in a real VM: the guest's
// stock curl trusts the per-boot interception CA through the image's own
// trust store (no --cacert), an acceptHttp middleware injects a credential
// the origin sees and the guest never does, every refusal fails closed,
// and a WebSocket upgrade is the middleware's to see and refuse.
// Runs only inside the network namespace tests/e2e-net/run.sh makes.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createSecureServer } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { defineSandbox, fs, network, rootfs } from "@torkbot/sandbox";
import { listenInOrigins } from "./origins.mjs";
import { pki } from "./pki.mjs";

const ORIGIN = "198.51.100.10";
const BARE = "198.51.100.11"; // no DNS answer names it: requests to it have no pinned hostname
const RESOLVER = "192.0.2.53";
const API = "api.origin.test";
const UNTRUSTED = "untrusted.origin.test";
const TOKEN = "s3cret-token-never-in-the-guest";

/** An origin recording each request: path, protocol and Authorization. */
function recorder() {
  const seen = [];
  const handler = (req, res) => {
    seen.push({ path: req.url, version: req.httpVersion, authorization: req.headers.authorization });
    req.resume();
    res.end(`hello over HTTP/${req.httpVersion}\n`);
  };
  return { seen, handler, last: (path) => seen.findLast((r) => r.path === path) };
}

/**
 * A WebSocket endpoint on an HTTP server: each upgrade is recorded, answered
 * 101 with a valid Sec-WebSocket-Accept, then one text frame and a close.
 */
function websocket(server) {
  const upgrades = [];
  server.on("upgrade", (req, socket) => {
    upgrades.push({ path: req.url, authorization: req.headers.authorization });
    const accept = createHash("sha1").update(`${req.headers["sec-websocket-key"]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    const text = Buffer.from("hello over websocket");
    socket.end(Buffer.concat([Buffer.from([0x81, text.length]), text, Buffer.from([0x88, 0x00])]));
  });
  return upgrades;
}

describe("HTTP interception in a VM", () => {
  const requests = [];
  const origin = recorder();
  const servers = [];
  const upgradesSeen = [];
  let upgrades;
  let untrustedHits = 0;
  let plainConnections = 0;
  let dir;
  let dnsmasq;
  let lane;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "sandbox-http-"));
    const trusted = pki(dir, "trusted", API);
    const untrusted = pki(dir, "untrusted", UNTRUSTED);

    const plain = createHttpServer(origin.handler);
    plain.on("connection", () => plainConnections++);
    upgrades = websocket(plain);
    const secure = createSecureServer({ key: trusted.key, cert: trusted.cert, allowHTTP1: true }, origin.handler);
    const bad = createSecureServer({ key: untrusted.key, cert: untrusted.cert, allowHTTP1: true }, (req, res) => {
      untrustedHits++;
      res.end("must not be reached\n");
    });
    const bare = createHttpServer(origin.handler);
    // Raw TLS under accept(): the guest must see the origin's own certificate.
    const raw = createSecureServer({ key: trusted.key, cert: trusted.cert, allowHTTP1: true }, origin.handler);
    await listenInOrigins(plain, 8080, ORIGIN);
    await listenInOrigins(secure, 8443, ORIGIN);
    await listenInOrigins(bad, 9443, ORIGIN);
    await listenInOrigins(bare, 8080, BARE);
    await listenInOrigins(raw, 10443, ORIGIN);
    servers.push(plain, secure, bad, bare, raw);
    dnsmasq = spawn("dnsmasq", [
      "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", `--listen-address=${RESOLVER}`,
      "--port=53", `--address=/${API}/${ORIGIN}`, `--address=/${UNTRUSTED}/${ORIGIN}`, "--log-facility=-",
    ], { stdio: "ignore" });

    // The upstream side trusts the origin's CA the way Node code would.
    process.env.NODE_EXTRA_CA_CERTS = trusted.ca;
    const inject = (request) => {
      requests.push({
        protocol: request.protocol,
        path: request.url.pathname,
        host: request.url.host,
        urlHostname: request.url.hostname,
        hostname: request.destination.hostname,
        sni: request.tls?.sni,
        alpn: request.tls?.alpn,
      });
      if (request.url.pathname.startsWith("/deny")) throw new Error("not this one");
      const upgrade = request.headers.get("upgrade");
      if (upgrade !== null) {
        upgradesSeen.push({ path: request.url.pathname, upgrade, connection: request.headers.get("connection") });
        if (request.url.pathname === "/ws-refused") throw new Error("no WebSocket here");
      }
      if (request.destination.hostname === API) request.headers.set("authorization", `Bearer ${TOKEN}`);
    };
    lane = await defineSandbox({
      rootfs: rootfs.builtIn("debian:13-slim"),
      network: network.policy((conn) => {
        if (conn.matchDns({ ip: RESOLVER })?.accept()) return;
        if (conn.transport !== "tcp") return;
        if (conn.dst.port === 10443) {
          conn.accept();
          return;
        }
        // The origins are documentation space, not public.
        if (conn.matchHttp(API)?.accept(inject)) return;
        if (conn.matchHttp(UNTRUSTED)?.accept(inject)) return;
        if (conn.dst.ip === BARE) conn.acceptHttp(inject);
      }),
    }).boot();
  });

  after(async () => {
    await lane?.close();
    delete process.env.NODE_EXTRA_CA_CERTS;
    for (const s of servers) s.close();
    dnsmasq?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const curl = (...args) => lane.exec("curl", ["-sS", "-v", "-m", "20", ...args]);

  it("curl trusts the interception CA from the system store; the credential reaches the origin only", async () => {
    const r = await curl("--http1.1", `https://${API}:8443/hello`);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, "hello over HTTP/2.0\n"); // upstream negotiated h2 by itself
    assert.equal(origin.last("/hello")?.authorization, `Bearer ${TOKEN}`);
    assert.ok(!(r.stdout + r.stderr).includes(TOKEN), "the guest sees the credential");
    assert.deepEqual(requests.at(-1), { protocol: "http/1.1", path: "/hello", host: `${API}:8443`, urlHostname: API, hostname: API, sni: API, alpn: "http/1.1" });
  });

  it("reports curl --http2 as h2", async () => {
    const r = await curl("--http2", `https://${API}:8443/h2`);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stderr, /using HTTP\/2/);
    assert.equal(requests.at(-1).protocol, "h2");
    assert.equal(origin.last("/h2")?.authorization, `Bearer ${TOKEN}`);
  });

  it("intercepts cleartext HTTP too", async () => {
    const r = await curl(`http://${API}:8080/plain`);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(origin.last("/plain")?.authorization, `Bearer ${TOKEN}`);
    assert.ok(!(r.stdout + r.stderr).includes(TOKEN));
  });

  it("a spoofed Host to an address without a pin gets no hostname and no credential", async () => {
    const r = await curl("-H", `Host: ${API}`, `http://${BARE}:8080/spoofed`);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(requests.at(-1).hostname, undefined);
    // request.url names the original IP, never the guest's Host header (as 0.6.0).
    assert.equal(requests.at(-1).host, `${BARE}:8080`);
    assert.equal(requests.at(-1).urlHostname, BARE);
    assert.equal(origin.last("/spoofed")?.authorization, undefined);
  });

  it("a WebSocket upgrade reaches the origin as the middleware saw and allowed it", async () => {
    const r = await lane.exec("curl", ["-sS", "-m", "20", `ws://${API}:8080/ws`]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, "hello over websocket");
    assert.deepEqual(upgradesSeen.at(-1), { path: "/ws", upgrade: "websocket", connection: "upgrade" });
    assert.deepEqual(upgrades.at(-1), { path: "/ws", authorization: `Bearer ${TOKEN}` });
  });

  it("a middleware refuses a WebSocket upgrade: 403, and nothing reaches the origin", async () => {
    const before = upgrades.length;
    const r = await lane.exec("curl", ["-sS", "-v", "-m", "20", `ws://${API}:8080/ws-refused`]);
    assert.notEqual(r.exitCode, 0, r.stdout);
    assert.match(r.stderr, /< HTTP\/1\.1 403/);
    assert.deepEqual(upgradesSeen.at(-1), { path: "/ws-refused", upgrade: "websocket", connection: "upgrade" });
    assert.equal(upgrades.length, before);
    assert.equal(origin.last("/ws-refused"), undefined);
  });

  it("a middleware throw answers 403 and sends nothing upstream", async () => {
    const r = await curl(`https://${API}:8443/deny`);
    assert.match(r.stderr, /< HTTP\/2 403/);
    assert.match(r.stdout, /network policy denied/);
    assert.equal(origin.last("/deny"), undefined);
  });

  it("an upstream certificate nobody trusts is a 502, and the origin gets no request", async () => {
    const r = await curl(`https://${UNTRUSTED}:9443/`);
    assert.match(r.stderr, /< HTTP\/2 502/);
    assert.equal(untrustedHits, 0);
  });

  it("closes a connection that does not speak HTTP", async () => {
    const before = plainConnections;
    const r = await lane.exec("bash", ["-c", `exec 3<>/dev/tcp/${API}/8080; printf 'SSH-2.0-guest\\r\\n' >&3; timeout 10 cat <&3; echo "end $?"`]);
    assert.equal(r.stdout, "end 0\n", r.stderr); // EOF at once, no byte of reply
    assert.equal(plainConnections, before);
  });

  it("fails the boot, closed, when the image has no CA bundle to trust the interception CA with", async () => {
    // A mount hides the image's /etc/ssl/certs, as an image without
    // ca-certificates would be.
    const boot = defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim"), network: network.policy(() => {}) })
      .boot({ mounts: { "/etc/ssl/certs": fs.virtual(fs.memory()) } });
    await assert.rejects(boot, (err) => {
      assert.equal(err.code, "ERR_SANDBOX_BOOT");
      assert.match(err.message, /no CA bundle at \/etc\/ssl\/certs\/ca-certificates\.crt/);
      return true;
    });
  });

  it("leaves TLS alone under plain accept()", async () => {
    const r = await lane.exec("bash", ["-c", `openssl s_client -connect ${ORIGIN}:10443 -servername ${API} </dev/null 2>/dev/null | grep -m1 '^issuer'`]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /trusted test CA/);
  });
});
