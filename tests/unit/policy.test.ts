// network.policy evaluation: one event in, one decision out. Covers default
// deny, accept/acceptHttp, the match helpers, and 0.6.0's decision rules
// (the last accept wins, a late accept is ignored, DNS queries match
// matchUdp/matchTcp on the sandbox resolver, specs that name no IP match
// nothing, conn carries only its transport's members).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { network, type HttpMatchOptions, type NetworkConnectionRequest, type NetworkConnectionRequestHandler } from "../../src/index.js";
import { PolicyEvaluator, type PolicyDecision, type PolicyEvent } from "../../src/policy-evaluation.js";

const GUEST = { ip: "10.0.2.2", port: 40000 };
const tcp = (ip: string, port: number, extra: Partial<PolicyEvent> = {}): PolicyEvent =>
  ({ transport: "tcp", src: GUEST, dst: { ip, port }, ...extra });
const udp = (ip: string, port: number): PolicyEvent => ({ transport: "udp", src: GUEST, dst: { ip, port } });
const dnsQuery = (transport: "tcp" | "udp" = "udp"): PolicyEvent =>
  ({ transport, src: GUEST, dst: { ip: "10.0.2.1", port: 53 }, dnsQuery: true });
/** A public address (nothing is sent anywhere in these tests). */
const PUBLIC = "93.184.216.34";
const pinned = (hostname: string, port = 443, ip = PUBLIC) => tcp(ip, port, { pinnedHostname: hostname });

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

  test("several accepts in one handler: the last one wins (0.6.0)", async () => {
    assert.deepEqual(await decide((conn) => {
      assert.ok(conn.accept(), "grants are truthy");
      if (conn.transport === "tcp") conn.acceptHttp();
    }, tcp("203.0.113.10", 443)), { action: "http" });
    assert.deepEqual(await decide((conn) => {
      if (conn.transport === "tcp") conn.acceptHttp();
      conn.accept();
    }, tcp("203.0.113.10", 443)), ACCEPT);
    assert.deepEqual(await decide((conn) => {
      conn.matchDns("192.0.2.53")?.accept();
      conn.matchDns("192.0.2.54")?.accept();
    }, dnsQuery()), { action: "dns", resolvers: [{ ip: "192.0.2.54", port: 53 }] });
  });

  test("accepting after the handler settled is ignored: no throw, no change (0.6.0)", async () => {
    let late: NetworkConnectionRequest | undefined;
    assert.deepEqual(await decide((conn) => { late = conn; }, tcp("203.0.113.10", 80)), DENY);
    assert.doesNotThrow(() => late?.accept());
    assert.doesNotThrow(() => late?.transport === "tcp" && late.acceptHttp());
    let lateMatch: { accept(): unknown } | undefined;
    assert.deepEqual(await decide(async (conn) => {
      lateMatch = conn.transport === "tcp" ? conn.matchTcp("203.0.113.10:80") : undefined;
    }, tcp("203.0.113.10", 80)), DENY);
    assert.doesNotThrow(() => lateMatch?.accept());
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

  test("conn carries only its transport's members, so `in` tells TCP from UDP (0.6.0)", async () => {
    const tcpConn = await probe(tcp("203.0.113.10", 443), (c) => c);
    assert.ok("acceptHttp" in tcpConn && "matchTcp" in tcpConn);
    assert.ok(!("matchUdp" in tcpConn));
    const udpConn = await probe(udp("203.0.113.10", 443), (c) => c);
    assert.ok("matchUdp" in udpConn);
    assert.ok(!("acceptHttp" in udpConn) && !("matchTcp" in udpConn));
    const tcpDns = await probe(dnsQuery("tcp"), (c) => c);
    assert.deepEqual(Object.keys(tcpDns).sort(), ["accept", "acceptHttp", "dst", "matchDns", "matchHttp", "matchTcp", "src", "transport"]);
    const udpDns = await probe(dnsQuery("udp"), (c) => c);
    assert.deepEqual(Object.keys(udpDns).sort(), ["accept", "dst", "matchDns", "matchHttp", "matchUdp", "src", "transport"]);
  });

  test("a policy zoo written the 0.6.0 way", async () => {
    const zoo: NetworkConnectionRequestHandler = async (conn) => {
      conn.matchDns("dns.google")?.accept(); // a hostname resolver: no match
      if ("acceptHttp" in conn) {
        conn.matchTcp("db:5432")?.accept(); // a hostname endpoint: no match
        conn.matchTcp("10.0.2.1:53")?.accept(); // DNS over TCP to the sandbox resolver
        conn.matchTcp((m) => m.dst.port === 443)?.accept();
        if (conn.dst.port === 443) conn.acceptHttp(); // the last accept wins
        return;
      }
      conn.matchUdp("10.0.2.1:53")?.accept();
      conn.matchUdp((m) => m.dst.isPublicInternet())?.accept();
    };
    assert.deepEqual(await decide(zoo, dnsQuery("udp")), { action: "dns" });
    assert.deepEqual(await decide(zoo, dnsQuery("tcp")), { action: "dns" });
    assert.deepEqual(await decide(zoo, tcp("203.0.113.10", 443)), { action: "http" });
    assert.deepEqual(await decide(zoo, tcp("203.0.113.10", 5432)), DENY);
    assert.deepEqual(await decide(zoo, udp("8.8.8.8", 443)), ACCEPT);
    assert.deepEqual(await decide(zoo, udp("198.51.100.1", 443)), DENY);
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

  test("they match DNS queries to the sandbox resolver, whose accept forwards them (0.6.0)", async () => {
    assert.deepEqual(await decide((c) => {
      if (c.transport === "udp") c.matchUdp("10.0.2.1:53")?.accept();
    }, dnsQuery("udp")), { action: "dns" });
    assert.deepEqual(await decide((c) => {
      if (c.transport === "tcp") c.matchTcp({ ip: "10.0.2.1", port: 53 })?.accept();
    }, dnsQuery("tcp")), { action: "dns" });
    assert.deepEqual(await decide((c) => {
      if (c.transport === "udp") c.matchUdp((m) => m.dst.port === 53)?.accept();
    }, dnsQuery("udp")), { action: "dns" });
    assert.deepEqual(await decide((c) => {
      if (c.transport === "tcp") c.acceptHttp();
    }, dnsQuery("tcp")), { action: "dns" });
    assert.deepEqual(await decide((c) => {
      if (c.transport === "udp") c.matchUdp("10.0.2.1:5353")?.accept();
    }, dnsQuery("udp")), DENY);
  });

  test("a match's accept is a raw accept", async () => {
    assert.deepEqual(await decide((c) => {
      if (c.transport === "tcp") c.matchTcp("203.0.113.10:5432")?.accept();
    }, tcp("203.0.113.10", 5432)), ACCEPT);
  });

  test("a spec that names no IP endpoint matches nothing; one without a port throws (0.6.0)", async () => {
    for (const spec of ["db:5432", "db.internal:5432", "203.0.113.10:http", "203.0.113.10:70000", { ip: "db", port: 5432 }, { ip: "203.0.113.10" }]) {
      assert.equal(await probe(tcp("203.0.113.10", 5432), (c) => c.transport === "tcp" && c.matchTcp(spec as never)), undefined, JSON.stringify(spec));
    }
    await assert.rejects(probe(udp("203.0.113.10", 1), (c) => c.transport === "udp" && c.matchUdp("nonsense" as never)), /invalid endpoint spec "nonsense"/);
  });

  test("a predicate returning a promise matches, whatever it resolves to (0.6.0: truthiness)", async () => {
    assert.deepEqual(await decide((c) => {
      if (c.transport === "tcp") c.matchTcp((() => Promise.resolve(false)) as never)?.accept();
    }, tcp("203.0.113.10", 5432)), ACCEPT);
    let unhandled: unknown;
    const onUnhandled = (reason: unknown) => { unhandled = reason; };
    process.on("unhandledRejection", onUnhandled);
    try {
      assert.deepEqual(await decide((c) => {
        c.matchDns((() => Promise.reject(new Error("predicate failed"))) as never)?.accept();
      }, dnsQuery()), { action: "dns" });
      await new Promise((resolve) => setTimeout(resolve, 10));
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
    assert.equal(unhandled, undefined, "a rejected predicate must not become an unhandled rejection");
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
    // `resolvers: []` is the host's own resolvers, as if omitted (0.6.0).
    assert.deepEqual(await decide((c) => { c.matchDns("1.1.1.1")?.accept({ resolvers: [] }); }, dnsQuery()), { action: "dns" });
    assert.deepEqual(await decide((c) => { c.matchDns(() => true)?.accept({ resolvers: [] }); }, dnsQuery()), { action: "dns" });
  });

  test("a resolver spec that is not an IP address matches nothing (0.6.0)", async () => {
    assert.equal(await probe(dnsQuery(), (c) => c.matchDns("dns.google")), undefined);
    assert.equal(await probe(dnsQuery(), (c) => c.matchDns({ ip: "dns.google" })), undefined);
    assert.deepEqual(await decide((c) => {
      c.matchDns("dns.google")?.accept();
      c.matchDns("192.0.2.53:5353")?.accept();
    }, dnsQuery()), { action: "dns", resolvers: [{ ip: "192.0.2.53", port: 5353 }] });
  });

  test("conn.accept() on a DNS query forwards it to the host's resolvers", async () => {
    assert.deepEqual(await decide((c) => { c.accept(); }, dnsQuery()), { action: "dns" });
  });

  test("matchDns does not match non-DNS flows", async () => {
    assert.equal(await probe(udp("1.1.1.1", 53), (c) => c.matchDns("1.1.1.1")), undefined);
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
    assert.equal(match?.dst.ip, PUBLIC);
  });

  test("never grants the metadata services by default; destinations narrows to public or widens to any", async () => {
    const metadata = [
      "169.254.169.254",
      "169.254.0.1",
      "fe80::1",
      "fd00:ec2::254", // AWS, IPv6
      "100.100.100.200", // Alibaba Cloud
      "::ffff:169.254.169.254",
      "::ffff:100.100.100.200",
      "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
      "64:ff9b::6464:64c8", // NAT64 of 100.100.100.200
    ];
    const privateOrOther = ["10.1.2.3", "172.16.0.1", "192.168.1.10", "100.64.0.1", "198.51.100.10", "fd00::1", "64:ff9b::a01:203", "::ffff:10.1.2.3"];
    const publicAddresses = ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"];
    const matches = async (ip: string, options?: HttpMatchOptions) => {
      const event = pinned("api.example.test", 443, ip);
      const byName = await probe(event, (c) => c.matchHttp("api.example.test", options));
      const byObject = await probe(event, (c) => c.matchHttp({ hostname: "api.example.test", port: 443 }, options));
      const byPredicate = await probe(event, (c) => c.matchHttp(() => true, options));
      assert.equal(byName === undefined, byObject === undefined, ip);
      assert.equal(byName === undefined, byPredicate === undefined, ip);
      return byName !== undefined;
    };
    for (const ip of metadata) {
      assert.equal(await matches(ip), false, ip);
      assert.deepEqual(await decide((c) => { c.matchHttp(() => true)?.accept(); }, pinned("api.example.test", 443, ip)), DENY, ip);
      assert.equal(await matches(ip, { destinations: "public" }), false, ip);
      assert.equal(await matches(ip, { destinations: "any" }), true, ip);
    }
    for (const ip of privateOrOther) {
      // As 0.6.0: a name the policy allows may live in a private network.
      assert.equal(await matches(ip), true, ip);
      assert.equal(await matches(ip, { destinations: "routable" }), true, ip);
      assert.equal(await matches(ip, { destinations: "public" }), false, ip);
    }
    for (const ip of publicAddresses) {
      assert.equal(await matches(ip), true, ip);
      assert.equal(await matches(ip, { destinations: "public" }), true, ip);
    }
    await assert.rejects(probe(pinned("a.test"), (c) => c.matchHttp("a.test", { destinations: "private" as never })), /invalid matchHttp destinations "private"/);
  });

  test("ports in string and object specs; predicates", async () => {
    assert.ok(await probe(pinned("api.example.test"), (c) => c.matchHttp("api.example.test:443")));
    assert.equal(await probe(pinned("api.example.test", 80), (c) => c.matchHttp("api.example.test:443")), undefined);
    assert.ok(await probe(pinned("api.example.test", 8443), (c) => c.matchHttp({ hostname: "api.example.test", port: 8443 })));
    assert.ok(await probe(pinned("a.example.test"), (c) => c.matchHttp((m) => m.hostname.endsWith(".example.test"))));
    // An authority that names no hostname matches nothing, as in 0.6.0.
    assert.equal(await probe(pinned("a.example.test"), (c) => c.matchHttp("https://a.example.test")), undefined);
    assert.equal(await probe(pinned("a.example.test"), (c) => c.matchHttp("a.example.test:http")), undefined);
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
