// Copy-on-write roots in real VMs: rootfs.cow over the built-in image with a
// SandboxBlockStore kept in this process's memory. What one boot changes is
// in the next boot with the same store; a failing store or a killed VMM
// never leaves the store anything but its last flushed state; nor does
// killing the host process, with a store on disk (fixtures/log-block-store).
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { defineSandbox, fs, rootfs } from "@torkbot/sandbox";
import { LogBlockStore } from "./fixtures/log-block-store.mjs";
import { MemoryBlockStore } from "./fixtures/memory-block-store.mjs";
import { debPackage } from "./fixtures/agent-files.mjs";
import { childProcesses, eventually } from "./helpers.mjs";

const store = new MemoryBlockStore();
const cow = () => defineSandbox({ rootfs: rootfs.cow({ base: rootfs.builtIn("debian:13-slim"), writable: store }) });

/** A small .deb built on the host with dpkg-deb: one script in /usr/local/bin. */
async function ok(lane, script, options) {
  const r = await lane.exec("sh", ["-c", script], options);
  assert.equal(r.exitCode, 0, `${script}: ${r.stderr}`);
  return r.stdout;
}

describe("copy-on-write root", () => {
  const work = mkdtempSync(join(tmpdir(), "cow-e2e-"));
  after(() => {
    rmSync(work, { recursive: true, force: true });
    assert.deepEqual(childProcesses(), [], "no VMM left running");
  });

  it("persists a synced file and a dpkg-installed package into the next boot", async () => {
    const deb = debPackage(work, "torkbot-hello", "hello from a persisted package").bytes;
    const lane = await cow().boot({ mounts: { "/mnt": fs.virtual(fs.memory({ files: { "/torkbot-hello.deb": deb } })) } });
    try {
      assert.match(await ok(lane, "mount"), /^\/dev\/vda on \/ type ext4 \(rw,/m);
      await ok(lane, "echo persisted > /root/note.txt && sync");
      await ok(lane, "dpkg -i /mnt/torkbot-hello.deb");
      await ok(lane, "mkdir -p /srv/lane");
    } finally {
      await lane.close();
    }
    assert.ok(store.durable.size > 0 && store.calls.flush > 0, "the store received flushed blocks");
    assert.match(store.contexts[0].base, /^built-in:debian:13-slim:qcow2:linux:x64:sha256:[0-9a-f]{64}$/);
    assert.ok(store.contexts.every((context) => context === store.contexts[0]), "one context object for every call");

    const next = await cow().boot({ cwd: "/srv/lane" });
    try {
      assert.equal(await ok(next, "cat /root/note.txt"), "persisted\n");
      assert.match(await ok(next, "dpkg -s torkbot-hello"), /^Status: install ok installed$/m);
      assert.equal(await ok(next, "torkbot-hello"), "hello from a persisted package\n");
      assert.equal(await ok(next, "pwd"), "/srv/lane\n");
      assert.ok(store.calls.read > 0, "blocks the store listed were read back");
    } finally {
      await next.close();
    }
  });

  it("rejects a second boot on a store that a running sandbox has", async () => {
    const lane = await cow().boot();
    try {
      await assert.rejects(cow().boot(), (err) => {
        assert.equal(err.code, "ERR_SANDBOX_STORE_IN_USE");
        assert.match(err.message, /still running in this process: close\(\) that sandbox/);
        return true;
      });
      assert.equal(childProcesses().length, 1, "the refused boot started no VM");
    } finally {
      await lane.close();
    }
  });

  it("flushes on close after the boot's cwd was deleted", async () => {
    const lane = await cow().boot({ cwd: "/srv/lane" });
    try {
      await ok(lane, "rm -rf /srv/lane && echo after > /root/after-rm.txt", { cwd: "/" });
    } finally {
      await lane.close();
    }
    const next = await cow().boot();
    try {
      assert.equal(await ok(next, "cat /root/after-rm.txt; test -e /srv/lane || echo gone"), "after\ngone\n");
    } finally {
      await next.close();
    }
  });

  it("rejects close when the store fails to write, and the next boot sees the previous state", async () => {
    const lane = await cow().boot();
    const before = store.snapshot();
    store.failWrites = true;
    try {
      await lane.exec("sh", ["-c", "echo lost > /root/lost.txt; sync"]);
    } finally {
      await assert.rejects(lane.close(), (err) => {
        assert.equal(err.code, "ERR_SANDBOX_BLOCK_STORE");
        assert.match(err.message, /not persisted: .*block store write\(\) failed: injected write failure/);
        return true;
      });
      store.failWrites = false;
    }
    assert.deepEqual(store.snapshot(), before, "the store still holds its last flushed state");
    const next = await cow().boot();
    try {
      assert.equal(await ok(next, "test -e /root/lost.txt || echo absent; cat /root/after-rm.txt; touch /root/writable"), "absent\nafter\n");
    } finally {
      await next.close();
    }
  });

  it("after a VMM killed mid-write, persists nothing unflushed and the next boot mounts cleanly", async () => {
    const lane = await cow().boot();
    await ok(lane, "echo before-kill > /root/marker && sync");
    const churn = await lane.spawn("sh", ["-c", "i=0; while :; do dd if=/dev/urandom of=/root/churn.$((i % 4)) bs=64k count=16 conv=fsync 2>/dev/null; i=$((i+1)); done"]);
    churn.exit.catch(() => {});
    const flushes = store.calls.flush;
    const deadline = Date.now() + 20_000;
    while (store.calls.flush < flushes + 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(store.calls.flush >= flushes + 3, "the guest was flushing when killed");
    const [vmm] = childProcesses();
    process.kill(vmm, "SIGKILL");
    await assert.rejects(lane.close(), (err) => {
      assert.equal(err.code, "ERR_SANDBOX_VMM_EXITED");
      assert.match(err.message, /writes since the guest's last flush were not persisted/);
      return true;
    });
    await lane.close(); // as in 0.6.0, a second close after a failed one resolves

    const next = await cow().boot();
    try {
      assert.equal(await ok(next, "cat /root/marker"), "before-kill\n");
      assert.match(await ok(next, "mount"), /^\/dev\/vda on \/ type ext4 \(rw,/m);
      await ok(next, "ls -l /root >/dev/null && touch /root/after-kill");
    } finally {
      await next.close();
    }
    // The image the store describes (base + blocks) is a clean ext4 filesystem.
    assert.equal(fsck(), "", "e2fsck -fn found problems");
  });

  it("fails the boot when list() names a block outside the disk", async () => {
    const bad = { blockSize: 4096, list: async () => [1n << 40n], read: async () => [], write: async () => {} };
    await assert.rejects(defineSandbox({ rootfs: rootfs.cow({ base: rootfs.builtIn("debian:13-slim"), writable: bad }) }).boot(), (err) => {
      assert.equal(err.code, "ERR_SANDBOX_BLOCK_STORE");
      assert.match(err.message, /listed block 1099511627776, device has \d+ blocks/);
      return true;
    });
    assert.deepEqual(childProcesses(), []);
  });

  it("after the host process is killed mid-write, the store holds a flushed state that boots and checks clean", async () => {
    const log = join(work, "host-death.log");
    const script = fileURLToPath(new URL("./fixtures/host-death.mjs", import.meta.url));
    const host = spawn(process.execPath, [script, log], { stdio: ["ignore", "pipe", "inherit"] });
    const exited = new Promise((resolve) => host.once("exit", resolve));
    let out = "";
    host.stdout.on("data", (d) => (out += d));
    await eventually(() => out.includes("churning") || host.exitCode !== null, 60_000, "the host to churn");
    assert.equal(host.exitCode, null, "the host process died before it was killed");
    const [vmm] = childProcesses(host.pid);
    assert.ok(vmm, "the host's VMM runs");
    host.kill("SIGKILL");
    await exited;
    // The VMM dies with its parent (PDEATHSIG).
    await eventually(() => !existsSync(`/proc/${vmm}`), 5000, "the VMM to die with its host");

    const next = await defineSandbox({ rootfs: rootfs.cow({ base: rootfs.builtIn("debian:13-slim"), writable: new LogBlockStore(log) }) }).boot();
    try {
      assert.equal(await ok(next, "cat /root/marker"), "before-death\n");
      assert.match(await ok(next, "mount"), /^\/dev\/vda on \/ type ext4 \(rw,/m);
      await ok(next, "touch /root/after-death");
    } finally {
      await next.close();
    }
    assert.equal(fsck(new LogBlockStore(log).durable), "", "e2fsck -fn found problems");
  });

  /** Assembles base + store blocks into a raw image and runs e2fsck -fn on it; returns its complaints. */
  function fsck(blocks = store.durable) {
    const platformDir =
      process.env.SANDBOX_PLATFORM_DIR || fileURLToPath(new URL("../../platform-packages/linux-x64-gnu", import.meta.url));
    const images = join(platformDir, "artifacts/images");
    const entry = JSON.parse(readFileSync(join(images, "catalog.json"), "utf8"))["debian:13-slim"];
    const raw = join(work, "assembled.raw");
    execFileSync("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", join(images, entry.file), raw]);
    const fd = openSync(raw, "r+");
    try {
      for (const [index, data] of blocks) writeSync(fd, data, 0, data.length, Number(index) * 4096);
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
