// A booted sandbox: exec, spawn and close over one native sandbox id.
//
// Lifecycle: usable until close() is called. From then on (including while
// the close is in flight) every call rejects with ERR_SANDBOX_CLOSED
// ("sandbox control is closed", 0.6.0's text). The first close() reports
// how closing went; every later call resolves once it has settled, as in
// 0.6.0, where a second close() after a failed one resolved.
// If a native call reports ERR_SANDBOX_VMM_EXITED, the VM is gone: later
// exec/spawn calls reject with that same error until close().

import "./dispose-polyfill.js";
import { NativeEvents, NativeMethods } from "./addon-protocol.js";
import { errorCode, ErrorCodes, sandboxClosed } from "./errors.js";
import { callNative, protocolViolation, type NativeAddon, type NativeEventHandler } from "./native.js";
import { OutputStream } from "./output-stream.js";
import {
  processRequest,
  type ProcessRequest,
  type SandboxExecOptions,
  type SandboxSpawnOptions,
} from "./process-request.js";

export interface SandboxExecResult {
  readonly exitCode: number;
  /** UTF-8 decoded. */
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * A running process. `stdout`/`stderr` yield raw chunks and can be iterated
 * again; see output-stream.ts for when reading them (or not) pauses the
 * process and how much unread output is kept. `exit` settles whether or not
 * the streams are read.
 */
export interface SandboxProcess {
  readonly stdout: AsyncIterable<Uint8Array>;
  readonly stderr: AsyncIterable<Uint8Array>;
  readonly exit: Promise<{ readonly exitCode: number }>;
}

export interface SandboxInstance {
  /**
   * Runs to completion. 127: the command could not start; 128+N: killed by
   * signal N, with "killed by signal N" appended to stderr. Output past
   * 64 MiB kills the command and rejects (ERR_SANDBOX_EXEC_OUTPUT_LIMIT).
   */
  exec(command: string, args?: readonly string[], options?: SandboxExecOptions): Promise<SandboxExecResult>;
  /** Resolves once the process has started (or, when it could not start, with its exit 127). */
  spawn(command: string, args?: readonly string[], options?: SandboxSpawnOptions): Promise<SandboxProcess>;
  /** Stops the VM (on a COW root: syncs and flushes the store first). Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export class NativeSandboxInstance implements SandboxInstance {
  readonly #addon: NativeAddon;
  readonly #id: number;
  readonly #defaultCwd: string | undefined;
  #closing: Promise<void> | undefined;
  /** The native error that reported the VM dead. */
  #vmmExit: Error | undefined;
  /**
   * Runs once the native close settled (the VM is gone by then); close()
   * settles after it. Its rejection fails a close that had succeeded.
   */
  readonly #onClosed: (() => Promise<void>) | undefined;

  /** `defaultCwd` is the boot's `cwd`, if it had one. */
  constructor(addon: NativeAddon, id: number, defaultCwd: string | undefined, onClosed?: () => Promise<void>) {
    this.#addon = addon;
    this.#id = id;
    this.#defaultCwd = defaultCwd;
    this.#onClosed = onClosed;
  }

  async exec(command: string, args: readonly string[] = [], options: SandboxExecOptions = {}): Promise<SandboxExecResult> {
    const request = this.#request("exec", command, args, options);
    const response = await this.#call(NativeMethods.exec, request);
    const { exitCode, stdout, stderr } = (response ?? {}) as Partial<SandboxExecResult>;
    if (!Number.isInteger(exitCode) || typeof stdout !== "string" || typeof stderr !== "string") {
      throw protocolViolation("exec", response, "{ exitCode, stdout, stderr }");
    }
    return { exitCode: exitCode as number, stdout, stderr };
  }

  async spawn(command: string, args: readonly string[] = [], options: SandboxSpawnOptions = {}): Promise<SandboxProcess> {
    const request = this.#request("spawn", command, args, options);
    const stdout = new OutputStream("stdout");
    const stderr = new OutputStream("stderr");
    let started: () => void = () => undefined;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    const deliver: NativeEventHandler = (event, payload) => {
      if (event === NativeEvents.started) return started();
      if (event === NativeEvents.stdout) return stdout.push(payload);
      if (event === NativeEvents.stderr) return stderr.push(payload);
      return undefined; // events added by later protocol versions
    };
    const exit = this.#call(NativeMethods.spawn, request, deliver).then((response) => {
      const exitCode = (response as { exitCode?: unknown } | null)?.exitCode;
      if (!Number.isInteger(exitCode)) throw protocolViolation("spawn", response, "{ exitCode }");
      return { exitCode: exitCode as number };
    });
    // Settle both streams with the process. A lost process fails them, so a
    // caller that only reads the streams still learns of it; this handler
    // also keeps an `exit` nobody awaits from being an unhandled rejection.
    exit.then(
      () => {
        stdout.end();
        stderr.end();
      },
      (error: unknown) => {
        stdout.fail(error);
        stderr.fail(error);
      },
    );
    // As in 0.6.0: resolved once the process runs, or at its exit when it
    // never started (127, the reason on stderr); rejected when it was lost
    // before it started.
    await Promise.race([running, exit]);
    return { stdout, stderr, exit };
  }

  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing.then(settledAnyway, settledAnyway);
    this.#closing = callNative(this.#addon, NativeMethods.close, { id: this.#id }).then(
      async () => {
        await this.#onClosed?.();
      },
      async (error: unknown) => {
        // The close's own failure is the one to report; onClosed still runs.
        await this.#onClosed?.().catch(() => undefined);
        throw error;
      },
    );
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #request(method: "exec" | "spawn", command: string, args: readonly string[], options: SandboxExecOptions): ProcessRequest {
    if (this.#closing !== undefined) throw sandboxClosed();
    if (this.#vmmExit !== undefined) throw this.#vmmExit;
    return processRequest(method, this.#id, this.#defaultCwd, command, args, options);
  }

  async #call(method: string, payload: object, handler?: NativeEventHandler): Promise<unknown> {
    try {
      return await callNative(this.#addon, method, payload, handler);
    } catch (error) {
      if (errorCode(error) === ErrorCodes.vmmExited && error instanceof Error) this.#vmmExit ??= error;
      throw error;
    }
  }
}

function settledAnyway(): void {}
