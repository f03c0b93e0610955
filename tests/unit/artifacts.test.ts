// Platform directory resolution, artifact checks and addon loading, against
// temporary directories (and small JavaScript modules standing in for the
// addon, named as fakes).

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  builtInImage,
  detectPlatformKey,
  findImagePackageDirectories,
  findPlatformDirectory,
  readInstalledArtifacts,
  type PlatformSearch,
} from "../../src/artifacts.js";
import { loadAddon } from "../../src/native.js";

const made: string[] = [];
after(() => {
  for (const directory of made) rmSync(directory, { recursive: true, force: true });
});
const temp = () => {
  const directory = mkdtempSync(join(tmpdir(), "sandbox-artifacts-"));
  made.push(directory);
  return directory;
};
const withAddon = (directory: string) => {
  mkdirSync(directory, { recursive: true });
  writeFileSync(join(directory, "sandbox.node"), "");
  return directory;
};
const notResolvable = (specifier: string): string => {
  throw Object.assign(new Error(`Cannot find module '${specifier}'`), { code: "MODULE_NOT_FOUND" });
};
const search = (overrides: Partial<PlatformSearch>): PlatformSearch => ({
  platformKey: "linux-x64-gnu",
  overrideDirectory: undefined,
  resolve: notResolvable,
  ...overrides,
});
/** A directory shaped like an installed platform package of `version`. */
const installedPackage = (version: string) => {
  const directory = withAddon(temp());
  writeFileSync(join(directory, "package.json"), JSON.stringify({ name: "@torkbot/sandbox-linux-x64-gnu", version }));
  return directory;
};

describe("platform directory", () => {
  test("SANDBOX_PLATFORM_DIR wins, and must hold the addon", () => {
    const override = withAddon(temp());
    const installed = withAddon(temp());
    assert.equal(
      findPlatformDirectory(search({ overrideDirectory: override, resolve: () => join(installed, "package.json") })),
      override,
    );
    const empty = temp();
    assert.throws(() => findPlatformDirectory(search({ overrideDirectory: empty })), {
      code: "ERR_SANDBOX_NOT_INSTALLED",
      message: new RegExp(`SANDBOX_PLATFORM_DIR is ${empty}, but it has no sandbox\\.node`),
    });
  });

  test("then the installed platform package, which must hold the addon", () => {
    const installed = withAddon(temp());
    const requested: string[] = [];
    const resolve = (specifier: string) => {
      requested.push(specifier);
      return join(installed, "package.json");
    };
    assert.equal(findPlatformDirectory(search({ resolve })), installed);
    assert.deepEqual(requested, ["@torkbot/sandbox-linux-x64-gnu/package.json"]);
    const hollow = temp();
    assert.throws(() => findPlatformDirectory(search({ resolve: () => join(hollow, "package.json") })), {
      code: "ERR_SANDBOX_NOT_INSTALLED",
      message: /@torkbot\/sandbox-linux-x64-gnu is installed at .* but has no sandbox\.node: reinstall it/,
    });
  });

  test("the installed platform package must have this package's exact version", () => {
    const installed = installedPackage("0.6.0");
    assert.equal(findPlatformDirectory(search({ packageVersion: "0.6.0", resolve: () => join(installed, "package.json") })), installed);
    const other = installedPackage("0.21.0");
    assert.throws(() => findPlatformDirectory(search({ packageVersion: "0.6.0", resolve: () => join(other, "package.json") })), {
      code: "ERR_SANDBOX_NOT_INSTALLED",
      message: `@torkbot/sandbox 0.6.0 needs @torkbot/sandbox-linux-x64-gnu@0.6.0, but ${other} holds version 0.21.0: run npm install @torkbot/sandbox-linux-x64-gnu@0.6.0`,
    });
  });

  test("nothing found: the error names the package, the platform and the likely causes", () => {
    assert.throws(() => findPlatformDirectory(search({ platformKey: "darwin-arm64", packageVersion: "0.6.0" })), (error: Error & { code?: string }) => {
      assert.equal(error.code, "ERR_SANDBOX_NOT_INSTALLED");
      // 0.6.0's text first.
      assert.match(error.message, /^missing @torkbot\/sandbox-darwin-arm64 artifact sandbox\.node; reinstall @torkbot\/sandbox for darwin-arm64/);
      assert.match(error.message, /"@torkbot\/sandbox-darwin-arm64" could not be found/);
      assert.match(error.message, /detected darwin-arm64/);
      assert.match(error.message, /Install it: npm install @torkbot\/sandbox-darwin-arm64@0\.6\.0/);
      // A checkout's platform-packages/ is not searched; the build links it into node_modules.
      assert.match(error.message, /in a checkout of this repository: run `npm run build`/);
      assert.match(error.message, /--omit=optional/);
      assert.match(error.message, /node_modules was copied from another platform/);
      assert.match(error.message, /SANDBOX_PLATFORM_DIR/);
      return true;
    });
  });

  test("an unsupported platform says so, with a Rosetta hint for darwin-x64", () => {
    assert.throws(() => findPlatformDirectory(search({ platformKey: "linux-x64-musl" })), /^Error: unsupported native sandbox target: linux-x64-musl: @torkbot\/sandbox does not support this platform/);
    assert.throws(() => findPlatformDirectory(search({ platformKey: "darwin-x64" })), /Rosetta/);
  });

  test("the platform key names OS, CPU and, on Linux, the libc", () => {
    const key = detectPlatformKey();
    assert.ok(key.startsWith(`${process.platform}-${process.arch}`), key);
    if (process.platform === "linux") assert.match(key, /-(gnu|musl)$/);
  });
});

