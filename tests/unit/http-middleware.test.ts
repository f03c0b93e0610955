// The "http" event path: an acceptHttp middleware sees the request as
// SandboxHttpRequest and its header changes are what the native side sends
// upstream; a throw refuses the request.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { network, type SandboxHttpRequest } from "../../src/index.js";
import type { HttpEvent } from "../../src/http-middleware.js";
import { PolicyEvaluator, type PolicyEvent } from "../../src/policy-evaluation.js";

const pinned: PolicyEvent = {
  transport: "tcp",
  src: { ip: "10.0.2.2", port: 40000 },
  dst: { ip: "93.184.216.34", port: 443 },
  pinnedHostname: "api.github.com",
};

function httpEvent(middlewareId: number, extra: Partial<HttpEvent> = {}): HttpEvent {
  return {
    middlewareId,
    protocol: "h2",
    url: "https://api.github.com/repos?page=2",
    method: "GET",
    headers: [["Accept", "*/*"], ["X-Multi", "a"], ["X-Multi", "b"], ["User-Agent", "curl/8"]],
    destination: { sourceIp: "10.0.2.2", sourcePort: 40000, originalIp: "93.184.216.34", originalPort: 443, hostname: "api.github.com" },
    tls: { sni: "api.github.com", alpn: "h2" },
    ...extra,
  };
}

async function grant(middleware: (request: SandboxHttpRequest) => void | Promise<void>): Promise<{ evaluator: PolicyEvaluator; id: number }> {
  const evaluator = new PolicyEvaluator(network.policy((conn) => {
    conn.matchHttp("api.github.com")?.accept(middleware);
  }));
  const decision = await evaluator.evaluate(pinned);
  assert.equal(decision.action, "http");
  const id = decision.action === "http" ? decision.middlewareId : undefined;
  assert.equal(typeof id, "number");
  return { evaluator, id: id as number };
}

describe("HTTP middleware", () => {
  test("sees the request and edits the headers that go upstream", async () => {
    let seen: SandboxHttpRequest | undefined;
    const { evaluator, id } = await grant((request) => {
      seen = request;
      request.headers.set("authorization", "Bearer secret");
      request.headers.delete("user-agent");
    });
    const verdict = await evaluator.runMiddleware(httpEvent(id));
    assert.ok(seen);
    assert.equal(seen.protocol, "h2");
    assert.ok(seen.url instanceof URL);
    assert.equal(seen.url.searchParams.get("page"), "2");
    assert.equal(seen.method, "GET");
    assert.equal(seen.destination.hostname, "api.github.com");
    assert.equal(seen.destination.originalPort, 443);
    assert.deepEqual(seen.tls, { sni: "api.github.com", alpn: "h2" });
    assert.deepEqual(Object.fromEntries(verdict.headers), {
      accept: "*/*",
      authorization: "Bearer secret",
      "x-multi": "a, b",
    });
  });

  test("an unpinned cleartext request has no hostname and no tls", async () => {
    let seen: SandboxHttpRequest | undefined;
    const { evaluator, id } = await grant((request) => { seen = request; });
    const { hostname: _, ...unpinned } = httpEvent(id).destination;
    await evaluator.runMiddleware(httpEvent(id, { protocol: "http/1.1", url: "http://spoofed.example/", destination: unpinned, tls: undefined }));
    assert.ok(seen);
    assert.equal("hostname" in seen.destination, false);
    assert.equal(seen.tls, undefined);
    assert.equal(seen.protocol, "http/1.1");
  });

  test("a throw or rejection refuses the request", async () => {
    const thrower = await grant(() => { throw new Error("no"); });
    await assert.rejects(thrower.evaluator.runMiddleware(httpEvent(thrower.id)), /no/);
    const rejecter = await grant(async () => { await Promise.resolve(); throw new Error("later no"); });
    await assert.rejects(rejecter.evaluator.runMiddleware(httpEvent(rejecter.id)), /later no/);
  });

  test("a released middleware refuses; a slow one does not hold up another request", async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    let calls = 0;
    const { evaluator, id } = await grant(async (request) => {
      calls += 1;
      if (request.method === "POST") await gate;
    });
    const slow = evaluator.runMiddleware(httpEvent(id, { method: "POST" }));
    await evaluator.runMiddleware(httpEvent(id));
    assert.equal(calls, 2);
    release();
    await slow;
    evaluator.releaseMiddleware(id);
    await assert.rejects(evaluator.runMiddleware(httpEvent(id)), /released/);
  });
});
