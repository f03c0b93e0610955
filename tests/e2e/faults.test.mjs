// Faults outside the guest: the VMM killed at each boot phase and mid-exec,
// JavaScript callbacks (a mount's backend, a COW root's block store) that
// throw, hang or answer garbage, and the Node process exiting with sandboxes
// running. Each gives a clear error within a bounded time, leaves no VMM, fd
// or temp file behind, and never leaves a store anything but its last
// flushed state. (The network policy's and middleware's faults need the
// namespace of tests/e2e-net: see faults.test.mjs there.)
import assert from "node:assert/strict";
import { spawn as spawnProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { defineSandbox, fs, rootfs } from "@torkbot/sandbox";
import { MemoryBlockStore } from "./fixtures/memory-block-store.mjs";
import { hostCounters, soakCycle } from "./fixtures/soak.mjs";
import { childProcesses, eventually, openFds } from "./helpers.mjs";

const base = rootfs.builtIn("debian:13-slim");
const debian = defineSandbox({ rootfs: base });
const never = () => new Promise(() => {});

/** SIGKILLs this process's one VMM; returns when it did. */
function killVmm() {
  const [vmm] = childProcesses();
  assert.ok(vmm, "a VMM runs");
  process.kill(vmm, "SIGKILL");
  return Date.now();
}

/** Asserts that `promise` rejects with `code` within `ms` of `since()`. */
async function rejectsWithin(promise, code, ms, since, message) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
  const took = Date.now() - since();
  assert.ok(took < ms, `rejected ${took} ms after the fault (bound ${ms} ms)`);
}

