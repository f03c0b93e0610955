// `rootfs.builtIn(name)` and `rootfs.cow({ base, writable })`, the block
// store contract, and the checks defineSandbox runs on a rootfs. As in
// 0.6.0, a rootfs is recognised by its `kind` and shape, not by who made it:
// a typed literal, a spread or a structuredClone of one works too. The
// values rootfs makes are frozen.

import { invalidDefinition } from "./errors.js";

/**
 * The built-in image names. alpine:3.23 (0.6.0's) has no recipe that builds
 * here; debian:13 carries its tool set, debian:13-slim only curl.
 */
export const BUILT_IN_ROOTFS_NAMES = ["alpine:3.23", "debian:13", "debian:13-slim"] as const;

export type BuiltInRootfsName = (typeof BUILT_IN_ROOTFS_NAMES)[number];

export type BuiltInRootfsConfig = {
  readonly kind: "built-in-rootfs";
  readonly name: BuiltInRootfsName;
};

export type CowRootfsConfig = {
  readonly kind: "cow-rootfs";
  readonly base: BuiltInRootfsConfig;
  readonly writable: SandboxBlockStore;
};

export type Rootfs = BuiltInRootfsConfig | CowRootfsConfig;

/** `count` blocks from block index `start` of the decoded raw disk. */
export type SandboxBlockRange = { readonly start: bigint; readonly count: number };
export type SandboxBlockChunk = { readonly start: bigint; readonly data: Uint8Array };
/** `base` names the exact base image: `built-in:<name>:qcow2:<platform>:<arch>:sha256:<digest>`. */
export type SandboxBlockStoreContext = { readonly base: string };

/**
 * The user's storage for a COW root's dirty blocks. `list()` is called once
 * when the disk opens; `read()` only for listed blocks and must return each
 * one asked for; `write()` receives whole blocks; `flush()` follows writes.
 * Attach a store to at most one running sandbox.
 */
export interface SandboxBlockStore {
  readonly blockSize: number;
  list(context: SandboxBlockStoreContext): Promise<readonly bigint[]>;
  read(range: SandboxBlockRange, context: SandboxBlockStoreContext): Promise<readonly SandboxBlockChunk[]>;
  write(chunks: readonly SandboxBlockChunk[], context: SandboxBlockStoreContext): Promise<void>;
  flush?(context: SandboxBlockStoreContext): Promise<void>;
  /**
   * Optional (not in 0.6.0): called once per boot with the boot's context,
   * before the disk opens (so before list()). A rejection fails boot() with
   * that error, its `code` kept (e.g. ERR_SANDBOX_STORE_IN_USE), and no VM
   * starts. Take a lease across processes and machines here.
   */
  attach?(context: SandboxBlockStoreContext): Promise<void>;
  /**
   * Optional (not in 0.6.0): called once after a boot whose attach()
   * resolved has ended: its close() settled (after the last flush()) or its
   * boot failed. close() settles after it; a rejection makes a close that
   * had succeeded reject with ERR_SANDBOX_BLOCK_STORE. Release the lease here.
   */
  detach?(context: SandboxBlockStoreContext): Promise<void>;
}

export const rootfs = {
  /** A built-in image, read-only in the guest. The name is checked by defineSandbox. */
  builtIn(name: BuiltInRootfsName): BuiltInRootfsConfig {
    return Object.freeze({ kind: "built-in-rootfs", name });
  },
  /** A built-in base made writable through `writable`; mutations persist in the store. */
  cow(options: { readonly base: BuiltInRootfsConfig; readonly writable: SandboxBlockStore }): Rootfs {
    return Object.freeze({ kind: "cow-rootfs", base: options?.base, writable: options?.writable });
  },
};

/**
 * Throws unless `value` is a valid rootfs, with 0.6.0's messages: "invalid
 * sandbox definition: …", or "unsupported built-in rootfs: NAME".
 */
export function checkRootfs(value: unknown): Rootfs {
  const kind = typeof value === "object" && value !== null ? (value as { kind?: unknown }).kind : undefined;
  if (kind === "built-in-rootfs") {
    checkBuiltInName((value as BuiltInRootfsConfig).name);
    return value as BuiltInRootfsConfig;
  }
  if (kind !== "cow-rootfs") {
    throw invalidDefinition("rootfs must be created with rootfs.builtIn(...) or rootfs.cow(...)");
  }
  const { base, writable } = value as { base?: unknown; writable?: unknown };
  if (typeof base !== "object" || base === null || (base as { kind?: unknown }).kind !== "built-in-rootfs") {
    throw invalidDefinition("rootfs.cow base must be created with rootfs.builtIn(...)");
  }
  checkBuiltInName((base as BuiltInRootfsConfig).name);
  checkBlockStore(writable);
  return value as CowRootfsConfig;
}

function checkBuiltInName(name: unknown): void {
  if (!(BUILT_IN_ROOTFS_NAMES as readonly unknown[]).includes(name)) {
    throw new Error(`unsupported built-in rootfs: ${String(name)} (known: ${BUILT_IN_ROOTFS_NAMES.join(", ")})`);
  }
}

function checkBlockStore(store: unknown): void {
  if (typeof store !== "object" || store === null) {
    throw invalidDefinition("rootfs.cow writable must be a SandboxBlockStore object");
  }
  const { blockSize } = store as { blockSize?: unknown };
  if (typeof blockSize !== "number" || !Number.isInteger(blockSize) || blockSize <= 0) {
    throw invalidDefinition(`rootfs COW block size must be a positive integer, got ${String(blockSize)}`);
  }
  if (blockSize % 512 !== 0) {
    throw invalidDefinition(`rootfs COW block size must be a multiple of 512 bytes, got ${blockSize}`);
  }
  const methods = store as Record<string, unknown>;
  for (const method of ["list", "read", "write"]) {
    if (typeof methods[method] !== "function") {
      throw invalidDefinition(`rootfs COW block store must provide ${method}()`);
    }
  }
  for (const method of ["flush", "attach", "detach"]) {
    if (methods[method] !== undefined && typeof methods[method] !== "function") {
      throw invalidDefinition(`rootfs COW block store ${method} must be a function when present`);
    }
  }
}
