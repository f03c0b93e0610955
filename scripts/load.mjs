#!/usr/bin/env node
// Load figures (issue 15), run once by hand after `npm run build`; they
// print JSON lines to paste into docs/security.md:
//   node scripts/load.mjs boots [n=16] [memoryMiB=256]  n sandboxes booted and exec'ing at once
//   node scripts/load.mjs execs [n=8] [each=100]        n sandboxes × `each` concurrent execs
//   node scripts/load.mjs flows [n=1000]                one sandbox holding n TCP flows at once
// Host memory per sandbox: each VMM's RSS and PSS (/proc/PID/smaps_rollup)
// and this process's RSS growth divided by the sandboxes. "flows" sends
// traffic, so it re-runs itself in a network namespace of its own whose only
// origin is on loopback (TESTING.md): nothing leaves the machine.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { loadavg } from "node:os";
import { defineSandbox, network, rootfs } from "@torkbot/sandbox";
import { childProcesses } from "../tests/e2e/helpers.mjs";
import { addonStats } from "../tests/e2e/fixtures/soak.mjs";

const [mode = "boots", a, b] = process.argv.slice(2);
const base = rootfs.builtIn("debian:13-slim");
const mib = (kib) => Math.round(kib / 1024);

function memoryOf(pid) {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(rollup)?.[1] ?? NaN);
  return { rssKiB: field("Rss"), pssKiB: field("Pss") };
}

async function hostMemory(sandboxes) {
  const vmms = childProcesses().map(memoryOf);
  const sum = (k) => vmms.reduce((s, m) => s + m[k], 0);
  return {
    sandboxes,
    vmms: vmms.length,
    vmmRssMiBEach: mib(sum("rssKiB") / Math.max(1, vmms.length)),
    vmmPssMiBEach: mib(sum("pssKiB") / Math.max(1, vmms.length)),
    nodeRssMiB: Math.round(process.memoryUsage().rss / (1 << 20)),
    goroutines: (await addonStats()).goroutines,
    load1: Number(loadavg()[0].toFixed(1)),
  };
}

const t0 = performance.now();
const seconds = () => Number(((performance.now() - t0) / 1000).toFixed(1));
const report = (what) => console.log(JSON.stringify({ mode, ...what, elapsedS: seconds() }));

if (mode === "boots" || mode === "execs") {
  const n = Number(a ?? (mode === "boots" ? 16 : 8));
  const memoryMiB = mode === "boots" ? Number(b ?? 256) : 512;
  const each = mode === "execs" ? Number(b ?? 100) : 1;
  const nodeBefore = process.memoryUsage().rss;
  report({ phase: "start", n, memoryMiB, each, ...(await hostMemory(0)) });
  const sandbox = defineSandbox({ rootfs: base, resources: { memoryMiB } });
  const bootMs = [];
  const lanes = await Promise.all(
    Array.from({ length: n }, async () => {
      const t = performance.now();
      const lane = await sandbox.boot();
      bootMs.push(Math.round(performance.now() - t));
      return lane;
    }),
  );
  report({ phase: "booted", bootMsMin: Math.min(...bootMs), bootMsMax: Math.max(...bootMs), ...(await hostMemory(n)) });
  const execMs = [];
  const tExec = performance.now();
  await Promise.all(
    lanes.flatMap((lane, i) =>
      Array.from({ length: each }, async (_, j) => {
        const t = performance.now();
        const r = await lane.exec("sh", ["-c", `echo ${i}.${j}; head -c 65536 /dev/zero | md5sum >/dev/null`]);
        if (r.exitCode !== 0 || r.stdout !== `${i}.${j}\n`) throw new Error(`exec ${i}.${j}: ${JSON.stringify(r)}`);
        execMs.push(performance.now() - t);
      }),
    ),
  );
  execMs.sort((x, y) => x - y);
  const during = await hostMemory(n);
  report({
    phase: "exec'd",
    execs: execMs.length,
    execWallS: Number(((performance.now() - tExec) / 1000).toFixed(1)),
    execMsP50: Math.round(execMs[execMs.length >> 1]),
    execMsMax: Math.round(execMs.at(-1)),
    nodeRssGrowthMiBPerSandbox: Math.round((process.memoryUsage().rss - nodeBefore) / (1 << 20) / n),
    ...during,
  });
  await Promise.all(lanes.map((lane) => lane.close()));
  report({ phase: "closed", ...(await hostMemory(0)) });
} else if (mode === "flows") {
  if (process.env.SANDBOX_NETNS_INSIDE !== "1") {
    execFileSync("unshare", ["--net", "--", "bash", "-c", 'ip link set lo up && ip addr add 198.51.100.10/32 dev lo && exec "$0" "$@"', process.execPath, ...process.argv.slice(1)], {
      stdio: "inherit",
      env: { ...process.env, SANDBOX_NETNS_INSIDE: "1" },
    });
    process.exit(0);
  }
  if (execFileSync("ip", ["route", "show", "default"], { encoding: "utf8" }).trim() !== "") throw new Error("flows: a default route exists; run only in its own namespace");
  const n = Number(a ?? 1000);
  // The origin answers each line with the same line and keeps the connection.
  let open = 0;
  let peak = 0;
  const server = createServer((socket) => {
    open++;
    peak = Math.max(peak, open);
    socket.on("data", (d) => socket.write(d));
    socket.on("close", () => open--);
    socket.on("error", () => {});
  });
  await new Promise((resolve) => server.listen(7000, "198.51.100.10", resolve));
  const sandbox = defineSandbox({
    rootfs: base,
    network: network.policy((conn) => {
      conn.matchTcp("198.51.100.10:7000")?.accept();
    }),
  });
  const nodeBefore = process.memoryUsage().rss;
  const lane = await sandbox.boot();
  const idle = await hostMemory(1);
  report({ phase: "booted", n, ...idle });
  // bash opens n connections and keeps them all, then sends a line on each
  // and reads its echo, then holds them until told to stop.
  const script =
    `ulimit -n ${n + 64}; fds=(); for i in $(seq ${n}); do exec {fd}<>/dev/tcp/198.51.100.10/7000 || exit 1; fds+=($fd); done; ` +
    `ok=0; for fd in "\${fds[@]}"; do echo "ping $fd" >&$fd; read -r -t 30 line <&$fd && [ "$line" = "ping $fd" ] && ok=$((ok+1)); done; ` +
    `echo "$ok"; read -r -t 600 _ </tmp/hold 2>/dev/null; sleep 600`;
  const proc = await lane.spawn("bash", ["-c", `mkfifo /tmp/hold; ${script}`]);
  let echoed = "";
  for await (const chunk of proc.stdout) {
    echoed += new TextDecoder().decode(chunk);
    if (echoed.includes("\n")) break;
  }
  const held = await hostMemory(1);
  report({
    phase: "holding",
    flowsOpen: open,
    flowsPeak: peak,
    echoed: Number(echoed.trim()),
    nodeRssGrowthMiB: Math.round((process.memoryUsage().rss - nodeBefore) / (1 << 20)),
    goroutinesPerFlow: Number(((held.goroutines - idle.goroutines) / Math.max(1, open)).toFixed(2)),
    ...held,
  });
  await lane.close();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  report({ phase: "closed", flowsOpen: open, ...(await hostMemory(0)) });
  server.close();
} else {
  throw new Error(`unknown mode ${mode}: boots | execs | flows`);
}
