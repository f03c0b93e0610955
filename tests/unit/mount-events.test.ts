// The JavaScript side of mounts: "fs" events decoded and run against a
// mount's filesystem, answers encoded, errors turned into errno names.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { CheckedMount } from "../../src/boot-options.js";
import { fs, type SandboxFileSystem } from "../../src/index.js";
import { errnoName, mountAccess, mountEventHandler } from "../../src/mount-events.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes an "fs" event as the addon does: u32 BE head length, JSON head, data. */
function event(head: object, data = new Uint8Array()): Uint8Array {
  const json = encoder.encode(JSON.stringify(head));
  const out = new Uint8Array(4 + json.length + data.length);
  new DataView(out.buffer).setUint32(0, json.length);
  out.set(json, 4);
  out.set(data, 4 + json.length);
  return out;
}

const answerText = (answer: unknown) =>
  typeof answer === "string" ? answer : decoder.decode(answer as Uint8Array);

describe("mount events", () => {
  test("maps error codes and the API's message prefixes to errno names", () => {
    assert.equal(errnoName(Object.assign(new Error("x"), { code: "EACCES" })), "EACCES");
    assert.equal(errnoName(new Error("not found: /a")), "ENOENT");
    assert.equal(errnoName(new Error("path exists: /a")), "EEXIST");
    assert.equal(errnoName(new Error("not a directory: /a")), "ENOTDIR");
    assert.equal(errnoName(new Error("is a directory: /a")), "EISDIR");
    assert.equal(errnoName(new Error("directory not empty: /a")), "ENOTEMPTY");
    assert.equal(errnoName(new Error("xattr not found: user.x")), "ENODATA");
    // The rest of 0.6.0's list.
    assert.equal(errnoName(new Error("xattr already exists: user.x")), "EEXIST");
    assert.equal(errnoName(new Error("xattr does not exist: user.x")), "ENODATA");
    assert.equal(errnoName(new Error("xattr value larger than requested size")), "ERANGE");
    assert.equal(errnoName(new Error("disk on fire")), undefined);
    assert.equal(errnoName(Object.assign(new Error("x"), { code: "ERR_SOMETHING" })), undefined);
    assert.equal(errnoName("a string"), undefined);
  });

  test("tells read-only filesystems from POSIX ones", () => {
    const readOnly: SandboxFileSystem = {
      stat: async () => ({ type: "directory", sizeBytes: null, mediaType: null, modifiedAtMs: null }),
      list: async () => [],
      read: async () => new Uint8Array(),
    };
    assert.equal(mountAccess(readOnly), "read-only");
    assert.equal(mountAccess(fs.memory()), "posix");
  });

  test("runs operations against the mount's filesystem", async () => {
    const memory = fs.memory({ files: { "/a.txt": "hello" } });
    const mounts: CheckedMount[] = [{ path: "/workspace", fileSystem: memory }];
    const handle = mountEventHandler(mounts);
    const stat = JSON.parse(answerText(await handle("fs", event({ mount: 0, op: "stat", path: "/a.txt" }))));
    assert.equal(stat.type, "file");
    assert.equal(stat.sizeBytes, 5);
    const read = await handle("fs", event({ mount: 0, op: "read", path: "/a.txt", offset: 1, length: 3, abortId: 1 }));
    assert.equal(answerText(read), "ell");
    await handle("fs", event({ mount: 0, op: "createFile", path: "/b.txt" }));
    const written = await handle("fs", event({ mount: 0, op: "write", path: "/b.txt", offset: 0 }, encoder.encode("bytes")));
    assert.equal(JSON.parse(answerText(written)), 5);
    await handle("fs", event({ mount: 0, op: "setxattr", path: "/b.txt", name: "user.k", flags: 1 }, encoder.encode("v")));
    assert.equal(answerText(await handle("fs", event({ mount: 0, op: "getxattr", path: "/b.txt", name: "user.k" }))), "v");
    await handle("fs", event({ mount: 0, op: "rename", path: "/b.txt", to: "/c.txt", flags: 0 }));
    await handle("fs", event({ mount: 0, op: "symlink", path: "/l", target: "c.txt" }));
    assert.equal(answerText(await handle("fs", event({ mount: 0, op: "readlink", path: "/l" }))), "c.txt");
    const list = JSON.parse(answerText(await handle("fs", event({ mount: 0, op: "list", path: "/" }))));
    assert.deepEqual(list.map((e: { name: string }) => e.name).sort(), ["a.txt", "c.txt", "l"]);
    // The host sees what the guest wrote, straight from the object.
    assert.equal(decoder.decode(await memory.read({ path: "/c.txt", signal: new AbortController().signal })), "bytes");
  });

  test("turns failures into errno-coded errors", async () => {
    const handle = mountEventHandler([{ path: "/w", fileSystem: fs.memory() }]);
    await assert.rejects(handle("fs", event({ mount: 0, op: "stat", path: "/nope" })), { code: "ENOENT" });
    await assert.rejects(handle("fs", event({ mount: 0, op: "frobnicate", path: "/" })), { code: "ENOSYS" });
    const broken = mountEventHandler([{ path: "/w", fileSystem: { ...fs.memory(), stat: async () => { throw new Error("backend down"); } } }]);
    await assert.rejects(broken("fs", event({ mount: 0, op: "stat", path: "/" })), (error: Error & { code?: string }) => {
      assert.equal(error.code, "EIO");
      assert.match(error.message, /\/w: stat \/: backend down/);
      return true;
    });
  });

  test("refuses a read() that resolves to anything but bytes, rather than send its text", async () => {
    for (const garbage of [42, "text", null, { length: 1 }]) {
      const odd: SandboxFileSystem = {
        stat: async () => ({ type: "file", sizeBytes: 1, mediaType: null, modifiedAtMs: null }),
        list: async () => [],
        read: async () => garbage as unknown as Uint8Array,
      };
      const handle = mountEventHandler([{ path: "/w", fileSystem: odd }]);
      await assert.rejects(handle("fs", event({ mount: 0, op: "read", path: "/f", offset: 0, length: 1 })), (error: Error & { code?: string }) => {
        assert.equal(error.code, "EIO");
        assert.match(error.message, /\/w: read \/f: read\(\) must resolve to a Uint8Array, got /);
        return true;
      });
    }
  });

  test("aborts the signal of a read the guest interrupted", async () => {
    let seen: AbortSignal | undefined;
    const slow: SandboxFileSystem = {
      stat: async () => ({ type: "file", sizeBytes: 1, mediaType: null, modifiedAtMs: null }),
      list: async () => [],
      read: ({ signal }) => {
        seen = signal;
        return new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
      },
    };
    const handle = mountEventHandler([{ path: "/w", fileSystem: slow }]);
    const pending = handle("fs", event({ mount: 0, op: "read", path: "/f", offset: 0, length: 1, abortId: 7 }));
    await handle("fs-abort", encoder.encode(JSON.stringify({ abortId: 7 })));
    await assert.rejects(pending, { code: "EIO" });
    assert.equal(seen?.aborted, true);
  });
});
