// Turns one policy event into one decision by running the user's
// `network.policy` handler, and runs the middleware of HTTP decisions for
// their flows' requests until the native side releases them.
//
// Fail closed: a handler that grants nothing, throws, or rejects yields
// "deny". A malformed event (a native bug) rejects instead.

import { createConnection, GrantRecorder, type PolicyEvent } from "./connection.js";
import { runHttpMiddleware, type HttpEvent, type HttpVerdict } from "./http-middleware.js";
import type { SocketAddress } from "./endpoint.js";
import { policyHandler } from "./network.js";
import type { HttpRequestMiddleware, NetworkConnectionRequestHandler, NetworkPolicy } from "./network-types.js";

export type { PolicyEvent } from "./connection.js";

export type PolicyDecision =
  | { readonly action: "deny" }
  /** Raw TCP relay or UDP flow to `dst`. */
  | { readonly action: "accept" }
  /** HTTP-family enforcement; `middlewareId` names the middleware to run per request. */
  | { readonly action: "http"; readonly middlewareId?: number }
  /** Forward the DNS query; no `resolvers` means the host's own resolvers. */
  | { readonly action: "dns"; readonly resolvers?: readonly SocketAddress[] };

const DENY: PolicyDecision = Object.freeze({ action: "deny" });

/** One per booted sandbox: evaluates its events and keeps the middleware of HTTP grants. */
export class PolicyEvaluator {
  readonly #handler: NetworkConnectionRequestHandler;
  readonly #middleware = new Map<number, HttpRequestMiddleware>();
  #nextMiddlewareId = 1;

  constructor(policy: NetworkPolicy) {
    this.#handler = policyHandler(policy);
  }

  async evaluate(event: PolicyEvent): Promise<PolicyDecision> {
    const recorder = new GrantRecorder();
    const connection = createConnection(event, recorder);
    try {
      await this.#handler(connection);
    } catch {
      return DENY;
    } finally {
      recorder.seal();
    }
    const grant = recorder.grant;
    switch (grant?.action) {
      case undefined:
        return DENY;
      case "accept":
        return { action: "accept" };
      case "dns":
        return grant.resolvers === undefined ? { action: "dns" } : { action: "dns", resolvers: grant.resolvers };
      case "http":
        return grant.middleware === undefined
          ? { action: "http" }
          : { action: "http", middlewareId: this.#register(grant.middleware) };
    }
  }

  /** The middleware of an HTTP decision, until released. */
  middleware(id: number): HttpRequestMiddleware | undefined {
    return this.#middleware.get(id);
  }

  /** Runs the middleware an "http" event names; rejects (refusing the request) when it throws. */
  async runMiddleware(event: HttpEvent): Promise<HttpVerdict> {
    const middleware = this.#middleware.get(event.middlewareId);
    if (middleware === undefined) throw new Error(`no HTTP middleware ${event.middlewareId}: its flow was released`);
    return runHttpMiddleware(middleware, event);
  }

  /** Forgets an HTTP decision's middleware once its flow has closed. */
  releaseMiddleware(id: number): void {
    this.#middleware.delete(id);
  }

  #register(middleware: HttpRequestMiddleware): number {
    const id = this.#nextMiddlewareId;
    this.#nextMiddlewareId += 1;
    this.#middleware.set(id, middleware);
    return id;
  }
}
