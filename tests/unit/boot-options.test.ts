// boot(options) validation: mount paths, mount sources, cwd, with 0.6.0's
// messages ("invalid sandbox options: mount.path …" for paths).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkBootOptions } from "../../src/boot-options.js";
import { defineSandbox, fs, rootfs, type SandboxBootOptions, type SandboxFileSystem } from "../../src/index.js";

const readOnly: SandboxFileSystem = {
  stat: async () => ({ type: "directory", sizeBytes: null, mediaType: null, modifiedAtMs: null }),
  list: async () => [],
  read: async () => new Uint8Array(),
};

const rejects = (options: unknown, reason: RegExp, prefix = /^invalid sandbox boot options: /) =>
  assert.throws(() => checkBootOptions(options), (error: Error) => {
    assert.match(error.message, prefix);
    assert.match(error.message, reason);
    return true;
  });
const rejectsPath = (options: unknown, reason: RegExp) => rejects(options, reason, /^invalid sandbox options: mount\.path /);

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
    rejectsPath({ mounts: { workspace: source } }, /^invalid sandbox options: mount\.path must be absolute: "workspace"/);
    rejectsPath({ mounts: { "/": source } }, /mount\.path must not be root/);
    rejectsPath({ mounts: { "//": source } }, /mount\.path must not be root/);
    rejectsPath({ mounts: { "/work\0space": source } }, /mount\.path must not contain NUL bytes/);
    for (const path of ["/a/./b", "/a/../b", "/..", "/workspace/."]) {
      rejectsPath({ mounts: { [path]: source } }, /mount\.path must not contain '\.' or '\.\.' components/);
    }
  });

  test("duplicate mount paths after normalisation are rejected", () => {
    rejects({ mounts: { "/workspace": fs.virtual(readOnly), "/workspace/": fs.virtual(readOnly) } }, /duplicate mount path: \/workspace\//);
    rejects({ mounts: { "/a//b": fs.virtual(readOnly), "/a/b": fs.virtual(readOnly) } }, /duplicate mount path/);
  });

  test("mount values are fs.virtual sources by kind and shape, over a mountable filesystem", () => {
    // A literal, a spread or a clone of a source works, as in 0.6.0.
    const literal = { kind: "virtual-fs", fileSystem: readOnly } as const;
    assert.equal(checkBootOptions({ mounts: { "/workspace": literal } }).mounts[0]?.fileSystem, readOnly);
    assert.equal(checkBootOptions({ mounts: { "/workspace": { ...fs.virtual(readOnly) } } }).mounts[0]?.fileSystem, readOnly);
    rejects({ mounts: { "/workspace": readOnly } }, /must be created with fs\.virtual/);
    rejects({ mounts: { "/workspace": { kind: "virtual-fs" } } }, /must be created with fs\.virtual/);
    rejects({ mounts: { "/workspace": fs.virtual({ stat: readOnly.stat } as SandboxFileSystem) } }, /filesystem lacks list, read/);
    const halfWritable = { ...readOnly, createFile: async () => ({}), write: async () => 0, truncate: async () => ({}) };
    rejects(
      { mounts: { "/workspace": fs.virtual(halfWritable as unknown as SandboxFileSystem) } },
      /^invalid sandbox boot options: writable mount must implement the POSIX filesystem interface: \/workspace \(missing mkdir/,
    );
    rejects({ mounts: [] }, /mounts must be an object/);
  });

  test("fs.virtual has the documented shape", () => {
    assert.deepEqual({ ...fs.virtual(readOnly) }, { kind: "virtual-fs", fileSystem: readOnly });
  });

  test("cwd must be an absolute path", () => {
    assert.equal(checkBootOptions({ cwd: "/workspace" }).cwd, "/workspace");
    rejects({ cwd: "workspace" }, /^invalid sandbox boot options: cwd must be absolute/);
    rejects({ cwd: 42 }, /cwd must be absolute/);
    rejects({ cwd: "/a\0" }, /cwd must not contain NUL bytes/);
    rejects("/workspace", /options must be an object/);
  });

  test("boot() rejects bad options before any native code is needed", async () => {
    const sandbox = defineSandbox({ rootfs: rootfs.builtIn("alpine:3.23") });
    await assert.rejects(sandbox.boot({ cwd: "relative" }), /^Error: invalid sandbox boot options: cwd/);
    await assert.rejects(
      sandbox.boot({ mounts: { "/": fs.virtual(readOnly) } } as SandboxBootOptions),
      /invalid sandbox options: mount\.path must not be root/,
    );
  });
});
