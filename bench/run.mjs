// npm run bench: the library's speed as ratios against a floor measured in
// the same run on the same machine (see SPECIFICATION.md):
//   cold boot → first exec output (c), vs. the kernel floor (a): QEMU with
//   the same machine, our kernel and a one-line init (bench/kernelfloor),
//   and (a) vs. the same with Debian's kernel (b); the guest's own boot
//   timeline;
//   cold boot → first exec output, vs. the same VM started by bench/floor;
//   warm exec round trip of /bin/true, vs. the same over control from Go.
//   root disk sequential / random 4 KiB reads and write + fsync in the
//   guest, vs. QEMU opening the same qcow2 itself (bench/disk).
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { defineSandbox, rootfs } from "@torkbot/sandbox";
import { record } from "./promises.mjs";

const boots = Number(process.env.BENCH_BOOTS ?? 5);
const execs = Number(process.env.BENCH_EXECS ?? 50);
const platformDir = new URL("../platform-packages/linux-x64-gnu/artifacts/", import.meta.url);
const catalog = JSON.parse(readFileSync(new URL("images/catalog.json", platformDir), "utf8"));

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function floor() {
  const out = execFileSync("build/bench-floor", [
    `-kernel=${new URL("kernel/vmlinux", platformDir).pathname}`,
    `-initrd=${new URL("kernel/initrd.cpio", platformDir).pathname}`,
    `-image=${new URL(`images/${catalog["debian:13-slim"].file}`, platformDir).pathname}`,
    `-boots=${boots}`,
    `-execs=${execs}`,
  ], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  return JSON.parse(out);
}

async function library() {
  const sandbox = defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") });
  const coldMs = [];
  const execUs = [];
  for (let i = 0; i < boots; i++) {
    const started = performance.now();
    const lane = await sandbox.boot();
    const r = await lane.exec("printf", ["ready"]);
    if (r.stdout !== "ready") throw new Error(`unexpected output ${JSON.stringify(r)}`);
    coldMs.push(performance.now() - started);
    if (i === boots - 1) {
      for (let j = 0; j < execs; j++) {
        const t = performance.now();
        await lane.exec("/bin/true");
        execUs.push((performance.now() - t) * 1e3);
      }
    }
    await lane.close();
  }
  return { coldMs, execUs };
}

// The kernel floor: (a) our kernel and (b) Debian's, booting to a one-line
// init on the library's machine (bench/kernelfloor, built by scripts/bench.sh).
function kernelFloor() {
  const out = execFileSync("build/bench-kernelfloor", [
    `-kernel=${new URL("kernel/vmlinux", platformDir).pathname}`,
    "-distro-kernel=build/distro-kernel/vmlinux",
    "-initrd=build/kernelfloor.cpio",
    `-image=${new URL(`images/${catalog["debian:13-slim"].file}`, platformDir).pathname}`,
    `-boots=${boots}`,
  ], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  return JSON.parse(out);
}

// All run back to back in this process's run, on this machine, so the ratios
// hold even where absolute times are noisy.
const kernel = kernelFloor();
const base = floor();
const lib = await library();

{
  const a = median(kernel.ours);
  const b = median(kernel.distro);
  const c = median(lib.coldMs);
  console.log(`median of ${boots} boots, the same machine options (vmm/qemu) throughout`);
  console.log(`(a) kernel floor: our kernel → one-line init      ${a.toFixed(1).padStart(8)} ms`);
  console.log(`(b) the same with Debian's kernel                 ${b.toFixed(1).padStart(8)} ms`);
  console.log(`(c) boot() → first exec output                    ${c.toFixed(1).padStart(8)} ms`);
  console.log(`(c)/(a) ${(c / a).toFixed(2)}   (a)/(b) ${(a / b).toFixed(2)}`);
  record(1, "(c)/(a)", c / a);
  // sandbox-init's milestones on the guest clock (from the kernel's start),
  // and the wall time from starting QEMU to the hello, from bench/floor.
  const step = (name) => median(base.boot.map((t) => t[name]));
  const names = Object.keys(base.boot[0]).filter((n) => n !== "hello");
  console.log(`guest boot timeline (guest clock): kernel 0 ms → ${names.map((n) => `${n} ${step(n).toFixed(0)} ms`).join(" → ")}; hello after ${step("hello").toFixed(0)} ms of wall time from starting QEMU\n`);
}

const rows = [
  [16, "cold boot → first exec output", "ms", median(lib.coldMs), median(base.coldMs)],
  [2, "warm exec round trip (/bin/true)", "µs", median(lib.execUs), median(base.execUs)],
];
console.log(`median of ${boots} boots / ${execs} execs; floor = same VM driven from Go without Node (bench/floor)`);
for (const [row, name, unit, l, f] of rows) {
  console.log(`${name.padEnd(34)} library ${l.toFixed(1).padStart(8)} ${unit}   floor ${f.toFixed(1).padStart(8)} ${unit}   ratio ${(l / f).toFixed(2)}`);
  record(row, name, l / f);
}

// Mounts: the same workloads inside the guest on an fs.memory mount, on the
// guest's own tmpfs (one VM, this run), and on a host tmpfs served by QEMU's
// virtiofsd to the same guest (bench/virtiofs), the anchor for what a
// VMM-native shared filesystem costs here.
{
  const { fs } = await import("@torkbot/sandbox");
  const workloads = [
    ["create+stat+unlink 2000 files",
      'cd $DIR && mkdir m && cd m && for i in $(seq 2000); do : > f$i; done && stat -c %s f* >/dev/null && rm f* && cd .. && rmdir m'],
    ["write 64 MiB + fsync", "dd if=/dev/zero of=$DIR/big bs=1M count=64 conv=fsync status=none"],
    ["read 64 MiB", "echo 3 > /proc/sys/vm/drop_caches; cat $DIR/big >/dev/null"],
  ];
  const virtiofs = JSON.parse(execFileSync("build/bench-virtiofs", [
    `-kernel=${new URL("kernel/vmlinux", platformDir).pathname}`,
    `-initrd=${new URL("kernel/initrd.cpio", platformDir).pathname}`,
    `-image=${new URL(`images/${catalog["debian:13-slim"].file}`, platformDir).pathname}`,
  ], { encoding: "utf8", input: JSON.stringify(workloads), stdio: ["pipe", "pipe", "inherit"] }));

  const lane = await defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") }).boot({
    mounts: { "/workspace": fs.virtual(fs.memory()) },
  });
  const timeIn = async (dir, script) => {
    const r = await lane.exec("bash", ["-c", `DIR=${dir}; s=$(date +%s%N); ${script}; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))`]);
    if (r.exitCode !== 0) throw new Error(`mount bench: ${r.stderr}`);
    return Number(r.stdout.trim().split("\n").pop());
  };
  console.log("\nmounts, inside the guest, median of 3: fs.memory mount vs the guest's tmpfs (ratio) and vs virtiofsd serving a host tmpfs (ratio)");
  try {
    for (const [name, script] of workloads) {
      const mount = [];
      const tmpfs = [];
      for (let i = 0; i < 3; i++) {
        mount.push(await timeIn("/workspace", script));
        tmpfs.push(await timeIn("/tmp", script));
      }
      const m = median(mount);
      const t = median(tmpfs);
      const v = virtiofs[name];
      console.log(`${name.padEnd(30)} mount ${String(m).padStart(6)} ms   tmpfs ${String(t).padStart(5)} ms (${(m / Math.max(t, 1)).toFixed(2)})   virtiofs ${String(v).padStart(5)} ms (${(m / Math.max(v, 1)).toFixed(2)})`);
      record(13, name, m / Math.max(v, 1));
    }
  } finally {
    await lane.close();
  }
}

