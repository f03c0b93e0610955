// macOS signing: the runtime check (ERR_SANDBOX_MACOS_SETUP before the addon
// loads) and the setup-macos command, with the platform and codesign injected:
// this machine is Linux, so codesign is replaced by functions that record
// what they are asked (named as such below).

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  assertMacosSetup,
  codesignArguments,
  filesToSign,
  grantsHypervisor,
  setupMacos,
  SETUP_MACOS_COMMAND,
  type SetupMacosEnvironment,
} from "../../src/macos.js";
import { loadNativeRuntime, type NativeAddon } from "../../src/native.js";

// The plist as shipped (macos/ at the package root). The compiled tests live
// in build/tests/unit/, so src/macos.ts's own PLIST (relative to
// the compiled module: right for dist/, not for build/src/) is not used here.
const PLIST = fileURLToPath(new URL("../../../macos/entitlements.plist", import.meta.url));

const GRANTED_XML = `<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd"><plist version="1.0"><dict><key>com.apple.security.hypervisor</key><true/></dict></plist>`;

const made: string[] = [];
after(() => {
  for (const directory of made) rmSync(directory, { recursive: true, force: true });
});

/** A platform directory holding the named files (their bytes do not matter here). */
function platformDirectory(...files: string[]): string {
  const directory = mkdtempSync(join(tmpdir(), "sandbox-macos-"));
  made.push(directory);
  for (const file of files) writeFileSync(join(directory, file), "bytes");
  return directory;
}

const notFound = (specifier: string): string => {
  throw Object.assign(new Error(`Cannot find module '${specifier}'`), { code: "MODULE_NOT_FOUND" });
};

/** Stands in for sandbox.node's loading (a fake: the real addon is a Go shared library). */
const fakeAddon: NativeAddon = { version: () => '{"version":"0.6.0","protocol":1}', request: async () => new Uint8Array() };

describe("entitlement check", () => {
  test("reads the hypervisor entitlement from codesign's XML, and nothing else", () => {
    assert.equal(grantsHypervisor(GRANTED_XML), true);
    assert.equal(grantsHypervisor(GRANTED_XML.replace("<true/>", "<false/>")), false);
    assert.equal(grantsHypervisor(GRANTED_XML.replace("hypervisor", "network.client")), false);
    assert.equal(grantsHypervisor("<dict>\n\t<key>com.apple.security.hypervisor</key>\n\t<true/>\n</dict>"), true);
    assert.equal(grantsHypervisor(""), false);
    assert.equal(grantsHypervisor(undefined), false);
  });

  test("signs and checks the helper first, then the addon; only the files that exist", () => {
    const both = platformDirectory("sandbox.node", "sandbox-krun");
    assert.deepEqual(filesToSign(both), [join(both, "sandbox-krun"), join(both, "sandbox.node")]);
    const addonOnly = platformDirectory("sandbox.node");
    assert.deepEqual(filesToSign(addonOnly), [join(addonOnly, "sandbox.node")]);
    assert.deepEqual(codesignArguments("/p.plist", ["/a", "/b"]), ["--force", "--sign", "-", "--entitlements", "/p.plist", "/a", "/b"]);
  });

  test("on macOS, unsigned files fail with ERR_SANDBOX_MACOS_SETUP naming the command; elsewhere nothing is read", () => {
    const directory = platformDirectory("sandbox.node", "sandbox-krun");
    const asked: string[] = [];
    const unsigned = (path: string) => {
      asked.push(path);
      return undefined;
    };
    assert.throws(() => assertMacosSetup("darwin", directory, unsigned), (error: Error & { code?: string }) => {
      assert.equal(error.code, "ERR_SANDBOX_MACOS_SETUP");
      assert.ok(error.message.includes(`run \`${SETUP_MACOS_COMMAND}\``), error.message);
      assert.ok(error.message.includes(`${join(directory, "sandbox-krun")} and ${join(directory, "sandbox.node")} are not signed`), error.message);
      return true;
    });
    // Only the helper unsigned (e.g. a reinstall replaced it): only it is named.
    const helperUnsigned = (path: string) => (path.endsWith("sandbox-krun") ? undefined : GRANTED_XML);
    assert.throws(() => assertMacosSetup("darwin", directory, helperUnsigned), (error: Error) => {
      assert.ok(error.message.startsWith(`${join(directory, "sandbox-krun")} is not signed`), error.message);
      return true;
    });
    assertMacosSetup("darwin", directory, () => GRANTED_XML);
    asked.length = 0;
    assertMacosSetup("linux", directory, unsigned);
    assert.deepEqual(asked, []);
  });

  test("the runtime checks the signature before it loads the addon", () => {
    const directory = platformDirectory("sandbox.node", "sandbox-krun");
    const loaded: string[] = [];
    const loading = (platform: NodeJS.Platform, read: (path: string) => string | undefined) => ({
      platform,
      search: { platformKey: "darwin-arm64", overrideDirectory: directory, resolve: notFound },
      readEntitlements: read,
      loadAddon: (path: string) => {
        loaded.push(path);
        return fakeAddon;
      },
    });
    assert.throws(() => loadNativeRuntime(loading("darwin", () => undefined)), { code: "ERR_SANDBOX_MACOS_SETUP" });
    assert.deepEqual(loaded, []);
    const runtime = loadNativeRuntime(loading("darwin", () => GRANTED_XML));
    assert.equal(runtime.directory, directory);
    assert.deepEqual(loaded, [join(directory, "sandbox.node")]);
  });

  test("no platform package: loading names the package to install and the detected platform", () => {
    assert.throws(
      () => loadNativeRuntime({
        platform: "linux",
        search: { platformKey: "linux-x64-gnu", overrideDirectory: undefined, packageVersion: "0.6.0", resolve: notFound },
        readEntitlements: () => undefined,
        loadAddon: () => fakeAddon,
      }),
      (error: Error & { code?: string }) => {
        assert.equal(error.code, "ERR_SANDBOX_NOT_INSTALLED");
        assert.match(error.message, /"@torkbot\/sandbox-linux-x64-gnu" could not be found/);
        assert.match(error.message, /\(detected linux-x64-gnu\)/);
        assert.match(error.message, /npm install @torkbot\/sandbox-linux-x64-gnu@0\.6\.0/);
        return true;
      },
    );
  });
});

