// The JavaScript side of a COW root's block store: "block-*" events decoded
// and run against the user's SandboxBlockStore, answers framed as the addon
// reads them, and one store attached to one running sandbox at a time.

import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { bootSandbox, type SandboxPlan } from "../../src/boot.js";
import { checkBootOptions } from "../../src/boot-options.js";
import { blockStoreEventHandler, decodeWrite, storeContext, encodeChunks, encodeList } from "../../src/block-store-events.js";
import { rootfs, type SandboxBlockChunk, type SandboxBlockStore, type SandboxBlockStoreContext } from "../../src/index.js";
import type { NativeEventHandler } from "../../src/native.js";
import { codedFailure, FakeNativeAddon } from "./fake-native-addon.js";

const BASE = "built-in:debian:13-slim:qcow2:linux:x64:sha256:" + "ab".repeat(32);

/** The block-write payload the addon sends: u32 n, n × (u64 start, u32 length), data. */
function writePayload(chunks: readonly { start: bigint; data: Uint8Array }[]): Uint8Array {
  const size = 4 + chunks.reduce((n, c) => n + 12 + c.data.length, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, chunks.length);
  let data = 4 + 12 * chunks.length;
  chunks.forEach((c, i) => {
    view.setBigUint64(4 + 12 * i, c.start);
    view.setUint32(4 + 12 * i + 8, c.data.length);
    out.set(c.data, data);
    data += c.data.length;
  });
  return out;
}

function readPayload(start: bigint, count: number): Uint8Array {
  const out = new Uint8Array(12);
  new DataView(out.buffer).setBigUint64(0, start);
  new DataView(out.buffer).setUint32(8, count);
  return out;
}

/** A memory store recording the contexts it was called with. */
function memoryStore(blockSize = 512) {
  const blocks = new Map<bigint, Uint8Array>();
  const contexts: SandboxBlockStoreContext[] = [];
  const store: SandboxBlockStore = {
    blockSize,
    async list(context) {
      contexts.push(context);
      return [...blocks.keys()];
    },
    async read({ start, count }, context) {
      contexts.push(context);
      const out: SandboxBlockChunk[] = [];
      for (let i = 0n; i < BigInt(count); i++) {
        const data = blocks.get(start + i);
        if (data) out.push({ start: start + i, data });
      }
      return out;
    },
    async write(chunks, context) {
      contexts.push(context);
      for (const { start, data } of chunks) {
        for (let i = 0; i < data.length / blockSize; i++) blocks.set(start + BigInt(i), data.slice(i * blockSize, (i + 1) * blockSize));
      }
    },
  };
  return { store, blocks, contexts };
}

describe("block store events", () => {
  test("list, write and read reach the store with one frozen { base } context", async () => {
    const { store, blocks, contexts } = memoryStore();
    const handle = blockStoreEventHandler(store, storeContext(BASE));
    const data = new Uint8Array(1024).fill(7);
    assert.equal(await handle("block-write", writePayload([{ start: 5n, data }])), undefined);
    assert.deepEqual([...blocks.keys()], [5n, 6n]);
    const list = (await handle("block-list", new Uint8Array()))!;
    assert.deepEqual([new DataView(list.buffer, list.byteOffset).getBigUint64(0), new DataView(list.buffer, list.byteOffset).getBigUint64(8)], [5n, 6n]);
    const read = (await handle("block-read", readPayload(5n, 2)))!;
    assert.equal(read.length, 2 * (12 + 512));
    assert.equal(await handle("block-flush", new Uint8Array()), undefined, "a store without flush() resolves flush at once");
    assert.equal(handle("something-else", new Uint8Array()), undefined);
    assert.equal(contexts.length, 3);
    assert.ok(contexts.every((c) => c === contexts[0] && Object.isFrozen(c) && c.base === BASE));
  });

  test("write chunks are views of the payload, frozen", () => {
    const payload = writePayload([{ start: 1n, data: new Uint8Array(512).fill(1) }, { start: 9n, data: new Uint8Array(1024).fill(2) }]);
    const chunks = decodeWrite(payload);
    assert.deepEqual(chunks.map((c) => [c.start, c.data.length, c.data[0]]), [[1n, 512, 1], [9n, 1024, 2]]);
    assert.equal(chunks[1]!.data.buffer, payload.buffer);
    assert.ok(Object.isFrozen(chunks) && Object.isFrozen(chunks[0]));
    assert.throws(() => decodeWrite(payload.subarray(0, payload.length - 1)), /shorter than its chunk table/);
  });

  test("answers are framed big-endian; bad ones are refused with what is wrong", () => {
    const list = encodeList([1n, 2n ** 40n, 3 as unknown as bigint]);
    const view = new DataView(list.buffer);
    assert.deepEqual([view.getBigUint64(0), view.getBigUint64(8), view.getBigUint64(16)], [1n, 2n ** 40n, 3n]);
    assert.throws(() => encodeList([-1n]), /list\(\)\[0\] must be a non-negative bigint block index, got -1n/);
    assert.throws(() => encodeList([2n ** 64n]), /list\(\)\[0\]/);
    assert.throws(() => encodeList(["7" as unknown as bigint]), /got 7/);
    assert.throws(() => encodeList({} as never), /must resolve to an array/);
    const chunks = encodeChunks([{ start: 3n, data: new Uint8Array(512).fill(9) }], 512);
    assert.equal(new DataView(chunks.buffer).getBigUint64(0), 3n);
    assert.equal(new DataView(chunks.buffer).getUint32(8), 512);
    assert.equal(chunks[12], 9);
    assert.throws(() => encodeChunks([{ start: 3n, data: new Uint8Array(100) }], 512), /not whole 512-byte blocks/);
    assert.throws(() => encodeChunks([{ start: 3n, data: "x" as never }], 512), /data must be a Uint8Array/);
    assert.throws(() => encodeChunks([{ start: -3n, data: new Uint8Array(512) }], 512), /chunk 0 start/);
  });

  test("a failing store call rejects with ERR_SANDBOX_BLOCK_STORE and the store's message", async () => {
    const { store } = memoryStore();
    store.write = async () => {
      throw new Error("bucket unreachable");
    };
    await assert.rejects(blockStoreEventHandler(store, storeContext(BASE))("block-write", writePayload([]))!, {
      code: "ERR_SANDBOX_BLOCK_STORE",
      message: "bucket unreachable",
    });
  });
});

