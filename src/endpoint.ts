// Endpoint objects for policy events (`conn.src`, `conn.dst`) and the parsers
// for the address specs users pass to the match helpers and DNS accept.

import { addressClasses, formatIpAddress, parseIpAddress, type IpAddress } from "./ip.js";
import type { DnsResolverSpec, NetworkEndpoint, NetworkEndpointSpec } from "./network-types.js";

const DNS_PORT = 53;

/** An address and port in the form the native side dials. */
export interface SocketAddress {
  readonly ip: string;
  readonly port: number;
}

export function createNetworkEndpoint(address: IpAddress, port: number): NetworkEndpoint {
  const classes = addressClasses(address);
  return Object.freeze({
    ip: formatIpAddress(address),
    port,
    isLoopback: () => classes.has("loopback"),
    isPrivate: () => classes.has("private"),
    isLinkLocal: () => classes.has("link-local"),
    isMulticast: () => classes.has("multicast"),
    isBroadcast: () => classes.has("broadcast"),
    isDocumentation: () => classes.has("documentation"),
    isReserved: () => classes.has("reserved"),
    isPublicInternet: () => classes.has("global"),
  });
}

/**
 * Parses a match spec: `"a.b.c.d:port"`, `"[v6]:port"` or `{ ip, port }`.
 * Undefined when it names no IP endpoint (`"db:5432"`, a bad port): such a
 * spec matches nothing, as in 0.6.0. A string without any port separator
 * throws, as 0.6.0's did ("must include a port").
 */
export function parseEndpointSpec(
  spec: NetworkEndpointSpec,
): { readonly address: IpAddress; readonly port: number } | undefined {
  if (typeof spec === "string" ? !spec.includes(":") : typeof spec !== "object" || spec === null) {
    throw new TypeError(`invalid endpoint spec ${describe(spec)}: expected "ip:port", "[ipv6]:port" or { ip, port }`);
  }
  const parsed = typeof spec === "string" ? splitAddressAndPort(spec) : objectAddress(spec);
  if (parsed === undefined || parsed.port === undefined) return undefined;
  return { address: parsed.address, port: parsed.port };
}

/**
 * Parses a resolver spec: an IP with optional port (default 53), bracketed
 * when IPv6 has a port. Undefined when it is not an IP address (a hostname
 * such as "dns.google"); throws when it is neither a string nor an object.
 */
export function parseResolverSpec(spec: DnsResolverSpec): SocketAddress | undefined {
  if (typeof spec !== "string" && (typeof spec !== "object" || spec === null)) {
    throw new TypeError(`invalid DNS resolver ${describe(spec)}: expected an IP address with optional port`);
  }
  const parsed = typeof spec === "string" ? splitAddressAndPort(spec, true) : objectAddress(spec);
  if (parsed === undefined) return undefined;
  return { ip: formatIpAddress(parsed.address), port: parsed.port ?? DNS_PORT };
}

interface ParsedAddress {
  readonly address: IpAddress;
  readonly port: number | undefined;
}

function splitAddressAndPort(text: string, allowBareIpv6 = false): ParsedAddress | undefined {
  const bracketed = /^\[([^\]]+)\](?::([0-9]+))?$/.exec(text);
  if (bracketed !== null) return checked(bracketed[1] ?? "", bracketed[2], 6);
  const colons = text.split(":").length - 1;
  if (colons === 0) return checked(text, undefined, 4);
  if (colons === 1) {
    const [host = "", port = ""] = text.split(":");
    return /^[0-9]+$/.test(port) ? checked(host, port, 4) : undefined;
  }
  return allowBareIpv6 ? checked(text, undefined, 6) : undefined;
}

function checked(host: string, portText: string | undefined, family: 4 | 6): ParsedAddress | undefined {
  const address = parseIpAddress(host);
  if (address?.family !== family) return undefined;
  if (portText === undefined) return { address, port: undefined };
  const port = Number(portText);
  return isPort(port) ? { address, port } : undefined;
}

function objectAddress(spec: unknown): ParsedAddress | undefined {
  if (typeof spec !== "object" || spec === null) return undefined;
  const { ip, port } = spec as { ip?: unknown; port?: unknown };
  const address = typeof ip === "string" ? parseIpAddress(ip) : undefined;
  if (address === undefined) return undefined;
  if (port === undefined) return { address, port: undefined };
  return isPort(port) ? { address, port } : undefined;
}

export function isPort(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 1 && value <= 65535;
}

function describe(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
