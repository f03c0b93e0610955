// The vocabulary of the contract with the native addon: its version, the
// request methods, the events the addon sends to a request's handler, and
// the error codes the addon rejects with. docs/addon-protocol.md is the
// specification and the version history. native/protocol/protocol.go is the
// Go copy; its test fails when the two differ, or when a code is spelled
// out anywhere but here and errors.ts.

/** The protocol version this TypeScript speaks; the addon reports its own. */
export const NATIVE_PROTOCOL = 1;

/** request(method, ...) names. */
export const NativeMethods = {
  boot: "boot",
  exec: "exec",
  spawn: "spawn",
  close: "close",
  /** Leak counters for tests and scripts/soak.mjs; not the public API. */
  stats: "stats",
} as const;

/** handler(event, payload) names, by the module that answers them. */
export const NativeEvents = {
  /** mount-events.ts */
  fs: "fs",
  fsAbort: "fs-abort",
  /** policy-evaluation.ts, http-middleware.ts */
  policy: "policy",
  http: "http",
  httpRelease: "http-release",
  /** block-store-events.ts */
  blockList: "block-list",
  blockRead: "block-read",
  blockWrite: "block-write",
  blockFlush: "block-flush",
  /** instance.ts (spawn) */
  started: "started",
  stdout: "stdout",
  stderr: "stderr",
} as const;

/** Codes the addon rejects with; passed on to the caller unchanged. */
export const NativeErrorCodes = {
  invalidRequest: "ERR_SANDBOX_INVALID_REQUEST",
  unknownMethod: "ERR_SANDBOX_UNKNOWN_METHOD",
  /** The instance was closed (or is closing). JS raises it too. */
  closed: "ERR_SANDBOX_CLOSED",
  /** The VMM process died; the instance is unusable from then on. */
  vmmExited: "ERR_SANDBOX_VMM_EXITED",
  bootTimeout: "ERR_SANDBOX_BOOT_TIMEOUT",
  boot: "ERR_SANDBOX_BOOT",
  engine: "ERR_SANDBOX_ENGINE",
  /** A COW root's store failed or broke its contract. JS raises it too (block-store-events.ts). */
  blockStore: "ERR_SANDBOX_BLOCK_STORE",
  execOutputLimit: "ERR_SANDBOX_EXEC_OUTPUT_LIMIT",
  internal: "ERR_SANDBOX",
} as const;
