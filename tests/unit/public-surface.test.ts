// The public surface: exactly four runtime exports, and the README's usage
// (0.6.0) type-checks against the exported types. The README snippets are
// compiled, not run: running them would boot VMs and reach public hosts.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { runInNewContext } from "node:vm";
import * as sandboxModule from "../../src/index.js";
import {
  defineSandbox,
  fs,
  network,
  rootfs,
  type NetworkConnectionRequest,
  type SandboxBlockStore,
  type SandboxHttpRequest,
  type SandboxInstance,
} from "../../src/index.js";

test("runtime exports are exactly defineSandbox, rootfs, fs, network", () => {
  assert.deepEqual(Object.keys(sandboxModule).sort(), ["defineSandbox", "fs", "network", "rootfs"]);
});

test("Symbol.asyncDispose exists once the package is loaded", () => {
  assert.equal(typeof Symbol.asyncDispose, "symbol");
});

test("the polyfill installs Node's own Symbol.asyncDispose where it is missing (Node 20.0-20.3)", () => {
  // A fresh V8 context has no Symbol.asyncDispose, like Node before 20.4.
  const polyfill = readFileSync(new URL("../../src/dispose-polyfill.js", import.meta.url), "utf8")
    .replace(/^export \{\};$/m, "");
  assert.equal(runInNewContext("typeof Symbol.asyncDispose"), "undefined");
  assert.equal(
    runInNewContext(`${polyfill}; Symbol.asyncDispose === Symbol.for("nodejs.asyncDispose")`),
    true,
  );
});

// Type-checked only.
export async function readmeUsage(
  blockStore: SandboxBlockStore,
  tokenFor: (request: SandboxHttpRequest) => Promise<string>,
  allow: (match: unknown) => Promise<boolean>,
): Promise<void> {
  const workspace = fs.memory({ files: { "/task.txt": "Summarize the current GitHub user\n" } });
  const sandbox = defineSandbox({
    rootfs: rootfs.cow({ base: rootfs.builtIn("alpine:3.23"), writable: blockStore }),
    resources: { cpus: 4, memoryMiB: 4096 },
    network: network.policy(async (conn) => {
      if (conn.matchDns("192.0.2.53")?.accept()) return;
      const github = conn.matchHttp("api.github.com");
      if (!github) return;
      if (!(await allow(github))) return;
      github.accept(async (request) => {
        request.headers.set("authorization", `Bearer ${await tokenFor(request)}`);
      });
    }),
  });
  await using lane = await sandbox.boot({ mounts: { "/workspace": fs.virtual(workspace) }, cwd: "/workspace" });
  const result = await lane.exec("sh", ["-lc", "cat task.txt"]);
  if (result.exitCode !== 0) throw new Error(result.stderr);
  await lane.exec("npm", ["test"], { cwd: "/workspace", env: { CI: "1" } });

  network.policy(async (conn: NetworkConnectionRequest) => {
    if (conn.transport === "tcp" && conn.dst.isPublicInternet() && conn.dst.port === 443) conn.accept();
    if (conn.transport === "tcp") conn.matchTcp("203.0.113.10:5432")?.accept();
    if (conn.transport === "udp") conn.matchUdp("203.0.113.10:8125")?.accept();
    const dns = conn.matchDns((candidate) => candidate.transport === "udp");
    dns?.accept({ resolvers: ["192.0.2.53", "198.51.100.53"] });
    conn.matchHttp((candidate) => candidate.hostname.endsWith(".example.test"))?.accept((request) => {
      request.headers.set("x-agent-policy", "allowed");
    });
  });

  const child = await lane.spawn("ls");
  for await (const chunk of child.stdout) void chunk;
  const { exitCode }: { exitCode: number } = await child.exit;
  void exitCode;
  const instance: SandboxInstance = lane;
  await instance.close();
}
