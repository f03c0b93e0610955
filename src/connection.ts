// Builds the `conn` object a policy handler receives for one policy event:
// endpoints, accept/acceptHttp and the match helpers. Every accept goes
// through one GrantRecorder, which keeps at most one grant per flow and
// refuses grants once the handler has settled.

import { createNetworkEndpoint, isPort, parseEndpointSpec, parseResolverSpec, type SocketAddress } from "./endpoint.js";
import { parseIpAddress, sameIpAddress, type IpAddress } from "./ip.js";
import type {
  DnsAcceptOptions,
  DnsConnectionMatch,
  DnsResolverSpec,
  HttpAuthoritySpec,
  HttpConnectionMatch,
  HttpNetworkGrant,
  HttpRequestMiddleware,
  NetworkConnectionRequest,
  NetworkEndpointSpec,
  NetworkGrant,
  NetworkMatchPredicate,
  NetworkTransport,
  TcpConnectionMatch,
  UdpConnectionMatch,
} from "./network-types.js";

/** One flow as the native network path reports it. */
export interface PolicyEvent {
  readonly transport: NetworkTransport;
  readonly src: SocketAddress;
  readonly dst: SocketAddress;
  /** A query to the sandbox's own resolver (10.0.2.1:53 over UDP or TCP). */
  readonly dnsQuery?: boolean;
  /** Hostname the sandbox's DNS answered with `dst.ip`, when one did. */
  readonly pinnedHostname?: string;
}

/** What the handler granted; `resolvers` undefined means the host's own resolution. */
export type FlowGrant =
  | { readonly action: "accept" }
  | { readonly action: "http"; readonly middleware: HttpRequestMiddleware | undefined }
  | { readonly action: "dns"; readonly resolvers: readonly SocketAddress[] | undefined };

/** Holds the single grant of one flow while its handler runs. */
export class GrantRecorder {
  #grant: FlowGrant | undefined;
  #open = true;

  get grant(): FlowGrant | undefined {
    return this.#grant;
  }

  record(grant: FlowGrant): NetworkGrant & HttpNetworkGrant {
    if (!this.#open) {
      throw new Error("network policy: the decision for this flow is already made; accept inside the handler (before its promise settles)");
    }
    if (this.#grant !== undefined) {
      throw new Error("network policy: this flow is already granted; accept at most once per flow");
    }
    this.#grant = grant;
    return Object.freeze({});
  }

  /** Called when the handler settles; later accepts throw. */
  seal(): void {
    this.#open = false;
  }
}

