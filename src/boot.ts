// Boots one sandbox: resolves the rootfs image in the installed artifacts,
// sends the native `boot` request and wraps the answer in an instance.
// Features whose native side is not built yet (COW roots)
// are still sent as asked: the addon answers ERR_SANDBOX_UNSUPPORTED for
// them, so nothing silently runs without what the caller asked for.

import { builtInImage, readInstalledArtifacts } from "./artifacts.js";
import type { CheckedBootOptions } from "./boot-options.js";
import { NativeSandboxInstance, type SandboxInstance } from "./instance.js";
import { mountAccess, mountEventHandler, type MountAccess } from "./mount-events.js";
import { callNative, protocolViolation, type NativeEventHandler, type NativeRuntime } from "./native.js";
import type { HttpEvent } from "./http-middleware.js";
import { PolicyEvaluator, type PolicyEvent } from "./policy-evaluation.js";
import type { NetworkPolicy } from "./network-types.js";
import type { Rootfs } from "./rootfs.js";

/** A checked definition, as defineSandbox keeps it. */
export interface SandboxPlan {
  readonly rootfs: Rootfs;
  readonly cpus: number;
  readonly memoryMiB: number;
  readonly network: NetworkPolicy | undefined;
}

/** The native `boot` request. */
export interface BootRequest {
  readonly kernel: string;
  readonly initrd: string;
  /**
   * The built-in base image. `readOnly: false` asks for a COW root over it
   * (the block-store events are not part of the protocol yet, and the addon
   * refuses such a boot with ERR_SANDBOX_UNSUPPORTED until they are).
   */
  readonly rootDisk: { readonly path: string; readonly format: "qcow2"; readonly readOnly: boolean; readonly base: string };
  readonly cpus: number;
  readonly memoryMiB: number;
  /** In this order they are numbered in "fs" events (mount-events.ts). */
  readonly mounts: readonly { readonly path: string; readonly access: MountAccess }[];
  /** A NIC behind the policy engine; false means no NIC at all (nothing can leave). */
  readonly network: boolean;
  /**
   * $NODE_EXTRA_CA_CERTS, trusted with the system roots for the upstream
   * side of intercepted HTTPS. Sent from here because the addon's copy of
   * the environment is the one of the moment it was loaded.
   */
  readonly extraCaCerts?: string;
  /** Where the guest console goes ($SANDBOX_CONSOLE_OUTPUT), for debugging. */
  readonly consoleOutput?: string;
}

/**
 * What the guest calls into JavaScript for, from boot to close: the mounts'
 * filesystem operations ("fs", "fs-abort"), and the network policy's
 * decisions ("policy") and HTTP middleware ("http", "http-release").
 * Undefined when it never does.
 */
function guestEventHandler(network: NetworkPolicy | undefined, options: CheckedBootOptions): NativeEventHandler | undefined {
  const mounts = options.mounts.length > 0 ? mountEventHandler(options.mounts) : undefined;
  const policy = network === undefined ? undefined : new PolicyEvaluator(network);
  if (mounts === undefined && policy === undefined) return undefined;
  return async (event, payload) => {
    if (event === "policy" && policy !== undefined) {
      return JSON.stringify(await policy.evaluate(JSON.parse(decoder.decode(payload)) as PolicyEvent));
    }
    if (event === "http" && policy !== undefined) {
      return JSON.stringify(await policy.runMiddleware(JSON.parse(decoder.decode(payload)) as HttpEvent));
    }
    if (event === "http-release" && policy !== undefined) {
      policy.releaseMiddleware(Number(decoder.decode(payload)));
      return undefined;
    }
    return mounts?.(event, payload);
  };
}

const decoder = new TextDecoder();

export async function bootSandbox(
  runtime: NativeRuntime,
  plan: SandboxPlan,
  options: CheckedBootOptions,
  consoleOutput: string | undefined = process.env.SANDBOX_CONSOLE_OUTPUT || undefined,
): Promise<SandboxInstance> {
  const artifacts = readInstalledArtifacts(runtime.directory);
  const isCow = plan.rootfs.kind === "cow-rootfs";
  const image = builtInImage(artifacts, isCow ? plan.rootfs.base.name : plan.rootfs.name);
  const request: BootRequest = {
    kernel: artifacts.kernelPath,
    initrd: artifacts.initrdPath,
    rootDisk: { path: image.path, format: "qcow2", readOnly: !isCow, base: image.base },
    cpus: plan.cpus,
    memoryMiB: plan.memoryMiB,
    mounts: options.mounts.map((mount) => ({ path: mount.path, access: mountAccess(mount.fileSystem) })),
    network: plan.network !== undefined,
    ...(plan.network !== undefined && process.env.NODE_EXTRA_CA_CERTS
      ? { extraCaCerts: process.env.NODE_EXTRA_CA_CERTS }
      : {}),
    ...(consoleOutput === undefined ? {} : { consoleOutput }),
  };
  const response = await callNative(runtime.addon, "boot", request, guestEventHandler(plan.network, options));
  const id = (response as { id?: unknown } | null)?.id;
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) throw protocolViolation("boot", response, "{ id }");
  return new NativeSandboxInstance(runtime.addon, id, options.cwd ?? "/");
}
