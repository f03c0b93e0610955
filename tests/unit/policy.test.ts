// network.policy evaluation: one event in, one decision out. Covers default
// deny, accept/acceptHttp, the match helpers, and grant-at-most-once.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { network, type NetworkConnectionRequest, type NetworkConnectionRequestHandler } from "../../src/index.js";
import { PolicyEvaluator, type PolicyDecision, type PolicyEvent } from "../../src/policy-evaluation.js";

const GUEST = { ip: "10.0.2.2", port: 40000 };
const tcp = (ip: string, port: number, extra: Partial<PolicyEvent> = {}): PolicyEvent =>
  ({ transport: "tcp", src: GUEST, dst: { ip, port }, ...extra });
const udp = (ip: string, port: number): PolicyEvent => ({ transport: "udp", src: GUEST, dst: { ip, port } });
const dnsQuery = (transport: "tcp" | "udp" = "udp"): PolicyEvent =>
  ({ transport, src: GUEST, dst: { ip: "10.0.2.1", port: 53 }, dnsQuery: true });
const pinned = (hostname: string, port = 443) => tcp("203.0.113.10", port, { pinnedHostname: hostname });

function decide(handler: NetworkConnectionRequestHandler, event: PolicyEvent): Promise<PolicyDecision> {
  return new PolicyEvaluator(network.policy(handler)).evaluate(event);
}

/** Runs `use` on the conn and returns what it returned, or rejects with what it threw. */
async function probe<T>(event: PolicyEvent, use: (conn: NetworkConnectionRequest) => T): Promise<T> {
  let outcome: { result: T } | { error: unknown } | undefined;
  await decide((conn) => {
    try {
      outcome = { result: use(conn) };
    } catch (error) {
      outcome = { error };
    }
  }, event);
  if (outcome === undefined) throw new Error("the handler did not run");
  if ("error" in outcome) throw outcome.error;
  return outcome.result;
}

const DENY = { action: "deny" };
const ACCEPT = { action: "accept" };

describe("policy decisions", () => {
  test("default deny: no grant, a throw, or a rejection", async () => {
    assert.deepEqual(await decide(() => undefined, tcp("203.0.113.10", 80)), DENY);
    assert.deepEqual(await decide(() => { throw new Error("no"); }, tcp("203.0.113.10", 80)), DENY);
    assert.deepEqual(await decide(async () => { throw new Error("no"); }, tcp("203.0.113.10", 80)), DENY);
    assert.deepEqual(await decide((conn) => { conn.accept(); throw new Error("changed my mind"); }, tcp("203.0.113.10", 80)), DENY);
  });

  test("accept grants raw relay, sync or after an await", async () => {
    assert.deepEqual(await decide((conn) => { conn.accept(); }, tcp("203.0.113.10", 80)), ACCEPT);
    assert.deepEqual(await decide(async (conn) => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      conn.accept();
    }, udp("203.0.113.10", 8125)), ACCEPT);
  });

  test("a grant is recorded at most once; a second accept throws and so denies", async () => {
    let second: unknown;
    const decision = await decide((conn) => {
      assert.ok(conn.accept(), "grants are truthy");
      try {
        if (conn.transport === "tcp") conn.acceptHttp();
      } catch (error) {
        second = error;
        throw error;
      }
    }, tcp("203.0.113.10", 443));
    assert.deepEqual(decision, DENY);
    assert.match(String(second), /already granted; accept at most once/);
  });

  test("accepting after the handler settled throws and changes nothing", async () => {
    let late: NetworkConnectionRequest | undefined;
    assert.deepEqual(await decide((conn) => { late = conn; }, tcp("203.0.113.10", 80)), DENY);
    assert.throws(() => late?.accept(), /decision for this flow is already made/);
  });

  test("the conn object exposes transport and canonical, classified endpoints", async () => {
    const conn = await probe(tcp("2001:DB8:0::1", 443), (c) => c);
    assert.equal(conn.transport, "tcp");
    assert.equal(conn.dst.ip, "2001:db8::1");
    assert.equal(conn.dst.port, 443);
    assert.equal(conn.dst.isDocumentation(), true);
    assert.equal(conn.src.isPrivate(), true);
    assert.ok(Object.isFrozen(conn));
  });

  test("malformed events reject (a native bug), they are not silently denied", async () => {
    const evaluator = new PolicyEvaluator(network.policy((conn) => { conn.accept(); }));
    await assert.rejects(evaluator.evaluate({ ...tcp("203.0.113.10", 80), transport: "icmp" as never }), TypeError);
    await assert.rejects(evaluator.evaluate(tcp("not-an-ip", 80)), /invalid dst/);
    await assert.rejects(evaluator.evaluate(tcp("203.0.113.10", 70000)), /invalid dst/);
  });
});

