// SandboxInstance and boot over a FakeNativeAddon: native requests, spawn
// streaming and backpressure, close idempotence, post-close and post-VMM-exit
// errors. The fake stands in for sandbox.node; no VM runs here.

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { bootSandbox, type SandboxPlan } from "../../src/boot.js";
import { checkBootOptions } from "../../src/boot-options.js";
import { NativeSandboxInstance } from "../../src/instance.js";
import { fs, network, rootfs, type SandboxInstance } from "../../src/index.js";
import type { NativeEventHandler } from "../../src/native.js";
import { PAUSE_THRESHOLD_BYTES } from "../../src/output-stream.js";
import { readSettings } from "../../src/settings.js";
import { codedFailure, FakeNativeAddon } from "./fake-native-addon.js";

const encoder = new TextEncoder();
const settledWithin = async (promise: Promise<unknown>, ms = 20) =>
  Promise.race([promise.then(() => true, () => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms))]);
const decoder = new TextDecoder();

function instance(addon: FakeNativeAddon, cwd?: string): SandboxInstance {
  return new NativeSandboxInstance(addon, 7, cwd);
}

async function collect(stream: AsyncIterable<Uint8Array>): Promise<string> {
  let text = "";
  for await (const piece of stream) text += decoder.decode(piece, { stream: true });
  return text;
}

const isClosedError = (error: Error & { code?: string }) =>
  error.code === "ERR_SANDBOX_CLOSED" && error.message === "sandbox control is closed";

/** The request 0.6.0's `cd` then `exec` makes of a command run in `cwd`. */
const inCwd = (method: "exec" | "spawn", cwd: string, command: string, args: string[], env: Record<string, string> = {}) => ({
  id: 7,
  command: "/bin/sh",
  args: ["-lc", 'cd "$SANDBOX_EXEC_CWD" && exec "$@"', `sandbox-${method}`, command, ...args],
  cwd: "/",
  env: { ...env, SANDBOX_EXEC_CWD: cwd, PWD: cwd },
});

describe("exec", () => {
  test("a cwd (the call's, else the boot's) runs the command as 0.6.0 did: cd, then exec, in a login shell", async () => {
    const addon = new FakeNativeAddon({ exec: () => ({ exitCode: 3, stdout: "out", stderr: "err" }) });
    const lane = instance(addon, "/workspace");
    assert.deepEqual(await lane.exec("cat", ["hello.txt"]), { exitCode: 3, stdout: "out", stderr: "err" });
    await lane.exec("npm", ["test"], { cwd: "/srv", env: { CI: "1" } });
    await lane.exec("ls", [], { cwd: "tmp" });
    assert.deepEqual(addon.callsOf("exec"), [
      inCwd("exec", "/workspace", "cat", ["hello.txt"]),
      inCwd("exec", "/srv", "npm", ["test"], { CI: "1" }),
      inCwd("exec", "tmp", "ls", []), // relative: the shell starts in "/"
    ]);
  });

  test("without any cwd the command runs as is, from /, with only the call's env", async () => {
    const addon = new FakeNativeAddon({ exec: () => ({ exitCode: 0, stdout: "", stderr: "" }) });
    await instance(addon).exec("pwd", ["-P"], { env: { A: "1" } });
    assert.deepEqual(addon.callsOf("exec"), [{ id: 7, command: "pwd", args: ["-P"], cwd: "/", env: { A: "1" } }]);
  });

  test("bad arguments reject without reaching native code", async () => {
    const addon = new FakeNativeAddon();
    const lane = instance(addon);
    const cases: [unknown[], RegExp][] = [
      [["", []], /command must be a non-empty string/],
      [["ls", "-l"], /args must be an array of strings/],
      [["ls", ["a\0b"]], /args must be an array of strings without NUL/],
      [["ls", [], { cwd: 3 }], /cwd must be a string without NUL/],
      [["ls", [], { env: { "A=B": "1" } }], /env name "A=B" must be non-empty, without "="/],
      [["ls", [], { env: { "": "1" } }], /env name "" must be non-empty/],
      [["ls", [], { env: { A: 1 } }], /env A must be a string/],
      [["ls", [], { env: { A: "x\0" } }], /env A must be a string without NUL/],
      [["ls", [], { env: ["A=1"] }], /env must be an object/],
    ];
    for (const [args, reason] of cases) {
      await assert.rejects((lane.exec as (...a: unknown[]) => Promise<unknown>)(...args), (error: Error) => {
        assert.match(error.message, /^invalid sandbox exec call: /);
        assert.match(error.message, reason);
        return true;
      });
    }
    await assert.rejects(lane.spawn("ls", [], { cwd: "x\0" }), /^Error: invalid sandbox spawn call: cwd/);
    assert.equal(addon.calls.length, 0);
  });

  test("a malformed native answer is a protocol error", async () => {
    const lane = instance(new FakeNativeAddon({ exec: () => ({ exitCode: "0" }) }));
    await assert.rejects(lane.exec("true"), { code: "ERR_SANDBOX_PROTOCOL" });
  });
});

