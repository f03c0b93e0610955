// @torkbot/sandbox/s3 against a real S3 server on loopback (versitygw,
// tests/e2e/fixtures/s3-server.mjs), with real VMs: a lane written on one
// boot is read on the next through the server; two processes race to attach
// a lane and exactly one wins; the server dying mid-flush fails close() and
// loses nothing flushed before; 100 processes killed at random points while
// they flush leave the lane at exactly its last (or the in-flight) completed
// flush, a state e2fsck finds clean, and the next boot mounts it.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { defineSandbox, rootfs } from "@torkbot/sandbox";
import { S3BlockStore } from "@torkbot/sandbox/s3";
import { MemoryBlockStore } from "./fixtures/memory-block-store.mjs";
import { S3Server, s3Skip } from "./fixtures/s3-server.mjs";
import { childProcesses } from "./helpers.mjs";

const fixture = (name) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const cowOn = (store) => defineSandbox({ rootfs: rootfs.cow({ base: rootfs.builtIn("debian:13-slim"), writable: store }) });

async function ok(lane, script) {
  const r = await lane.exec("sh", ["-c", script]);
  assert.equal(r.exitCode, 0, `${script}: ${r.stderr}`);
  return r.stdout;
}

/** A store that times its flushes. */
class TimedStore extends S3BlockStore {
  flushMs = [];
  async flush(context) {
    const started = performance.now();
    await super.flush(context);
    this.flushMs.push(performance.now() - started);
  }
}