describe("faults", () => {
  let fdsBefore;
  let tmpBefore;
  before(async () => {
    // A warm-up boot: the addon's and Go runtime's own fds stay for the process.
    await (await debian.boot()).close();
    fdsBefore = openFds();
    tmpBefore = new Set(readdirSync(tmpdir()));
  });
  after(async () => {
    assert.deepEqual(childProcesses(), [], "no VMM left running");
    await eventually(() => openFds().size <= fdsBefore.size, 3000, "fds to be released");
    assert.deepEqual([...openFds().keys()].sort(), [...fdsBefore.keys()].sort());
    assert.deepEqual(readdirSync(tmpdir()).filter((f) => !tmpBefore.has(f)), [], "no temp file left");
  });

  it("rejects boot() at once when the VMM is killed before the guest's hello", async () => {
    const booting = debian.boot();
    let killedAt;
    await eventually(() => childProcesses().length === 1, 10_000, "the VMM to start");
    killedAt = killVmm();
    await rejectsWithin(booting, "ERR_SANDBOX_VMM_EXITED", 2000, () => killedAt, /^sandbox-host exited: .*signal: killed/);
    assert.deepEqual(childProcesses(), []);
  });

  it("rejects boot() at once when the VMM is killed while the guest attaches its COW root, with a store read pending", async () => {
    const store = new MemoryBlockStore();
    store.durable.set(0n, new Uint8Array(4096)); // listed, so the guest's first read of block 0 reaches read()
    const before = store.snapshot();
    let killedAt;
    store.read = async () => {
      killedAt ??= killVmm();
      return never();
    };
    const booting = defineSandbox({ rootfs: rootfs.cow({ base, writable: store }) }).boot();
    await rejectsWithin(booting, "ERR_SANDBOX_VMM_EXITED", 2000, () => killedAt);
    assert.ok(killedAt, "the store's read() ran");
    assert.deepEqual(store.snapshot(), before, "the store is untouched");
    assert.equal(store.calls.write + store.calls.flush, 0);
    // The claim on the store ended with the failed boot.
    delete store.read;
    store.durable.clear();
    const lane = await defineSandbox({ rootfs: rootfs.cow({ base, writable: store }) }).boot();
    await lane.close();
  });

  it("rejects boot() at once when the VMM is killed after the root mounted, while the guest sets up its mounts", async () => {
    // Nothing calls the host between the root's mount and the guest's
    // hello (FUSE_INIT is answered natively): the console says when.
    const console = join(mkdtempSync(join(tmpdir(), "faults-console-")), "console.log");
    process.env.SANDBOX_CONSOLE_OUTPUT = console;
    let booting;
    try {
      booting = debian.boot({ mounts: { "/mnt": fs.virtual(fs.memory()), "/workspace": fs.virtual(fs.memory()) } });
    } finally {
      delete process.env.SANDBOX_CONSOLE_OUTPUT; // read at the boot() call
    }
    let killedAt;
    try {
      await eventually(() => / mounted/.test(readOr(console)), 120_000, "the guest to mount its root");
      killedAt = killVmm();
      await rejectsWithin(booting, "ERR_SANDBOX_VMM_EXITED", 2000, () => killedAt, /root .* mounted/);
    } finally {
      booting.then((lane) => lane.close(), () => {});
      rmSync(dirname(console), { recursive: true, force: true });
    }
    assert.deepEqual(childProcesses(), []);
  });

  it("maps a backend that throws, hangs or answers garbage to EIO, and a VMM killed mid-exec on a hung call rejects at once", async () => {
    const files = fs.memory({ files: { "/ok.txt": "ok\n", "/big-read.txt": "x", "/num-read.txt": "x", "/hang.txt": "h", "/dir/a": "a" } });
    const aborted = [];
    let hangReads = 0;
    const backend = {
      async stat(path) {
        if (path === "/throws.txt") throw new Error("backend bug: undefined is not a function");
        if (path === "/garbage-stat.txt") return { type: "teapot", sizeBytes: "many" };
        if (path === "/null-stat.txt") return null;
        return files.stat(path);
      },
      async list(path) {
        if (path === "/dir") return "not a list";
        return [
          ...(await files.list(path)),
          ...(path === "/" ? ["throws.txt", "garbage-stat.txt", "null-stat.txt"].map((name) => ({ name, type: "file" })) : []),
        ];
      },
      async read(request) {
        if (request.path === "/big-read.txt") return new Uint8Array(1 << 20); // more than asked
        if (request.path === "/num-read.txt") return 42;
        if (request.path === "/hang.txt") {
          hangReads++;
          request.signal.addEventListener("abort", () => aborted.push(request.path));
          return never();
        }
        return files.read(request);
      },
    };
    const lane = await debian.boot({ mounts: { "/mnt": fs.virtual(backend) } });
    try {
      // The hung read takes the backend call timeout (30 s): started first,
      // it runs while the other checks do.
      const hung = lane.exec("sh", ["-c", "s=$(date +%s); cat /mnt/hang.txt; echo \"rc=$? after=$(( $(date +%s) - s ))\""]);
      const r = await lane.exec("sh", [
        "-c",
        "for f in throws garbage-stat null-stat big-read num-read; do cat /mnt/$f.txt >/dev/null 2>&1; echo \"$f=$?\"; done; " +
          "cat /mnt/big-read.txt 2>&1; ls /mnt/dir 2>&1; cat /mnt/ok.txt",
      ]);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.match(r.stdout, /^throws=1\ngarbage-stat=1\nnull-stat=1\nbig-read=1\nnum-read=1\n/);
      assert.match(r.stdout, /cat: \/mnt\/big-read.txt: Input\/output error\n/);
      assert.match(r.stdout, /ls: .*\/mnt\/dir.*: Input\/output error\n/);
      assert.match(r.stdout, /ok\n$/, "the mount still serves after the faults");
      const h = await hung;
      // 30 s of host time; the guest's clock may see more on a loaded host.
      assert.match(h.stdout, /rc=1 after=(2[89]|[3-9]\d|1\d\d)\n/, `${h.stdout}${h.stderr}`);
      assert.match(h.stderr, /Input\/output error/);
      // (the kernel may have sent a readahead too: each times out on its own clock)
      await eventually(() => aborted.length >= 1 && aborted.length === hangReads, 40_000, "every timed-out read to abort its signal");

      // A VMM killed while an exec waits on a backend call that never answers.
      const hangsBefore = hangReads;
      const pending = lane.exec("cat", ["/mnt/hang.txt"]);
      await eventually(() => hangReads > hangsBefore, 30_000, "the guest's read to reach the backend");
      const killedAt = killVmm();
      await rejectsWithin(pending, "ERR_SANDBOX_VMM_EXITED", 2000, () => killedAt, /^sandbox-host exited/);
      const closing = Date.now();
      await lane.close();
      assert.ok(Date.now() - closing < 2000, `close() took ${Date.now() - closing} ms with a backend call hung`);
    } finally {
      await lane.close();
    }
  });
});

describe("leaks", () => {
  it("5 boot/close cycles with a COW root, mounts and a network policy leave no VMM, fd, socket, goroutine or temp file", async (t) => {
    // scripts/soak.mjs runs 100 of these cycles for the figures.
    await soakCycle(0); // warm-up: the netstack's and runtime's own fds and goroutines stay
    const before = await hostCounters();
    for (let i = 1; i <= 5; i++) {
      // A guest starved past its 5 s shutdown grace fails close(), and leaves nothing either.
      const closeError = await soakCycle(i);
      if (closeError !== undefined) t.diagnostic(`cycle ${i}: close() failed: ${closeError.message}`);
    }
    let after;
    await eventually(async () => {
      after = await hostCounters();
      return after.goroutines <= before.goroutines && after.fds <= before.fds;
    }, 5000, "the addon's goroutines and fds to end");
    const { rssMiB: _b, ...counted } = before;
    const { rssMiB: _a, ...left } = after;
    assert.deepEqual(left, counted);
  });
});

