// Public types of the network policy object model: the `conn` object a
// `network.policy(...)` handler receives, its endpoints, match capabilities,
// grants, and the HTTP middleware request.

/** IP transport of a policy event. */
export type NetworkTransport = "tcp" | "udp";

/**
 * Source or destination of a policy event. The classifiers look at the IP
 * address only (never DNS names, Host headers or SNI); see `src/ip.ts` for
 * the exact registries they follow.
 */
export interface NetworkEndpoint {
  /** Canonical numeric address (dotted quad, or RFC 5952 IPv6). */
  readonly ip: string;
  readonly port: number;
  /** 127.0.0.0/8, ::1. */
  isLoopback(): boolean;
  /** RFC 1918 private-use IPv4 and fc00::/7 unique-local IPv6. */
  isPrivate(): boolean;
  /** 169.254.0.0/16, fe80::/10. */
  isLinkLocal(): boolean;
  /** 224.0.0.0/4, ff00::/8. */
  isMulticast(): boolean;
  /** 255.255.255.255. */
  isBroadcast(): boolean;
  /** TEST-NET-1/2/3, MCAST-TEST-NET, 2001:db8::/32, 3fff::/20. */
  isDocumentation(): boolean;
  /** Any other special-purpose block that is not globally reachable. */
  isReserved(): boolean;
  /** Globally reachable unicast: none of the classes above. */
  isPublicInternet(): boolean;
}

export interface TcpNetworkEndpoint extends NetworkEndpoint {
  readonly port: number;
}

export interface UdpNetworkEndpoint extends NetworkEndpoint {
  readonly port: number;
}

/** `"203.0.113.10:5432"`, `"[2001:db8::1]:443"` or `{ ip, port }`, matched against `dst`. */
export type NetworkEndpointSpec =
  | `${string}:${number}`
  | `[${string}]:${number}`
  | { readonly ip: string; readonly port: number };

/** An upstream DNS resolver: `"1.1.1.1"`, `"1.1.1.1:53"`, `"[2606:4700::1111]:53"` or `{ ip, port? }`; port defaults to 53. */
export type DnsResolverSpec =
  | string
  | { readonly ip: string; readonly port?: number };

export type DnsUpstreamResolver = DnsResolverSpec;

export interface DnsAcceptOptions {
  /** Ordered upstream resolvers for this query. Omitted: the host's own resolvers. */
  readonly resolvers?: readonly DnsUpstreamResolver[];
}

/** `"api.example.com"`, `"api.example.com:443"` or `{ hostname, port? }`; no port matches any port. */
export type HttpAuthoritySpec =
  | string
  | { readonly hostname: string; readonly port?: number };

/**
 * Options of `matchHttp`. A name the sandbox's DNS pinned can resolve to any
 * address, including a cloud metadata service (169.254.169.254), and a
 * middleware would then send its credentials there; so by default
 * `matchHttp` never grants link-local destinations or the metadata services'
 * other addresses (`fd00:ec2::254`, `100.100.100.200`), and grants the rest
 * as 0.6.0 did, private networks included.
 */
export interface HttpMatchOptions {
  /**
   * `"routable"` (the default): any destination but link-local ones and the
   * metadata services. `"public"`: only when `dst.isPublicInternet()`, for a
   * policy whose names must never lead into a private network. `"any"`:
   * whatever the destination's class. The host's own addresses and loopback
   * are refused before any policy runs, either way.
   */
  readonly destinations?: "routable" | "public" | "any";
}

/**
 * Synchronous predicate for the match helpers. Its result counts by
 * truthiness, as in 0.6.0, so a predicate that returns a promise matches
 * whatever the promise resolves to: do async checks after the match.
 */
export type NetworkMatchPredicate<TMatch> = (candidate: TMatch) => boolean;

/** Opaque grant; reserved as an extension point for grant state. */
export interface NetworkGrant {}

/** Opaque grant for a flow routed through HTTP-family enforcement. */
export interface HttpNetworkGrant extends NetworkGrant {}

export interface SandboxHttpRequest {
  readonly protocol: "http/1.1" | "h2";
  readonly url: URL;
  readonly method: string;
  /** Mutable; changes apply to the upstream request only. */
  readonly headers: Headers;
  readonly destination: {
    readonly sourceIp: string;
    readonly sourcePort: number;
    readonly originalIp: string;
    readonly originalPort: number;
    /** Hostname pinned by the sandbox's own DNS answer; never the Host header. */
    readonly hostname?: string;
  };
  readonly tls?: {
    readonly sni?: string;
    readonly alpn?: string;
  };
}

