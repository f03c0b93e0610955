// npm run bench: the library's speed as ratios against a floor measured in
// the same run on the same machine (see SPECIFICATION.md):
//   cold boot → first exec output, vs. the same VM started by bench/floor;
//   warm exec round trip of /bin/true, vs. the same over control from Go.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { defineSandbox, rootfs } from "@torkbot/sandbox";

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

// Both run back to back in this process's run, on this machine, so the ratio
// holds even where absolute times are noisy.
const base = floor();
const lib = await library();

const rows = [
  ["cold boot → first exec output", "ms", median(lib.coldMs), median(base.coldMs)],
  ["warm exec round trip (/bin/true)", "µs", median(lib.execUs), median(base.execUs)],
];
console.log(`median of ${boots} boots / ${execs} execs; floor = same VM driven from Go without Node (bench/floor)`);
for (const [name, unit, l, f] of rows) {
  console.log(`${name.padEnd(34)} library ${l.toFixed(1).padStart(8)} ${unit}   floor ${f.toFixed(1).padStart(8)} ${unit}   ratio ${(l / f).toFixed(2)}`);
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
    }
  } finally {
    await lane.close();
  }
}
