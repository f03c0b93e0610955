// `rootfs.builtIn(name)` and `rootfs.cow({ base, writable })`, the block
// store contract, and the checks defineSandbox runs on a rootfs. Values are
// frozen and branded at creation, so a look-alike object (or one edited after
// creation) is never taken for a rootfs.

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
}

const madeHere = new WeakSet<object>();

export const rootfs = {
  /** A built-in image, read-only in the guest. The name is checked by defineSandbox. */
  builtIn(name: BuiltInRootfsName): BuiltInRootfsConfig {
    const made: BuiltInRootfsConfig = Object.freeze({ kind: "built-in-rootfs", name });
    madeHere.add(made);
    return made;
  },
  /** A built-in base made writable through `writable`; mutations persist in the store. */
  cow(options: { readonly base: BuiltInRootfsConfig; readonly writable: SandboxBlockStore }): Rootfs {
    const made: CowRootfsConfig = Object.freeze({ kind: "cow-rootfs", base: options?.base, writable: options?.writable });
    madeHere.add(made);
    return made;
  },
};

/** Throws "invalid sandbox definition: …" unless `value` is a valid rootfs made by `rootfs`. */
export function checkRootfs(value: unknown): Rootfs {
  if (typeof value !== "object" || value === null || !madeHere.has(value)) {
    throw invalidDefinition("rootfs must be created with rootfs.builtIn(...) or rootfs.cow(...)");
  }
  const made = value as Rootfs;
  if (made.kind === "built-in-rootfs") {
    checkBuiltInName(made.name);
    return made;
  }
  if (typeof made.base !== "object" || made.base === null || !madeHere.has(made.base) || made.base.kind !== "built-in-rootfs") {
    throw invalidDefinition("rootfs.cow base must be created with rootfs.builtIn(...)");
  }
  checkBuiltInName(made.base.name);
  checkBlockStore(made.writable);
  return made;
}

function checkBuiltInName(name: unknown): void {
  if (!(BUILT_IN_ROOTFS_NAMES as readonly unknown[]).includes(name)) {
    throw invalidDefinition(
      `unknown built-in rootfs ${JSON.stringify(name)} (known: ${BUILT_IN_ROOTFS_NAMES.join(", ")})`,
    );
  }
}

function checkBlockStore(store: unknown): void {
  if (typeof store !== "object" || store === null) {
    throw invalidDefinition("rootfs.cow writable must be a SandboxBlockStore object");
  }
  const { blockSize } = store as { blockSize?: unknown };
  if (typeof blockSize !== "number" || !Number.isInteger(blockSize) || blockSize <= 0 || blockSize % 512 !== 0) {
    throw invalidDefinition(`rootfs COW block size must be a positive multiple of 512 bytes, got ${String(blockSize)}`);
  }
  const methods = store as Record<string, unknown>;
  for (const method of ["list", "read", "write"]) {
    if (typeof methods[method] !== "function") {
      throw invalidDefinition(`rootfs COW block store must provide ${method}()`);
    }
  }
  if (methods.flush !== undefined && typeof methods.flush !== "function") {
    throw invalidDefinition("rootfs COW block store flush must be a function when present");
  }
}
