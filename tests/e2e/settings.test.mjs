// Settings follow process.env at each boot() (docs/settings.md): in one Node
// process, with the addon already loaded, a variable changed between two
// boots takes effect at the second. The addon's Go runtime kept the
// environment of the moment it was loaded; these tests fail if any setting
// is read from that copy instead of from the boot request.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { defineSandbox, rootfs } from "@torkbot/sandbox";
import { childProcesses } from "./helpers.mjs";

const debian = defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") });

/** Boots, runs f on the sandbox, and closes it. */
async function withSandbox(f) {
  const lane = await debian.boot();
  try {
    return await f(lane);
  } finally {
    await lane.close();
  }
}

/** Runs f with the variables of `vars` set (undefined: unset), then restores them. */
async function withEnv(vars, f) {
  const saved = Object.fromEntries(Object.keys(vars).map((name) => [name, process.env[name]]));
  const apply = (values) => {
    for (const [name, value] of Object.entries(values)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
  apply(vars);
  try {
    return await f();
  } finally {
    apply(saved);
  }
}

describe("settings changed in-process apply to the next boot", () => {
  let dir;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "sandbox-settings-e2e-"));
    // The first boot loads the addon: every change below comes after it.
    await withEnv({ SANDBOX_ENGINE: undefined, SANDBOX_CONSOLE_OUTPUT: undefined }, async () => {
      await withSandbox(async (lane) => assert.equal((await lane.exec("true")).exitCode, 0));
    });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("SANDBOX_ENGINE=krun without libkrun: the libkrun error, then QEMU again once unset", async () => {
    await withEnv({ SANDBOX_ENGINE: "krun", SANDBOX_LIBKRUN: join(dir, "no-libkrun.so.1") }, async () => {
      await assert.rejects(debian.boot(), (error) => {
        assert.equal(error.code, "ERR_SANDBOX_ENGINE");
        assert.match(error.message, /SANDBOX_ENGINE=krun: krun: /);
        assert.match(error.message, /no-libkrun\.so\.1/);
        return true;
      });
    });
    await withEnv({ SANDBOX_ENGINE: undefined }, async () => {
      await withSandbox(async (lane) => assert.equal((await lane.exec("true")).exitCode, 0));
    });
  });

  it("SANDBOX_CONSOLE_OUTPUT set after the first boot receives the next boot's console", async () => {
    const file = join(dir, "console.log");
    await withEnv({ SANDBOX_CONSOLE_OUTPUT: file }, async () => {
      await withSandbox(async (lane) => assert.equal((await lane.exec("true")).exitCode, 0));
    });
    assert.ok(existsSync(file), `${file} was not written`);
    assert.match(readFileSync(file, "utf8"), /sandbox-init: starting on Linux /);
  });

  it("the VMM gets process.env as it is at boot()", async () => {
    const marker = `set-after-load-${process.pid}`;
    await withEnv({ SANDBOX_E2E_MARKER: marker }, async () => {
      await withSandbox(async (lane) => {
        const [pid] = childProcesses();
        assert.ok(pid, "no QEMU child");
        const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
        assert.ok(environ.includes(`SANDBOX_E2E_MARKER=${marker}`), "the VMM's environment lacks a variable set before this boot");
        assert.equal((await lane.exec("true")).exitCode, 0);
      });
    });
  });

  it("PATH is where QEMU is looked for", async () => {
    await withEnv({ SANDBOX_ENGINE: "qemu", SANDBOX_QEMU: undefined, PATH: dir }, async () => {
      await assert.rejects(debian.boot(), (error) => {
        assert.equal(error.code, "ERR_SANDBOX_ENGINE");
        assert.match(error.message, /qemu-system-x86_64 is not on PATH/);
        return true;
      });
    });
  });

  it("SANDBOX_BOOT_TIMEOUT_MS: a bad value is a clear error, a tiny one times out", async () => {
    await withEnv({ SANDBOX_BOOT_TIMEOUT_MS: "soon" }, async () => {
      await assert.rejects(debian.boot(), (error) => {
        assert.equal(error.code, "ERR_SANDBOX_INVALID_REQUEST");
        assert.match(error.message, /SANDBOX_BOOT_TIMEOUT_MS="soon" is not a positive number of milliseconds/);
        return true;
      });
    });
    await withEnv({ SANDBOX_BOOT_TIMEOUT_MS: "1" }, async () => {
      await assert.rejects(debian.boot(), (error) => {
        assert.equal(error.code, "ERR_SANDBOX_BOOT_TIMEOUT");
        assert.match(error.message, /did not become ready within 1ms/);
        return true;
      });
    });
    assert.deepEqual(childProcesses(), []);
  });
});
