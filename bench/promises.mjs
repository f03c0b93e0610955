// The promises of SPECIFICATION.md that `npm run bench` measures, by row.
// Each bench section records what it measured with record(); the results
// go, one JSON line each, to $BENCH_RESULTS (scripts/bench.sh sets it, and
// bench/net writes the same lines from Go), and `node bench/promises.mjs
// FILE` prints every promise next to this run's figures and says which
// hold. A row without a bound is reported, not judged.
import { appendFileSync, readFileSync } from "node:fs";

/** SPECIFICATION.md's rows that a bench measures; `max`/`min` bound the ratio. */
export const promises = {
  1: { text: "cold boot() → first exec output (c), ratio to the kernel floor (a) (bench/kernelfloor)", max: 1.3 },
  2: { text: "warm exec round trip (/bin/true), ratio to the same from Go", max: 2 },
  6: { text: "TCP download into the guest, ratio to slirp4netns" },
  7: { text: "new TCP connections/s, ratio to slirp4netns" },
  8: { text: "root disk sequential read, ratio to QEMU opening the qcow2" },
  9: { text: "root disk random 4 KiB read, ratio to QEMU opening the qcow2" },
  10: { text: "COW root write 64 MiB + fsync, ratio to a qcow2 overlay" },
  12: { text: "HTTP(S) GETs/s through interception, ratio to raw accept()" },
  13: { text: "fs.memory mount time per workload, ratio to virtiofsd (lower is better)" },
  16: { text: "cold boot() → first exec output, ratio to the same VM driven from Go (bench/floor)", max: 1.5 },
  15: { text: "COW root write 64 MiB + fsync over @torkbot/sandbox/s3, ratio to the memory store" },
};

/** Records one measured ratio for a promise's row. */
export function record(row, label, ratio) {
  if (!(row in promises)) throw new Error(`bench: no promise row ${row} in bench/promises.mjs`);
  const file = process.env.BENCH_RESULTS;
  if (file) appendFileSync(file, JSON.stringify({ row, label, ratio }) + "\n");
}

/** Prints every promise with this run's ratios; returns whether all bounded ones hold. */
export function summarize(file) {
  const results = readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
  console.log("\npromises (SPECIFICATION.md), this run:");
  let allHold = true;
  for (const [row, p] of Object.entries(promises)) {
    const mine = results.filter((r) => String(r.row) === row);
    const bound = p.max !== undefined ? `≤ ${p.max}×` : p.min !== undefined ? `≥ ${p.min}×` : "no bound";
    if (mine.length === 0) {
      console.log(`  #${row.padEnd(3)} ${p.text} [${bound}]: not measured in this run`);
      continue;
    }
    for (const { label, ratio } of mine) {
      let verdict = "reported";
      if (p.max !== undefined || p.min !== undefined) {
        const holds = (p.max === undefined || ratio <= p.max) && (p.min === undefined || ratio >= p.min);
        verdict = holds ? "holds" : "DOES NOT HOLD";
        allHold &&= holds;
      }
      console.log(`  #${row.padEnd(3)} ${p.text}, ${label} [${bound}]: ${ratio.toFixed(2)}× ${verdict}`);
    }
  }
  return allHold;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2];
  if (!file) throw new Error("usage: node bench/promises.mjs RESULTS_FILE");
  summarize(file);
}
