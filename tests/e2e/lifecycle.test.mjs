// Boot, close and failure paths of real VMs: what is left behind, how a dead
// VMM is reported, and what a closed sandbox answers.
import assert from "node:assert/strict";
import { spawn as spawnProcess } from "node:child_process";
import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { defineSandbox, rootfs } from "@torkbot/sandbox";
import { childProcesses, eventually, openFds } from "./helpers.mjs";

const debian = defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") });

describe("sandbox lifecycle", () => {
  it("closes idempotently and rejects every call after close", async () => {
    const lane = await debian.boot();
    const first = lane.close();
    const second = lane.close();
    await Promise.all([first, second]);
    await lane.close();
    await lane[Symbol.asyncDispose]();
    for (const call of [() => lane.exec("true"), () => lane.spawn("true")]) {
      await assert.rejects(call(), (err) => {
        assert.equal(err.code, "ERR_SANDBOX_CLOSED");
        assert.equal(err.message, "sandbox control is closed"); // 0.6.0's text
        return true;
      });
    }
    assert.deepEqual(childProcesses(), []);
  });

  it("has a read-only built-in root, a writable /tmp and the hostname sandbox", async () => {
    const lane = await debian.boot();
    const r = await lane.exec("sh", ["-c", "hostname; touch /etc/x 2>&1; echo $?; touch /tmp/x && echo tmp-ok; ls -d /workspace /mnt"]);
    await lane.close();
    assert.match(r.stdout, /^sandbox\n/);
    assert.match(r.stdout, /Read-only file system\n1\n/);
    assert.match(r.stdout, /tmp-ok\n\/mnt\n\/workspace\n$/);
  });

  it("rejects pending and later calls when the VMM is killed, with the console tail", async () => {
    const lane = await debian.boot();
    const [vmm] = childProcesses();
    assert.ok(vmm, "the VMM is a child process of this one");
    const pending = lane.exec("sleep", ["30"]);
    await new Promise((r) => setTimeout(r, 300));
    const killedAt = Date.now();
    process.kill(vmm, "SIGKILL");
    await assert.rejects(pending, (err) => {
      assert.equal(err.code, "ERR_SANDBOX_VMM_EXITED");
      assert.match(err.message, /^sandbox-host exited: .*signal: killed/); // 0.6.0's words first
      assert.match(err.message, /last guest console output/);
      assert.match(err.message, /sandbox-init/, "the guest console tail is in the message");
      return true;
    });
    assert.ok(Date.now() - killedAt < 1000, `rejected ${Date.now() - killedAt} ms after the kill`);
    await assert.rejects(lane.exec("true"), (err) => err.code === "ERR_SANDBOX_VMM_EXITED");
    await lane.close();
    assert.deepEqual(childProcesses(), []);
  });

  it("leaves no process, fd or temp file behind after 20 boot/close cycles", async () => {
    const tmpBefore = new Set(readdirSync(tmpdir()));
    // One warm-up cycle: the first boot loads the addon and starts the Go
    // runtime, whose fds (the bridge's wakeup pipe, epoll) stay for the life of the process.
    await (await debian.boot()).close();
    const fdsBefore = openFds();
    for (let i = 0; i < 20; i++) {
      const lane = await debian.boot();
      assert.equal((await lane.exec("echo", [String(i)])).stdout, `${i}\n`);
      await lane.close();
    }
    assert.deepEqual(childProcesses(), []);
    await eventually(() => openFds().size <= fdsBefore.size, 2000, "fds to be released");
    assert.deepEqual([...openFds().keys()].sort(), [...fdsBefore.keys()].sort());
    const tmpAfter = readdirSync(tmpdir()).filter((f) => !tmpBefore.has(f));
    assert.deepEqual(tmpAfter, []);
  });

  it("rejects a boot that does not become ready in time and leaves no VMM behind", async () => {
    // The timeout is read when the addon loads, so it runs in its own process.
    const { code, message, elapsedMs, vmms } = JSON.parse(
      await runFixture("boot-timeout.mjs", { SANDBOX_BOOT_TIMEOUT_MS: "300" }),
    );
    assert.equal(code, "ERR_SANDBOX_BOOT_TIMEOUT");
    assert.match(message, /did not become ready within 300ms/);
    assert.match(message, /last guest console output/);
    assert.ok(elapsedMs < 10_000, `boot() took ${elapsedMs} ms to give up`);
    assert.deepEqual(vmms, []);
  });

  it("rejects a built-in image that is not installed, saying how to get it", async () => {
    const alpine = defineSandbox({ rootfs: rootfs.builtIn("alpine:3.23") });
    await assert.rejects(alpine.boot(), /alpine:3\.23.*not installed/s);
  });

  it("survives a worker thread that is terminated while its sandbox runs", async () => {
    const worker = new Worker(fileURLToPath(new URL("./fixtures/worker-boot.mjs", import.meta.url)));
    const ready = await new Promise((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
    assert.equal(ready, "running");
    assert.equal(childProcesses().length, 1);
    await worker.terminate();
    await eventually(() => childProcesses().length === 0, 5000, "the worker's VMM to exit");
    // The addon still serves this thread.
    const lane = await debian.boot();
    assert.equal((await lane.exec("echo", ["main"])).stdout, "main\n");
    await lane.close();
  });

  it("lets an idle process exit by itself, taking its VMM down", async () => {
    const { vmmPid, stdout } = JSON.parse(await runFixture("forgetful-boot.mjs"));
    assert.equal(stdout, "hi\n");
    await eventually(() => !processExists(vmmPid), 3000, `VMM ${vmmPid} to exit with its parent`);
  });
});

/** Runs a fixture script in a fresh Node process; resolves with its stdout once it exits 0. */
async function runFixture(name, env = {}) {
  const script = fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
  const child = spawnProcess(process.execPath, [script], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...env },
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const code = await new Promise((resolve) => child.on("exit", resolve));
  assert.equal(code, 0, `${name} exited with ${code}`);
  return out;
}

function processExists(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