describe("installed artifacts", () => {
  const SHA = "0123456789abcdef".repeat(4);
  const entry = { file: "debian-13-slim.qcow2", format: "qcow2", sha256: SHA, virtualSizeBytes: 4096, platform: "linux", arch: "arm64" };
  function layout(catalog: unknown, files = ["artifacts/kernel/vmlinux", "artifacts/kernel/initrd.cpio"]): string {
    const directory = temp();
    for (const file of files) {
      mkdirSync(join(directory, file, ".."), { recursive: true });
      writeFileSync(join(directory, file), "");
    }
    mkdirSync(join(directory, "artifacts/images"), { recursive: true });
    if (catalog !== undefined) {
      writeFileSync(join(directory, "artifacts/images/catalog.json"), typeof catalog === "string" ? catalog : JSON.stringify(catalog));
    }
    return directory;
  }

  test("kernel, initrd and catalog are required", () => {
    assert.throws(() => readInstalledArtifacts(layout({}, ["artifacts/kernel/initrd.cpio"])), {
      code: "ERR_SANDBOX_NOT_INSTALLED",
      message: /incomplete: artifacts\/kernel\/vmlinux is missing/,
    });
    assert.throws(() => readInstalledArtifacts(layout({}, ["artifacts/kernel/vmlinux"])), /artifacts\/kernel\/initrd\.cpio is missing/);
    assert.throws(() => readInstalledArtifacts(layout(undefined)), /artifacts\/images\/catalog\.json is missing/);
  });

  test("a catalog entry resolves to its image and its exact base identity", () => {
    const directory = layout({ "debian:13-slim": entry });
    writeFileSync(join(directory, "artifacts/images/debian-13-slim.qcow2"), "");
    const artifacts = readInstalledArtifacts(directory);
    assert.deepEqual(builtInImage(artifacts, "debian:13-slim"), {
      path: join(directory, "artifacts/images/debian-13-slim.qcow2"),
      base: `built-in:debian:13-slim:qcow2:linux:arm64:sha256:${SHA}`,
    });
  });

  test("a name missing from the catalog, or a listed image missing on disk", () => {
    const directory = layout({ "debian:13-slim": entry });
    const artifacts = readInstalledArtifacts(directory);
    assert.throws(() => builtInImage(artifacts, "alpine:3.23"), {
      code: "ERR_SANDBOX_ROOTFS_NOT_INSTALLED",
      message: `built-in rootfs "alpine:3.23" is not installed in ${directory}: build it with its recipe (images/alpine-3.23) or install a platform package that ships it; rootfs.builtIn("debian:13") has the same agent tool set (bash, git, node, npm, python3, pip, gh, ripgrep, jq, ffmpeg, imagemagick, poppler-utils, exiftool) and is built by images/debian-13`,
    });
    const withTools = readInstalledArtifacts(layout({ "debian:13-slim": entry, "debian:13": { ...entry, file: "debian-13.qcow2" } }));
    assert.throws(() => builtInImage(withTools, "alpine:3.23"), { message: /rootfs\.builtIn\("debian:13"\) has the same agent tool set .* and is installed here$/ });
    assert.throws(() => builtInImage(artifacts, "debian:13-slim"), {
      code: "ERR_SANDBOX_NOT_INSTALLED",
      message: /listed in .*catalog\.json, but its image .*debian-13-slim\.qcow2 is missing/,
    });
  });

  test("an image package's catalog is merged, and its image resolves inside that package", () => {
    const platform = layout({ "debian:13-slim": entry });
    writeFileSync(join(platform, "artifacts/images/debian-13-slim.qcow2"), "");
    const imagePackage = temp();
    mkdirSync(join(imagePackage, "artifacts/images"), { recursive: true });
    const toolsSha = "fedcba9876543210".repeat(4);
    writeFileSync(join(imagePackage, "artifacts/images/catalog.json"), JSON.stringify({
      "debian:13": { ...entry, file: "debian-13.qcow2", sha256: toolsSha },
      "debian:13-slim": { ...entry, sha256: toolsSha }, // the platform package's entry wins
    }));
    writeFileSync(join(imagePackage, "artifacts/images/debian-13.qcow2"), "");
    const artifacts = readInstalledArtifacts(platform, [imagePackage]);
    assert.deepEqual(builtInImage(artifacts, "debian:13"), {
      path: join(imagePackage, "artifacts/images/debian-13.qcow2"),
      base: `built-in:debian:13:qcow2:linux:arm64:sha256:${toolsSha}`,
    });
    assert.equal(builtInImage(artifacts, "debian:13-slim").path, join(platform, "artifacts/images/debian-13-slim.qcow2"));
    assert.equal(builtInImage(artifacts, "debian:13-slim").base, `built-in:debian:13-slim:qcow2:linux:arm64:sha256:${SHA}`);
    assert.throws(() => readInstalledArtifacts(platform, [temp()]), { code: "ERR_SANDBOX_NOT_INSTALLED", message: /image package .* is incomplete: artifacts\/images\/catalog\.json is missing/ });
  });

  test("debian:13 not installed names its image package", () => {
    const artifacts = readInstalledArtifacts(layout({ "debian:13-slim": entry }));
    assert.throws(() => builtInImage(artifacts, "debian:13"), {
      code: "ERR_SANDBOX_ROOTFS_NOT_INSTALLED",
      message: /is not installed in .*; it ships in @torkbot\/sandbox-image-debian-13-linux-x64, an optional dependency of @torkbot\/sandbox on linux-x64-gnu: install it \(and not with --omit=optional\)$/,
    });
  });

  test("image packages are found for this platform only, at this package's exact version", () => {
    const image = temp();
    writeFileSync(join(image, "package.json"), JSON.stringify({ name: "@torkbot/sandbox-image-debian-13-linux-x64", version: "0.6.0" }));
    const requested: string[] = [];
    const resolve = (specifier: string) => {
      requested.push(specifier);
      return join(image, "package.json");
    };
    assert.deepEqual(findImagePackageDirectories(search({ packageVersion: "0.6.0", resolve })), [image]);
    assert.deepEqual(requested, ["@torkbot/sandbox-image-debian-13-linux-x64/package.json"]);
    assert.deepEqual(findImagePackageDirectories(search({ packageVersion: "0.6.0" })), [], "not installed: left out");
    assert.deepEqual(findImagePackageDirectories(search({ platformKey: "darwin-arm64", resolve })), [], "an x64 image on arm64");
    assert.throws(() => findImagePackageDirectories(search({ packageVersion: "0.7.0", resolve })), {
      code: "ERR_SANDBOX_NOT_INSTALLED",
      message: `@torkbot/sandbox 0.7.0 needs @torkbot/sandbox-image-debian-13-linux-x64@0.7.0, but ${image} holds version 0.6.0: run npm install @torkbot/sandbox-image-debian-13-linux-x64@0.7.0`,
    });
  });

  test("malformed catalogs are refused with the reason", () => {
    const cases: [unknown, RegExp][] = [
      ["{not json", /invalid .*catalog\.json: /],
      [[], /expected an object keyed by built-in rootfs name/],
      [{ "debian:13-slim": { ...entry, file: "../escape.qcow2" } }, /entry "debian:13-slim": file must be a file name/],
      [{ "debian:13-slim": { ...entry, format: "raw" } }, /format must be "qcow2"/],
      [{ "debian:13-slim": { ...entry, sha256: "ABC" } }, /sha256 must be 64 lowercase hex digits/],
      [{ "debian:13-slim": { ...entry, virtualSizeBytes: 0 } }, /virtualSizeBytes must be a positive integer/],
      [{ "debian:13-slim": { ...entry, platform: "linux:x" } }, /platform must be an identifier/],
      [{ "debian:13-slim": { ...entry, arch: undefined } }, /arch must be an identifier/],
      [{ "debian:13-slim": null }, /file must be a file name/],
    ];
    for (const [catalog, reason] of cases) {
      assert.throws(() => readInstalledArtifacts(layout(catalog)), (error: Error & { code?: string }) => {
        assert.equal(error.code, "ERR_SANDBOX_ARTIFACTS_INVALID");
        assert.match(error.message, reason);
        return true;
      });
    }
  });
});

