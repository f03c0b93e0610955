// The contract with the native addon (`sandbox.node`, a Go c-shared library)
// and its loading. Loading happens once, lazily, on the first boot(): importing
// this package and calling defineSandbox never touch native code.

import { createRequire } from "node:module";
import { join } from "node:path";
import { ADDON_FILE, detectPlatformKey, findImagePackageDirectories, findPlatformDirectory, type PlatformSearch } from "./artifacts.js";
import { NATIVE_PROTOCOL } from "./addon-protocol.js";
import { codedError, ErrorCodes } from "./errors.js";
import { assertMacosSetup, ownVersion, readEntitlements, type EntitlementsReader } from "./macos.js";
import { platformDirectoryOverride } from "./settings.js";

/**
 * Called by the native side for events of one request (e.g. spawn output).
 * May return a promise: the native side waits for it before the next event.
 * The payload belongs to JavaScript once delivered.
 */
export type NativeEventHandler = (event: string, payload: Uint8Array) => unknown;

export interface NativeAddon {
  /** JSON: {"version":"0.6.0","protocol":1,"go":"go1.26.x"}. */
  version(): string;
  /**
   * One call: UTF-8 JSON in, UTF-8 JSON out. Rejections are Error objects
   * with a string `code` (NativeErrorCodes), passed on unchanged.
   * docs/addon-protocol.md specifies every method and event.
   */
  request(method: string, payload: Uint8Array, handler?: NativeEventHandler): Promise<Uint8Array>;
}

/** The loaded addon, the platform directory it came from, and the installed image packages. */
export interface NativeRuntime {
  readonly addon: NativeAddon;
  readonly directory: string;
  readonly imageDirectories: readonly string[];
}

const require = createRequire(import.meta.url);

let loaded: NativeRuntime | undefined;

/** The runtime, loaded on first use. A failure is not remembered: the next boot retries. */
export function nativeRuntime(): NativeRuntime {
  loaded ??= loadNativeRuntime({
    platform: process.platform,
    search: {
      platformKey: detectPlatformKey(),
      overrideDirectory: platformDirectoryOverride(),
      packageVersion: ownVersion(),
      // Resolved from this file, so only the copy of the platform package
      // this @torkbot/sandbox can see is used (never one of another project).
      resolve: (specifier) => require.resolve(specifier),
    },
    readEntitlements,
    loadAddon,
  });
  return loaded;
}

/** What loading the runtime depends on, injectable for tests. */
export interface RuntimeLoading {
  readonly platform: NodeJS.Platform;
  readonly search: PlatformSearch;
  readonly readEntitlements: EntitlementsReader;
  readonly loadAddon: (path: string) => NativeAddon;
}

/**
 * Finds the platform package, checks it can run here (on macOS: signed by
 * setup-macos; checked before the addon is loaded, so an unsigned package
 * fails with the command to run rather than deep inside the first boot),
 * then loads the addon.
 */
export function loadNativeRuntime(loading: RuntimeLoading): NativeRuntime {
  const directory = findPlatformDirectory(loading.search);
  assertMacosSetup(loading.platform, directory, loading.readEntitlements);
  const imageDirectories = findImagePackageDirectories(loading.search);
  return { addon: loading.loadAddon(join(directory, ADDON_FILE)), directory, imageDirectories };
}

export function loadAddon(path: string): NativeAddon {
  let addon: Partial<NativeAddon>;
  try {
    addon = require(path) as Partial<NativeAddon>;
  } catch (error) {
    throw codedError(ErrorCodes.addonMismatch, `cannot load the sandbox addon ${path}: ${messageOf(error)}`, { cause: error });
  }
  if (typeof addon.version !== "function" || typeof addon.request !== "function") {
    throw codedError(ErrorCodes.addonMismatch, `${path} is not the sandbox addon: it lacks version() or request()`);
  }
  let info: { version?: unknown; protocol?: unknown };
  try {
    info = JSON.parse(addon.version()) as typeof info;
  } catch (error) {
    throw codedError(ErrorCodes.addonMismatch, `the sandbox addon ${path} reported an unreadable version: ${messageOf(error)}`);
  }
  if (info?.protocol !== NATIVE_PROTOCOL) {
    throw codedError(
      ErrorCodes.addonMismatch,
      `the sandbox addon ${path} (version ${String(info?.version)}) speaks protocol ${String(info?.protocol)}, but this @torkbot/sandbox needs protocol ${NATIVE_PROTOCOL}: install matching versions of @torkbot/sandbox and its platform package`,
    );
  }
  return addon as NativeAddon;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Sends `payload` as JSON and parses the JSON answer; native rejections pass through. */
export async function callNative(
  addon: NativeAddon,
  method: string,
  payload: object,
  handler?: NativeEventHandler,
): Promise<unknown> {
  const response = await addon.request(method, encoder.encode(JSON.stringify(payload)), handler);
  try {
    return JSON.parse(decoder.decode(response));
  } catch (error) {
    throw codedError(ErrorCodes.protocol, `the sandbox addon answered ${method} with invalid JSON: ${messageOf(error)}`);
  }
}

/** The ERR_SANDBOX_PROTOCOL error for a native answer that lacks what the protocol promises. */
export function protocolViolation(method: string, response: unknown, expected: string): Error {
  return codedError(
    ErrorCodes.protocol,
    `the sandbox addon answered ${method} with ${JSON.stringify(response)}, expected ${expected}`,
  );
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
