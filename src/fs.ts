// The filesystem contracts a mount can be backed by, `fs.virtual(...)` which
// turns one into a mount source, and `fs.memory(...)`.
//
// Errors: a method signals a POSIX error by throwing an Error whose message
// starts with one of the prefixes below, or that carries an errno `code`
// ("ENOENT", ...). The guest sees that errno; anything else becomes EIO.
//   "not found:" ENOENT        "path exists" EEXIST     "not a directory:" ENOTDIR
//   "is a directory:" EISDIR   "directory not empty:" ENOTEMPTY
//   "xattr not found:", "xattr does not exist:" ENODATA
//   "xattr already exists:" EEXIST   (containing) "larger than requested size" ERANGE

import { MemoryFileSystem } from "./memory-fs.js";

export type SandboxFileType = "file" | "directory" | "symlink";

export type SandboxFileStat = {
  readonly type: SandboxFileType;
  readonly sizeBytes: number | null;
  readonly mediaType: string | null;
  readonly modifiedAtMs: number | null;
  readonly writable?: boolean;
};

export type SandboxDirectoryEntry = {
  readonly name: string;
  readonly type: SandboxFileType;
};

/** Read-only contract: a filesystem with only these methods mounts read-only. */
export interface SandboxFileSystem {
  /** Describes the entry itself; a symlink is reported as "symlink". */
  stat(path: string): Promise<SandboxFileStat>;
  list(path: string): Promise<readonly SandboxDirectoryEntry[]>;
  read(input: {
    readonly path: string;
    readonly range?: { readonly offset: number; readonly length: number };
    readonly signal: AbortSignal;
  }): Promise<Uint8Array>;
}

export interface SandboxWritableFileSystem extends SandboxFileSystem {
  createFile(path: string): Promise<SandboxFileStat>;
  /** Writes `contents` at `offset`, growing the file as needed; returns the bytes written. */
  write(input: { readonly path: string; readonly offset: number; readonly contents: Uint8Array }): Promise<number>;
  truncate(path: string, size: number): Promise<SandboxFileStat>;
}

/** Full POSIX contract; a writable mount must implement all of it. */
export interface SandboxPosixFileSystem extends SandboxWritableFileSystem {
  mkdir(path: string): Promise<SandboxFileStat>;
  unlink(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  /** flags: 1 = RENAME_NOREPLACE, 2 = RENAME_EXCHANGE. */
  rename(from: string, to: string, flags?: number): Promise<void>;
  link(from: string, to: string): Promise<SandboxFileStat>;
  symlink(target: string, path: string): Promise<SandboxFileStat>;
  readlink(path: string): Promise<string>;
  /** flags: 1 = XATTR_CREATE (fail if present), 2 = XATTR_REPLACE (fail if absent). */
  setxattr(path: string, name: string, value: Uint8Array, flags?: number): Promise<void>;
  getxattr(path: string, name: string): Promise<Uint8Array>;
  listxattr(path: string): Promise<readonly string[]>;
  removexattr(path: string, name: string): Promise<void>;
}

export interface MemoryFileSystemOptions {
  /** Seed files by absolute path; parent directories are created. Strings are UTF-8. */
  readonly files?: Readonly<Record<string, string | Uint8Array>>;
  /**
   * The most it holds, in bytes (default 1 GiB): file contents, symlink
   * targets and xattr values, plus 1 KiB for each entry and xattr. Past it,
   * writes, growing truncates and new entries or xattrs fail whole with
   * ENOSPC (the guest sees "No space left on device").
   */
  readonly maxBytes?: number;
}

export type SandboxFileSystemSource = {
  readonly kind: "virtual-fs";
  readonly fileSystem: SandboxFileSystem;
};

export type SandboxWritableFileSystemSource = {
  readonly kind: "virtual-fs";
  readonly fileSystem: SandboxPosixFileSystem;
};

/**
 * Mounts `fileSystem` in the guest, which calls its methods with guest paths.
 *
 * The guest is hostile. A backend over a host directory must never follow
 * host symlinks: `stat` must describe a link itself (`lstat`, type
 * `"symlink"`), and no method may resolve a path through a link, or a link
 * the guest made (`symlink("/etc", "l")`) would reach outside the
 * directory. The host refuses file I/O on a node that `stat` called a
 * symlink and names under a non-directory (docs/security.md), but it can
 * only trust what `stat` says.
 */
function virtual(fileSystem: SandboxPosixFileSystem): SandboxWritableFileSystemSource;
function virtual(fileSystem: SandboxFileSystem): SandboxFileSystemSource;
function virtual(fileSystem: SandboxFileSystem): SandboxFileSystemSource {
  return Object.freeze({ kind: "virtual-fs", fileSystem });
}

/**
 * `fs.memory()` is a plain object of bound methods, as 0.6.0's closures
 * were: `const { read } = mem`, `{ ...mem }` and `fs.virtual({ stat:
 * mem.stat, ... })` all keep working.
 */
function memory(options?: MemoryFileSystemOptions): SandboxPosixFileSystem {
  const fileSystem = new MemoryFileSystem(options);
  const bound: Record<string, unknown> = {};
  for (const name of [...READ_METHODS, ...WRITE_METHODS, ...POSIX_METHODS]) {
    bound[name] = fileSystem[name].bind(fileSystem);
  }
  return bound as unknown as SandboxPosixFileSystem;
}

export const fs = { memory, virtual };

/**
 * A mount source is recognised by its `kind` and shape, as in 0.6.0: a
 * literal `{ kind: "virtual-fs", fileSystem }` works as well as fs.virtual's.
 */
export function isFileSystemSource(value: unknown): value is SandboxFileSystemSource {
  if (typeof value !== "object" || value === null) return false;
  const { kind, fileSystem } = value as { kind?: unknown; fileSystem?: unknown };
  return kind === "virtual-fs" && typeof fileSystem === "object" && fileSystem !== null;
}

const READ_METHODS = ["stat", "list", "read"] as const;
const WRITE_METHODS = ["createFile", "write", "truncate"] as const;
const POSIX_METHODS = [
  "mkdir", "unlink", "rmdir", "rename", "link", "symlink", "readlink",
  "setxattr", "getxattr", "listxattr", "removexattr",
] as const;

/**
 * Why `fileSystem`, to be mounted at `path`, cannot be, or undefined when it
 * can: it needs the read methods, and if it has any write method, the whole
 * POSIX contract (0.6.0's message, then what is missing).
 */
export function unmountableReason(fileSystem: unknown, path: string): string | undefined {
  if (typeof fileSystem !== "object" || fileSystem === null) return `mount ${path}: filesystem is not an object`;
  const methods = fileSystem as Record<string, unknown>;
  const missing = (names: readonly string[]) => names.filter((name) => typeof methods[name] !== "function");
  const missingRead = missing(READ_METHODS);
  if (missingRead.length > 0) return `mount ${path}: filesystem lacks ${missingRead.join(", ")}`;
  if (missing(WRITE_METHODS).length === WRITE_METHODS.length) return undefined;
  const missingPosix = missing([...WRITE_METHODS, ...POSIX_METHODS]);
  if (missingPosix.length > 0) {
    return `writable mount must implement the POSIX filesystem interface: ${path} (missing ${missingPosix.join(", ")})`;
  }
  return undefined;
}