// Root disk: throughput of /dev/vda inside the guest through our engine (the
// built-in image decoded by blockstore/qcow2 and served over NBD; writes: a
// COW root over a memory SandboxBlockStore) vs QEMU opening the same qcow2
// itself (bench/disk: read-only, or a writable qcow2 overlay on a local
// file). Both VMs run side by side and the runs alternate, so both see the
// same load; median of 3.
{
  const reps = 3;
  const time = (body) => `s=$(date +%s%N); ${body}; e=$(date +%s%N)`;
  const reads = [
    ["sequential read (MiB/s)",
      `echo 3 > /proc/sys/vm/drop_caches; ${time("dd if=/dev/vda of=/dev/null bs=1M count=256 iflag=direct status=none")}; echo $(( 256 * 1000000000 / (e - s) ))`],
    // Four readers at once, as a build or a package manager reads: the
    // device sees several requests in flight.
    ["4 parallel sequential readers (MiB/s)",
      `echo 3 > /proc/sys/vm/drop_caches; ${time("for i in 0 1 2 3; do dd if=/dev/vda of=/dev/null bs=1M count=64 skip=$((i * 256)) iflag=direct status=none & done; wait")}; echo $(( 256 * 1000000000 / (e - s) ))`],
    // Buffered 4 KiB reads at random aligned offsets with readahead off, so
    // each one is one 4 KiB request to the device; same offsets on both sides.
    ["random 4 KiB read (IOPS)",
      `echo 0 > /sys/block/vda/queue/read_ahead_kb; echo 3 > /proc/sys/vm/drop_caches; n=$(( $(cat /sys/block/vda/size) / 8 )); ` +
      time(`perl -e 'srand(42); open(my $f, "<", "/dev/vda") or die $!; for (1..2000) { sysseek($f, int(rand($ARGV[0])) * 4096, 0) or die $!; sysread($f, my $b, 4096) == 4096 or die "short read" }' $n`) +
      `; echo 128 > /sys/block/vda/queue/read_ahead_kb; echo $(( 2000 * 1000000000 / (e - s) ))`],
  ];
  const writes = [
    ["write 64 MiB + fsync (MiB/s)",
      `${time("dd if=/dev/zero of=/root/bench.bin bs=1M count=64 conv=fsync status=none")}; rm /root/bench.bin; sync; echo $(( 64 * 1000000000 / (e - s) ))`],
  ];
  /** bench/disk as a child: one VM, one workload per line in, one result per line out. */
  const baseline = (mode) => {
    const child = spawn("build/bench-disk", [
      `-kernel=${new URL("kernel/vmlinux", platformDir).pathname}`,
      `-initrd=${new URL("kernel/initrd.cpio", platformDir).pathname}`,
      `-image=${new URL(`images/${catalog["debian:13-slim"].file}`, platformDir).pathname}`,
      `-mode=${mode}`,
    ], { stdio: ["pipe", "pipe", "inherit"] });
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const exited = new Promise((resolve) => child.once("exit", resolve));
    return {
      async run(name, script) {
        child.stdin.write(JSON.stringify([name, script]) + "\n");
        const { value, done } = await lines.next();
        if (done) throw new Error(`bench/disk exited during ${name} (see its stderr above)`);
        return JSON.parse(value).result;
      },
      async close() {
        child.stdin.end();
        await exited;
      },
    };
  };
  const lane = async (definition) => {
    const booted = await definition.boot();
    return {
      async run(name, script) {
        const r = await booted.exec("sh", ["-c", script]);
        if (r.exitCode !== 0) throw new Error(`disk bench ${name}: ${r.stderr}`);
        return r.stdout.trim().split("\n").pop();
      },
      close: () => booted.close(),
    };
  };
  // A memory store as in docs/cow.md: write() stages, flush() commits.
  const memoryStore = () => {
    const durable = new Map();
    const staged = new Map();
    return {
      blockSize: 4096,
      async list() { return [...durable.keys()]; },
      async read({ start, count }) {
        const chunks = [];
        for (let i = 0n; i < BigInt(count); i++) if (durable.has(start + i)) chunks.push({ start: start + i, data: durable.get(start + i) });
        return chunks;
      },
      async write(chunks) {
        for (const { start, data } of chunks) for (let i = 0; i < data.length / 4096; i++) staged.set(start + BigInt(i), data.slice(i * 4096, (i + 1) * 4096));
      },
      async flush() { for (const [k, v] of staged) durable.set(k, v); staged.clear(); },
    };
  };
  const results = {};
  const compare = async (ours, theirs, workloads) => {
    try {
      for (let i = 0; i < reps; i++) {
        for (const [name, script] of workloads) {
          const r = (results[name] ??= { ours: [], qemu: [] });
          r.ours.push(Number(await ours.run(name, script)));
          r.qemu.push(Number(await theirs.run(name, script)));
        }
      }
    } finally {
      await ours.close();
      await theirs.close();
    }
  };
  await compare(await lane(defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") })), baseline("ro"), reads);
  await compare(
    await lane(defineSandbox({ rootfs: rootfs.cow({ base: rootfs.builtIn("debian:13-slim"), writable: memoryStore() }) })),
    baseline("overlay"),
    writes,
  );
  console.log(`\nroot disk, inside the guest, median of ${reps}, runs alternating: our engine (NBD from the host; writes: a COW root over a memory store) vs QEMU opening the qcow2 itself (writes: a qcow2 overlay file); ratio = ours / QEMU's, higher is better`);
  for (const [name, { ours, qemu }] of Object.entries(results)) {
    const o = median(ours);
    const q = median(qemu);
    console.log(`${name.padEnd(30)} ours ${String(o).padStart(7)}   qemu ${String(q).padStart(7)}   ratio ${(o / q).toFixed(2)}`);
    record(name.startsWith("random") ? 9 : name.startsWith("write") ? 10 : 8, name, o / q);
  }

  // The same write against a COW root over @torkbot/sandbox/s3 on a local S3
  // server (versitygw on loopback, objects as files) vs over the memory
  // store: what the object store path costs. Runs alternate; median of 3.
  const { S3Server, s3Skip } = await import("../tests/e2e/fixtures/s3-server.mjs");
  if (s3Skip) {
    console.log(`\ns3 block store: skipped (${s3Skip})`);
  } else {
    const { mkdtempSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { S3BlockStore } = await import("@torkbot/sandbox/s3");
    const dir = mkdtempSync(join(tmpdir(), "bench-s3-"));
    const server = new S3Server(dir);
    let client;
    try {
      await server.start();
      await server.createBucket("bench");
      client = server.client();
      const flushMs = [];
      class TimedStore extends S3BlockStore {
        async flush(context) {
          const started = performance.now();
          await super.flush(context);
          flushMs.push(performance.now() - started);
        }
      }
      const s3 = await lane(defineSandbox({ rootfs: rootfs.cow({ base: rootfs.builtIn("debian:13-slim"), writable: new TimedStore({ client, bucket: "bench", keyPrefix: "lane" }) }) }));
      const memory = await lane(defineSandbox({ rootfs: rootfs.cow({ base: rootfs.builtIn("debian:13-slim"), writable: memoryStore() }) }));
      const [name, script] = writes[0];
      const r = { s3: [], memory: [] };
      try {
        for (let i = 0; i < reps; i++) {
          r.s3.push(Number(await s3.run(name, script)));
          r.memory.push(Number(await memory.run(name, script)));
        }
      } finally {
        await s3.close();
        await memory.close();
      }
      const o = median(r.s3);
      const m = median(r.memory);
      const sorted = [...flushMs].sort((a, b) => a - b);
      console.log(`\ns3 block store (versitygw on loopback, 4 MiB objects) vs the memory store, COW root, median of ${reps}, ratio = s3 / memory`);
      console.log(`${name.padEnd(30)} s3 ${String(o).padStart(9)}   memory ${String(m).padStart(7)}   ratio ${(o / m).toFixed(2)}`);
      record(15, name, o / m);
      console.log(`flush() latency over ${sorted.length} flushes: median ${median(sorted).toFixed(0)} ms, max ${sorted.at(-1).toFixed(0)} ms`);
    } finally {
      client?.destroy();
      await server.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