describe("matchTcp / matchUdp", () => {
  test("string, bracketed IPv6, object and predicate specs match dst", async () => {
    assert.ok(await probe(tcp("203.0.113.10", 5432), (c) => c.transport === "tcp" && c.matchTcp("203.0.113.10:5432")));
    assert.equal(await probe(tcp("203.0.113.10", 5433), (c) => c.transport === "tcp" && c.matchTcp("203.0.113.10:5432")), undefined);
    assert.equal(await probe(tcp("203.0.113.11", 5432), (c) => c.transport === "tcp" && c.matchTcp("203.0.113.10:5432")), undefined);
    assert.ok(await probe(tcp("2001:db8:0:0::1", 443), (c) => c.transport === "tcp" && c.matchTcp("[2001:DB8::1]:443")));
    assert.ok(await probe(tcp("::ffff:203.0.113.10", 443), (c) => c.transport === "tcp" && c.matchTcp("203.0.113.10:443")));
    assert.ok(await probe(tcp("203.0.113.10", 22), (c) => c.transport === "tcp" && c.matchTcp({ ip: "203.0.113.10", port: 22 })));
    assert.ok(await probe(tcp("203.0.113.10", 22), (c) => c.transport === "tcp" && c.matchTcp((m) => m.dst.port === 22)));
    assert.equal(await probe(tcp("203.0.113.10", 22), (c) => c.transport === "tcp" && c.matchTcp(() => false)), undefined);
    assert.ok(await probe(udp("203.0.113.10", 8125), (c) => c.transport === "udp" && c.matchUdp("203.0.113.10:8125")));
  });

  test("they match only their transport, and never DNS queries", async () => {
    const anyConn = (c: NetworkConnectionRequest) => c as unknown as {
      matchTcp(spec: string): unknown;
      matchUdp(spec: string): unknown;
    };
    assert.equal(await probe(udp("203.0.113.10", 53), (c) => anyConn(c).matchTcp("203.0.113.10:53")), undefined);
    assert.equal(await probe(tcp("203.0.113.10", 53), (c) => anyConn(c).matchUdp("203.0.113.10:53")), undefined);
    assert.equal(await probe(dnsQuery("udp"), (c) => anyConn(c).matchUdp("10.0.2.1:53")), undefined);
    assert.equal(await probe(dnsQuery("tcp"), (c) => anyConn(c).matchTcp("10.0.2.1:53")), undefined);
  });

  test("a match's accept is a raw accept", async () => {
    assert.deepEqual(await decide((c) => {
      if (c.transport === "tcp") c.matchTcp("203.0.113.10:5432")?.accept();
    }, tcp("203.0.113.10", 5432)), ACCEPT);
  });

  test("a bad spec or an async predicate throws (so the flow is denied)", async () => {
    await assert.rejects(probe(udp("203.0.113.10", 1), (c) => (c as unknown as { matchTcp(s: string): unknown }).matchTcp("nonsense")), /invalid endpoint spec "nonsense"/);
    assert.deepEqual(await decide((c) => {
      if (c.transport === "tcp") c.matchTcp((() => Promise.resolve(true)) as never)?.accept();
    }, tcp("203.0.113.10", 5432)), DENY);
    await assert.rejects(
      probe(tcp("203.0.113.10", 5432), (c) => c.transport === "tcp" && c.matchTcp((() => Promise.resolve(true)) as never)),
      /match predicates must be synchronous/,
    );
  });
});

describe("matchDns", () => {
  test("a resolver spec matches any DNS query and becomes accept()'s upstream", async () => {
    assert.deepEqual(
      await decide((c) => { c.matchDns("1.1.1.1")?.accept(); }, dnsQuery()),
      { action: "dns", resolvers: [{ ip: "1.1.1.1", port: 53 }] },
    );
    assert.deepEqual(
      await decide((c) => { c.matchDns({ ip: "2606:4700:4700::1111", port: 853 })?.accept(); }, dnsQuery("tcp")),
      { action: "dns", resolvers: [{ ip: "2606:4700:4700::1111", port: 853 }] },
    );
  });

  test("accept({ resolvers }) overrides; a predicate leaves the host's resolvers", async () => {
    assert.deepEqual(
      await decide((c) => { c.matchDns("1.1.1.1")?.accept({ resolvers: ["8.8.8.8", "[2001:4860:4860::8888]:53"] }); }, dnsQuery()),
      { action: "dns", resolvers: [{ ip: "8.8.8.8", port: 53 }, { ip: "2001:4860:4860::8888", port: 53 }] },
    );
    let seen: string | undefined;
    assert.deepEqual(
      await decide((c) => {
        c.matchDns((candidate) => {
          seen = candidate.transport;
          return candidate.transport === "udp";
        })?.accept();
      }, dnsQuery()),
      { action: "dns" },
    );
    assert.equal(seen, "udp");
    assert.deepEqual(await decide((c) => { c.matchDns(() => false)?.accept(); }, dnsQuery()), DENY);
    assert.deepEqual(await decide((c) => { c.matchDns("1.1.1.1")?.accept({ resolvers: [] }); }, dnsQuery()), DENY);
  });

  test("conn.accept() on a DNS query forwards it to the host's resolvers", async () => {
    assert.deepEqual(await decide((c) => { c.accept(); }, dnsQuery()), { action: "dns" });
  });

  test("matchDns does not match non-DNS flows, and acceptHttp refuses DNS", async () => {
    assert.equal(await probe(udp("1.1.1.1", 53), (c) => c.matchDns("1.1.1.1")), undefined);
    assert.deepEqual(await decide((c) => { (c as unknown as { acceptHttp(): void }).acceptHttp(); }, dnsQuery("tcp")), DENY);
  });

  test("README pattern: `if (conn.matchDns(...)?.accept()) return;`", async () => {
    const handler: NetworkConnectionRequestHandler = (conn) => {
      if (conn.matchDns("1.1.1.1")?.accept()) return;
      conn.accept();
    };
    assert.deepEqual(await decide(handler, dnsQuery()), { action: "dns", resolvers: [{ ip: "1.1.1.1", port: 53 }] });
    assert.deepEqual(await decide(handler, tcp("203.0.113.10", 22)), ACCEPT);
  });
});

