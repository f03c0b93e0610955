// Serves a COW root's block store: the addon's copy-on-write disk (Go,
// blockstore/) calls into JavaScript with one "block-*" event per store
// operation, and this module runs it against the user's SandboxBlockStore,
// always with the same context object ({ base }).
//
// Block data never goes through JSON. Payloads and answers are bytes, every
// integer big-endian (blockstore/eventstore/eventstore.go is the Go side and
// checks every answer again against the disk):
//
//   event        payload (native → JS)                 answer (JS → native)
//   block-list   empty                                 n × u64 block index
//   block-read   u64 start, u32 count                  per chunk: u64 start, u32 length, bytes
//   block-write  u32 n, n × (u64 start, u32 length),   nothing
//                then the n chunks' bytes in order
//   block-flush  empty                                 nothing
//
// A store without flush() resolves block-flush at once: its write() must
// then be durable (and atomic) by itself.
//
// One store serves at most one running sandbox in this process: attach()
// claims it at boot and the claim ends when that sandbox's close() settles
// or its boot fails, and no write() or flush() of it is still in flight:
// close() gives up on a store call that does not answer (native/lane), but
// the call may still land, and must not land on the next sandbox's blocks.
// A store's own optional attach()/detach() hooks (a lease across machines,
// e.g. @torkbot/sandbox/s3) run inside that claim.

import { NativeEvents } from "./addon-protocol.js";
import { codedError, ErrorCodes, errorCode } from "./errors.js";
import type { SandboxBlockChunk, SandboxBlockStore, SandboxBlockStoreContext } from "./rootfs.js";

const attached = new WeakSet<SandboxBlockStore>();
/** The store's write() and flush() calls in flight, settled or not yet. */
const mutations = new WeakMap<SandboxBlockStore, Set<Promise<unknown>>>();

/**
 * Claims `store` for one boot; throws ERR_SANDBOX_STORE_IN_USE when a running
 * sandbox of this process already has it. Call the returned function once the
 * sandbox is closed (or failed to boot) to let the store go.
 */
export function attach(store: SandboxBlockStore): () => void {
  if (attached.has(store)) {
    throw codedError(
      ErrorCodes.storeInUse,
      "this SandboxBlockStore is attached to a sandbox that is still running in this process: close() that sandbox before booting another one on the same store (two VMs writing one disk would corrupt it)",
    );
  }
  attached.add(store);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (!(mutations.get(store)?.size ?? 0)) attached.delete(store);
    else void settled(store).then(() => attached.delete(store));
  };
}

/** Resolves once no write() or flush() of `store` is in flight. */
async function settled(store: SandboxBlockStore): Promise<void> {
  const inFlight = mutations.get(store);
  while (inFlight !== undefined && inFlight.size > 0) await Promise.allSettled([...inFlight]);
}

/** Runs a write() or flush() of `store`, tracked until it settles. */
function mutation(store: SandboxBlockStore, run: () => Promise<Uint8Array | undefined>): Promise<Uint8Array | undefined> {
  let inFlight = mutations.get(store);
  if (inFlight === undefined) mutations.set(store, (inFlight = new Set()));
  const call = guarded(run);
  const tracked = inFlight;
  tracked.add(call);
  const forget = () => tracked.delete(call);
  call.then(forget, forget);
  return call;
}

const U64_LIMIT = 1n << 64n;

/** The one context object of a boot, passed to every store call. */
export function storeContext(base: string): SandboxBlockStoreContext {
  return Object.freeze({ base });
}

/**
 * Runs the store's optional attach() or detach() hook. A failure carrying a
 * string `code` (the store's own, e.g. ERR_SANDBOX_STORE_IN_USE) is passed
 * on unchanged; any other becomes ERR_SANDBOX_BLOCK_STORE naming the hook.
 */
export async function storeHook(store: SandboxBlockStore, hook: "attach" | "detach", context: SandboxBlockStoreContext): Promise<void> {
  try {
    await store[hook]?.(context);
  } catch (error) {
    if (errorCode(error) !== undefined) throw error;
    const message = error instanceof Error ? error.message : String(error);
    throw codedError(ErrorCodes.blockStore, `block store ${hook}() failed: ${message}`, { cause: error });
  }
}