// The two hang cases wait out the same 30 s bound: they run at once.
describe("block store faults", { concurrency: true }, () => {
  const cow = (store) => defineSandbox({ rootfs: rootfs.cow({ base, writable: store }) });
  after(() => assert.deepEqual(childProcesses(), [], "no VMM left running"));

  it("rejects close() when flush() fails, and the store keeps its last flushed state", async () => {
    const store = new MemoryBlockStore();
    const lane = await cow(store).boot();
    await lane.exec("sh", ["-c", "echo kept > /root/kept && sync"]);
    const flushed = store.snapshot();
    const realFlush = store.flush.bind(store);
    store.flush = async () => {
      throw new Error("injected flush failure: the bucket said 503");
    };
    await lane.exec("sh", ["-c", "echo lost > /root/lost"]);
    await assert.rejects(lane.close(), (err) => {
      assert.equal(err.code, "ERR_SANDBOX_BLOCK_STORE");
      assert.match(err.message, /not persisted: .*block store flush\(\) failed: injected flush failure/);
      return true;
    });
    assert.deepEqual(store.snapshot(), flushed);
    store.flush = realFlush;
  });

  for (const call of ["write", "flush"]) {
    it(`rejects close() within a bound when ${call}() hangs, keeps the store claimed until it answers, and never persists past the last flush`, async () => {
      const store = new MemoryBlockStore();
      const lane = await cow(store).boot();
      await lane.exec("sh", ["-c", "echo kept > /root/kept && sync"]);
      const flushed = store.snapshot();
      const real = store[call].bind(store);
      let answer;
      store[call] = (...args) =>
        new Promise((resolve, reject) => {
          answer = () => real(...args).then(resolve, reject);
        });
      // The guest's sync reaches the hung call before close() begins.
      await lane.exec("sh", ["-c", "echo lost > /root/lost"]);
      (await lane.spawn("sync")).exit.catch(() => {});
      await eventually(() => answer !== undefined, 30_000, `the guest's sync to reach ${call}()`);
      const closing = Date.now();
      await assert.rejects(lane.close(), (err) => {
        assert.equal(err.code, "ERR_SANDBOX_BLOCK_STORE", err.message);
        assert.match(err.message, new RegExp(`block store ${call}\\(\\) did not answer`));
        return true;
      });
      const took = Date.now() - closing;
      assert.ok(took < 60_000, `close() took ${took} ms`);
      // Until the hung call answers, a write could still land: the store stays claimed.
      await assert.rejects(cow(store).boot(), (err) => err.code === "ERR_SANDBOX_STORE_IN_USE");
      store[call] = real;
      answer();
      if (call === "write") {
        await new Promise((resolve) => setTimeout(resolve, 500));
        assert.deepEqual(store.snapshot(), flushed, "no flush() followed the late write()");
      }
      // Once it answered the store is free, and holds a state the guest
      // flushed: no flush() followed the late write(); a late flush()
      // completes the guest's own last sync.
      let next;
      await eventually(async () => {
        try {
          next = await cow(store).boot();
          return true;
        } catch (err) {
          if (err.code !== "ERR_SANDBOX_STORE_IN_USE") throw err;
          return false;
        }
      }, 60_000, "the store to be released");
      try {
        const r = await next.exec("sh", ["-c", "cat /root/kept; test -e /root/lost && echo lost || echo no-lost"]);
        // The late flush() commits whichever sync it was: before or after "lost".
        assert.match(r.stdout, call === "write" ? /^kept\nno-lost\n$/ : /^kept\n(no-)?lost\n$/);
      } finally {
        await next.close();
      }
    });
  }
});

describe("the host process exits with sandboxes running", () => {
  for (const how of ["exit", "sigterm"]) {
    it(`leaves no VMM and no temp file behind (${how})`, async () => {
      const tmp = mkdtempSync(join(tmpdir(), "faults-exit-"));
      try {
        const script = fileURLToPath(new URL("./fixtures/exit-with-sandboxes.mjs", import.meta.url));
        const child = spawnProcess(process.execPath, [script, how], {
          stdio: ["ignore", "pipe", "pipe"],
          env: { ...process.env, TMPDIR: tmp },
        });
        let out = "";
        child.stdout.on("data", (d) => (out += d));
        child.stderr.resume();
        const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
        await eventually(() => out.includes("\n") || child.exitCode !== null, 300_000, "the sandboxes to run");
        const { vmms } = JSON.parse(out);
        assert.equal(vmms.length, how === "exit" ? 2 : 1, "the sandboxes ran");
        if (how === "sigterm") child.kill("SIGTERM");
        const status = await exited;
        const exitedAt = Date.now();
        if (how === "exit") assert.deepEqual(status, { code: 0, signal: null });
        await eventually(() => vmms.every((pid) => !processAlive(pid)), 3000, "the VMMs to die with their host");
        assert.ok(Date.now() - exitedAt < 3000);
        assert.deepEqual(readdirSync(tmp), [], "the host left temp files");
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    });
  }
});

function readOr(path) {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

function processAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
