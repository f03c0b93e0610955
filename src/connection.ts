// Builds the `conn` object a policy handler receives for one policy event:
// endpoints, accept/acceptHttp and the match helpers. Every accept goes
// through one GrantRecorder, which keeps the last grant made while the
// handler runs (0.6.0's semantics).

import { createNetworkEndpoint, isPort, parseEndpointSpec, parseResolverSpec, type SocketAddress } from "./endpoint.js";
import { addressClasses, mayBeMetadataService, parseIpAddress, sameIpAddress, type IpAddress } from "./ip.js";
import type {
  DnsAcceptOptions,
  DnsConnectionMatch,
  DnsResolverSpec,
  HttpAuthoritySpec,
  HttpConnectionMatch,
  HttpMatchOptions,
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

/**
 * Holds the grant of one flow while its handler runs. As in 0.6.0, several
 * accepts in one handler are allowed and the last one wins, and an accept
 * after the handler settled is ignored: the decision has already gone out.
 */
export class GrantRecorder {
  #grant: FlowGrant | undefined;
  #open = true;

  get grant(): FlowGrant | undefined {
    return this.#grant;
  }

  record(grant: FlowGrant): NetworkGrant & HttpNetworkGrant {
    if (this.#open) this.#grant = grant;
    return Object.freeze({});
  }

  /** Called when the handler settles; later accepts change nothing. */
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

  // On a DNS query every grant answers it from the host's resolvers, as
  // 0.6.0 answered any query its policy did not deny: conn.accept(),
  // matchUdp("10.0.2.1:53")?.accept() and, on TCP, acceptHttp() alike.
  const accept = (): NetworkGrant =>
    recorder.record(isDnsQuery ? { action: "dns", resolvers: undefined } : { action: "accept" });

  const acceptHttp = (middleware?: HttpRequestMiddleware): HttpNetworkGrant => {
    if (middleware !== undefined && typeof middleware !== "function") {
      throw new TypeError("network policy: HTTP middleware must be a function");
    }
    return isDnsQuery ? accept() : recorder.record({ action: "http", middleware });
  };

  const matchEndpoint = <TMatch extends TcpConnectionMatch | UdpConnectionMatch>(
    matcher: NetworkEndpointSpec | NetworkMatchPredicate<TMatch>,
  ): TMatch | undefined => {
    const match = Object.freeze({ src, dst, accept }) as TMatch;
    if (typeof matcher === "function") return runPredicate(matcher, match);
    const wanted = parseEndpointSpec(matcher);
    const matches = wanted !== undefined
      && sameIpAddress(wanted.address, destination.address) && wanted.port === destination.port;
    return matches ? match : undefined;
  };

  const matchDns = (
    matcher: DnsResolverSpec | NetworkMatchPredicate<DnsConnectionMatch>,
  ): DnsConnectionMatch | undefined => {
    if (!isDnsQuery) return undefined;
    const specResolver = typeof matcher === "function" ? undefined : parseResolverSpec(matcher);
    // A resolver that is not an IP address (a hostname) cannot be dialed: no match.
    if (typeof matcher !== "function" && specResolver === undefined) return undefined;
    const match: DnsConnectionMatch = Object.freeze({
      src,
      dst,
      transport,
      accept: (options?: DnsAcceptOptions) => {
        const chosen = resolversOf(options) ?? (specResolver === undefined ? undefined : [specResolver]);
        // `resolvers: []` means the host's own resolvers, as in 0.6.0.
        return recorder.record({ action: "dns", resolvers: chosen?.length === 0 ? undefined : chosen });
      },
    });
    return typeof matcher === "function" ? runPredicate(matcher, match) : match;
  };

  // A pinned name may resolve anywhere, a cloud metadata service included,
  // and a middleware would send its credentials there: that never matches
  // unless the policy says so (HttpMatchOptions).
  const matchHttp = (
    matcher: HttpAuthoritySpec | NetworkMatchPredicate<HttpConnectionMatch>,
    options?: HttpMatchOptions,
  ): HttpConnectionMatch | undefined => {
    const authority = typeof matcher === "function" ? undefined : parseAuthoritySpec(matcher);
    const destinations = httpDestinations(options);
    if (transport !== "tcp" || isDnsQuery || pinnedHostname === undefined) return undefined;
    if (!destinationAllowed(destinations, destination.address)) return undefined;
    if (typeof matcher !== "function") {
      if (authority === undefined) return undefined;
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

  // As in 0.6.0, a conn carries only its transport's members, so that
  // `"acceptHttp" in conn` tells TCP from UDP.
  const common = { transport, src, dst, accept, matchDns, matchHttp };
  return Object.freeze(
    transport === "tcp"
      ? { ...common, acceptHttp, matchTcp: matchEndpoint<TcpConnectionMatch> }
      : { ...common, matchUdp: matchEndpoint<UdpConnectionMatch> },
  ) as NetworkConnectionRequest;
}

function eventAddress(value: SocketAddress, role: string): { address: IpAddress; port: number } {
  const address = typeof value?.ip === "string" ? parseIpAddress(value.ip) : undefined;
  const port = value?.port;
  if (address === undefined || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new TypeError(`policy event: invalid ${role} ${JSON.stringify(value)}`);
  }
  return { address, port };
}

/**
 * Runs a match predicate; its result counts by truthiness, as in 0.6.0. A
 * predicate that returns a promise therefore matches (a promise is truthy,
 * whatever it resolves to); the types forbid it. Its rejection is observed
 * here so that it cannot crash the host process as an unhandled rejection.
 */
function runPredicate<TMatch>(predicate: NetworkMatchPredicate<TMatch>, candidate: TMatch): TMatch | undefined {
  const verdict: unknown = predicate(candidate);
  if (typeof (verdict as PromiseLike<unknown> | undefined)?.then === "function") {
    Promise.resolve(verdict).catch(() => undefined);
  }
  return verdict ? candidate : undefined;
}

/** The resolvers `options` names; undefined when it names none. */
function resolversOf(options: DnsAcceptOptions | undefined): SocketAddress[] | undefined {
  if (options?.resolvers === undefined) return undefined;
  if (!Array.isArray(options.resolvers)) throw new TypeError("network policy: resolvers must be an array");
  return options.resolvers.map((spec) => {
    const resolver = parseResolverSpec(spec);
    if (resolver === undefined) {
      throw new TypeError(`network policy: invalid DNS resolver ${JSON.stringify(spec)}: expected an IP address with optional port`);
    }
    return resolver;
  });
}

type HttpDestinations = NonNullable<HttpMatchOptions["destinations"]>;

function httpDestinations(options: HttpMatchOptions | undefined): HttpDestinations {
  const destinations = options?.destinations ?? "routable";
  if (destinations !== "routable" && destinations !== "public" && destinations !== "any") {
    throw new TypeError(`network policy: invalid matchHttp destinations ${JSON.stringify(destinations)}: expected "routable", "public" or "any"`);
  }
  return destinations;
}

function destinationAllowed(destinations: HttpDestinations, address: IpAddress): boolean {
  switch (destinations) {
    case "any":
      return true;
    case "public":
      return addressClasses(address).has("global");
    case "routable":
      return !mayBeMetadataService(address);
  }
}

const HOSTNAME = /^[^\s:/\\[\]@]+$/;

/** Undefined for a spec that names no hostname (a URL, a bad port): it matches nothing, as in 0.6.0. */
function parseAuthoritySpec(spec: HttpAuthoritySpec): { hostname: string; port: number | undefined } | undefined {
  if (typeof spec !== "string" && (typeof spec !== "object" || spec === null)) {
    throw new TypeError(`network policy: invalid HTTP authority ${String(spec)}: expected "host", "host:port" or { hostname, port? }`);
  }
  const [hostname, port] = typeof spec === "string"
    ? splitAuthority(spec)
    : [typeof spec.hostname === "string" ? spec.hostname : "", spec.port];
  if (!HOSTNAME.test(hostname) || (port !== undefined && !isPort(port))) return undefined;
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
