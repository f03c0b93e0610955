// Checks `boot(options)`: mount paths and sources, and the default cwd.
// Violations reject boot() with "invalid sandbox boot options: …".

import { invalidBootOptions } from "./errors.js";
import { isFileSystemSource, unmountableReason, type SandboxFileSystem, type SandboxFileSystemSource } from "./fs.js";

export interface SandboxBootOptions {
  /** Guest path → `fs.virtual(...)`. Targets must exist in the rootfs (built-ins have /workspace, /tmp, /mnt). */
  readonly mounts?: Readonly<Record<string, SandboxFileSystemSource>>;
  /** Default working directory of exec/spawn; absolute. */
  readonly cwd?: string;
}

export interface CheckedMount {
  /** Normalised: single slashes, no trailing slash. */
  readonly path: string;
  readonly fileSystem: SandboxFileSystem;
}

export interface CheckedBootOptions {
  /** Sorted by path, so a mount always comes after the mounts that contain it. */
  readonly mounts: readonly CheckedMount[];
  readonly cwd: string | undefined;
}

export function checkBootOptions(options: unknown): CheckedBootOptions {
  if (options === undefined) return { mounts: [], cwd: undefined };
  if (typeof options !== "object" || options === null) throw invalidBootOptions("options must be an object");
  const { mounts, cwd } = options as { mounts?: unknown; cwd?: unknown };
  if (cwd !== undefined && (typeof cwd !== "string" || !cwd.startsWith("/") || cwd.includes("\0"))) {
    throw invalidBootOptions(`cwd must be absolute (a path without NUL), got ${JSON.stringify(cwd)}`);
  }
  return { mounts: checkMounts(mounts), cwd };
}

function checkMounts(mounts: unknown): CheckedMount[] {
  if (mounts === undefined) return [];
  if (typeof mounts !== "object" || mounts === null || Array.isArray(mounts)) {
    throw invalidBootOptions("mounts must be an object mapping guest paths to fs.virtual(...) sources");
  }
  const byPath = new Map<string, string>();
  const checked: CheckedMount[] = [];
  for (const [given, source] of Object.entries(mounts)) {
    const path = normaliseMountPath(given);
    const earlier = byPath.get(path);
    if (earlier !== undefined) {
      throw invalidBootOptions(`duplicate mount path ${JSON.stringify(given)} (same as ${JSON.stringify(earlier)})`);
    }
    byPath.set(path, given);
    if (!isFileSystemSource(source)) {
      throw invalidBootOptions(`mount ${given} must be created with fs.virtual(...)`);
    }
    const reason = unmountableReason(source.fileSystem);
    if (reason !== undefined) throw invalidBootOptions(`mount ${given}: ${reason}`);
    checked.push({ path, fileSystem: source.fileSystem });
  }
  return checked.sort((a, b) => (a.path < b.path ? -1 : 1));
}

function normaliseMountPath(path: string): string {
  const problem = !path.startsWith("/")
    ? "must be absolute"
    : path.includes("\0")
      ? "must not contain NUL"
      : undefined;
  if (problem !== undefined) throw invalidBootOptions(`mount path ${JSON.stringify(path)} ${problem}`);
  const segments = path.split("/").filter((segment) => segment !== "");
  if (segments.length === 0) throw invalidBootOptions(`mount path ${JSON.stringify(path)} must not be the root`);
  if (segments.some((segment) => segment === "." || segment === "..")) {
    throw invalidBootOptions(`mount path ${JSON.stringify(path)} must not contain "." or ".." segments`);
  }
  return `/${segments.join("/")}`;
}
