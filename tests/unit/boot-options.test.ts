// boot(options) validation: mount paths, mount sources, cwd.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkBootOptions } from "../../src/boot-options.js";
import { defineSandbox, fs, rootfs, type SandboxBootOptions, type SandboxFileSystem } from "../../src/index.js";

const readOnly: SandboxFileSystem = {
  stat: async () => ({ type: "directory", sizeBytes: null, mediaType: null, modifiedAtMs: null }),
  list: async () => [],
  read: async () => new Uint8Array(),
};

const rejects = (options: unknown, reason: RegExp) =>
  assert.throws(() => checkBootOptions(options), (error: Error) => {
    assert.match(error.message, /^invalid sandbox boot options: /);
    assert.match(error.message, reason);
    return true;
  });

describe("boot options", () => {
  test("no options means no mounts and no default cwd", () => {
    assert.deepEqual(checkBootOptions(undefined), { mounts: [], cwd: undefined });
    assert.deepEqual(checkBootOptions({}), { mounts: [], cwd: undefined });
  });

  test("mount paths are normalised and sorted parent first", () => {
    const memory = fs.memory();
    const checked = checkBootOptions({
      mounts: {
        "/mnt/shared/": fs.virtual(readOnly),
        "//workspace": fs.virtual(memory),
        "/mnt": fs.virtual(readOnly),
      },
    });
    assert.deepEqual(checked.mounts.map((mount) => mount.path), ["/mnt", "/mnt/shared", "/workspace"]);
    assert.equal(checked.mounts[2]?.fileSystem, memory);
  });

  test("mount paths must be absolute, not /, without NUL or dot segments", () => {
    const source = fs.virtual(readOnly);
    rejects({ mounts: { workspace: source } }, /"workspace" must be absolute/);
    rejects({ mounts: { "/": source } }, /must not be the root/);
    rejects({ mounts: { "//": source } }, /must not be the root/);
    rejects({ mounts: { "/work\0space": source } }, /must not contain NUL/);
    for (const path of ["/a/./b", "/a/../b", "/..", "/workspace/."]) {
      rejects({ mounts: { [path]: source } }, /must not contain "\." or "\.\." segments/);
    }
  });

  test("duplicate mount paths after normalisation are rejected", () => {
    rejects({ mounts: { "/workspace": fs.virtual(readOnly), "/workspace/": fs.virtual(readOnly) } }, /duplicate mount path "\/workspace\/"/);
    rejects({ mounts: { "/a//b": fs.virtual(readOnly), "/a/b": fs.virtual(readOnly) } }, /duplicate mount path/);
  });

  test("mount values must be made by fs.virtual, over a mountable filesystem", () => {
    rejects({ mounts: { "/workspace": { kind: "virtual-fs", fileSystem: readOnly } } }, /must be created with fs\.virtual/);
    rejects({ mounts: { "/workspace": readOnly } }, /must be created with fs\.virtual/);
    rejects({ mounts: { "/workspace": fs.virtual({ stat: readOnly.stat } as SandboxFileSystem) } }, /filesystem lacks list, read/);
    const halfWritable = { ...readOnly, createFile: async () => ({}), write: async () => 0, truncate: async () => ({}) };
    rejects(
      { mounts: { "/workspace": fs.virtual(halfWritable as unknown as SandboxFileSystem) } },
      /writable filesystem must implement SandboxPosixFileSystem, missing mkdir/,
    );
    rejects({ mounts: [] }, /mounts must be an object/);
  });

  test("fs.virtual has the documented shape", () => {
    assert.deepEqual({ ...fs.virtual(readOnly) }, { kind: "virtual-fs", fileSystem: readOnly });
  });

  test("cwd must be an absolute path", () => {
    assert.equal(checkBootOptions({ cwd: "/workspace" }).cwd, "/workspace");
    rejects({ cwd: "workspace" }, /^invalid sandbox boot options: cwd must be absolute/);
    rejects({ cwd: 42 }, /^invalid sandbox boot options: cwd must be absolute/);
    rejects({ cwd: "/a\0" }, /^invalid sandbox boot options: cwd must be absolute/);
    rejects("/workspace", /options must be an object/);
  });

  test("boot() rejects bad options before any native code is needed", async () => {
    const sandbox = defineSandbox({ rootfs: rootfs.builtIn("alpine:3.23") });
    await assert.rejects(sandbox.boot({ cwd: "relative" }), /^Error: invalid sandbox boot options: cwd/);
    await assert.rejects(
      sandbox.boot({ mounts: { "/": fs.virtual(readOnly) } } as SandboxBootOptions),
      /invalid sandbox boot options: mount path "\/" must not be the root/,
    );
  });
});
