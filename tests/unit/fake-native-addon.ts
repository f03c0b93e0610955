// FakeNativeAddon: a stand-in for `sandbox.node` (which needs a VM engine)
// that records requests and answers them with per-method responders.
// Named as a fake on purpose: tests using it prove the TypeScript side only.

import type { NativeAddon, NativeEventHandler } from "../../src/native.js";

export type FakeResponder = (payload: Record<string, unknown>, handler?: NativeEventHandler) => unknown;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class FakeNativeAddon implements NativeAddon {
  readonly calls: { method: string; payload: Record<string, unknown> }[] = [];
  readonly #responders = new Map<string, FakeResponder>();

  constructor(responders: Record<string, FakeResponder> = {}) {
    this.on("boot", () => ({ id: 7 }));
    this.on("close", () => ({}));
    for (const [method, responder] of Object.entries(responders)) this.on(method, responder);
  }

  on(method: string, responder: FakeResponder): this {
    this.#responders.set(method, responder);
    return this;
  }

  callsOf(method: string): Record<string, unknown>[] {
    return this.calls.filter((call) => call.method === method).map((call) => call.payload);
  }

  version(): string {
    return JSON.stringify({ version: "0.6.0", protocol: 1, go: "fake" });
  }

  async request(method: string, payload: Uint8Array, handler?: NativeEventHandler): Promise<Uint8Array> {
    const parsed = JSON.parse(decoder.decode(payload)) as Record<string, unknown>;
    this.calls.push({ method, payload: parsed });
    const responder = this.#responders.get(method);
    if (responder === undefined) throw new Error(`FakeNativeAddon: no responder for ${method}`);
    return encoder.encode(JSON.stringify(await responder(parsed, handler)));
  }
}

export function codedFailure(code: string, message: string): Error & { code: string } {
  return Object.assign(new Error(message), { code });
}
