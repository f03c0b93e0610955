// `fs.memory(...)`: an in-memory POSIX filesystem with directories, files,
// symlinks, hard links (several entries sharing one node) and extended
// attributes. Errors carry both the message prefix and the errno `code` that
// the mount layer maps to the guest (see fs.ts).
//
// Path resolution follows symlinks in intermediate components (and "." /
// ".." physically, like the kernel). The final component is followed only by
// the operations that act on a file's contents (list, read, write, truncate);
// stat, readlink, unlink, rename, link and the xattr calls act on the entry
// itself (lstat, lsetxattr semantics). As in 0.6.0, a path without a
// leading "/" is taken from the root, and messages that 0.6.0 had keep its
// text (the errno `code` is this package's addition).
//
// The guest is hostile and this filesystem lives in the host process, so
// what it holds is bounded by a quota (`maxBytes`): file contents at their
// size, symlink targets and xattr values at their length, and METADATA_BYTES
// for every directory entry and xattr, so a flood of empty files or xattrs
// runs out too. An operation past the quota fails whole with ENOSPC and
// changes nothing; unlinking (the last link) and shrinking give it back.

import { codedError } from "./errors.js";
import type {
  MemoryFileSystemOptions,
  SandboxDirectoryEntry,
  SandboxFileStat,
  SandboxPosixFileSystem,
} from "./fs.js";

interface NodeBase {
  modifiedAtMs: number;
  /** Directory entries naming this node; its contents are freed with the last. */
  links: number;
  readonly xattrs: Map<string, Uint8Array>;
}
interface FileNode extends NodeBase {
  readonly type: "file";
  /** Capacity may exceed `size`; bytes past `size` are always zero. */
  data: Uint8Array;
  size: number;
}
interface DirectoryNode extends NodeBase {
  readonly type: "directory";
  readonly entries: Map<string, MemoryNode>;
}
interface SymlinkNode extends NodeBase {
  readonly type: "symlink";
  readonly target: string;
}
type MemoryNode = FileNode | DirectoryNode | SymlinkNode;

/** Where a path leads: its parent directory, its name there, and the node (if any). */
interface Location {
  /** Undefined only for the root. */
  readonly parent: DirectoryNode | undefined;
  readonly name: string;
  readonly node: MemoryNode | undefined;
  /** The directories walked from the root down to `parent`, inclusive. */
  readonly ancestors: readonly DirectoryNode[];
}

const ERRNO_MESSAGE = {
  ENOENT: "not found",
  EEXIST: "path exists",
  ENOTDIR: "not a directory",
  EISDIR: "is a directory",
  ENOTEMPTY: "directory not empty",
  ENODATA: "xattr not found",
  EINVAL: "invalid argument",
  ELOOP: "too many levels of symbolic links",
  EPERM: "operation not permitted",
  ENOSPC: "no space left on device",
} as const;

function fail(code: keyof typeof ERRNO_MESSAGE, subject: string): never {
  throw codedError(code, `${ERRNO_MESSAGE[code]}: ${subject}`);
}

/** Fails with 0.6.0's own message for this case and the errno the guest sees. */
function failWith(code: keyof typeof ERRNO_MESSAGE, message: string): never {
  throw codedError(code, message);
}

const MAX_SYMLINK_HOPS = 40; // Linux's MAXSYMLINKS
const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
const textEncoder = new TextEncoder();

/**
 * Charged per directory entry and per xattr beside its name and contents:
 * about what the objects behind an entry cost the host (a node, its maps, a
 * name of up to NAME_MAX bytes), so the quota also caps the entry count.
 */
const METADATA_BYTES = 1024;
/**
 * 1 GiB: far above what a workspace of sources and dependencies takes (and
 * at most ~1M entries), yet one guest cannot take the host process's memory.
 */
const DEFAULT_MEMORY_FS_MAX_BYTES = 1024 ** 3;

export class MemoryFileSystem implements SandboxPosixFileSystem {
  readonly #root = newDirectory();
  readonly #maxBytes: number;
  #usedBytes = 0;

