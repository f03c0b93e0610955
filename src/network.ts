// `network.policy(handler)`: wraps a policy handler into an opaque, branded
// NetworkPolicy value. Only values made here are accepted by defineSandbox;
// the handler stays private to this package.

import type { NetworkConnectionRequestHandler, NetworkPolicy } from "./network-types.js";

const handlers = new WeakMap<NetworkPolicy, NetworkConnectionRequestHandler>();

function policy(handler: NetworkConnectionRequestHandler): NetworkPolicy {
  if (typeof handler !== "function") {
    throw new TypeError("network.policy(handler): handler must be a function");
  }
  const made: NetworkPolicy = Object.freeze({ kind: "network-policy" });
  handlers.set(made, handler);
  return made;
}

export const network = { policy };

export function isNetworkPolicy(value: unknown): value is NetworkPolicy {
  return typeof value === "object" && value !== null && handlers.has(value as NetworkPolicy);
}

/** The handler of a policy made by `network.policy`. */
export function policyHandler(made: NetworkPolicy): NetworkConnectionRequestHandler {
  const handler = handlers.get(made);
  if (handler === undefined) throw new TypeError("not a policy made by network.policy(...)");
  return handler;
}
