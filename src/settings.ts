// Every setting this library reads from the environment, read from
// process.env at each boot() call and sent with the boot request. The
// native addon never reads its own environment: the Go runtime keeps the
// copy it took when the addon was loaded, so a variable set in process.env
// later (as test suites and programs do) would be missed. docs/settings.md
// documents each one; native/settings is the Go side.

import { homedir } from "node:os";
import { join } from "node:path";

/** The boot request's `settings` (native/settings.Request). */
export interface NativeSettings {
  /** SANDBOX_ENGINE: "qemu", "krun", or "" to pick. */
  readonly engine: string;
  /** SANDBOX_ACCEL: "tcg", "kvm", "hvf", or "" to probe. */
  readonly accel: string;
  /** SANDBOX_QEMU: the QEMU binary, or "" to look on PATH. */
  readonly qemu: string;
  /** SANDBOX_LIBKRUN: the libkrun library, or "" for the system's. */
  readonly libkrun: string;
  /** SANDBOX_KRUN_HELPER: the sandbox-krun executable, or "" for the platform package's. */
  readonly krunHelper: string;
  /** SANDBOX_BOOT_TIMEOUT_MS as written; the addon checks it. */
  readonly bootTimeoutMs: string;
  /** SANDBOX_CONSOLE_OUTPUT: a file that also gets the guest console, or "". */
  readonly consoleOutput: string;
  /** SANDBOX_DEBUG: set and not "0" prints each boot's timeline on stderr. */
  readonly debug: string;
  /** SANDBOX_CACHE_DIR, else $XDG_CACHE_HOME/torkbot-sandbox, else ~/.cache/torkbot-sandbox. */
  readonly cacheDir: string;
  /** NODE_EXTRA_CA_CERTS: certificates trusted besides the system roots for intercepted HTTPS. */
  readonly extraCaCerts: string;
  /** os.tmpdir(): TMPDIR (or TMP, TEMP), else /tmp. */
  readonly tmpdir: string;
  /** PATH, where QEMU and sandbox-krun are looked for. */
  readonly path: string;
  /** All of process.env: the environment of the VMM and helper processes. */
  readonly env: Readonly<Record<string, string>>;
}

/** The environment variables NativeSettings reads, for docs and tests. */
export const SETTING_VARIABLES = [
  "SANDBOX_ENGINE",
  "SANDBOX_ACCEL",
  "SANDBOX_QEMU",
  "SANDBOX_LIBKRUN",
  "SANDBOX_KRUN_HELPER",
  "SANDBOX_BOOT_TIMEOUT_MS",
  "SANDBOX_CONSOLE_OUTPUT",
  "SANDBOX_DEBUG",
  "SANDBOX_CACHE_DIR",
  "XDG_CACHE_HOME",
  "HOME",
  "NODE_EXTRA_CA_CERTS",
  "TMPDIR",
  "PATH",
] as const;

/**
 * The settings as `env` holds them now. Called at every boot(), so a
 * variable changed in process.env between two boots applies to the second.
 */
export function readSettings(env: NodeJS.ProcessEnv = process.env): NativeSettings {
  const get = (name: string): string => env[name] ?? "";
  const all: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined) all[name] = value;
  }
  return {
    engine: get("SANDBOX_ENGINE"),
    accel: get("SANDBOX_ACCEL"),
    qemu: get("SANDBOX_QEMU"),
    libkrun: get("SANDBOX_LIBKRUN"),
    krunHelper: get("SANDBOX_KRUN_HELPER"),
    bootTimeoutMs: get("SANDBOX_BOOT_TIMEOUT_MS"),
    consoleOutput: get("SANDBOX_CONSOLE_OUTPUT"),
    debug: get("SANDBOX_DEBUG"),
    cacheDir: cacheDirectory(env),
    extraCaCerts: get("NODE_EXTRA_CA_CERTS"),
    tmpdir: temporaryDirectory(env),
    path: get("PATH"),
    env: all,
  };
}

/** Where probe verdicts are kept; the build's cache root too (scripts/lib-cache.sh). */
function cacheDirectory(env: NodeJS.ProcessEnv): string {
  if (env.SANDBOX_CACHE_DIR) return env.SANDBOX_CACHE_DIR;
  const cacheHome = env.XDG_CACHE_HOME || join(env.HOME || homedir(), ".cache");
  return join(cacheHome, "torkbot-sandbox");
}

/** os.tmpdir()'s POSIX rule, applied to `env` rather than always process.env. */
function temporaryDirectory(env: NodeJS.ProcessEnv): string {
  let dir = env.TMPDIR || env.TMP || env.TEMP || "/tmp";
  if (dir.length > 1 && dir.endsWith("/")) dir = dir.slice(0, -1);
  return dir;
}

/**
 * SANDBOX_PLATFORM_DIR: a platform directory to use instead of the installed
 * platform package. Read when the addon is loaded (the first boot() and
 * setup-macos); a loaded addon stays for the life of the process.
 */
export function platformDirectoryOverride(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.SANDBOX_PLATFORM_DIR || undefined;
}