  constructor(options: MemoryFileSystemOptions = {}) {
    const maxBytes = options.maxBytes ?? DEFAULT_MEMORY_FS_MAX_BYTES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) {
      throw new TypeError(`fs.memory: maxBytes must be a positive integer of bytes, got ${String(maxBytes)}`);
    }
    this.#maxBytes = maxBytes;
    for (const [path, contents] of Object.entries(options.files ?? {})) {
      this.#seed(path, typeof contents === "string" ? textEncoder.encode(contents) : contents);
    }
  }

  async stat(path: string): Promise<SandboxFileStat> {
    return statOf(this.#existing(path, false));
  }

  async list(path: string): Promise<readonly SandboxDirectoryEntry[]> {
    const directory = this.#existing(path, true);
    if (directory.type !== "directory") fail("ENOTDIR", path);
    return [...directory.entries]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, node]) => ({ name, type: node.type }));
  }

  async read(input: {
    readonly path: string;
    readonly range?: { readonly offset: number; readonly length: number };
    readonly signal: AbortSignal;
  }): Promise<Uint8Array> {
    input.signal?.throwIfAborted();
    const file = this.#file(input.path);
    const offset = input.range === undefined ? 0 : checkedSize(input.range.offset, input.path);
    const length = input.range === undefined ? file.size : checkedSize(input.range.length, input.path);
    const start = Math.min(offset, file.size);
    return file.data.slice(start, Math.min(file.size, start + length));
  }

  async createFile(path: string): Promise<SandboxFileStat> {
    return statOf(this.#attach(this.#vacant(path), newFile(), path));
  }

  async write(input: { readonly path: string; readonly offset: number; readonly contents: Uint8Array }): Promise<number> {
    const file = this.#file(input.path);
    const offset = checkedSize(input.offset, input.path);
    if (!(input.contents instanceof Uint8Array)) fail("EINVAL", `${input.path}: contents must be a Uint8Array`);
    const end = offset + input.contents.length;
    if (end > file.size) this.#resize(file, end, input.path);
    file.data.set(input.contents, offset);
    file.modifiedAtMs = Date.now();
    return input.contents.length;
  }

  async truncate(path: string, size: number): Promise<SandboxFileStat> {
    const file = this.#file(path);
    this.#resize(file, checkedSize(size, path), path);
    file.modifiedAtMs = Date.now();
    return statOf(file);
  }

  async mkdir(path: string): Promise<SandboxFileStat> {
    return statOf(this.#attach(this.#vacant(path), newDirectory(), path));
  }

  async unlink(path: string): Promise<void> {
    const location = this.#locate(path, false);
    if (location.node === undefined) fail("ENOENT", path);
    if (location.node.type === "directory") fail("EISDIR", path);
    this.#detach(location);
  }

  async rmdir(path: string): Promise<void> {
    const location = this.#locate(path, false);
    if (location.node === undefined) fail("ENOENT", path);
    if (location.node.type !== "directory") fail("ENOTDIR", path);
    if (location.parent === undefined) fail("EINVAL", `${path}: cannot remove the root`);
    if (location.node.entries.size > 0) fail("ENOTEMPTY", path);
    this.#detach(location);
  }

  async rename(from: string, to: string, flags = 0): Promise<void> {
    if (flags !== 0 && flags !== RENAME_NOREPLACE && flags !== RENAME_EXCHANGE) {
      failWith("EINVAL", `unsupported rename flags: ${flags}`);
    }
    const source = this.#locate(from, false);
    const target = this.#locate(to, false);
    if (source.node === undefined) fail("ENOENT", from);
    if (source.parent === undefined) fail("EINVAL", `${from}: cannot rename the root`);
    if (target.parent === undefined) fail("EINVAL", `${to}: cannot replace the root`);
    if (target.ancestors.includes(source.node as DirectoryNode)) failWith("EINVAL", `invalid rename target: ${to} (inside ${from})`);
    if (flags === RENAME_EXCHANGE) {
      if (target.node === undefined) fail("ENOENT", to);
      if (source.ancestors.includes(target.node as DirectoryNode)) failWith("EINVAL", `invalid rename target: ${to} (${from} is inside it)`);
      source.parent.entries.set(source.name, target.node);
      target.parent.entries.set(target.name, source.node);
      touch(source.parent, target.parent);
      return;
    }
    if (target.node !== undefined) {
      if (flags === RENAME_NOREPLACE) fail("EEXIST", to);
      if (target.node === source.node) return; // same file: POSIX says do nothing
      if (source.node.type === "directory") {
        if (target.node.type !== "directory") fail("ENOTDIR", to);
        if (target.node.entries.size > 0) fail("ENOTEMPTY", to);
      } else if (target.node.type === "directory") {
        fail("EISDIR", to);
      }
      this.#release(target.node, METADATA_BYTES); // one entry fewer: the moved one keeps its charge
    }
    source.parent.entries.delete(source.name);
    target.parent.entries.set(target.name, source.node);
    touch(source.parent, target.parent);
  }

  async link(from: string, to: string): Promise<SandboxFileStat> {
    const node = this.#existing(from, false);
    if (node.type === "directory") failWith("EPERM", `cannot hard link directory: ${from}`);
    return statOf(this.#attach(this.#vacant(to), node, to));
  }

  async symlink(target: string, path: string): Promise<SandboxFileStat> {
    if (typeof target !== "string" || target === "" || target.includes("\0")) {
      fail("EINVAL", `${path}: symlink target must be a non-empty string without NUL`);
    }
    return statOf(this.#attach(this.#vacant(path), { type: "symlink", target, ...newBase() }, path));
  }

  async readlink(path: string): Promise<string> {
    const node = this.#existing(path, false);
    if (node.type !== "symlink") failWith("EINVAL", `not a symlink: ${path}`);
    return node.target;
  }

  async setxattr(path: string, name: string, value: Uint8Array, flags = 0): Promise<void> {
    const node = this.#existing(path, false);
    checkXattrName(path, name);
    if (!(value instanceof Uint8Array)) fail("EINVAL", `${path}: xattr value must be a Uint8Array`);
    if (flags !== 0 && flags !== XATTR_CREATE && flags !== XATTR_REPLACE) fail("EINVAL", `xattr flags ${flags}`);
    const present = node.xattrs.has(name);
    if (flags === XATTR_CREATE && present) failWith("EEXIST", `xattr already exists: ${name} (${path})`);
    if (flags === XATTR_REPLACE && !present) failWith("ENODATA", `xattr does not exist: ${name} (${path})`);
    const previous = node.xattrs.get(name);
    this.#charge(xattrBytes(name, value) - (previous === undefined ? 0 : xattrBytes(name, previous)), path);
    node.xattrs.set(name, value.slice());
  }

  async getxattr(path: string, name: string): Promise<Uint8Array> {
    const value = this.#existing(path, false).xattrs.get(name);
    if (value === undefined) fail("ENODATA", `${name} (${path})`);
    return value.slice();
  }

  async listxattr(path: string): Promise<readonly string[]> {
    return [...this.#existing(path, false).xattrs.keys()];
  }

  async removexattr(path: string, name: string): Promise<void> {
    const { xattrs } = this.#existing(path, false);
    const value = xattrs.get(name);
    if (value === undefined) fail("ENODATA", `${name} (${path})`);
    xattrs.delete(name);
    this.#usedBytes -= xattrBytes(name, value);
  }

  /** Walks `path` from the root; see the module comment for when symlinks are followed. */
  #locate(path: string, followFinal: boolean): Location {
    const walked: { directory: DirectoryNode; name: string }[] = [{ directory: this.#root, name: "" }];
    const current = () => walked[walked.length - 1] as { directory: DirectoryNode; name: string };
    const atDirectory = (): Location => ({
      parent: walked[walked.length - 2]?.directory,
      name: current().name,
      node: current().directory,
      ancestors: walked.slice(0, -1).map((step) => step.directory),
    });
    let pending = components(path);
    let hops = 0;
    for (let index = 0; index < pending.length; index += 1) {
      const name = pending[index] as string;
      const isFinal = index === pending.length - 1;
      if (name === "." || name === "..") {
        if (name === ".." && walked.length > 1) walked.pop();
        if (isFinal) return atDirectory();
        continue;
      }
      const node = current().directory.entries.get(name);
      if (node?.type === "symlink" && (!isFinal || followFinal)) {
        hops += 1;
        if (hops > MAX_SYMLINK_HOPS) fail("ELOOP", path);
        if (node.target.startsWith("/")) walked.length = 1;
        pending = [...node.target.split("/").filter((part) => part !== ""), ...pending.slice(index + 1)];
        index = -1;
        continue;
      }
      if (isFinal) {
        return { parent: current().directory, name, node, ancestors: walked.map((step) => step.directory) };
      }
      if (node === undefined) fail("ENOENT", path);
      if (node.type !== "directory") fail("ENOTDIR", path);
      walked.push({ directory: node, name });
    }
    return atDirectory();
  }

  #existing(path: string, followFinal: boolean): MemoryNode {
    const { node } = this.#locate(path, followFinal);
    if (node === undefined) fail("ENOENT", path);
    return node;
  }

  #file(path: string): FileNode {
    const node = this.#existing(path, true);
    if (node.type === "directory") failWith("EISDIR", `not a file: ${path}`);
    return node as FileNode;
  }

  /** A location for a new entry: its parent exists and the name is free. */
  #vacant(path: string): Location & { readonly parent: DirectoryNode } {
    const location = this.#locate(path, false);
    if (location.node !== undefined || location.parent === undefined) fail("EEXIST", path);
    return location as Location & { readonly parent: DirectoryNode };
  }

  #attach(location: Location & { readonly parent: DirectoryNode }, node: MemoryNode, path: string): MemoryNode {
    this.#charge(METADATA_BYTES + (node.links === 0 ? contentBytes(node) : 0), path);
    node.links += 1;
    location.parent.entries.set(location.name, node);
    touch(location.parent);
    return node;
  }

  #detach(location: Location): void {
    if (location.parent === undefined || location.node === undefined) return;
    location.parent.entries.delete(location.name);
    this.#release(location.node, METADATA_BYTES);
    touch(location.parent);
  }

  /** Takes `bytes` (when positive) from the quota, or fails with ENOSPC having taken nothing. */
  #charge(bytes: number, path: string): void {
    if (bytes > 0 && this.#usedBytes + bytes > this.#maxBytes) {
      fail("ENOSPC", `${path} (fs.memory holds at most ${this.#maxBytes} bytes, see its maxBytes option)`);
    }
    this.#usedBytes += bytes;
  }

  /** Gives back one entry's charge for `node`, and its contents' with the last link. */
  #release(node: MemoryNode, entryBytes: number): void {
    node.links -= 1;
    this.#usedBytes -= entryBytes + (node.links === 0 ? contentBytes(node) : 0);
  }

  /**
   * Sets the file's size, charged to the quota; growth reads as zeros.
   * Capacity at least doubles to keep appends linear, and is given back when
   * the file shrinks below half of it, so a file holds at most twice its size.
   */
  #resize(file: FileNode, size: number, path: string): void {
    this.#charge(size - file.size, path);
    if (size > file.data.length) {
      const grown = new Uint8Array(Math.max(size, file.data.length * 2));
      grown.set(file.data.subarray(0, file.size));
      file.data = grown;
    } else if (size < file.data.length / 2) {
      file.data = file.data.slice(0, size);
    } else if (size < file.size) {
      file.data.fill(0, size, file.size);
    }
    file.size = size;
  }

  #seed(path: string, contents: Uint8Array): void {
    const names = components(path);
    const fileName = names.pop();
    if (fileName === undefined || [fileName, ...names].some((name) => name === "." || name === "..")) {
      throw new TypeError(`fs.memory: invalid file path ${JSON.stringify(path)}`);
    }
    let directory = this.#root;
    for (const name of names) {
      const next = directory.entries.get(name) ?? this.#attach({ parent: directory, name, node: undefined, ancestors: [] }, newDirectory(), path);
      if (next.type !== "directory") fail("ENOTDIR", path);
      directory = next;
    }
    const file: FileNode = { ...newFile(), data: contents.slice(), size: contents.length };
    const replaced = directory.entries.get(fileName);
    if (replaced !== undefined) this.#detach({ parent: directory, name: fileName, node: replaced, ancestors: [] });
    this.#attach({ parent: directory, name: fileName, node: undefined, ancestors: [] }, file, path);
  }
}

