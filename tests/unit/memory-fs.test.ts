// fs.memory: seeding, reads and writes, directories, symlinks, hard links,
// rename flags, xattrs, and the error prefixes/codes the guest mapping uses;
// 0.6.0's behaviours: detached methods, relative seed keys, writable: true,
// its messages.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { fs } from "../../src/index.js";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const bytes = (value: string) => new TextEncoder().encode(value);
const signal = new AbortController().signal;
const posixError = (code: string, prefix: string) => (error: Error & { code?: string }) => {
  assert.equal(error.code, code);
  assert.ok(error.message.startsWith(prefix), `${error.message} starts with ${prefix}`);
  return true;
};

describe("fs.memory", () => {
  test("seeds files and their parent directories", async () => {
    const memory = fs.memory({ files: { "/task.txt": "hello\n", "/a/b/c.bin": new Uint8Array([1, 2, 3]) } });
    assert.equal(text(await memory.read({ path: "/task.txt", signal })), "hello\n");
    assert.deepEqual(await memory.list("/"), [{ name: "a", type: "directory" }, { name: "task.txt", type: "file" }]);
    assert.deepEqual(await memory.list("/a/b"), [{ name: "c.bin", type: "file" }]);
    const stat = await memory.stat("/a/b/c.bin");
    assert.deepEqual(
      { ...stat, modifiedAtMs: typeof stat.modifiedAtMs },
      { type: "file", sizeBytes: 3, mediaType: null, modifiedAtMs: "number", writable: true },
    );
    assert.equal((await memory.stat("/a")).sizeBytes, null);
    assert.throws(() => fs.memory({ files: { "/a/../b": "x" } }), TypeError);
  });

  test("seed keys and paths without a leading / are taken from the root (0.6.0)", async () => {
    const memory = fs.memory({ files: { "notes.txt": "n", "dir/inner.txt": "i" } });
    assert.equal(text(await memory.read({ path: "/notes.txt", signal })), "n");
    assert.equal(text(await memory.read({ path: "/dir/inner.txt", signal })), "i");
    assert.equal(text(await memory.read({ path: "dir/inner.txt", signal })), "i");
    assert.deepEqual(await memory.list("/"), [{ name: "dir", type: "directory" }, { name: "notes.txt", type: "file" }]);
  });

  test("stat, createFile, mkdir, symlink, link and truncate report writable: true (0.6.0)", async () => {
    const memory = fs.memory({ files: { "/f": "x" } });
    const stats = [
      await memory.stat("/"),
      await memory.stat("/f"),
      await memory.createFile("/g"),
      await memory.mkdir("/d"),
      await memory.symlink("f", "/s"),
      await memory.link("/f", "/h"),
      await memory.truncate("/f", 0),
    ];
    assert.deepEqual(stats.map((stat) => stat.writable), stats.map(() => true));
  });

  test("methods work detached, spread, and picked into fs.virtual (0.6.0)", async () => {
    const memory = fs.memory({ files: { "/a.txt": "alpha" } });
    const { read, stat, list, write, mkdir } = memory;
    assert.equal(text(await read({ path: "/a.txt", signal })), "alpha");
    assert.equal((await stat("/a.txt")).sizeBytes, 5);
    assert.deepEqual(await list("/"), [{ name: "a.txt", type: "file" }]);
    assert.equal(await write({ path: "/a.txt", offset: 0, contents: bytes("A") }), 1);
    await mkdir("/made-detached");
    const spread = { ...memory };
    assert.equal(text(await spread.read({ path: "/a.txt", signal })), "Alpha");
    assert.equal((await spread.stat("/made-detached")).type, "directory");
    const picked = fs.virtual({ stat: memory.stat, list: memory.list, read: memory.read });
    assert.equal(text(await picked.fileSystem.read({ path: "/a.txt", signal })), "Alpha");
    assert.deepEqual(Object.keys(memory).sort(), [
      "createFile", "getxattr", "link", "list", "listxattr", "mkdir", "read", "readlink", "removexattr",
      "rename", "rmdir", "setxattr", "stat", "symlink", "truncate", "unlink", "write",
    ]);
  });

  test("ranged reads, writes past the end, truncation", async () => {
    const memory = fs.memory({ files: { "/f": "0123456789" } });
    assert.equal(text(await memory.read({ path: "/f", range: { offset: 2, length: 3 }, signal })), "234");
    assert.equal(text(await memory.read({ path: "/f", range: { offset: 8, length: 10 }, signal })), "89");
    assert.equal((await memory.read({ path: "/f", range: { offset: 50, length: 1 }, signal })).length, 0);
    assert.equal(await memory.write({ path: "/f", offset: 12, contents: bytes("xy") }), 2);
    assert.deepEqual([...(await memory.read({ path: "/f", range: { offset: 9, length: 5 }, signal }))], [57, 0, 0, 120, 121]);
    assert.equal((await memory.truncate("/f", 3)).sizeBytes, 3);
    await memory.truncate("/f", 5);
    assert.deepEqual([...(await memory.read({ path: "/f", signal }))], [48, 49, 50, 0, 0]);
    await assert.rejects(memory.write({ path: "/f", offset: -1, contents: bytes("x") }), posixError("EINVAL", "invalid argument:"));
  });

  test("a returned read is a copy", async () => {
    const memory = fs.memory({ files: { "/f": "abc" } });
    (await memory.read({ path: "/f", signal })).fill(0);
    assert.equal(text(await memory.read({ path: "/f", signal })), "abc");
  });

  test("an aborted read rejects", async () => {
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(fs.memory({ files: { "/f": "x" } }).read({ path: "/f", signal: controller.signal }), { name: "AbortError" });
  });

  test("create, mkdir, unlink, rmdir and their errors", async () => {
    const memory = fs.memory();
    assert.equal((await memory.createFile("/new")).type, "file");
    await assert.rejects(memory.createFile("/new"), posixError("EEXIST", "path exists"));
    await assert.rejects(memory.createFile("/missing/new"), posixError("ENOENT", "not found:"));
    await assert.rejects(memory.createFile("/new/child"), posixError("ENOTDIR", "not a directory:"));
    assert.equal((await memory.mkdir("/dir")).type, "directory");
    await assert.rejects(memory.mkdir("/dir"), posixError("EEXIST", "path exists"));
    await assert.rejects(memory.mkdir("/"), posixError("EEXIST", "path exists"));
    await memory.createFile("/dir/inner");
    await assert.rejects(memory.rmdir("/dir"), posixError("ENOTEMPTY", "directory not empty:"));
    await assert.rejects(memory.rmdir("/new"), posixError("ENOTDIR", "not a directory:"));
    await assert.rejects(memory.unlink("/dir"), posixError("EISDIR", "is a directory:"));
    await assert.rejects(memory.read({ path: "/dir", signal }), posixError("EISDIR", "not a file: /dir"));
    await assert.rejects(memory.list("/new"), posixError("ENOTDIR", "not a directory:"));
    await assert.rejects(memory.stat("/nope"), posixError("ENOENT", "not found:"));
    await memory.unlink("/dir/inner");
    await memory.rmdir("/dir");
    await assert.rejects(memory.stat("/dir"), posixError("ENOENT", "not found:"));
    await assert.rejects(memory.unlink("/dir"), posixError("ENOENT", "not found:"));
    await assert.rejects(memory.stat("/nul\0byte"), posixError("EINVAL", "invalid argument:"));
  });

  test("symlinks: readlink, lstat-style stat, followed for contents and in the middle of paths", async () => {
    const memory = fs.memory({ files: { "/real/file.txt": "data" } });
    await memory.symlink("/real", "/link");
    await memory.symlink("file.txt", "/real/rel");
    await memory.symlink("/nowhere", "/dangling");
    assert.equal(await memory.readlink("/link"), "/real");
    assert.deepEqual((await memory.stat("/link")).type, "symlink");
    assert.equal((await memory.stat("/link")).sizeBytes, 5);
    assert.equal(text(await memory.read({ path: "/link/file.txt", signal })), "data");
    assert.equal(text(await memory.read({ path: "/real/rel", signal })), "data");
    assert.deepEqual((await memory.list("/link")).map((entry) => entry.name), ["file.txt", "rel"]);
    await assert.rejects(memory.read({ path: "/dangling", signal }), posixError("ENOENT", "not found:"));
    await assert.rejects(memory.readlink("/real/file.txt"), posixError("EINVAL", "not a symlink: /real/file.txt"));
    await assert.rejects(memory.symlink("/x", "/link"), posixError("EEXIST", "path exists"));
    await memory.unlink("/link");
    assert.equal((await memory.stat("/real")).type, "directory", "unlink removes the link, not its target");
    await memory.symlink("/loop-b", "/loop-a");
    await memory.symlink("/loop-a", "/loop-b");
    await assert.rejects(memory.read({ path: "/loop-a", signal }), posixError("ELOOP", "too many levels of symbolic links:"));
  });

  test("hard links share one file; directories cannot be hard-linked", async () => {
    const memory = fs.memory({ files: { "/a": "one" } });
    await memory.link("/a", "/b");
    await memory.write({ path: "/b", offset: 0, contents: bytes("ONE") });
    assert.equal(text(await memory.read({ path: "/a", signal })), "ONE");
    await memory.unlink("/a");
    assert.equal(text(await memory.read({ path: "/b", signal })), "ONE");
    await memory.mkdir("/d");
    await assert.rejects(memory.link("/d", "/d2"), posixError("EPERM", "cannot hard link directory: /d"));
    await assert.rejects(memory.link("/b", "/d"), posixError("EEXIST", "path exists"));
  });

  test("rename: move, replace rules, NOREPLACE, EXCHANGE", async () => {
    const memory = fs.memory({ files: { "/a": "A", "/b": "B", "/dir/x": "X", "/empty/.keep": "" } });
    await memory.unlink("/empty/.keep");
    await assert.rejects(memory.rename("/a", "/b", 1), posixError("EEXIST", "path exists"));
    await memory.rename("/a", "/b");
    assert.equal(text(await memory.read({ path: "/b", signal })), "A");
    await assert.rejects(memory.stat("/a"), posixError("ENOENT", "not found:"));
    await assert.rejects(memory.rename("/b", "/dir"), posixError("EISDIR", "is a directory:"));
    await assert.rejects(memory.rename("/dir", "/b"), posixError("ENOTDIR", "not a directory:"));
    await assert.rejects(memory.rename("/empty", "/dir"), posixError("ENOTEMPTY", "directory not empty:"));
    await assert.rejects(memory.rename("/dir", "/dir/sub"), posixError("EINVAL", "invalid rename target: /dir/sub"));
    await memory.rename("/dir", "/empty");
    assert.equal(text(await memory.read({ path: "/empty/x", signal })), "X");
    await memory.rename("/b", "/empty/x", 2);
    assert.equal(text(await memory.read({ path: "/b", signal })), "X");
    assert.equal(text(await memory.read({ path: "/empty/x", signal })), "A");
    await assert.rejects(memory.rename("/b", "/absent", 2), posixError("ENOENT", "not found:"));
    for (const flags of [4, 3, 8, 6]) {
      await assert.rejects(memory.rename("/b", "/c", flags), posixError("EINVAL", `unsupported rename flags: ${flags}`));
    }
    await assert.rejects(memory.rename("/absent", "/c"), posixError("ENOENT", "not found:"));
    await memory.rename("/b", "/b");
    assert.equal(text(await memory.read({ path: "/b", signal })), "X");
  });

  test("xattrs: set, get, list, remove, create/replace flags", async () => {
    const memory = fs.memory({ files: { "/f": "" } });
    await memory.setxattr("/f", "user.a", bytes("1"));
    await assert.rejects(memory.setxattr("/f", "user.a", bytes("2"), 1), posixError("EEXIST", "xattr already exists: user.a"));
    await memory.setxattr("/f", "user.a", bytes("2"), 2);
    await assert.rejects(memory.setxattr("/f", "user.b", bytes("2"), 2), posixError("ENODATA", "xattr does not exist: user.b"));
    await memory.setxattr("/f", "user.b", bytes("3"), 1);
    assert.equal(text(await memory.getxattr("/f", "user.a")), "2");
    assert.deepEqual(await memory.listxattr("/f"), ["user.a", "user.b"]);
    await memory.removexattr("/f", "user.a");
    await assert.rejects(memory.getxattr("/f", "user.a"), posixError("ENODATA", "xattr not found: user.a"));
    await assert.rejects(memory.removexattr("/f", "user.a"), posixError("ENODATA", "xattr not found: user.a"));
    await assert.rejects(memory.setxattr("/f", "user.c", bytes("x"), 3), posixError("EINVAL", "invalid argument:"));
  });

  describe("quota (maxBytes)", () => {
    const ENTRY = 1024; // the per-entry charge src/memory-fs.ts documents
    const full = posixError("ENOSPC", "no space left on device: ");

    test("contents fill it exactly; a write past it is refused whole and changes nothing", async () => {
      const memory = fs.memory({ maxBytes: ENTRY + 100 });
      await memory.createFile("/f");
      assert.equal(await memory.write({ path: "/f", offset: 0, contents: new Uint8Array(60).fill(1) }), 60);
      assert.equal(await memory.write({ path: "/f", offset: 60, contents: new Uint8Array(40).fill(2) }), 40);
      await assert.rejects(memory.write({ path: "/f", offset: 100, contents: bytes("x") }), full);
      await assert.rejects(memory.write({ path: "/f", offset: 90, contents: new Uint8Array(20).fill(3) }), full);
      await assert.rejects(memory.truncate("/f", 101), full);
      await assert.rejects(memory.createFile("/g"), full);
      await assert.rejects(memory.mkdir("/d"), full);
      await assert.rejects(memory.symlink("/f", "/s"), full);
      await assert.rejects(memory.link("/f", "/h"), full);
      await assert.rejects(memory.setxattr("/f", "user.a", bytes("")), full);
      const contents = await memory.read({ path: "/f", signal });
      assert.equal(contents.length, 100);
      assert.deepEqual([contents[59], contents[60], contents[99]], [1, 2, 2]);
      assert.deepEqual((await memory.list("/")).map((entry) => entry.name), ["f"]);
      assert.deepEqual(await memory.listxattr("/f"), []);
      // Overwriting in place takes nothing more.
      assert.equal(await memory.write({ path: "/f", offset: 0, contents: new Uint8Array(100) }), 100);
    });

    test("shrinking, unlinking, rmdir, removexattr and replacing renames give it back", async () => {
      const memory = fs.memory({ maxBytes: 3 * ENTRY + 100 });
      await memory.createFile("/f");
      await memory.write({ path: "/f", offset: 0, contents: new Uint8Array(100) });
      await memory.truncate("/f", 10);
      await memory.createFile("/g");
      await memory.write({ path: "/g", offset: 0, contents: new Uint8Array(90) });
      await memory.mkdir("/d");
      await assert.rejects(memory.write({ path: "/g", offset: 90, contents: bytes("x") }), full);
      await memory.unlink("/f");
      await memory.write({ path: "/g", offset: 90, contents: new Uint8Array(20) });
      await assert.rejects(memory.createFile("/h"), full);
      await memory.truncate("/g", 100);
      await memory.rmdir("/d");
      await memory.createFile("/h");
      await memory.rename("/h", "/d2"); // a move takes nothing
      await memory.createFile("/x");
      await assert.rejects(memory.createFile("/y"), full);
      await memory.rename("/x", "/d2"); // replacing frees the replaced entry
      await memory.createFile("/y");
      await memory.unlink("/y");
      await memory.truncate("/g", 0);
      await memory.setxattr("/g", "user.a", new Uint8Array(100 - "user.a".length)); // fills it
      await assert.rejects(memory.setxattr("/g", "user.a", new Uint8Array(100)), full);
      await memory.removexattr("/g", "user.a");
      await memory.write({ path: "/g", offset: 0, contents: new Uint8Array(ENTRY + 100) });
    });

    test("hard links share one charge for contents; the last unlink frees it", async () => {
      const memory = fs.memory({ maxBytes: 2 * ENTRY + 100 });
      await memory.createFile("/f");
      await memory.write({ path: "/f", offset: 0, contents: new Uint8Array(100) });
      await memory.link("/f", "/g");
      await memory.unlink("/f");
      await memory.createFile("/h");
      await assert.rejects(memory.write({ path: "/h", offset: 0, contents: bytes("x") }), full);
      await memory.unlink("/g");
      await memory.write({ path: "/h", offset: 0, contents: new Uint8Array(ENTRY + 100) });
    });

    test("a flood of empty files, directories, symlinks or xattrs stops at the quota", async () => {
      const memory = fs.memory({ maxBytes: 64 * ENTRY });
      let entries = 0;
      await assert.rejects(async () => {
        for (; entries < 1000; entries += 1) await memory.createFile(`/f${entries}`);
      }, full);
      assert.equal(entries, 64);
      await memory.unlink("/f0");
      await assert.rejects(async () => {
        for (let index = 0; index < 1000; index += 1) await memory.setxattr("/f1", `user.${index}`, new Uint8Array(0));
      }, full);
      assert.equal((await memory.listxattr("/f1")).length, 0);
      await memory.unlink("/f2");
      await memory.setxattr("/f1", "user.a", new Uint8Array(0));
      await memory.unlink("/f3");
      await memory.symlink("/f1", "/s");
    });

    test("seeds count; the default is 1 GiB; maxBytes must be a positive integer", async () => {
      assert.throws(() => fs.memory({ maxBytes: ENTRY + 4, files: { "/a": "12345" } }), full);
      const seeded = fs.memory({ maxBytes: 2 * ENTRY + 5, files: { "/d/a": "12345" } });
      await assert.rejects(seeded.createFile("/b"), full);
      const memory = fs.memory();
      await memory.createFile("/big");
      await memory.truncate("/big", 1024 ** 3 - ENTRY);
      await assert.rejects(memory.truncate("/big", 1024 ** 3 - ENTRY + 1), full);
      await memory.truncate("/big", 0);
      for (const maxBytes of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
        assert.throws(() => fs.memory({ maxBytes }), TypeError);
      }
    });
  });
});
