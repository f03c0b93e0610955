// Public entry point of @torkbot/sandbox: four runtime exports
// (defineSandbox, rootfs, fs, network) and the types of the public API.

import "./dispose-polyfill.js";

export { defineSandbox } from "./definition.js";
export { rootfs } from "./rootfs.js";
export { fs } from "./fs.js";
export { network } from "./network.js";

export type { SandboxDefinition, SandboxDefinitionOptions, SandboxResourceLimits } from "./definition.js";
export type { SandboxBootOptions } from "./boot-options.js";
export type { SandboxExecResult, SandboxInstance, SandboxProcess } from "./instance.js";
export type { SandboxExecOptions, SandboxSpawnOptions } from "./process-request.js";
export type {
  BuiltInRootfsConfig,
  BuiltInRootfsName,
  CowRootfsConfig,
  Rootfs,
  SandboxBlockChunk,
  SandboxBlockRange,
  SandboxBlockStore,
  SandboxBlockStoreContext,
} from "./rootfs.js";
export type {
  MemoryFileSystemOptions,
  SandboxDirectoryEntry,
  SandboxFileStat,
  SandboxFileSystem,
  SandboxFileSystemSource,
  SandboxFileType,
  SandboxPosixFileSystem,
  SandboxWritableFileSystem,
  SandboxWritableFileSystemSource,
} from "./fs.js";
export type {
  DnsAcceptOptions,
  DnsConnectionMatch,
  DnsResolverSpec,
  DnsUpstreamResolver,
  HttpAuthoritySpec,
  HttpMatchOptions,
  HttpConnectionMatch,
  HttpNetworkGrant,
  HttpRequestMiddleware,
  NetworkConnectionRequest,
  NetworkConnectionRequestBase,
  NetworkConnectionRequestHandler,
  NetworkEndpoint,
  NetworkEndpointSpec,
  NetworkGrant,
  NetworkMatchPredicate,
  NetworkPolicy,
  NetworkTransport,
  SandboxHttpRequest,
  TcpConnectionMatch,
  TcpNetworkConnectionRequest,
  TcpNetworkEndpoint,
  UdpConnectionMatch,
  UdpNetworkConnectionRequest,
  UdpNetworkEndpoint,
} from "./network-types.js";
