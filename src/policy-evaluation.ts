// Turns one policy event into one decision by running the user's
// `network.policy` handler. Internal: used by unit tests now and by the
// native network path, which will send events and act on the decisions.
//
// Fail closed: a handler that grants nothing, throws, or rejects yields
// "deny". A malformed event (a native bug) rejects instead.

import { createConnection, GrantRecorder, type PolicyEvent } from "./connection.js";
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
