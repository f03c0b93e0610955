// Faults of the network policy's and middleware's JavaScript, in a real VM:
// a policy or middleware that hangs, throws something that is no Error, or
// answers garbage. The guest gets a refusal or its own timeout, nothing
// reaches the origin, and close() does not wait for the hung calls.
// Runs only inside the network namespace tests/e2e-net/run.sh makes.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { after, before, describe, it } from "node:test";
import { defineSandbox, network, rootfs } from "@torkbot/sandbox";
import { listenInOrigins } from "./origins.mjs";

const ORIGIN = "198.51.100.10";

describe("policy and middleware faults", () => {
  let server;
  let connections = 0;
  const paths = [];
  let lane;
  let hungPolicies = 0;
  let hungMiddlewares = 0;

  before(async () => {
    if (execFileSync("ip", ["route", "show", "default"], { encoding: "utf8" }).trim() !== "") {
      throw new Error("network tests run only inside the namespace of tests/e2e-net/run.sh (no default route)");
    }
    server = createServer((req, res) => {
      paths.push(req.url);
      res.end("origin\n");
    });
    server.on("connection", () => connections++);
    // In the origins' namespace: the host's own addresses are refused.
    await listenInOrigins(server, 7000, ORIGIN);
    const policy = network.policy((conn) => {
      if (conn.dst.ip !== ORIGIN) return undefined;
      switch (conn.dst.port) {
        case 7001: // hangs
          hungPolicies++;
          return new Promise(() => {});
        case 7002: // rejects with no Error
          return Promise.reject(undefined);
        case 7003: // throws a string
          throw "policy bug";
        case 7004: // answers garbage: a value, and no accept
          return { accept: true, action: "accept" };
      }
      conn.acceptHttp(async (request) => {
        const path = request.url.pathname;
        if (path === "/hang") {
          hungMiddlewares++;
          return new Promise(() => {});
        }
        if (path === "/throw-number") throw 42;
        if (path === "/bad-header") request.headers.set("x-bad", "a\r\nInjected: yes");
        if (path === "/garbage") return "a string, not undefined";
        return undefined;
      });
    });
    lane = await defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim"), network: policy }).boot();
  });
  after(async () => {
    await lane?.close();
    server?.close();
  });

  it("refuses flows whose policy rejects with no Error, throws a string or answers garbage, and times out a hung one in the guest", async () => {
    const r = await lane.exec("sh", [
      "-c",
      `for p in 7001 7002 7003 7004; do curl -s -o /dev/null -m 5 http://${ORIGIN}:$p/; echo "$p=$?"; done`,
    ]);
    // 28: curl's own timeout (the policy never answered); 7: refused (RST).
    assert.equal(r.stdout, "7001=28\n7002=7\n7003=7\n7004=7\n");
    assert.equal(hungPolicies, 1);
    assert.equal(connections, 0, "nothing reached the origin");
  });

  it("answers 403 for a middleware that throws a number or sets an invalid header, ignores a value it returns, and leaves a hung one to the guest's timeout", async () => {
    const r = await lane.exec("sh", [
      "-c",
      `for p in throw-number bad-header garbage hang; do curl -s -o /dev/null -w "%{http_code}" -m 5 http://${ORIGIN}:7000/$p; echo " $p=$?"; done`,
    ]);
    assert.equal(r.stdout, "403 throw-number=0\n403 bad-header=0\n200 garbage=0\n000 hang=28\n");
    assert.equal(hungMiddlewares, 1);
    assert.deepEqual(paths, ["/garbage"], "only the good request went upstream");
  });

  it("closes at once with policy and middleware calls hung", async () => {
    const started = Date.now();
    await lane.close();
    assert.ok(Date.now() - started < 10_000, `close() took ${Date.now() - started} ms`);
  });
});
