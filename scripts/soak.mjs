#!/usr/bin/env node
// Leak soak (issue 15): N boot/close cycles (default 100) of a sandbox with
// a COW root, two mounts and a network policy, printing the host counters
// (VMMs, fds, sockets, goroutines, open sandboxes, temp files, RSS) before,
// every 10 cycles and after. Anything but equal counts at the end is a
// leak; the script then exits 1. Run after `npm run build`:
//   node scripts/soak.mjs [cycles]
// Under TCG one cycle takes ~10-20 s; the e2e suite runs a short version
// (tests/e2e/faults.test.mjs).
import { hostCounters, soakCycle } from "../tests/e2e/fixtures/soak.mjs";

const cycles = Number(process.argv[2] ?? 100);
const started = Date.now();
// A warm-up cycle: the addon, the Go runtime and the netstack keep their
// fds and goroutines for the process's life.
await soakCycle(-1);
const settle = () => new Promise((resolve) => setTimeout(resolve, 1000));
await settle();
const before = await hostCounters();
console.log(JSON.stringify({ cycle: 0, ...before }));
// A close that fails (a guest that cannot shut down within its grace on an
// overloaded host) is counted, not fatal: what it leaves is the point.
let closeErrors = 0;
for (let i = 1; i <= cycles; i++) {
  const error = await soakCycle(i);
  if (error !== undefined) {
    closeErrors++;
    console.log(JSON.stringify({ cycle: i, closeError: String(error.message).split("\n")[0] }));
  }
  if (i % 10 === 0 || i === cycles) console.log(JSON.stringify({ cycle: i, ...(await hostCounters()), closeErrors, elapsedS: Math.round((Date.now() - started) / 1000) }));
}
await settle();
const after = await hostCounters();
console.log(JSON.stringify({ after: true, ...after }));
const leaked = Object.keys(before).filter((k) => k !== "rssMiB" && after[k] !== before[k]);
if (leaked.length > 0) {
  console.error(`leaked: ${leaked.map((k) => `${k} ${before[k]} → ${after[k]}`).join(", ")}`);
  process.exit(1);
}
console.log(`${cycles} cycles (${closeErrors} failed), nothing leaked (RSS ${before.rssMiB} → ${after.rssMiB} MiB), ${Math.round((Date.now() - started) / 1000)} s`);