/** Runs for each request on an HTTP-accepted flow. Throwing answers the guest 403. */
export type HttpRequestMiddleware = (request: SandboxHttpRequest) => void | Promise<void>;

export interface DnsConnectionMatch {
  readonly src: NetworkEndpoint;
  /** The sandbox resolver the guest asked. */
  readonly dst: NetworkEndpoint;
  readonly transport: NetworkTransport;
  /** Forwards the query to `options.resolvers`, else the matched resolver spec, else the host's own resolution (its /etc/hosts, then its nameservers). */
  accept(options?: DnsAcceptOptions): NetworkGrant;
}

export interface TcpConnectionMatch {
  readonly src: TcpNetworkEndpoint;
  readonly dst: TcpNetworkEndpoint;
  /** Raw TCP relay, no protocol enforcement. */
  accept(): NetworkGrant;
}

export interface UdpConnectionMatch {
  readonly src: UdpNetworkEndpoint;
  readonly dst: UdpNetworkEndpoint;
  accept(): NetworkGrant;
}

export interface HttpConnectionMatch {
  readonly src: TcpNetworkEndpoint;
  readonly dst: TcpNetworkEndpoint;
  /** Hostname the sandbox's DNS pinned to `dst.ip`. */
  readonly hostname: string;
  readonly port: number;
  /** Routes the flow through HTTP-family enforcement; non-HTTP bytes fail closed. */
  accept(middleware?: HttpRequestMiddleware): HttpNetworkGrant;
}

export interface NetworkConnectionRequestBase<TTransport extends NetworkTransport> {
  readonly transport: TTransport;
  readonly src: NetworkEndpoint;
  readonly dst: NetworkEndpoint;
  /** Raw relay of this flow (for a DNS query: answered from the host's own resolution). */
  accept(): NetworkGrant;
  /** A DNS capability when this event is a query to the sandbox resolver. */
  matchDns(
    matcher: DnsResolverSpec | NetworkMatchPredicate<DnsConnectionMatch>,
  ): DnsConnectionMatch | undefined;
  /**
   * An HTTP capability when the sandbox's DNS pinned `dst.ip` to a matching
   * hostname (TCP only) and `dst` is of the classes `options.destinations`
   * allows (by default: not link-local, not a cloud metadata service).
   */
  matchHttp(
    matcher: HttpAuthoritySpec | NetworkMatchPredicate<HttpConnectionMatch>,
    options?: HttpMatchOptions,
  ): HttpConnectionMatch | undefined;
}

export interface TcpNetworkConnectionRequest extends NetworkConnectionRequestBase<"tcp"> {
  readonly src: TcpNetworkEndpoint;
  readonly dst: TcpNetworkEndpoint;
  /** HTTP-family enforcement (TLS terminated with the sandbox CA); non-HTTP bytes fail closed. */
  acceptHttp(middleware?: HttpRequestMiddleware): HttpNetworkGrant;
  matchTcp(
    matcher: NetworkEndpointSpec | NetworkMatchPredicate<TcpConnectionMatch>,
  ): TcpConnectionMatch | undefined;
}

export interface UdpNetworkConnectionRequest extends NetworkConnectionRequestBase<"udp"> {
  readonly src: UdpNetworkEndpoint;
  readonly dst: UdpNetworkEndpoint;
  matchUdp(
    matcher: NetworkEndpointSpec | NetworkMatchPredicate<UdpConnectionMatch>,
  ): UdpConnectionMatch | undefined;
}

/** The `conn` a policy handler receives; narrow on `transport`. */
export type NetworkConnectionRequest =
  | TcpNetworkConnectionRequest
  | UdpNetworkConnectionRequest;

/** Runs once per new TCP connection, UDP flow and DNS query. No grant, a throw or a rejection denies. */
export type NetworkConnectionRequestHandler = (
  connection: NetworkConnectionRequest,
) => void | Promise<void>;

/** Made by `network.policy(handler)` only. */
export type NetworkPolicy = { readonly kind: "network-policy" };
