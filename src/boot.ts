// Boots one sandbox: resolves the rootfs image in the installed artifacts,
// sends the native `boot` request and wraps the answer in an instance.
// Features whose native side is not built yet (mounts, network, COW roots)
// are still sent as asked: the addon answers ERR_SANDBOX_UNSUPPORTED for
// them, so nothing silently runs without what the caller asked for.

import { builtInImage, readInstalledArtifacts } from "./artifacts.js";
import type { CheckedBootOptions } from "./boot-options.js";
import { NativeSandboxInstance, type SandboxInstance } from "./instance.js";
import { callNative, protocolViolation, type NativeRuntime } from "./native.js";
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
  readonly mounts: readonly { readonly path: string }[];
  /** A NIC behind the policy engine; false means no NIC at all (nothing can leave). */
  readonly network: boolean;
  /** Where the guest console goes ($SANDBOX_CONSOLE_OUTPUT), for debugging. */
  readonly consoleOutput?: string;
}

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
    mounts: options.mounts.map((mount) => ({ path: mount.path })),
    network: plan.network !== undefined,
    ...(consoleOutput === undefined ? {} : { consoleOutput }),
  };
  const response = await callNative(runtime.addon, "boot", request);
  const id = (response as { id?: unknown } | null)?.id;
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) throw protocolViolation("boot", response, "{ id }");
  return new NativeSandboxInstance(runtime.addon, id, options.cwd ?? "/");
}
