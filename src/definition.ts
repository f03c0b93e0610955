// `defineSandbox(options)`: checks a machine description synchronously and
// returns the reusable definition whose boot() starts VMs from it.

import { bootSandbox, type SandboxPlan } from "./boot.js";
import { checkBootOptions, type SandboxBootOptions } from "./boot-options.js";
import { invalidDefinition } from "./errors.js";
import type { SandboxInstance } from "./instance.js";
import { nativeRuntime } from "./native.js";
import { isNetworkPolicy } from "./network.js";
import type { NetworkPolicy } from "./network-types.js";
import { checkRootfs, type Rootfs } from "./rootfs.js";

const DEFAULT_CPUS = 1;
const DEFAULT_MEMORY_MIB = 512;
const MAX_CPUS = 255;

export interface SandboxResourceLimits {
  /** vCPUs, an integer in 1..255; default 1. */
  readonly cpus?: number;
  /** Guest memory in MiB, a positive integer; default 512. */
  readonly memoryMiB?: number;
}

export interface SandboxDefinitionOptions {
  readonly rootfs: Rootfs;
  readonly resources?: SandboxResourceLimits;
  /** Omitted: the guest has no network at all. */
  readonly network?: NetworkPolicy;
}

export interface SandboxDefinition {
  boot(options?: SandboxBootOptions): Promise<SandboxInstance>;
}

/** Throws "invalid sandbox definition: …" for a bad description; starts no VM. */
export function defineSandbox(options: SandboxDefinitionOptions): SandboxDefinition {
  const plan = checkDefinition(options);
  return Object.freeze({
    async boot(bootOptions?: SandboxBootOptions): Promise<SandboxInstance> {
      const checked = checkBootOptions(bootOptions);
      return bootSandbox(nativeRuntime(), plan, checked);
    },
  });
}

/** The checks of defineSandbox, returning the plan boot() uses. */
export function checkDefinition(options: unknown): SandboxPlan {
  if (typeof options !== "object" || options === null) throw invalidDefinition("options must be an object");
  const { rootfs, resources, network } = options as { rootfs?: unknown; resources?: unknown; network?: unknown };
  const checkedRootfs = checkRootfs(rootfs);
  if (resources !== undefined && (typeof resources !== "object" || resources === null)) {
    throw invalidDefinition("resources must be an object");
  }
  const { cpus = DEFAULT_CPUS, memoryMiB = DEFAULT_MEMORY_MIB } = (resources ?? {}) as { cpus?: unknown; memoryMiB?: unknown };
  if (typeof cpus !== "number" || !Number.isInteger(cpus) || cpus < 1) {
    throw invalidDefinition(`resources.cpus must be a positive integer, got ${String(cpus)}`);
  }
  if (cpus > MAX_CPUS) {
    throw invalidDefinition(`resources.cpus must be less than or equal to ${MAX_CPUS}, got ${cpus}`);
  }
  if (typeof memoryMiB !== "number" || !Number.isSafeInteger(memoryMiB) || memoryMiB <= 0) {
    throw invalidDefinition(`resources.memoryMiB must be a positive integer, got ${String(memoryMiB)}`);
  }
  if (network !== undefined && !isNetworkPolicy(network)) {
    throw invalidDefinition("network must be created with network.policy(...)");
  }
  return Object.freeze({ rootfs: checkedRootfs, cpus, memoryMiB, network });
}