const STARTED: [string, Uint8Array] = ["started", new Uint8Array()];

/**
 * A spawn responder that reports the process started, emits `events`
 * (awaiting each handler result), then exits with `exitCode`.
 */
function emits(events: [string, Uint8Array][], exitCode = 0, progress?: { delivered: number }, outputMayStart?: Promise<void>) {
  return async (_payload: unknown, handler?: NativeEventHandler) => {
    await handler?.(...STARTED);
    await outputMayStart;
    for (const [event, payload] of events) {
      await handler?.(event, payload);
      if (progress) progress.delivered += 1;
    }
    return { exitCode };
  };
}

describe("spawn", () => {
  test("streams stdout and stderr chunks and resolves exit", async () => {
    const addon = new FakeNativeAddon({
      spawn: emits([
        ["stdout", encoder.encode("hel")],
        ["stderr", encoder.encode("warn")],
        ["stdout", encoder.encode("lo")],
        ["progress", encoder.encode("ignored: unknown event")],
      ], 5),
    });
    const child = await instance(addon, "/workspace").spawn("sh", ["-c", "x"], { env: { A: "1" } });
    const [stdout, stderr, exit] = await Promise.all([collect(child.stdout), collect(child.stderr), child.exit]);
    assert.deepEqual([stdout, stderr, exit], ["hello", "warn", { exitCode: 5 }]);
    assert.deepEqual(addon.callsOf("spawn")[0], inCwd("spawn", "/workspace", "sh", ["-c", "x"], { A: "1" }));
  });

  test("spawn() resolves once the process has started, not before", async () => {
    let start: () => void = () => undefined;
    const mayStart = new Promise<void>((resolve) => { start = resolve; });
    const addon = new FakeNativeAddon({
      spawn: async (_payload, handler) => {
        await mayStart;
        await handler?.(...STARTED);
        await new Promise(() => undefined); // runs for ever
        return {};
      },
    });
    const spawning = instance(addon).spawn("sleep", ["inf"]);
    assert.equal(await settledWithin(spawning), false, "not started yet");
    start();
    assert.equal(await settledWithin(spawning), true);
  });

  test("a command that cannot start resolves spawn() with exit 127; a process lost before starting rejects it", async () => {
    const child = await instance(new FakeNativeAddon({
      spawn: async (_payload, handler) => {
        await handler?.("stderr", encoder.encode("sandbox: cannot start"));
        return { exitCode: 127 };
      },
    })).spawn("nope");
    assert.deepEqual(await child.exit, { exitCode: 127 });
    assert.equal(await collect(child.stderr), "sandbox: cannot start");
    const lost = codedFailure("ERR_SANDBOX_VMM_EXITED", "vmm exited");
    await assert.rejects(instance(new FakeNativeAddon({ spawn: () => { throw lost; } })).spawn("x"), (error) => error === lost);
  });

  test("streams can be iterated again, and break discards nothing", async () => {
    const events: [string, Uint8Array][] = ["a", "b", "c", "d"].map((text) => ["stdout", encoder.encode(text)]);
    const child = await instance(new FakeNativeAddon({ spawn: emits(events, 0) })).spawn("x");
    await child.exit; // everything is buffered now
    let first = "";
    for await (const piece of child.stdout) {
      first += decoder.decode(piece);
      if (first.length === 2) break;
    }
    assert.equal(first, "ab");
    assert.equal(await collect(child.stdout), "cd", "a new loop goes on where the last one stopped");
    assert.equal(await collect(child.stdout), "", "and a third one finds the end");
  });

  test("exit settles for a caller that reads neither stream, however much output there is", async () => {
    const big = new Uint8Array(PAUSE_THRESHOLD_BYTES);
    const events: [string, Uint8Array][] = [];
    for (let index = 0; index < 4; index += 1) events.push(["stdout", big], ["stderr", big]);
    const child = await instance(new FakeNativeAddon({ spawn: emits(events, 0) })).spawn("yes");
    assert.deepEqual(await child.exit, { exitCode: 0 });
  });

  test("exit settles for a caller that reads stdout to the end before looking at stderr", async () => {
    const big = new Uint8Array(PAUSE_THRESHOLD_BYTES);
    const events: [string, Uint8Array][] = [["stderr", big], ["stderr", big], ["stdout", encoder.encode("done")], ["stderr", big]];
    const child = await instance(new FakeNativeAddon({ spawn: emits(events, 0) })).spawn("x");
    assert.equal(await collect(child.stdout), "done");
    assert.equal((await collect(child.stderr)).length, 3 * PAUSE_THRESHOLD_BYTES);
    assert.deepEqual(await child.exit, { exitCode: 0 });
  });

  test("a stream being read pauses the process while its unread output is over 1 MiB", async () => {
    const big = new Uint8Array(PAUSE_THRESHOLD_BYTES);
    const progress = { delivered: 0 };
    const events: [string, Uint8Array][] = [["stdout", big], ["stdout", big], ["stdout", big], ["stdout", big]];
    let startOutput: () => void = () => undefined;
    const outputMayStart = new Promise<void>((resolve) => { startOutput = resolve; });
    const addon = new FakeNativeAddon({ spawn: emits(events, 0, progress, outputMayStart) });
    const child = await instance(addon).spawn("x");
    const reader = child.stdout[Symbol.asyncIterator]();
    const first = reader.next(); // reading starts before any output
    startOutput();
    await first; // chunk 1 went straight to the reader; chunk 2 fills the buffer to 1 MiB
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(progress.delivered, 2, "chunk 3 took the unread output over 1 MiB: the process waits");
    let total = 0;
    for (let step = await reader.next(); !step.done; step = await reader.next()) total += step.value.length;
    assert.equal(total, 3 * PAUSE_THRESHOLD_BYTES);
    assert.deepEqual(await child.exit, { exitCode: 0 });
  });

  test("a lost process rejects exit and fails the streams with the native error", async () => {
    const lost = codedFailure("ERR_SANDBOX_VMM_EXITED", "vmm exited with status 1");
    const addon = new FakeNativeAddon({
      spawn: async (_payload, handler) => {
        await handler?.(...STARTED);
        await handler?.("stdout", encoder.encode("partial"));
        throw lost;
      },
    });
    const child = await instance(addon).spawn("x");
    const reader = child.stdout[Symbol.asyncIterator]();
    assert.equal(decoder.decode((await reader.next()).value), "partial");
    await assert.rejects(reader.next(), (error) => error === lost);
    await assert.rejects(child.exit, (error) => error === lost);
  });
});

