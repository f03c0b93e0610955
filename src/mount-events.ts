// Serves the guest's filesystem operations on booted mounts: the addon's
// FUSE server (Go, vfs/) calls into JavaScript with one "fs" event per
// operation, and this module runs it against the mount's SandboxFileSystem.
//
// Event payload: a 4-byte big-endian length, that many bytes of JSON
// ({mount, op, path, ...}), then the operation's raw data (write contents,
// xattr values). Answers: JSON text for stats, listings and counts, raw
// bytes for read and getxattr, nothing for the rest. A failed operation
// throws an Error whose `code` is the errno name the guest sees (ENOENT...);
// EIO when the filesystem's error names none. "fs-abort" {abortId} aborts
// the AbortSignal of a read the guest gave up on (FUSE_INTERRUPT).

import { NativeEvents } from "./addon-protocol.js";
import type { CheckedMount } from "./boot-options.js";
import { codedError } from "./errors.js";
import type { SandboxFileStat, SandboxFileSystem, SandboxPosixFileSystem } from "./fs.js";

/** What a mount's filesystem can do, as the addon needs to know at boot. */
export type MountAccess = "read-only" | "posix";

export function mountAccess(fileSystem: SandboxFileSystem): MountAccess {
  return typeof (fileSystem as Partial<SandboxPosixFileSystem>).write === "function" ? "posix" : "read-only";
}

interface FsRequest {
  readonly mount: number;
  readonly op: string;
  readonly path: string;
  readonly offset?: number;
  readonly length?: number;
  readonly size?: number;
  readonly to?: string;
  readonly target?: string;
  readonly name?: string;
  readonly flags?: number;
  readonly abortId?: number;
}

/** Message prefixes of the API contract (0.6.0's list), and the errno each means. */
const MESSAGE_ERRNO: readonly (readonly [string, string])[] = [
  ["not found:", "ENOENT"],
  ["path exists", "EEXIST"],
  ["xattr already exists:", "EEXIST"],
  ["not a directory:", "ENOTDIR"],
  ["is a directory:", "EISDIR"],
  ["directory not empty:", "ENOTEMPTY"],
  ["xattr not found:", "ENODATA"],
  ["xattr does not exist:", "ENODATA"],
];

/** The errno name a filesystem error means to the guest, or undefined (EIO). */
export function errnoName(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code === "string" && /^E[A-Z0-9]{1,15}$/.test(code)) return code;
  if (typeof message === "string") {
    for (const [prefix, errno] of MESSAGE_ERRNO) if (message.startsWith(prefix)) return errno;
    // 0.6.0 answered an xattr value too big for the caller's buffer so.
    if (message.includes("larger than requested size")) return "ERANGE";
  }
  return undefined;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

function statJson(stat: SandboxFileStat): string {
  return JSON.stringify({
    type: stat.type,
    sizeBytes: stat.sizeBytes,
    modifiedAtMs: stat.modifiedAtMs,
    writable: stat.writable,
  });
}

/** A NativeEventHandler whose answers are typed. */
export type MountEventHandler = (event: string, payload: Uint8Array) => Promise<string | Uint8Array | undefined>;

/** The handler for a boot's "fs" events; `mounts` are indexed as the boot request listed them. */
export function mountEventHandler(mounts: readonly CheckedMount[]): MountEventHandler {
  const reads = new Map<number, AbortController>();
  return async (event, payload) => {
    if (event === NativeEvents.fsAbort) {
      const { abortId } = JSON.parse(decoder.decode(payload)) as { abortId: number };
      reads.get(abortId)?.abort(new Error("the guest interrupted the read"));
      return undefined;
    }
    if (event !== NativeEvents.fs) return undefined; // events added by later protocol versions
    const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    const headerLength = view.getUint32(0);
    const request = JSON.parse(decoder.decode(payload.subarray(4, 4 + headerLength))) as FsRequest;
    const data = payload.subarray(4 + headerLength);
    const mount = mounts[request.mount];
    if (mount === undefined) throw codedError("EIO", `no mount ${request.mount}`);
    try {
      return await run(mount.fileSystem as SandboxPosixFileSystem, request, data, reads);
    } catch (error) {
      const errno = errnoName(error);
      const message = error instanceof Error ? error.message : String(error);
      throw codedError(errno ?? "EIO", errno === undefined ? `${mount.path}: ${request.op} ${request.path}: ${message}` : message);
    }
  };
}

async function run(
  fs: SandboxPosixFileSystem,
  r: FsRequest,
  data: Uint8Array,
  reads: Map<number, AbortController>,
): Promise<string | Uint8Array | undefined> {
  switch (r.op) {
    case "stat":
      return statJson(await fs.stat(r.path));
    case "list":
      return JSON.stringify((await fs.list(r.path)).map(({ name, type }) => ({ name, type })));
    case "read": {
      const controller = new AbortController();
      const id = r.abortId ?? -1;
      reads.set(id, controller);
      try {
        const contents: unknown = await fs.read({
          path: r.path,
          range: { offset: r.offset ?? 0, length: r.length ?? 0 },
          signal: controller.signal,
        });
        // The native side would take any other value as its text: the
        // guest would read "42" or "[object Object]" as file contents.
        if (!(contents instanceof Uint8Array)) {
          throw new Error(`read() must resolve to a Uint8Array, got ${contents === null ? "null" : typeof contents}`);
        }
        return contents;
      } finally {
        reads.delete(id);
      }
    }
    case "createFile":
      return statJson(await fs.createFile(r.path));
    case "write":
      return JSON.stringify(await fs.write({ path: r.path, offset: r.offset ?? 0, contents: data }));
    case "truncate":
      return statJson(await fs.truncate(r.path, r.size ?? 0));
    case "mkdir":
      await fs.mkdir(r.path);
      return undefined;
    case "unlink":
      return void (await fs.unlink(r.path));
    case "rmdir":
      return void (await fs.rmdir(r.path));
    case "rename":
      return void (await fs.rename(r.path, r.to ?? "", r.flags ?? 0));
    case "link":
      await fs.link(r.path, r.to ?? "");
      return undefined;
    case "symlink":
      await fs.symlink(r.target ?? "", r.path);
      return undefined;
    case "readlink":
      return encoder.encode(await fs.readlink(r.path));
    case "setxattr":
      return void (await fs.setxattr(r.path, r.name ?? "", data, r.flags ?? 0));
    case "getxattr":
      return await fs.getxattr(r.path, r.name ?? "");
    case "listxattr":
      return JSON.stringify(await fs.listxattr(r.path));
    case "removexattr":
      return void (await fs.removexattr(r.path, r.name ?? ""));
    default:
      throw codedError("ENOSYS", `unknown filesystem operation ${r.op}`);
  }
}