/** A path's names; one without a leading "/" is taken from the root, as in 0.6.0. */
function components(path: string): string[] {
  if (typeof path !== "string" || path.includes("\0")) {
    fail("EINVAL", `path must be a string without NUL: ${JSON.stringify(path)}`);
  }
  return path.split("/").filter((part) => part !== "");
}

function newBase(): NodeBase {
  return { modifiedAtMs: Date.now(), links: 0, xattrs: new Map() };
}

function newDirectory(): DirectoryNode {
  return { type: "directory", entries: new Map(), ...newBase() };
}

function newFile(): FileNode {
  return { type: "file", data: new Uint8Array(0), size: 0, ...newBase() };
}

function touch(...directories: DirectoryNode[]): void {
  const now = Date.now();
  for (const directory of directories) directory.modifiedAtMs = now;
}

/** What a node holds beside its entries, as charged to the quota. */
function contentBytes(node: MemoryNode): number {
  let bytes = node.type === "file" ? node.size : node.type === "symlink" ? node.target.length : 0;
  for (const [name, value] of node.xattrs) bytes += xattrBytes(name, value);
  return bytes;
}

function xattrBytes(name: string, value: Uint8Array): number {
  return METADATA_BYTES + name.length + value.length;
}

function checkedSize(value: number, path: string): number {
  if (!Number.isSafeInteger(value) || value < 0) fail("EINVAL", `${path}: offset or size ${value}`);
  return value;
}

function checkXattrName(path: string, name: string): void {
  if (typeof name !== "string" || name === "" || name.includes("\0")) {
    fail("EINVAL", `${path}: invalid xattr name ${JSON.stringify(name)}`);
  }
}

function statOf(node: MemoryNode): SandboxFileStat {
  const sizeBytes = node.type === "file"
    ? node.size
    : node.type === "symlink" ? textEncoder.encode(node.target).length : null;
  // Every node is writable, and says so as 0.6.0's did.
  return { type: node.type, sizeBytes, mediaType: null, modifiedAtMs: node.modifiedAtMs, writable: true };
}
