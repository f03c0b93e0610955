// Runs an acceptHttp middleware for one intercepted request. The native
// side sends an "http" event per request (HttpEvent, JSON) and sends the
// headers this answers upstream; a rejection (the middleware threw, or the
// event names no middleware) makes it answer the guest 403. Requests run
// concurrently: nothing here waits for another request.

import type { HttpRequestMiddleware, SandboxHttpRequest } from "./network-types.js";

/** netpolicy/eventpolicy's requestEvent (docs/addon-protocol.md). */
export interface HttpEvent {
  readonly middlewareId: number;
  readonly protocol: "http/1.1" | "h2";
  readonly url: string;
  readonly method: string;
  readonly headers: readonly (readonly [string, string])[];
  readonly destination: {
    readonly sourceIp: string;
    readonly sourcePort: number;
    readonly originalIp: string;
    readonly originalPort: number;
    readonly hostname?: string;
  };
  readonly tls?: { readonly sni?: string; readonly alpn?: string };
}

/** The answer: the request headers to send upstream. */
export interface HttpVerdict {
  readonly headers: readonly (readonly [string, string])[];
}

export async function runHttpMiddleware(middleware: HttpRequestMiddleware, event: HttpEvent): Promise<HttpVerdict> {
  const headers = new Headers();
  for (const [name, value] of event.headers) headers.append(name, value);
  const { destination, tls } = event;
  const request: SandboxHttpRequest = Object.freeze({
    protocol: event.protocol,
    url: new URL(event.url),
    method: event.method,
    headers,
    destination: Object.freeze({
      sourceIp: destination.sourceIp,
      sourcePort: destination.sourcePort,
      originalIp: destination.originalIp,
      originalPort: destination.originalPort,
      ...(destination.hostname === undefined ? {} : { hostname: destination.hostname }),
    }),
    ...(tls === undefined
      ? {}
      : {
          tls: Object.freeze({
            ...(tls.sni === undefined ? {} : { sni: tls.sni }),
            ...(tls.alpn === undefined ? {} : { alpn: tls.alpn }),
          }),
        }),
  });
  await middleware(request);
  // Headers iterates Set-Cookie values one by one and joins the others.
  return { headers: [...headers] };
}
