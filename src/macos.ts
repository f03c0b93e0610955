// macOS signing: what `npx @torkbot/sandbox setup-macos` does and what the
// runtime checks before it boots anything on a Mac.
//
// Why this exists: on macOS the VM runs on Hypervisor.framework, which a
// process may use only when its executable is signed with the
// `com.apple.security.hypervisor` entitlement. The platform package is not
// Developer ID signed or notarized (there is no Apple Developer account behind
// this project yet), so the user signs it on their own Mac, ad hoc: a local
// `codesign --sign -` that contacts nobody. Without it the helper would die
// with an opaque HV_DENIED / "killed" at the first boot; the check below turns
// that into an error that names the command.

import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ADDON_FILE, detectPlatformKey, findPlatformDirectory, HELPER_FILE, type PlatformSearch } from "./artifacts.js";
import { codedError, ErrorCodes } from "./errors.js";
import { platformDirectoryOverride } from "./settings.js";

export const SETUP_MACOS_COMMAND = "npx @torkbot/sandbox setup-macos";
export const HYPERVISOR_ENTITLEMENT = "com.apple.security.hypervisor";

/** The entitlements plist shipped in this package. */
export const ENTITLEMENTS_PLIST = fileURLToPath(new URL("../macos/entitlements.plist", import.meta.url));

/**
 * The files setup-macos signs, in a platform directory: the libkrun helper
 * (the process that calls Hypervisor.framework, so the one the entitlement
 * is for) when the package ships it, then the addon. An entitlement on a
 * library is inert (a process's entitlements are its executable's), but the
 * fresh ad-hoc signature is not: it replaces whatever signature the release
 * runner left, so the two files are signed alike, on this machine.
 */
export function filesToSign(directory: string): string[] {
  return [HELPER_FILE, ADDON_FILE].map((file) => join(directory, file)).filter((path) => existsSync(path));
}

/** `codesign` arguments for an ad-hoc signature with the entitlements. */
export function codesignArguments(plist: string, files: readonly string[]): string[] {
  return ["--force", "--sign", "-", "--entitlements", plist, ...files];
}

/** A file's entitlements as codesign prints them (XML), or undefined when it has none or is unsigned. */
export type EntitlementsReader = (path: string) => string | undefined;

/** Asks `codesign --display` (on macOS it is /usr/bin/codesign, always present). */
export const readEntitlements: EntitlementsReader = (path) => {
  try {
    return execFileSync("codesign", ["--display", "--entitlements", "-", "--xml", path], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch {
    // Unsigned code makes codesign exit 1 ("code object is not signed at all").
    return undefined;
  }
};

const GRANTED = new RegExp(`<key>\\s*${HYPERVISOR_ENTITLEMENT.replaceAll(".", "\\.")}\\s*</key>\\s*<true\\s*/>`);

export function grantsHypervisor(entitlementsXml: string | undefined): boolean {
  return entitlementsXml !== undefined && GRANTED.test(entitlementsXml);
}

/** The files of `directory` that setup-macos signs but that lack the entitlement. */
export function unsignedFiles(directory: string, read: EntitlementsReader = readEntitlements): string[] {
  return filesToSign(directory).filter((path) => !grantsHypervisor(read(path)));
}

/**
 * Throws ERR_SANDBOX_MACOS_SETUP on macOS when setup-macos has not signed the
 * platform package in `directory`; does nothing elsewhere.
 */
export function assertMacosSetup(platform: NodeJS.Platform, directory: string, read: EntitlementsReader = readEntitlements): void {
  if (platform !== "darwin") return;
  const unsigned = unsignedFiles(directory, read);
  if (unsigned.length === 0) return;
  throw codedError(
    ErrorCodes.macosSetup,
    `${unsigned.join(" and ")} ${unsigned.length === 1 ? "is" : "are"} not signed with the ${HYPERVISOR_ENTITLEMENT} entitlement that macOS requires to run VMs: run \`${SETUP_MACOS_COMMAND}\` once after every install or update of @torkbot/sandbox (an ad-hoc local signature; it contacts nobody)`,
  );
}

/** What setup-macos needs from its surroundings; tests replace parts of it. */
export interface SetupMacosEnvironment {
  /** e.g. "darwin-arm64"; the command does its work only for darwin-*. */
  readonly platformKey: string;
  /** Where the platform package is looked for (as the runtime looks). */
  readonly search: Omit<PlatformSearch, "platformKey">;
  readonly plist: string;
  /** Runs codesign with the arguments, output to the user; returns its exit status. */
  readonly codesign: (args: readonly string[]) => number;
  readonly read: EntitlementsReader;
  readonly log: (line: string) => void;
}

/** `setup-macos`: returns the process exit code. */
export function setupMacos(env: SetupMacosEnvironment): number {
  if (!env.platformKey.startsWith("darwin-")) {
    env.log(`setup-macos is only needed on macOS (this machine is ${env.platformKey}); nothing to do.`);
    return 0;
  }
  let directory: string;
  try {
    directory = findPlatformDirectory({ ...env.search, platformKey: env.platformKey });
  } catch (error) {
    env.log(`setup-macos: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
  if (!existsSync(env.plist)) {
    env.log(`setup-macos: the entitlements file ${env.plist} is missing from @torkbot/sandbox: reinstall it`);
    return 1;
  }
  const files = filesToSign(directory);
  env.log(`setup-macos: signing ${files.join(", ")} ad hoc with ${env.plist}`);
  const status = env.codesign(codesignArguments(env.plist, files));
  if (status !== 0) {
    env.log(`setup-macos: codesign failed (exit status ${status}); nothing was changed that a rerun would not redo`);
    return 1;
  }
  // Read back what the runtime will check, so "done" means the next boot passes.
  const unsigned = unsignedFiles(directory, env.read);
  if (unsigned.length > 0) {
    env.log(`setup-macos: codesign succeeded, but ${unsigned.join(" and ")} still lack${unsigned.length === 1 ? "s" : ""} the ${HYPERVISOR_ENTITLEMENT} entitlement`);
    return 1;
  }
  env.log(`setup-macos: done; ${files.length === 1 ? "it carries" : "they carry"} the ${HYPERVISOR_ENTITLEMENT} entitlement.`);
  return 0;
}

/** The real surroundings of `npx @torkbot/sandbox setup-macos`. */
export function processSetupMacosEnvironment(resolve: (specifier: string) => string): SetupMacosEnvironment {
  return {
    // SANDBOX_TEST_PLATFORM exists for this package's own tests, which drive
    // the macOS path on Linux with a codesign stand-in on PATH. It changes
    // which platform package is looked for, nothing else.
    platformKey: process.env.SANDBOX_TEST_PLATFORM || detectPlatformKey(),
    search: {
      overrideDirectory: platformDirectoryOverride(),
      packageVersion: ownVersion(),
      resolve,
    },
    plist: ENTITLEMENTS_PLIST,
    codesign: (args) => {
      const result = spawnSync("codesign", args, { stdio: "inherit" });
      if (result.error !== undefined) {
        console.error(`setup-macos: cannot run codesign: ${result.error.message} (it is /usr/bin/codesign on every macOS)`);
        return 1;
      }
      return result.status ?? 1;
    },
    read: readEntitlements,
    log: (line) => console.log(line),
  };
}

/** The version in this package's package.json. */
export function ownVersion(): string | undefined {
  try {
    const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: unknown };
    return typeof manifest.version === "string" ? manifest.version : undefined;
  } catch {
    return undefined;
  }
}