describe("setup-macos", () => {
  /** setup-macos's surroundings with codesign replaced by a recorder (a stand-in: no macOS here). */
  function environment(overrides: Partial<SetupMacosEnvironment> & { directory?: string }) {
    const calls: string[][] = [];
    const lines: string[] = [];
    const signed = new Set<string>();
    const env: SetupMacosEnvironment = {
      platformKey: "darwin-arm64",
      search: { overrideDirectory: overrides.directory, resolve: notFound, packageVersion: "0.6.0" },
      plist: PLIST,
      codesign: (args) => {
        calls.push([...args]);
        for (const file of args.slice(5)) signed.add(file);
        return 0;
      },
      read: (path) => (signed.has(path) ? GRANTED_XML : undefined),
      log: (line) => lines.push(line),
      ...overrides,
    };
    return { env, calls, lines };
  }

  test("elsewhere than macOS it says so and succeeds without signing anything", () => {
    const { env, calls, lines } = environment({ platformKey: "linux-x64-gnu" });
    assert.equal(setupMacos(env), 0);
    assert.deepEqual(calls, []);
    assert.deepEqual(lines, ["setup-macos is only needed on macOS (this machine is linux-x64-gnu); nothing to do."]);
  });

  test("signs the helper and the addon with the shipped plist in one codesign call, then verifies", () => {
    const directory = platformDirectory("sandbox.node", "sandbox-krun");
    const { env, calls, lines } = environment({ directory });
    assert.equal(setupMacos(env), 0, lines.join("\n"));
    assert.deepEqual(calls, [["--force", "--sign", "-", "--entitlements", PLIST, join(directory, "sandbox-krun"), join(directory, "sandbox.node")]]);
    assert.match(lines.at(-1) ?? "", /done; they carry the com\.apple\.security\.hypervisor entitlement/);
  });

  test("the shipped plist grants the hypervisor entitlement", () => {
    assert.ok(grantsHypervisor(readFileSync(PLIST, "utf8")));
  });

  test("fails when codesign fails, when the entitlement does not read back, and when the package is missing", () => {
    const directory = platformDirectory("sandbox.node", "sandbox-krun");
    const failing = environment({ directory, codesign: () => 1 });
    assert.equal(setupMacos(failing.env), 1);
    assert.match(failing.lines.at(-1) ?? "", /codesign failed \(exit status 1\)/);

    const ignored = environment({ directory, codesign: () => 0, read: () => undefined });
    assert.equal(setupMacos(ignored.env), 1);
    assert.match(ignored.lines.at(-1) ?? "", /still lack the com\.apple\.security\.hypervisor entitlement/);

    const missing = environment({});
    assert.equal(setupMacos(missing.env), 1);
    assert.match(missing.lines.join("\n"), /"@torkbot\/sandbox-darwin-arm64" could not be found.*detected darwin-arm64/s);
    assert.deepEqual(missing.calls, []);

    const noPlist = environment({ directory, plist: join(directory, "absent.plist") });
    assert.equal(setupMacos(noPlist.env), 1);
    assert.match(noPlist.lines.join("\n"), /entitlements file .*absent\.plist is missing/);
  });
});