describe("close", () => {
  test("close is idempotent: one native close, later calls resolve with it", async () => {
    const addon = new FakeNativeAddon();
    const lane = instance(addon);
    const first = lane.close();
    await Promise.all([first, lane.close(), lane[Symbol.asyncDispose]()]);
    assert.deepEqual(addon.callsOf("close"), [{ id: 7 }]);
  });

  test("every call after close, or while closing, rejects with ERR_SANDBOX_CLOSED", async () => {
    let finishClose: () => void = () => undefined;
    const addon = new FakeNativeAddon({
      close: () => new Promise<object>((resolve) => { finishClose = () => resolve({}); }),
      exec: () => ({ exitCode: 0, stdout: "", stderr: "" }),
    });
    const lane = instance(addon);
    const closing = lane.close();
    await assert.rejects(lane.exec("true"), isClosedError);
    finishClose();
    await closing;
    await assert.rejects(lane.exec("true"), isClosedError);
    await assert.rejects(lane.spawn("true"), isClosedError);
    assert.equal(addon.callsOf("exec").length, 0);
  });

  test("a failing native close rejects the first close(); a second one resolves, as in 0.6.0", async () => {
    const failure = codedFailure("ERR_SANDBOX_ENGINE", "flush failed");
    const addon = new FakeNativeAddon({ close: () => { throw failure; } });
    const lane = instance(addon);
    await assert.rejects(lane.close(), (error) => error === failure);
    await lane.close();
    await lane[Symbol.asyncDispose]();
    assert.equal(addon.callsOf("close").length, 1);
    await assert.rejects(lane.exec("true"), isClosedError);
  });

  test("`await using` closes the instance at the end of the block", async () => {
    const addon = new FakeNativeAddon();
    {
      await using lane = instance(addon);
      assert.ok(lane);
    }
    assert.equal(addon.callsOf("close").length, 1);
  });
});