describe("addon loading", () => {
  /** A CommonJS module standing in for sandbox.node (a fake: the real one is a Go shared library). */
  function fakeAddonModule(source: string): string {
    const path = join(temp(), "fake-addon.cjs");
    writeFileSync(path, source);
    return path;
  }

  test("accepts an addon that speaks protocol 1", () => {
    const addon = loadAddon(fakeAddonModule(
      `module.exports = { version: () => '{"version":"0.6.0","protocol":1,"go":"go1.26.0"}', request: async () => new Uint8Array() };`,
    ));
    assert.equal(typeof addon.request, "function");
  });

  test("refuses another protocol, a non-addon, and an unloadable file", () => {
    assert.throws(
      () => loadAddon(fakeAddonModule(`module.exports = { version: () => '{"version":"0.9.0","protocol":2}', request() {} };`)),
      { code: "ERR_SANDBOX_ADDON_MISMATCH", message: /\(version 0\.9\.0\) speaks protocol 2, but this @torkbot\/sandbox needs protocol 1/ },
    );
    assert.throws(() => loadAddon(fakeAddonModule(`module.exports = {};`)), /lacks version\(\) or request\(\)/);
    assert.throws(() => loadAddon(fakeAddonModule(`module.exports = { version: () => "v1", request() {} };`)), /unreadable version/);
    assert.throws(() => loadAddon(join(temp(), "missing.node")), { code: "ERR_SANDBOX_ADDON_MISMATCH", message: /cannot load the sandbox addon/ });
  });
});
