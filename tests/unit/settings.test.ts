// src/settings.ts: every setting is read from the environment given (by
// default process.env) at the moment of the call, and boot() sends the
// settings of its own call. The addon's side is native/settings.

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { bootSandbox, type SandboxPlan } from "../../src/boot.js";
import { checkBootOptions } from "../../src/boot-options.js";
import { rootfs } from "../../src/index.js";
import { platformDirectoryOverride, readSettings, SETTING_VARIABLES } from "../../src/settings.js";
import { FakeNativeAddon } from "./fake-native-addon.js";

describe("readSettings", () => {
  test("maps each variable; unset ones are empty", () => {
    const env: NodeJS.ProcessEnv = {
      SANDBOX_ENGINE: "krun",
      SANDBOX_ACCEL: "tcg",
      SANDBOX_QEMU: "/q",
      SANDBOX_LIBKRUN: "/l",
      SANDBOX_KRUN_HELPER: "/h",
      SANDBOX_BOOT_TIMEOUT_MS: "1500",
      SANDBOX_CONSOLE_OUTPUT: "/c.log",
      SANDBOX_DEBUG: "1",
      SANDBOX_CACHE_DIR: "/cache",
      NODE_EXTRA_CA_CERTS: "/ca.pem",
      TMPDIR: "/scratch/",
      PATH: "/bin",
      OTHER: "x",
    };
    const defined = { ...env };
    Object.assign(env, { UNSET: undefined });
    assert.deepEqual(readSettings(env), {
      engine: "krun",
      accel: "tcg",
      qemu: "/q",
      libkrun: "/l",
      krunHelper: "/h",
      bootTimeoutMs: "1500",
      consoleOutput: "/c.log",
      debug: "1",
      cacheDir: "/cache",
      extraCaCerts: "/ca.pem",
      tmpdir: "/scratch",
      path: "/bin",
      env: defined,
    });
    const empty = readSettings({ HOME: "/home/u" });
    assert.equal(empty.engine, "");
    assert.equal(empty.bootTimeoutMs, "");
    assert.equal(empty.path, "");
    assert.equal(empty.tmpdir, "/tmp");
  });

  test("cache directory: SANDBOX_CACHE_DIR, else XDG_CACHE_HOME, else HOME/.cache", () => {
    assert.equal(readSettings({ SANDBOX_CACHE_DIR: "/c", XDG_CACHE_HOME: "/x", HOME: "/h" }).cacheDir, "/c");
    assert.equal(readSettings({ XDG_CACHE_HOME: "/x", HOME: "/h" }).cacheDir, "/x/torkbot-sandbox");
    assert.equal(readSettings({ HOME: "/h" }).cacheDir, "/h/.cache/torkbot-sandbox");
    assert.equal(readSettings({}).cacheDir, join(homedir(), ".cache/torkbot-sandbox"));
  });

  test("temp directory: os.tmpdir()'s rule on the given environment", () => {
    assert.equal(readSettings({ TMP: "/t1", TEMP: "/t2" }).tmpdir, "/t1");
    assert.equal(readSettings({ TEMP: "/t2" }).tmpdir, "/t2");
    assert.equal(readSettings({ TMPDIR: "/" }).tmpdir, "/");
    assert.equal(readSettings().tmpdir, tmpdir());
  });

  test("process.env is read at each call, not once", () => {
    const saved = process.env.SANDBOX_ENGINE;
    try {
      process.env.SANDBOX_ENGINE = "qemu";
      assert.equal(readSettings().engine, "qemu");
      process.env.SANDBOX_ENGINE = "krun";
      assert.equal(readSettings().engine, "krun");
      assert.equal(readSettings().env.SANDBOX_ENGINE, "krun");
      process.env.SANDBOX_PLATFORM_DIR = "/p";
      assert.equal(platformDirectoryOverride(), "/p");
    } finally {
      if (saved === undefined) delete process.env.SANDBOX_ENGINE;
      else process.env.SANDBOX_ENGINE = saved;
      delete process.env.SANDBOX_PLATFORM_DIR;
    }
  });

  test("docs/settings.md documents every variable", () => {
    const docs = readFileSync(fileURLToPath(new URL("../../../docs/settings.md", import.meta.url)), "utf8");
    for (const name of [...SETTING_VARIABLES, "SANDBOX_PLATFORM_DIR"]) assert.match(docs, new RegExp(`\`${name}\``), name);
  });
});

describe("boot() sends the settings of its own call", () => {
  const directory = mkdtempSync(join(tmpdir(), "sandbox-settings-"));
  after(() => rmSync(directory, { recursive: true, force: true }));
  mkdirSync(join(directory, "artifacts/kernel"), { recursive: true });
  mkdirSync(join(directory, "artifacts/images"), { recursive: true });
  for (const file of ["kernel/vmlinux", "kernel/initrd.cpio", "images/debian-13-slim.qcow2"]) writeFileSync(join(directory, "artifacts", file), "");
  writeFileSync(
    join(directory, "artifacts/images/catalog.json"),
    JSON.stringify({ "debian:13-slim": { file: "debian-13-slim.qcow2", format: "qcow2", sha256: "0".repeat(64), virtualSizeBytes: 2 ** 30, platform: "linux", arch: "x64" } }),
  );
  const plan: SandboxPlan = { rootfs: rootfs.builtIn("debian:13-slim"), cpus: 1, memoryMiB: 512, network: undefined };

  test("a variable changed between two boots reaches the second", async () => {
    const addon = new FakeNativeAddon();
    const saved = process.env.SANDBOX_CONSOLE_OUTPUT;
    try {
      delete process.env.SANDBOX_CONSOLE_OUTPUT;
      await (await bootSandbox({ addon, directory, imageDirectories: [] }, plan, checkBootOptions(undefined))).close();
      process.env.SANDBOX_CONSOLE_OUTPUT = "/tmp/console.log";
      await (await bootSandbox({ addon, directory, imageDirectories: [] }, plan, checkBootOptions(undefined))).close();
    } finally {
      if (saved === undefined) delete process.env.SANDBOX_CONSOLE_OUTPUT;
      else process.env.SANDBOX_CONSOLE_OUTPUT = saved;
    }
    const [first, second] = addon.callsOf("boot").map((request) => request.settings as Record<string, unknown>);
    assert.equal(first?.consoleOutput, "");
    assert.equal(second?.consoleOutput, "/tmp/console.log");
    assert.equal((second?.env as Record<string, string>).SANDBOX_CONSOLE_OUTPUT, "/tmp/console.log");
    assert.equal(second?.path, process.env.PATH ?? "");
  });
});
