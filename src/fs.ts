// The filesystem contracts a mount can be backed by, `fs.virtual(...)` which
// turns one into a mount source, and `fs.memory(...)`.
//
// Errors: a method signals a POSIX error by throwing an Error whose message
// starts with one of the prefixes below, or that carries an errno `code`
// ("ENOENT", ...). The guest sees that errno; anything else becomes EIO.
//   "not found:" ENOENT        "path exists" EEXIST     "not a directory:" ENOTDIR
//   "is a directory:" EISDIR   "directory not empty:" ENOTEMPTY
//   "xattr not found:" ENODATA

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
}

export type SandboxFileSystemSource = {
  readonly kind: "virtual-fs";
  readonly fileSystem: SandboxFileSystem;
};

export type SandboxWritableFileSystemSource = {
  readonly kind: "virtual-fs";
  readonly fileSystem: SandboxPosixFileSystem;
};

const sources = new WeakSet<object>();

function virtual(fileSystem: SandboxPosixFileSystem): SandboxWritableFileSystemSource;
function virtual(fileSystem: SandboxFileSystem): SandboxFileSystemSource;
function virtual(fileSystem: SandboxFileSystem): SandboxFileSystemSource {
  const source: SandboxFileSystemSource = Object.freeze({ kind: "virtual-fs", fileSystem });
  sources.add(source);
  return source;
}

export const fs = {
  memory: (options?: MemoryFileSystemOptions): SandboxPosixFileSystem => new MemoryFileSystem(options),
  virtual,
};

export function isFileSystemSource(value: unknown): value is SandboxFileSystemSource {
  return typeof value === "object" && value !== null && sources.has(value);
}

const READ_METHODS = ["stat", "list", "read"] as const;
const WRITE_METHODS = ["createFile", "write", "truncate"] as const;
const POSIX_METHODS = [
  "mkdir", "unlink", "rmdir", "rename", "link", "symlink", "readlink",
  "setxattr", "getxattr", "listxattr", "removexattr",
] as const;

/**
 * Why `fileSystem` cannot be mounted, or undefined when it can: it needs the
 * read methods, and if it has any write method, the whole POSIX contract.
 */
export function unmountableReason(fileSystem: unknown): string | undefined {
  if (typeof fileSystem !== "object" || fileSystem === null) return "filesystem is not an object";
  const methods = fileSystem as Record<string, unknown>;
  const missing = (names: readonly string[]) => names.filter((name) => typeof methods[name] !== "function");
  const missingRead = missing(READ_METHODS);
  if (missingRead.length > 0) return `filesystem lacks ${missingRead.join(", ")}`;
  if (missing(WRITE_METHODS).length === WRITE_METHODS.length) return undefined;
  const missingPosix = missing([...WRITE_METHODS, ...POSIX_METHODS]);
  if (missingPosix.length > 0) {
    return `a writable filesystem must implement SandboxPosixFileSystem, missing ${missingPosix.join(", ")}`;
  }
  return undefined;
}