describe("VMM exit", () => {
  test("after a native call reports the VMM died, later calls reject with that same error", async () => {
    const died = codedFailure("ERR_SANDBOX_VMM_EXITED", "vmm exited: signal 9; console tail: ...");
    const addon = new FakeNativeAddon({ exec: () => { throw died; } });
    const lane = instance(addon);
    await assert.rejects(lane.exec("true"), (error) => error === died);
    await assert.rejects(lane.exec("true"), (error) => error === died);
    await assert.rejects(lane.spawn("true"), (error) => error === died);
    assert.equal(addon.callsOf("exec").length, 1, "later calls never reached native code");
    await lane.close();
    await assert.rejects(lane.exec("true"), isClosedError);
  });

  test("other native errors pass through unchanged and do not poison the instance", async () => {
    const timeout = codedFailure("ERR_SANDBOX_ENGINE", "exec failed");
    let calls = 0;
    const lane = instance(new FakeNativeAddon({
      exec: () => {
        calls += 1;
        if (calls === 1) throw timeout;
        return { exitCode: 0, stdout: "", stderr: "" };
      },
    }));
    await assert.rejects(lane.exec("true"), (error) => error === timeout);
    assert.equal((await lane.exec("true")).exitCode, 0);
  });
});

describe("boot request", () => {
  const SHA = "ab".repeat(32);
  function platformDirectory(catalog: object): string {
    const directory = mkdtempSync(join(tmpdir(), "sandbox-boot-"));
    mkdirSync(join(directory, "artifacts/kernel"), { recursive: true });
    mkdirSync(join(directory, "artifacts/images"), { recursive: true });
    writeFileSync(join(directory, "artifacts/kernel/vmlinux"), "");
    writeFileSync(join(directory, "artifacts/kernel/initrd.cpio"), "");
    writeFileSync(join(directory, "artifacts/images/debian-13-slim.qcow2"), "");
    writeFileSync(join(directory, "artifacts/images/catalog.json"), JSON.stringify(catalog));
    return directory;
  }
  const debian = {
    "debian:13-slim": { file: "debian-13-slim.qcow2", format: "qcow2", sha256: SHA, virtualSizeBytes: 2 ** 30, platform: "linux", arch: "x64" },
  };
  const plan = (overrides: Partial<SandboxPlan> = {}): SandboxPlan =>
    ({ rootfs: rootfs.builtIn("debian:13-slim"), cpus: 2, memoryMiB: 1024, network: undefined, ...overrides });

  /** Runs `f` with NODE_EXTRA_CA_CERTS set to `value` (or unset), restoring it after. */
  test("carries artifacts, resources, mounts, network and the settings", async () => {
    const directory = platformDirectory(debian);
    const addon = new FakeNativeAddon({ exec: () => ({ exitCode: 0, stdout: "", stderr: "" }) });
    const options = checkBootOptions({ mounts: { "/workspace/": fs.virtual(fs.memory()), "/mnt": fs.virtual(fs.memory()) }, cwd: "/workspace" });
    const settings = readSettings({ NODE_EXTRA_CA_CERTS: "/tmp/extra-ca.pem", SANDBOX_CONSOLE_OUTPUT: "/tmp/console.log", HOME: "/h" });
    const lane = await bootSandbox({ addon, directory, imageDirectories: [] }, plan({ network: network.policy(() => undefined) }), options, settings);
    assert.deepEqual(addon.callsOf("boot")[0], {
      kernel: join(directory, "artifacts/kernel/vmlinux"),
      initrd: join(directory, "artifacts/kernel/initrd.cpio"),
      rootDisk: {
        path: join(directory, "artifacts/images/debian-13-slim.qcow2"),
        format: "qcow2",
        readOnly: true,
      },
      cpus: 2,
      memoryMiB: 1024,
      mounts: [{ path: "/mnt", access: "posix" }, { path: "/workspace", access: "posix" }],
      network: true,
      settings,
    });
    await lane.exec("pwd");
    assert.deepEqual(addon.callsOf("exec")[0], inCwd("exec", "/workspace", "pwd", []));
  });

  test("no network policy means no NIC; no console output unless asked", async () => {
    const addon = new FakeNativeAddon();
    await bootSandbox({ addon, directory: platformDirectory(debian), imageDirectories: [] }, plan(), checkBootOptions(undefined), readSettings({ HOME: "/h" }));
    const request = addon.callsOf("boot")[0] ?? {};
    assert.equal(request.network, false);
    assert.equal((request.settings as { consoleOutput?: unknown }).consoleOutput, "");
    assert.deepEqual(request.mounts, []);
  });

  test("a built-in missing from the installed catalog names the recipe", async () => {
    const directory = platformDirectory(debian);
    await assert.rejects(
      bootSandbox({ addon: new FakeNativeAddon(), directory, imageDirectories: [] }, plan({ rootfs: rootfs.builtIn("alpine:3.23") }), checkBootOptions(undefined)),
      {
        code: "ERR_SANDBOX_ROOTFS_NOT_INSTALLED",
        message: `built-in rootfs "alpine:3.23" is not installed in ${directory}: build it with its recipe (images/alpine-3.23) or install a platform package that ships it; rootfs.builtIn("debian:13") has the same agent tool set (bash, git, node, npm, python3, pip, gh, ripgrep, jq, ffmpeg, imagemagick, poppler-utils, exiftool) and is built by images/debian-13`,
      },
    );
  });

  test("a COW root asks for a writable disk over its base's image", async () => {
    const writable = { blockSize: 4096, list: async () => [], read: async () => [], write: async () => undefined };
    const addon = new FakeNativeAddon();
    const cow = rootfs.cow({ base: rootfs.builtIn("debian:13-slim"), writable });
    const directory = platformDirectory(debian);
    await bootSandbox({ addon, directory, imageDirectories: [] }, plan({ rootfs: cow }), checkBootOptions(undefined));
    const rootDisk = addon.callsOf("boot")[0]?.rootDisk as { readOnly: boolean; path: string };
    assert.equal(rootDisk.readOnly, false);
    assert.equal(rootDisk.path, join(directory, "artifacts/images/debian-13-slim.qcow2"));
  });

  test("native boot errors pass through; a bad boot answer is a protocol error", async () => {
    const timeout = codedFailure("ERR_SANDBOX_BOOT_TIMEOUT", "guest did not report ready");
    const directory = platformDirectory(debian);
    await assert.rejects(
      bootSandbox({ addon: new FakeNativeAddon({ boot: () => { throw timeout; } }), directory, imageDirectories: [] }, plan(), checkBootOptions(undefined)),
      (error) => error === timeout,
    );
    await assert.rejects(
      bootSandbox({ addon: new FakeNativeAddon({ boot: () => ({ id: "7" }) }), directory, imageDirectories: [] }, plan(), checkBootOptions(undefined)),
      { code: "ERR_SANDBOX_PROTOCOL" },
    );
  });
});
