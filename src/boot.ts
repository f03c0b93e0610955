// Boots one sandbox: resolves the rootfs image in the installed artifacts,
// sends the native `boot` request and wraps the answer in an instance.
// A COW root's store is claimed for the life of the sandbox (see
// block-store-events.ts), so a second boot on it rejects.

import { NativeEvents, NativeMethods } from "./addon-protocol.js";
import { builtInImage, readInstalledArtifacts } from "./artifacts.js";
import { attach, blockStoreEventHandler, storeContext, storeHook } from "./block-store-events.js";
import type { CheckedBootOptions } from "./boot-options.js";
import { NativeSandboxInstance, type SandboxInstance } from "./instance.js";
import { mountAccess, mountEventHandler, type MountAccess } from "./mount-events.js";
import { callNative, protocolViolation, type NativeEventHandler, type NativeRuntime } from "./native.js";
import type { HttpEvent } from "./http-middleware.js";
import { PolicyEvaluator, type PolicyEvent } from "./policy-evaluation.js";
import type { NetworkPolicy } from "./network-types.js";
import type { Rootfs, SandboxBlockStore, SandboxBlockStoreContext } from "./rootfs.js";
import { readSettings, type NativeSettings } from "./settings.js";

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
   * whose store, of `blockSize`-byte blocks, the addon reaches through
   * "block-*" events (block-store-events.ts).
   */
  readonly rootDisk: {
    readonly path: string;
    readonly format: "qcow2";
    readonly readOnly: boolean;
    readonly blockSize?: number;
  };
  readonly cpus: number;
  readonly memoryMiB: number;
  /** In this order they are numbered in "fs" events (mount-events.ts). */
  readonly mounts: readonly { readonly path: string; readonly access: MountAccess }[];
  /** A NIC behind the policy engine; false means no NIC at all (nothing can leave). */
  readonly network: boolean;
  /** process.env's settings at this boot() call (settings.ts). */
  readonly settings: NativeSettings;
}

/**
 * What the guest calls into JavaScript for, from boot to close: the mounts'
 * filesystem operations ("fs", "fs-abort"), the network policy's
 * decisions ("policy") and HTTP middleware ("http", "http-release"), and
 * a COW root's block store ("block-*"). Undefined when it never does.
 */
function guestEventHandler(
  network: NetworkPolicy | undefined,
  options: CheckedBootOptions,
  cow: { readonly store: SandboxBlockStore; readonly context: SandboxBlockStoreContext } | undefined,
): NativeEventHandler | undefined {
  const mounts = options.mounts.length > 0 ? mountEventHandler(options.mounts) : undefined;
  const policy = network === undefined ? undefined : new PolicyEvaluator(network);
  const blocks = cow === undefined ? undefined : blockStoreEventHandler(cow.store, cow.context);
  if (mounts === undefined && policy === undefined && blocks === undefined) return undefined;
  return async (event, payload) => {
    if (event === NativeEvents.policy && policy !== undefined) {
      return JSON.stringify(await policy.evaluate(JSON.parse(decoder.decode(payload)) as PolicyEvent));
    }
    if (event === NativeEvents.http && policy !== undefined) {
      return JSON.stringify(await policy.runMiddleware(JSON.parse(decoder.decode(payload)) as HttpEvent));
    }
    if (event === NativeEvents.httpRelease && policy !== undefined) {
      policy.releaseMiddleware(Number(decoder.decode(payload)));
      return undefined;
    }
    return blocks?.(event, payload) ?? mounts?.(event, payload);
  };
}

const decoder = new TextDecoder();

export async function bootSandbox(
  runtime: NativeRuntime,
  plan: SandboxPlan,
  options: CheckedBootOptions,
  settings: NativeSettings = readSettings(),
): Promise<SandboxInstance> {
  const artifacts = readInstalledArtifacts(runtime.directory, runtime.imageDirectories);
  const store = plan.rootfs.kind === "cow-rootfs" ? plan.rootfs.writable : undefined;
  const image = builtInImage(artifacts, plan.rootfs.kind === "cow-rootfs" ? plan.rootfs.base.name : plan.rootfs.name);
  const request: BootRequest = {
    kernel: artifacts.kernelPath,
    initrd: artifacts.initrdPath,
    rootDisk: {
      path: image.path,
      format: "qcow2",
      readOnly: store === undefined,
      ...(store === undefined ? {} : { blockSize: store.blockSize }),
    },
    cpus: plan.cpus,
    memoryMiB: plan.memoryMiB,
    mounts: options.mounts.map((mount) => ({ path: mount.path, access: mountAccess(mount.fileSystem) })),
    network: plan.network !== undefined,
    settings,
  };
  // Claimed before the first await, so two boots started in the same tick
  // cannot both take the store.
  const release = store === undefined ? undefined : attach(store);
  const cow = store === undefined ? undefined : { store, context: storeContext(image.base) };
  // The store's own hold (a lease across machines) is taken before the VM
  // starts and given back after it is gone, inside the in-process claim.
  if (cow !== undefined) {
    try {
      await storeHook(cow.store, "attach", cow.context);
    } catch (error) {
      release?.();
      throw error;
    }
  }
  const end =
    cow === undefined
      ? undefined
      : async () => {
          try {
            await storeHook(cow.store, "detach", cow.context);
          } finally {
            release?.();
          }
        };
  let response: unknown;
  try {
    response = await callNative(runtime.addon, NativeMethods.boot, request, guestEventHandler(plan.network, options, cow));
  } catch (error) {
    await end?.().catch(() => undefined); // the boot's failure is the one to report
    throw error;
  }
  const id = (response as { id?: unknown } | null)?.id;
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
    // No id to close with: the store stays claimed, as a VM may be running on it.
    throw protocolViolation("boot", response, "{ id }");
  }
  return new NativeSandboxInstance(runtime.addon, id, options.cwd, end);
}
