// The package tables (src/artifacts.ts PLATFORMS, IMAGE_PACKAGES) against the
// manifests on disk: each platform-packages/<key>/package.json and
// platform-packages/image-<key>/package.json, the root's exact
// optionalDependencies, and the lock file entries that let `npm ci` work
// while those versions are not on any registry.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { IMAGE_PACKAGES, imagePackageName, PLATFORMS, platformPackageName } from "../../src/artifacts.js";

// Compiled to build/tests/unit/: the repository is three levels up.
const ROOT = new URL("../../../", import.meta.url);
const json = (path: string) => JSON.parse(readFileSync(new URL(path, ROOT), "utf8")) as Record<string, any>;

const root = json("package.json");

test("the root lists every platform and image package as an exact-version optional dependency", () => {
  const expected = Object.fromEntries([
    ...PLATFORMS.map((p) => [platformPackageName(p.key), root.version]),
    ...IMAGE_PACKAGES.map((i) => [imagePackageName(i.key), root.version]),
  ]);
  assert.deepEqual(root.optionalDependencies, expected);
  assert.deepEqual(Object.keys(root.optionalDependencies), Object.keys(expected).sort(), "sorted, as npm writes them");
});

test("each platform package's manifest matches its row: name, version, os, cpu, libc, no scripts", () => {
  for (const platform of PLATFORMS) {
    const manifest = json(`platform-packages/${platform.key}/package.json`);
    assert.equal(manifest.name, platformPackageName(platform.key));
    assert.equal(manifest.version, root.version, platform.key);
    assert.deepEqual(manifest.os, [platform.os], platform.key);
    assert.deepEqual(manifest.cpu, [platform.cpu], platform.key);
    assert.deepEqual(manifest.libc, platform.libc === undefined ? undefined : [platform.libc], platform.key);
    assert.equal(manifest.license, root.license, platform.key);
    assert.equal(manifest.scripts, undefined, `${platform.key}: nothing may run at install`);
    for (const file of ["sandbox.node", "sandbox-krun", "artifacts/kernel/vmlinux", "artifacts/kernel/initrd.cpio", "artifacts/images/"]) {
      assert.ok(manifest.files.includes(file), `${platform.key} does not ship ${file}`);
    }
  }
});

test("each image package's manifest matches its row: name, version, os, cpu, only its images, no scripts", () => {
  for (const image of IMAGE_PACKAGES) {
    const manifest = json(`platform-packages/image-${image.key}/package.json`);
    assert.equal(manifest.name, imagePackageName(image.key));
    assert.equal(manifest.version, root.version, image.key);
    assert.deepEqual(manifest.os, [image.os], image.key);
    assert.deepEqual(manifest.cpu, [image.cpu], image.key);
    assert.deepEqual(manifest.files, ["artifacts/images/"], image.key);
    assert.equal(manifest.license, root.license, image.key);
    assert.equal(manifest.scripts, undefined, `${image.key}: nothing may run at install`);
    for (const key of image.platforms) assert.ok(PLATFORMS.some((p) => p.key === key && p.os === image.os && p.cpu === image.cpu), key);
  }
});

test("package-lock.json carries the optional platform and image packages with their platform fields", () => {
  const lock = json("package-lock.json");
  assert.deepEqual(lock.packages[""].optionalDependencies, root.optionalDependencies);
  const rows = [
    ...PLATFORMS.map((p) => ({ name: platformPackageName(p.key), os: p.os, cpu: p.cpu })),
    ...IMAGE_PACKAGES.map((i) => ({ name: imagePackageName(i.key), os: i.os, cpu: i.cpu })),
  ];
  for (const row of rows) {
    const entry = lock.packages[`node_modules/${row.name}`];
    assert.ok(entry, `package-lock.json lacks ${row.name}`);
    assert.equal(entry.version, root.version);
    assert.equal(entry.optional, true);
    assert.deepEqual(entry.os, [row.os]);
    assert.deepEqual(entry.cpu, [row.cpu]);
  }
});

test("the root package ships the API, the CLI and the entitlements; ESM with a require() path", () => {
  assert.deepEqual(root.files, ["dist", "bin", "macos"]);
  // `sandbox` is 0.6.0's bin; `torkbot-sandbox` stays as an alias.
  assert.deepEqual(root.bin, { sandbox: "bin/torkbot-sandbox.js", "torkbot-sandbox": "bin/torkbot-sandbox.js" });
  assert.deepEqual(json("package-lock.json").packages[""].bin, root.bin);
  assert.deepEqual(root.exports["."], { types: "./dist/index.d.ts", import: "./dist/index.js", default: "./dist/index.js" });
  assert.equal(root.scripts["release:pack"], "node scripts/release-pack.mjs");
  assert.equal(root.scripts["artifacts:link-current"], "node scripts/link-current.mjs");
});