describe("matchHttp and acceptHttp", () => {
  test("matches only a DNS-pinned hostname, case- and trailing-dot-insensitively", async () => {
    assert.equal(await probe(tcp("203.0.113.10", 443), (c) => c.matchHttp("api.github.com")), undefined);
    assert.equal(await probe(pinned("api.github.com"), (c) => c.matchHttp("github.com")), undefined);
    const match = await probe(pinned("API.GitHub.com."), (c) => c.matchHttp("api.github.com"));
    assert.equal(match?.hostname, "api.github.com");
    assert.equal(match?.port, 443);
    assert.equal(match?.dst.ip, "203.0.113.10");
  });

  test("ports in string and object specs; predicates", async () => {
    assert.ok(await probe(pinned("api.example.test"), (c) => c.matchHttp("api.example.test:443")));
    assert.equal(await probe(pinned("api.example.test", 80), (c) => c.matchHttp("api.example.test:443")), undefined);
    assert.ok(await probe(pinned("api.example.test", 8443), (c) => c.matchHttp({ hostname: "api.example.test", port: 8443 })));
    assert.ok(await probe(pinned("a.example.test"), (c) => c.matchHttp((m) => m.hostname.endsWith(".example.test"))));
    await assert.rejects(probe(pinned("a.example.test"), (c) => c.matchHttp("https://a.example.test")), /invalid HTTP authority/);
    await assert.rejects(probe(pinned("a.example.test"), (c) => c.matchHttp("a.example.test:http")), /invalid HTTP authority/);
  });

  test("never matches UDP flows or DNS queries", async () => {
    assert.equal(await probe({ ...udp("203.0.113.10", 443), pinnedHostname: "api.example.test" }, (c) => c.matchHttp("api.example.test")), undefined);
    assert.equal(await probe({ ...dnsQuery("tcp"), pinnedHostname: "api.example.test" }, (c) => c.matchHttp("api.example.test")), undefined);
  });

  test("accept(middleware) records the middleware under an id until released", async () => {
    const evaluator = new PolicyEvaluator(network.policy((conn) => {
      conn.matchHttp("api.github.com")?.accept((request) => {
        request.headers.set("authorization", "Bearer token");
      });
    }));
    const decision = await evaluator.evaluate(pinned("api.github.com"));
    assert.equal(decision.action, "http");
    const id = decision.action === "http" ? decision.middlewareId : undefined;
    assert.equal(typeof id, "number");
    const middleware = evaluator.middleware(id as number);
    assert.equal(typeof middleware, "function");
    evaluator.releaseMiddleware(id as number);
    assert.equal(evaluator.middleware(id as number), undefined);
    assert.deepEqual(await evaluator.evaluate(pinned("other.test")), DENY);
  });

  test("acceptHttp without middleware, and its refusals", async () => {
    assert.deepEqual(await decide((c) => { if (c.transport === "tcp") c.acceptHttp(); }, tcp("203.0.113.10", 80)), { action: "http" });
    assert.deepEqual(await decide((c) => { (c as unknown as { acceptHttp(): void }).acceptHttp(); }, udp("203.0.113.10", 443)), DENY);
    assert.deepEqual(await decide((c) => { if (c.transport === "tcp") c.acceptHttp("mw" as never); }, tcp("203.0.113.10", 80)), DENY);
  });

  test("a middleware-less HTTP grant registers nothing; denied flows register nothing", async () => {
    const evaluator = new PolicyEvaluator(network.policy((conn) => {
      conn.matchHttp("api.example.test")?.accept(() => undefined);
      throw new Error("deny after all");
    }));
    assert.deepEqual(await evaluator.evaluate(pinned("api.example.test")), DENY);
    assert.equal(evaluator.middleware(1), undefined);
  });
});