/** The handler for a boot's "block-*" events; undefined for other events. */
export function blockStoreEventHandler(
  store: SandboxBlockStore,
  context: SandboxBlockStoreContext,
): (event: string, payload: Uint8Array) => Promise<Uint8Array | undefined> | undefined {
  const blockSize = store.blockSize;
  return (event, payload) => {
    switch (event) {
      case NativeEvents.blockList:
        return guarded(async () => encodeList(await store.list(context)));
      case NativeEvents.blockRead: {
        const view = viewOf(payload);
        const range = Object.freeze({ start: view.getBigUint64(0), count: view.getUint32(8) });
        return guarded(async () => encodeChunks(await store.read(range, context), blockSize));
      }
      case NativeEvents.blockWrite: {
        const chunks = decodeWrite(payload);
        return mutation(store, async () => {
          await store.write(chunks, context);
          return undefined;
        });
      }
      case NativeEvents.blockFlush:
        return mutation(store, async () => {
          await store.flush?.(context);
          return undefined;
        });
      default:
        return undefined;
    }
  };
}

/**
 * Runs one store call; any failure becomes an ERR_SANDBOX_BLOCK_STORE with
 * the store's own message (the native side prefixes the call, e.g.
 * "block store write() failed: ...", and adds it to what close() or the
 * guest's I/O error reports).
 */
async function guarded(run: () => Promise<Uint8Array | undefined>): Promise<Uint8Array | undefined> {
  try {
    return await run();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw codedError(ErrorCodes.blockStore, message, { cause: error });
  }
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function blockIndex(value: unknown, what: string): bigint {
  // Whole numbers are taken too: plain-JavaScript stores often keep indices as numbers.
  const index = typeof value === "number" && Number.isSafeInteger(value) ? BigInt(value) : value;
  if (typeof index !== "bigint" || index < 0n || index >= U64_LIMIT) {
    throw new Error(`${what} must be a non-negative bigint block index, got ${typeof value === "bigint" ? `${value}n` : String(value)}`);
  }
  return index;
}

export function encodeList(list: readonly bigint[]): Uint8Array {
  if (!Array.isArray(list)) throw new Error("list() must resolve to an array of bigint block indices");
  const out = new Uint8Array(8 * list.length);
  const view = viewOf(out);
  list.forEach((value, i) => view.setBigUint64(8 * i, blockIndex(value, `list()[${i}]`)));
  return out;
}

export function encodeChunks(chunks: readonly SandboxBlockChunk[], blockSize: number): Uint8Array {
  if (!Array.isArray(chunks)) throw new Error("read() must resolve to an array of { start, data } chunks");
  let size = 0;
  for (const [i, chunk] of chunks.entries()) {
    const data = (chunk as Partial<SandboxBlockChunk> | null)?.data;
    if (!(data instanceof Uint8Array)) throw new Error(`read() chunk ${i}: data must be a Uint8Array`);
    if (data.byteLength === 0 || data.byteLength % blockSize !== 0 || data.byteLength > 0xffff_ffff) {
      throw new Error(`read() chunk ${i}: data of ${data.byteLength} bytes is not whole ${blockSize}-byte blocks`);
    }
    size += 12 + data.byteLength;
  }
  const out = new Uint8Array(size);
  const view = viewOf(out);
  let at = 0;
  for (const [i, chunk] of chunks.entries()) {
    view.setBigUint64(at, blockIndex(chunk.start, `read() chunk ${i} start`));
    view.setUint32(at + 8, chunk.data.byteLength);
    out.set(chunk.data, at + 12);
    at += 12 + chunk.data.byteLength;
  }
  return out;
}

/** The chunks of a block-write payload; their data are views of the payload (it belongs to JavaScript). */
export function decodeWrite(payload: Uint8Array): readonly SandboxBlockChunk[] {
  const view = viewOf(payload);
  const n = view.getUint32(0);
  let data = 4 + 12 * n;
  const chunks: SandboxBlockChunk[] = [];
  for (let i = 0; i < n; i++) {
    const start = view.getBigUint64(4 + 12 * i);
    const length = view.getUint32(4 + 12 * i + 8);
    if (data + length > payload.byteLength) throw new Error("block-write payload is shorter than its chunk table says");
    chunks.push(Object.freeze({ start, data: payload.subarray(data, data + length) }));
    data += length;
  }
  return Object.freeze(chunks);
}