describe("one store, one running sandbox", () => {
  const SHA = "ab".repeat(32);
  const directories: string[] = [];
  after(() => {
    for (const directory of directories) rmSync(directory, { recursive: true, force: true });
  });
  function platformDirectory(): string {
    const directory = mkdtempSync(join(tmpdir(), "sandbox-cow-"));
    directories.push(directory);
    mkdirSync(join(directory, "artifacts/kernel"), { recursive: true });
    mkdirSync(join(directory, "artifacts/images"), { recursive: true });
    writeFileSync(join(directory, "artifacts/kernel/vmlinux"), "");
    writeFileSync(join(directory, "artifacts/kernel/initrd.cpio"), "");
    writeFileSync(join(directory, "artifacts/images/debian-13-slim.qcow2"), "");
    writeFileSync(
      join(directory, "artifacts/images/catalog.json"),
      JSON.stringify({ "debian:13-slim": { file: "debian-13-slim.qcow2", format: "qcow2", sha256: SHA, virtualSizeBytes: 2 ** 30, platform: "linux", arch: "x64" } }),
    );
    return directory;
  }
  const plan = (store: SandboxBlockStore): SandboxPlan => ({
    rootfs: rootfs.cow({ base: rootfs.builtIn("debian:13-slim"), writable: store }),
    cpus: 1,
    memoryMiB: 512,
    network: undefined,
  });

  test("a second boot on the store rejects until the first closes; a failed boot lets it go", async () => {
    const directory = platformDirectory();
    const { store } = memoryStore(4096);
    const addon = new FakeNativeAddon();
    const first = await bootSandbox({ addon, directory, imageDirectories: [] }, plan(store), checkBootOptions(undefined));
    assert.deepEqual(addon.callsOf("boot")[0]?.rootDisk, {
      path: join(directory, "artifacts/images/debian-13-slim.qcow2"),
      format: "qcow2",
      readOnly: false,
      blockSize: 4096,
    });
    await assert.rejects(bootSandbox({ addon, directory, imageDirectories: [] }, plan(store), checkBootOptions(undefined)), {
      code: "ERR_SANDBOX_STORE_IN_USE",
      message: /attached to a sandbox that is still running in this process: close\(\) that sandbox/,
    });
    assert.equal(addon.callsOf("boot").length, 1, "the second boot never reached the addon");
    // Another store is independent.
    await (await bootSandbox({ addon, directory, imageDirectories: [] }, plan(memoryStore(4096).store), checkBootOptions(undefined))).close();
    await first.close();
    const again = await bootSandbox({ addon, directory, imageDirectories: [] }, plan(store), checkBootOptions(undefined));
    await again.close();

    const failing = new FakeNativeAddon({
      boot: () => {
        throw codedFailure("ERR_SANDBOX_BLOCK_STORE", "block store list() failed: offline");
      },
    });
    await assert.rejects(bootSandbox({ addon: failing, directory, imageDirectories: [] }, plan(store), checkBootOptions(undefined)), { code: "ERR_SANDBOX_BLOCK_STORE" });
    await (await bootSandbox({ addon, directory, imageDirectories: [] }, plan(store), checkBootOptions(undefined))).close();
  });

  test("a close that gave up on a write() in flight keeps the store claimed until the write settles", async () => {
    const directory = platformDirectory();
    const { store } = memoryStore(4096);
    let land: () => void = () => undefined;
    store.write = () => new Promise<void>((resolve) => (land = resolve));
    let handler: NativeEventHandler | undefined;
    const addon = new FakeNativeAddon({
      boot: (_, h) => {
        handler = h;
        return { id: 1 };
      },
      close: () => {
        throw codedFailure("ERR_SANDBOX_BLOCK_STORE", "block store write() did not answer within 30s");
      },
    });
    const lane = await bootSandbox({ addon, directory, imageDirectories: [] }, plan(store), checkBootOptions(undefined));
    const write = handler?.("block-write", writePayload([{ start: 0n, data: new Uint8Array(4096) }])) as Promise<unknown>;
    await assert.rejects(lane.close(), { code: "ERR_SANDBOX_BLOCK_STORE" });
    await assert.rejects(bootSandbox({ addon, directory, imageDirectories: [] }, plan(store), checkBootOptions(undefined)), { code: "ERR_SANDBOX_STORE_IN_USE" });
    land();
    await write;
    await new Promise((resolve) => setImmediate(resolve));
    addon.on("close", () => ({}));
    await (await bootSandbox({ addon, directory, imageDirectories: [] }, plan(store), checkBootOptions(undefined))).close();
  });

  test("a close that rejects still lets the store go", async () => {
    const directory = platformDirectory();
    const { store } = memoryStore(4096);
    const addon = new FakeNativeAddon({
      close: () => {
        throw codedFailure("ERR_SANDBOX_BLOCK_STORE", "the copy-on-write root disk was not persisted");
      },
    });
    const lane = await bootSandbox({ addon, directory, imageDirectories: [] }, plan(store), checkBootOptions(undefined));
    await assert.rejects(lane.close(), { code: "ERR_SANDBOX_BLOCK_STORE" });
    addon.on("close", () => ({}));
    await (await bootSandbox({ addon, directory, imageDirectories: [] }, plan(store), checkBootOptions(undefined))).close();
  });

  test("a store's attach() runs before the VM starts and detach() after close or a failed boot, with the boot's context", async () => {
    const directory = platformDirectory();
    const { store } = memoryStore(4096);
    const log: string[] = [];
    const contexts: SandboxBlockStoreContext[] = [];
    let refuse: Error | undefined;
    let failDetach = false;
    const hooked: SandboxBlockStore = {
      ...store,
      async attach(context) {
        contexts.push(context);
        log.push("attach");
        if (refuse !== undefined) throw refuse;
      },
      async detach(context) {
        contexts.push(context);
        log.push("detach");
        if (failDetach) throw new Error("lease not released");
      },
    };
    const addon = new FakeNativeAddon({
      boot: () => {
        log.push("boot");
        return { id: 1 };
      },
      close: () => {
        log.push("close");
        return {};
      },
    });
    const boot = () => bootSandbox({ addon, directory, imageDirectories: [] }, plan(hooked), checkBootOptions(undefined));
    await (await boot()).close();
    assert.deepEqual(log, ["attach", "boot", "close", "detach"]);
    assert.equal(contexts[0], contexts[1], "one context object per boot");
    assert.deepEqual(contexts[0], { base: `built-in:debian:13-slim:qcow2:linux:x64:sha256:${SHA}` });
    assert.ok(Object.isFrozen(contexts[0]));

    // A refusal keeps its code, starts nothing, and lets the store go.
    log.length = 0;
    refuse = codedFailure("ERR_SANDBOX_STORE_IN_USE", "s3://b/lane is attached by someone else");
    await assert.rejects(boot(), { code: "ERR_SANDBOX_STORE_IN_USE", message: /attached by someone else/ });
    refuse = new Error("bucket unreachable");
    await assert.rejects(boot(), { code: "ERR_SANDBOX_BLOCK_STORE", message: "block store attach() failed: bucket unreachable" });
    assert.deepEqual(log, ["attach", "attach"]);
    refuse = undefined;

    // A failed boot detaches; a detach that fails fails a close that had succeeded.
    log.length = 0;
    addon.on("boot", () => {
      log.push("boot");
      throw codedFailure("ERR_SANDBOX_BOOT", "no kernel");
    });
    await assert.rejects(boot(), { code: "ERR_SANDBOX_BOOT" });
    assert.deepEqual(log, ["attach", "boot", "detach"]);
    addon.on("boot", () => ({ id: 2 }));
    failDetach = true;
    const lane = await boot();
    await assert.rejects(lane.close(), { code: "ERR_SANDBOX_BLOCK_STORE", message: "block store detach() failed: lease not released" });
    failDetach = false;
    await (await boot()).close(); // the store was let go
  });
});
