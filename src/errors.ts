// Error construction shared by the package: the validation error families
// ("invalid sandbox definition: …", "invalid sandbox boot options: …",
// "invalid sandbox options: …", each with 0.6.0's text) and
// runtime errors that carry a stable string `code`, as the native side's do.
// Every code is spelled out here or in addon-protocol.ts (the addon's own),
// nowhere else: native/protocol's test checks it.

import { NativeErrorCodes } from "./addon-protocol.js";

/** An Error with a stable machine-readable `code` (e.g. ERR_SANDBOX_CLOSED). */
export type CodedError = Error & { readonly code: string };

/** Codes this package raises itself; the native side adds its own (passed through unchanged). */
export const ErrorCodes = {
  /** The instance was closed (or is closing). */
  closed: NativeErrorCodes.closed,
  /** Native: the VMM process died; the instance is unusable from then on. */
  vmmExited: NativeErrorCodes.vmmExited,
  /** A COW root's store failed or answered what its contract does not allow (block-store-events.ts). */
  blockStore: NativeErrorCodes.blockStore,
  /** No usable platform package (addon, kernel, initrd) for this machine. */
  notInstalled: "ERR_SANDBOX_NOT_INSTALLED",
  /** The requested built-in rootfs is not in the installed catalog. */
  rootfsNotInstalled: "ERR_SANDBOX_ROOTFS_NOT_INSTALLED",
  /** The installed artifacts are malformed (catalog.json). */
  artifactsInvalid: "ERR_SANDBOX_ARTIFACTS_INVALID",
  /** The addon could not be loaded or speaks another protocol version. */
  addonMismatch: "ERR_SANDBOX_ADDON_MISMATCH",
  /** The addon answered with something the protocol does not allow. */
  protocol: "ERR_SANDBOX_PROTOCOL",
  /** macOS: the platform package is not signed yet (`npx @torkbot/sandbox setup-macos`). */
  macosSetup: "ERR_SANDBOX_MACOS_SETUP",
  /**
   * The block store is attached elsewhere: to a running sandbox of this
   * process, or (@torkbot/sandbox/s3) under another holder's lease.
   */
  storeInUse: "ERR_SANDBOX_STORE_IN_USE",
} as const;

export function codedError(code: string, message: string, options?: ErrorOptions): CodedError {
  return Object.assign(new Error(message, options), { code });
}

export function errorCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null || !("code" in error)) return undefined;
  return typeof error.code === "string" ? error.code : undefined;
}

export function invalidDefinition(reason: string): Error {
  return new Error(`invalid sandbox definition: ${reason}`);
}

export function invalidBootOptions(reason: string): Error {
  return new Error(`invalid sandbox boot options: ${reason}`);
}

/** 0.6.0 reported bad mount paths as "invalid sandbox options: mount.path …"; so does this package. */
export function invalidSandboxOptions(reason: string): Error {
  return new Error(`invalid sandbox options: ${reason}`);
}

/** 0.6.0's text for any call on a closed (or closing) instance. */
export function sandboxClosed(): CodedError {
  return codedError(ErrorCodes.closed, "sandbox control is closed");
}