export function createConnection(event: PolicyEvent, recorder: GrantRecorder): NetworkConnectionRequest {
  const { transport } = event;
  if (transport !== "tcp" && transport !== "udp") throw new TypeError(`policy event: invalid transport ${String(transport)}`);
  const source = eventAddress(event.src, "src");
  const destination = eventAddress(event.dst, "dst");
  const src = createNetworkEndpoint(source.address, source.port);
  const dst = createNetworkEndpoint(destination.address, destination.port);
  const isDnsQuery = event.dnsQuery === true;
  const pinnedHostname = event.pinnedHostname ? normalizeHostname(event.pinnedHostname) : undefined;
  const isPlainTcp = transport === "tcp" && !isDnsQuery;

  const accept = (): NetworkGrant =>
    recorder.record(isDnsQuery ? { action: "dns", resolvers: undefined } : { action: "accept" });

  const acceptHttp = (middleware?: HttpRequestMiddleware): HttpNetworkGrant => {
    if (middleware !== undefined && typeof middleware !== "function") {
      throw new TypeError("network policy: HTTP middleware must be a function");
    }
    if (!isPlainTcp) {
      throw new TypeError(`network policy: acceptHttp() applies to TCP connections, not to ${isDnsQuery ? "DNS queries" : "UDP flows"}`);
    }
    return recorder.record({ action: "http", middleware });
  };

  const matchesDestination = (spec: NetworkEndpointSpec) => {
    const wanted = parseEndpointSpec(spec);
    return sameIpAddress(wanted.address, destination.address) && wanted.port === destination.port;
  };

  const matchTransport = <TMatch extends TcpConnectionMatch | UdpConnectionMatch>(
    wantedTransport: NetworkTransport,
    matcher: NetworkEndpointSpec | NetworkMatchPredicate<TMatch>,
  ): TMatch | undefined => {
    const specMatches = typeof matcher === "function" ? undefined : matchesDestination(matcher);
    if (transport !== wantedTransport || isDnsQuery || specMatches === false) return undefined;
    const match = Object.freeze({ src, dst, accept }) as TMatch;
    return typeof matcher === "function" ? runPredicate(matcher, match) : match;
  };

  const matchDns = (
    matcher: DnsResolverSpec | NetworkMatchPredicate<DnsConnectionMatch>,
  ): DnsConnectionMatch | undefined => {
    const specResolvers = typeof matcher === "function" ? undefined : [parseResolverSpec(matcher)];
    if (!isDnsQuery) return undefined;
    const match: DnsConnectionMatch = Object.freeze({
      src,
      dst,
      transport,
      accept: (options?: DnsAcceptOptions) =>
        recorder.record({ action: "dns", resolvers: resolversOf(options) ?? specResolvers }),
    });
    return typeof matcher === "function" ? runPredicate(matcher, match) : match;
  };

  const matchHttp = (
    matcher: HttpAuthoritySpec | NetworkMatchPredicate<HttpConnectionMatch>,
  ): HttpConnectionMatch | undefined => {
    const authority = typeof matcher === "function" ? undefined : parseAuthoritySpec(matcher);
    if (!isPlainTcp || pinnedHostname === undefined) return undefined;
    if (authority !== undefined) {
      if (authority.hostname !== pinnedHostname) return undefined;
      if (authority.port !== undefined && authority.port !== dst.port) return undefined;
    }
    const match: HttpConnectionMatch = Object.freeze({
      src,
      dst,
      hostname: pinnedHostname,
      port: dst.port,
      accept: acceptHttp,
    });
    return typeof matcher === "function" ? runPredicate(matcher, match) : match;
  };

  // One object serves both union members; the members a transport lacks in
  // the types still answer sensibly at run time for JavaScript callers.
  return Object.freeze({
    transport,
    src,
    dst,
    accept,
    acceptHttp,
    matchDns,
    matchHttp,
    matchTcp: (matcher: NetworkEndpointSpec | NetworkMatchPredicate<TcpConnectionMatch>) =>
      matchTransport("tcp", matcher),
    matchUdp: (matcher: NetworkEndpointSpec | NetworkMatchPredicate<UdpConnectionMatch>) =>
      matchTransport("udp", matcher),
  }) as NetworkConnectionRequest;
}

function eventAddress(value: SocketAddress, role: string): { address: IpAddress; port: number } {
  const address = typeof value?.ip === "string" ? parseIpAddress(value.ip) : undefined;
  const port = value?.port;
  if (address === undefined || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new TypeError(`policy event: invalid ${role} ${JSON.stringify(value)}`);
  }
  return { address, port };
}

function runPredicate<TMatch>(predicate: NetworkMatchPredicate<TMatch>, candidate: TMatch): TMatch | undefined {
  const verdict: unknown = predicate(candidate);
  if (typeof (verdict as PromiseLike<unknown> | undefined)?.then === "function") {
    throw new TypeError("network policy: match predicates must be synchronous; do async checks after the match");
  }
  return verdict ? candidate : undefined;
}

function resolversOf(options: DnsAcceptOptions | undefined): SocketAddress[] | undefined {
  if (options?.resolvers === undefined) return undefined;
  if (!Array.isArray(options.resolvers) || options.resolvers.length === 0) {
    throw new TypeError("network policy: resolvers must be a non-empty array");
  }
  return options.resolvers.map(parseResolverSpec);
}

const HOSTNAME = /^[^\s:/\\[\]@]+$/;

function parseAuthoritySpec(spec: HttpAuthoritySpec): { hostname: string; port: number | undefined } {
  const [hostname, port] = typeof spec === "string"
    ? splitAuthority(spec)
    : [typeof spec?.hostname === "string" ? spec.hostname : "", spec?.port];
  if (!HOSTNAME.test(hostname) || (port !== undefined && !isPort(port))) {
    throw new TypeError(`network policy: invalid HTTP authority ${JSON.stringify(spec)}: expected "host", "host:port" or { hostname, port? }`);
  }
  return { hostname: normalizeHostname(hostname), port };
}

function splitAuthority(text: string): [string, number | undefined] {
  const colon = text.lastIndexOf(":");
  if (colon < 0) return [text, undefined];
  const portText = text.slice(colon + 1);
  return [text.slice(0, colon), /^[0-9]+$/.test(portText) ? Number(portText) : Number.NaN];
}

/** DNS names compare case-insensitively and without the root's trailing dot. */
function normalizeHostname(hostname: string): string {
  return hostname.toLowerCase().replace(/\.$/, "");
}
