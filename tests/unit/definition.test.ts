// defineSandbox validation: every rule of API.md, accepted and rejected, with
// 0.6.0's messages; rootfs values are recognised by kind and shape.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkDefinition } from "../../src/definition.js";
import {
  defineSandbox,
  network,
  rootfs,
  type BuiltInRootfsName,
  type SandboxBlockStore,
  type SandboxDefinitionOptions,
} from "../../src/index.js";

const store = (overrides: Record<string, unknown> = {}): SandboxBlockStore => ({
  blockSize: 4096,
  list: async () => [],
  read: async () => [],
  write: async () => undefined,
  ...overrides,
}) as SandboxBlockStore;

const rejects = (options: unknown, reason: RegExp) =>
  assert.throws(() => defineSandbox(options as SandboxDefinitionOptions), (error: Error) => {
    assert.match(error.message, /^invalid sandbox definition: /);
    assert.match(error.message, reason);
    return true;
  });

describe("defineSandbox", () => {
  test("accepts every built-in name and applies the default resources", () => {
    for (const name of ["alpine:3.23", "debian:13", "debian:13-slim"] as const) {
      const plan = checkDefinition({ rootfs: rootfs.builtIn(name) });
      assert.deepEqual([plan.cpus, plan.memoryMiB, plan.network], [1, 512, undefined]);
    }
    assert.equal(typeof defineSandbox({ rootfs: rootfs.builtIn("alpine:3.23") }).boot, "function");
  });

  test("a rootfs is recognised by kind and shape: literal, spread or structuredClone (0.6.0)", () => {
    const literal = { kind: "built-in-rootfs", name: "alpine:3.23" } as const;
    assert.equal(checkDefinition({ rootfs: literal }).rootfs, literal);
    const made = rootfs.builtIn("debian:13-slim");
    assert.deepEqual(checkDefinition({ rootfs: { ...made } }).rootfs, made);
    assert.deepEqual(checkDefinition({ rootfs: structuredClone(made) }).rootfs, made);
    const writable = store();
    const cow = { kind: "cow-rootfs", base: structuredClone(made), writable } as const;
    assert.equal(checkDefinition({ rootfs: cow }).rootfs, cow);
    assert.equal(checkDefinition({ rootfs: { ...rootfs.cow({ base: literal, writable }) } }).rootfs.kind, "cow-rootfs");
  });

  test("anything else is not a rootfs", () => {
    rejects({ rootfs: { kind: "prebuilt-rootfs", path: "rootfs.qcow2" } }, /rootfs must be created with rootfs\.builtIn\(\.\.\.\) or rootfs\.cow\(\.\.\.\)/);
    rejects({}, /rootfs must be created/);
    rejects({ rootfs: "alpine:3.23" }, /rootfs must be created/);
    rejects(undefined, /options must be an object/);
  });

  test("rootfs values are frozen", () => {
    const made = rootfs.builtIn("alpine:3.23");
    assert.throws(() => {
      (made as { name: string }).name = "ubuntu";
    }, TypeError);
  });

  test("unknown built-in names are rejected with 0.6.0's message, without a prefix", () => {
    const unsupported = (options: unknown, name: string) =>
      assert.throws(() => defineSandbox(options as SandboxDefinitionOptions), (error: Error) => {
        assert.ok(error.message.startsWith(`unsupported built-in rootfs: ${name} (known: alpine:3.23, debian:13, debian:13-slim)`), error.message);
        return true;
      });
    unsupported({ rootfs: rootfs.builtIn("ubuntu:24.04" as BuiltInRootfsName) }, "ubuntu:24.04");
    unsupported({ rootfs: { kind: "built-in-rootfs", name: "debian:12" } }, "debian:12");
    unsupported({ rootfs: rootfs.cow({ base: rootfs.builtIn("alpine:3.20" as BuiltInRootfsName), writable: store() }) }, "alpine:3.20");
  });

  test("a COW base must be a built-in rootfs", () => {
    const other = { kind: "other-rootfs" } as never;
    rejects({ rootfs: rootfs.cow({ base: other, writable: store() }) }, /rootfs\.cow base must be created with rootfs\.builtIn/);
    rejects({ rootfs: { kind: "cow-rootfs", writable: store() } }, /rootfs\.cow base must be created with rootfs\.builtIn/);
  });

  test("COW block size must be a positive multiple of 512", () => {
    for (const blockSize of [512, 4096, 65536]) {
      checkDefinition({ rootfs: rootfs.cow({ base: rootfs.builtIn("alpine:3.23"), writable: store({ blockSize }) }) });
    }
    for (const blockSize of [0, -512, 768.5, Number.NaN, "4096", undefined]) {
      rejects(
        { rootfs: rootfs.cow({ base: rootfs.builtIn("alpine:3.23"), writable: store({ blockSize }) }) },
        /rootfs COW block size must be a positive integer/,
      );
    }
    for (const blockSize of [511, 513, 1000]) {
      rejects(
        { rootfs: rootfs.cow({ base: rootfs.builtIn("alpine:3.23"), writable: store({ blockSize }) }) },
        /rootfs COW block size must be a multiple of 512 bytes/,
      );
    }
  });

  test("COW store must provide list/read/write functions, and flush only as a function", () => {
    for (const method of ["list", "read", "write"]) {
      rejects(
        { rootfs: rootfs.cow({ base: rootfs.builtIn("alpine:3.23"), writable: store({ [method]: undefined }) }) },
        new RegExp(`must provide ${method}\\(\\)`),
      );
    }
    rejects(
      { rootfs: rootfs.cow({ base: rootfs.builtIn("alpine:3.23"), writable: store({ flush: "yes" }) }) },
      /flush must be a function/,
    );
    checkDefinition({
      rootfs: rootfs.cow({ base: rootfs.builtIn("alpine:3.23"), writable: store({ flush: async () => undefined }) }),
    });
    rejects({ rootfs: rootfs.cow({ base: rootfs.builtIn("alpine:3.23"), writable: null as never }) }, /writable must be/);
  });

  test("cpus must be an integer in 1..255", () => {
    for (const cpus of [1, 2, 255]) {
      assert.equal(checkDefinition({ rootfs: rootfs.builtIn("alpine:3.23"), resources: { cpus } }).cpus, cpus);
    }
    for (const cpus of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, "2", null]) {
      rejects({ rootfs: rootfs.builtIn("alpine:3.23"), resources: { cpus } }, /resources\.cpus must be a positive integer/);
    }
    for (const cpus of [256, 1024]) {
      rejects({ rootfs: rootfs.builtIn("alpine:3.23"), resources: { cpus } }, /resources\.cpus must be less than or equal to 255/);
    }
  });

  test("memoryMiB must be a positive integer", () => {
    for (const memoryMiB of [1, 512, 4096]) {
      assert.equal(checkDefinition({ rootfs: rootfs.builtIn("alpine:3.23"), resources: { memoryMiB } }).memoryMiB, memoryMiB);
    }
    for (const memoryMiB of [0, -1, 1.5, Number.POSITIVE_INFINITY, "512"]) {
      rejects({ rootfs: rootfs.builtIn("alpine:3.23"), resources: { memoryMiB } }, /resources\.memoryMiB must be a positive integer/);
    }
    rejects({ rootfs: rootfs.builtIn("alpine:3.23"), resources: 4 }, /resources must be an object/);
  });

  test("network must come from network.policy", () => {
    const policy = network.policy(() => undefined);
    assert.equal(checkDefinition({ rootfs: rootfs.builtIn("alpine:3.23"), network: policy }).network, policy);
    assert.equal(policy.kind, "network-policy");
    rejects({ rootfs: rootfs.builtIn("alpine:3.23"), network: { kind: "network-policy" } }, /network must be created with network\.policy/);
    assert.throws(() => network.policy("allow" as never), TypeError);
  });

  test("rootfs objects have the documented shapes", () => {
    const writable = store();
    const base = rootfs.builtIn("debian:13-slim");
    assert.deepEqual({ ...base }, { kind: "built-in-rootfs", name: "debian:13-slim" });
    assert.deepEqual({ ...rootfs.cow({ base, writable }) }, { kind: "cow-rootfs", base, writable });
  });
});