describe("S3BlockStore on a real S3 server", { skip: s3Skip }, () => {
  let work;
  let server;
  let client;
  let rawBase; // the built-in base as a raw image, for e2fsck

  before(async () => {
    work = mkdtempSync(join(tmpdir(), "s3-e2e-"));
    server = new S3Server(join(work, "s3"));
    await server.start();
    await server.createBucket("lanes");
    client = server.client();
  });

  after(async () => {
    client?.destroy();
    await server?.kill();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
    assert.deepEqual(childProcesses(), [], "no VMM left running");
  });

  it("a lane written on one boot is read back on the next, through the server", async (t) => {
    const store = new TimedStore({ client, bucket: "lanes", keyPrefix: "lanes/persist", objectSize: 1024 * 1024 });
    const lane = await cowOn(store).boot();
    let sum;
    try {
      sum = await ok(lane, "head -c 3M /dev/urandom > /root/data.bin && sync && sha256sum /root/data.bin");
    } finally {
      await lane.close();
    }
    assert.ok(store.flushMs.length > 0);
    t.diagnostic(`flush latency (ms): ${store.flushMs.map((ms) => ms.toFixed(0)).join(" ")}`);
    const keys = (await client.send(new ListObjectsV2Command({ Bucket: "lanes", Prefix: "lanes/persist/" }))).Contents.map((o) => o.Key);
    assert.ok(keys.includes("lanes/persist/manifest.json") && keys.includes("lanes/persist/lease.json"), keys.join(" "));
    assert.ok(keys.some((k) => /^lanes\/persist\/data\/built-in:debian:13-slim:qcow2:linux:x64:sha256:[0-9a-f]{64}\//.test(k)), "data keys name the base");

    // A fresh store object, as on another machine.
    const next = await cowOn(new S3BlockStore({ client, bucket: "lanes", keyPrefix: "lanes/persist" })).boot();
    try {
      assert.equal(await ok(next, "sha256sum /root/data.bin"), sum);
    } finally {
      await next.close();
    }
    // The lane refuses another base.
    await assert.rejects(new S3BlockStore({ client, bucket: "lanes", keyPrefix: "lanes/persist" }).attach({ base: "built-in:other:qcow2:linux:x64:sha256:00" }), /holds blocks written against the base built-in:debian:13-slim/);
  });

  it("two processes racing to attach one lane: exactly one boots, the other gets ERR_SANDBOX_STORE_IN_USE naming it", async () => {
    const contenders = ["contender-a", "contender-b"].map((holder) => {
      const child = spawn(process.execPath, [fixture("s3-attach-child.mjs"), "lanes/race", holder], {
        env: { ...process.env, ...server.env },
        stdio: ["pipe", "pipe", "inherit"],
      });
      const exited = new Promise((resolve) => child.once("exit", resolve));
      const answer = new Promise((resolve) => {
        let out = "";
        child.stdout.on("data", (d) => {
          out += d;
          if (out.includes("\n")) resolve(JSON.parse(out.split("\n")[0]));
        });
      });
      return { holder, child, exited, answer };
    });
    const answers = await Promise.all(contenders.map((c) => c.answer));
    const winners = answers.filter((a) => a.booted);
    assert.equal(winners.length, 1, JSON.stringify(answers));
    const winner = contenders[answers.findIndex((a) => a.booted)];
    const loser = answers.find((a) => !a.booted);
    assert.equal(loser.code, "ERR_SANDBOX_STORE_IN_USE", loser.message);
    assert.match(loser.message, new RegExp(`s3://lanes/lanes/race is attached by ${winner.holder} on .* pid ${winner.child.pid} `));
    // While the winner runs, this process is refused too; once it closed, the lease is free at once.
    const here = new S3BlockStore({ client, bucket: "lanes", keyPrefix: "lanes/race" });
    const context = { base: await laneBase(client, "lanes/race") };
    await assert.rejects(here.attach(context), { code: "ERR_SANDBOX_STORE_IN_USE" });
    for (const c of contenders) c.child.stdin.end();
    await Promise.all(contenders.map((c) => c.exited));
    assert.equal(winner.child.exitCode, 0);
    await here.attach(context);
    await here.detach(context);
  });

  it("the server dying mid-flush makes close() reject naming S3, and what was flushed before survives", async () => {
    let armed = false;
    const dying = server.client({ maxAttempts: 2 });
    dying.middlewareStack.add(
      (next) => async (args) => {
        if (armed && args.request?.method === "PUT" && /\/data\//.test(args.request.path)) {
          armed = false;
          await server.kill();
        }
        return next(args);
      },
      { step: "finalizeRequest", name: "killServer" },
    );
    const store = new S3BlockStore({ client: dying, bucket: "lanes", keyPrefix: "lanes/dying", requestTimeoutMs: 5000, lease: { ttlMs: 2000 } });
    const lane = await cowOn(store).boot();
    try {
      await ok(lane, "echo flushed-before > /root/marker && sync");
      // The guest's sync makes the flush the server dies in; its I/O error is the guest's.
      armed = true;
      await lane.exec("sh", ["-c", "head -c 4M /dev/urandom > /root/big.bin; sync"]);
    } finally {
      await assert.rejects(lane.close(), (err) => {
        // The final flush fails on the dead server (ERR_SANDBOX_BLOCK_STORE
        // naming it), or, on a machine so loaded that the guest, whose I/O
        // keeps failing, does not power off within the 5 s shutdown grace,
        // the close reports that its unflushed writes were dropped.
        if (err.code === "ERR_SANDBOX_BLOCK_STORE") {
          assert.match(err.message, /s3:\/\/lanes\/lanes\/dying: write data\/.* failed: .*(ECONNREFUSED|ECONNRESET|socket hang up|no answer in time)/);
        } else {
          assert.equal(err.code, "ERR_SANDBOX", err.message);
          assert.match(err.message, /^the root disk's writes since the guest's last flush were not persisted \(\d+ bytes dropped; the block store keeps the state of that flush\)/);
        }
        return true;
      });
    }
    assert.equal(armed, false, "the server was killed during a flush");
    dying.destroy();
    await server.start();
    const again = new S3BlockStore({ client, bucket: "lanes", keyPrefix: "lanes/dying" });
    // Its lease was not released (the server was gone): it expires after its ttl.
    await waitForLease(again, await laneBase(client, "lanes/dying"), 10_000);
    const next = await cowOn(again).boot();
    try {
      assert.equal(await ok(next, "cat /root/marker"), "flushed-before\n");
    } finally {
      await next.close();
    }
    assert.equal(await fsckLane("lanes/dying"), "", "e2fsck -fn found problems");
  });

  it("100 random crash points during flush: the lane is always its last completed flush, which e2fsck finds clean, and the next boot mounts it", { timeout: 900_000 }, async (t) => {
    // The flushes of a file system being changed: debugfs edits a copy of
    // the built-in image (files written, directories made, a file removed),
    // and each step's changed blocks are one flush. Every step is a clean
    // ext4 state, so any mixture of two steps is caught by e2fsck as well
    // as by the block comparison below.
    rawBase = baseImage();
    // The base boot() names to the store (docs/cow.md): the image's digest from the catalog.
    const base = `built-in:debian:13-slim:qcow2:linux:x64:sha256:${catalogEntry().sha256}`;
    const flushes = fsSteps(6);
    const workload = join(work, "workload.json");
    writeFileSync(workload, JSON.stringify({ base, flushes: flushes.map((f) => f.map(([i, data]) => [Number(i), Buffer.from(data).toString("base64")])) }));
    // expected[k]: the lane after k flushes, as block → sha256.
    const expected = [new Map()];
    for (const f of flushes) {
      const next = new Map(expected.at(-1));
      for (const [i, data] of f) next.set(Number(i), sha(data));
      expected.push(next);
    }

    // One run without a crash gives the number of requests to pick from.
    const full = await runChild(workload, "crash/full", {});
    const total = Number(/done (\d+)/.exec(full.out)[1]);
    assert.equal(stateOf(await laneBlocks("crash/full", base), expected), flushes.length);

    const reached = new Set();
    let lastPrefix;
    let lastState;
    for (let i = 0; i < 100; i++) {
      const prefix = `crash/${i}`;
      // Two of three runs die at an S3 request boundary, the third at a random moment.
      const crash = i % 3 === 2 ? { killAfterMs: 50 + Math.floor(Math.random() * 1500) } : { CRASH_AT: 1 + Math.floor(Math.random() * total), CRASH_WHEN: i % 2 ? "after" : "before" };
      const { out, signal } = await runChild(workload, prefix, crash);
      const completed = (out.match(/^flushed \d+$/gm) ?? []).length;
      const state = stateOf(await laneBlocks(prefix, base), expected);
      assert.ok(state === completed || state === completed + 1, `run ${i} (${JSON.stringify(crash)}, ${signal}): the lane is at flush ${state}, the child completed ${completed}`);
      reached.add(state);
      lastPrefix = prefix;
      lastState = state;
    }
    t.diagnostic(`states reached: ${[...reached].sort((a, b) => a - b).join(" ")} of 0..${flushes.length}; ${total} requests per full replay`);

    // Every state a crash left is a clean file system.
    for (const k of [...reached].sort((a, b) => a - b)) {
      const blocks = new Map();
      for (const f of flushes.slice(0, k)) for (const [i, data] of f) blocks.set(Number(i), data);
      assert.equal(fsck(blocks), "", `e2fsck -fn of flush state ${k}`);
    }

    // The next boot on the last crashed lane: its lease is stale, then expires.
    const store = new S3BlockStore({ client, bucket: "lanes", keyPrefix: lastPrefix });
    await waitForLease(store, base, 30_000);
    const next = await cowOn(store).boot();
    try {
      assert.match(await ok(next, "mount"), /^\/dev\/vda on \/ type ext4 \(rw,/m);
      await ok(next, "ls -lR /root > /dev/null && touch /root/after-crash");
      // The files of the state the lane was left in are there, whole.
      for (let k = 1; k <= lastState; k++) {
        if (k !== 3 || lastState < flushes.length) assert.equal(await ok(next, `wc -c < /root/f${k}`), `${k * 48 * 1024}\n`);
      }
    } finally {
      await next.close();
    }
    assert.equal(await fsckLane(lastPrefix), "", "e2fsck -fn after the next boot");
  });

  it("the README's durable-lane example runs as written against a local server: twice, the second boot counts 2", { timeout: 600_000 }, async () => {
    const readme = readFileSync(fileURLToPath(new URL("../../README.md", import.meta.url)), "utf8");
    const section = readme.slice(readme.indexOf("### Give an agent a durable machine"));
    const source = /```ts\n([\s\S]*?)```/.exec(section)[1];
    assert.match(source, /new S3BlockStore\(/);
    const { default: ts } = await import("typescript");
    const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
    // Inside the checkout, so that "@torkbot/sandbox" resolves to it as to an installed copy.
    const script = fileURLToPath(new URL(`../../build/readme-durable-lane-${process.pid}.mjs`, import.meta.url));
    writeFileSync(script, js);
    await server.createBucket("agent-rootfs-overlays");
    const env = {
      ...process.env,
      AWS_ENDPOINT_URL: server.endpoint,
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: server.env.S3_TEST_ACCESS,
      AWS_SECRET_ACCESS_KEY: server.env.S3_TEST_SECRET,
    };
    try {
      for (const count of [1, 2]) {
        const out = execFileSync(process.execPath, [script], { env, encoding: "utf8", timeout: 300_000, stdio: ["ignore", "pipe", "inherit"] });
        assert.equal(out, `this lane has booted ${count} times\n`);
      }
    } finally {
      rmSync(script, { force: true });
    }
  });

  /** Runs the flush child; resolves with its stdout and how it ended. */
  async function runChild(workload, prefix, crash) {
    const { killAfterMs, ...env } = crash;
    const child = spawn(process.execPath, [fixture("s3-flush-child.mjs"), workload, prefix], {
      env: { ...process.env, ...server.env, ...env },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill("SIGKILL"), killAfterMs);
    const [code, signal] = await new Promise((resolve) => child.once("exit", (c, s) => resolve([c, s])));
    clearTimeout(timer);
    if (signal === null) assert.equal(code, 0, `the flush child failed:\n${out}`);
    return { out, signal };
  }

  /** The lane's committed blocks, read through a store that is not attached (a read-only look). */
  async function laneBlocks(prefix, base) {
    const store = new S3BlockStore({ client, bucket: "lanes", keyPrefix: prefix });
    const context = { base };
    const listed = [...(await store.list(context))].sort((a, b) => (a < b ? -1 : 1));
    const blocks = new Map();
    for (let i = 0; i < listed.length; ) {
      let j = i + 1;
      while (j < listed.length && listed[j] === listed[j - 1] + 1n && j - i < 256) j++;
      for (const { start, data } of await store.read({ start: listed[i], count: j - i }, context)) {
        for (let b = 0; b < data.length / 4096; b++) blocks.set(Number(start) + b, data.subarray(b * 4096, (b + 1) * 4096));
      }
      i = j;
    }
    return blocks;
  }

  /** Which expected state `blocks` is, exactly; fails when it is none of them. */
  function stateOf(blocks, expected) {
    const hashes = new Map([...blocks].map(([i, data]) => [i, sha(data)]));
    const k = expected.findIndex((e) => e.size === hashes.size && [...e].every(([i, h]) => hashes.get(i) === h));
    assert.ok(k >= 0, `the lane (${hashes.size} blocks) is no state any completed flush left`);
    return k;
  }

  async function fsckLane(prefix) {
    rawBase ??= baseImage();
    return fsck(await laneBlocks(prefix, await laneBase(client, prefix)));
  }

  /** `n` steps of debugfs edits to a copy of the base image; each step's changed 4 KiB blocks, in order. */
  function fsSteps(n) {
    const image = join(work, "steps.raw");
    execFileSync("cp", ["--sparse=always", rawBase, image]);
    let previous = readFileSync(image);
    const steps = [];
    for (let k = 1; k <= n; k++) {
      const file = join(work, `step${k}`);
      writeFileSync(file, randomBytes(k * 48 * 1024));
      const commands = [`mkdir /root/d${k}`, `write ${file} /root/f${k}`, ...(k === n ? ["rm /root/f3"] : [])];
      writeFileSync(join(work, "debugfs.cmd"), `${commands.join("\n")}\n`);
      execFileSync("debugfs", ["-w", "-f", join(work, "debugfs.cmd"), image], { stdio: "pipe" });
      const current = readFileSync(image);
      const changed = [];
      for (let at = 0; at < current.length; at += 4096) {
        if (current.compare(previous, at, at + 4096, at, at + 4096) !== 0) changed.push([at / 4096, Buffer.from(current.subarray(at, at + 4096))]);
      }
      assert.ok(changed.length > 0, `debugfs step ${k} changed nothing`);
      steps.push(changed);
      previous = current;
    }
    rmSync(image);
    return steps;
  }

  function catalogEntry() {
    const images = join(process.env.SANDBOX_PLATFORM_DIR || fileURLToPath(new URL("../../platform-packages/linux-x64-gnu", import.meta.url)), "artifacts/images");
    return { ...JSON.parse(readFileSync(join(images, "catalog.json"), "utf8"))["debian:13-slim"], images };
  }

  function baseImage() {
    const entry = catalogEntry();
    const raw = join(work, "base.raw");
    execFileSync("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", join(entry.images, entry.file), raw]);
    return raw;
  }

  /** base + blocks as a raw image; returns e2fsck -fn's complaints. */
  function fsck(blocks) {
    const raw = join(work, "assembled.raw");
    execFileSync("cp", ["--sparse=always", rawBase, raw]);
    const fd = openSync(raw, "r+");
    try {
      for (const [index, data] of blocks) writeSync(fd, data, 0, data.length, index * 4096);
    } finally {
      closeSync(fd);
    }
    try {
      execFileSync("e2fsck", ["-fn", raw], { stdio: "pipe" });
      return "";
    } catch (error) {
      return `${error.stdout}${error.stderr}`;
    } finally {
      rmSync(raw, { force: true });
    }
  }
});

/** The base a lane's manifest was written for. */
async function laneBase(client, prefix) {
  const { GetObjectCommand } = await import("@aws-sdk/client-s3");
  const got = await client.send(new GetObjectCommand({ Bucket: "lanes", Key: `${prefix}/manifest.json` }));
  return JSON.parse(await got.Body.transformToString()).base;
}

/** Attaches (and detaches) once the lease another holder left behind has expired; fails if it never does. */
async function waitForLease(store, base, ms) {
  const deadline = Date.now() + ms;
  let refused = 0;
  for (;;) {
    try {
      await store.attach({ base });
      await store.detach({ base });
      return refused;
    } catch (error) {
      if (error.code !== "ERR_SANDBOX_STORE_IN_USE" || Date.now() > deadline) throw error;
      refused++;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

const sha = (data) => createHash("sha256").update(data).digest("hex");
