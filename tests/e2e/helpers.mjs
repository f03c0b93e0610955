// Helpers shared by the e2e suites: the host-side facts the tests check
// (which VMM processes this process has, which fds it holds) read from /proc.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

/** Child processes of `pid` whose command name starts with `prefix`. */
export function childProcesses(pid = process.pid, prefix = "qemu-system") {
  const found = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // exited while we looked
    }
    // comm is in parentheses and may contain spaces; fields after it are fixed.
    const close = stat.lastIndexOf(")");
    const comm = stat.slice(stat.indexOf("(") + 1, close);
    const fields = stat.slice(close + 2).split(" ");
    const state = fields[0];
    const ppid = Number(fields[1]);
    if (ppid === pid && comm.startsWith(prefix) && state !== "Z") found.push(Number(entry));
  }
  return found;
}

/** The targets of this process's open file descriptors. */
export function openFds() {
  const fds = new Map();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      fds.set(fd, readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // the fd readdir itself used, already closed
    }
  }
  return fds;
}

/** Waits until `check()` is true, polling, or throws after `ms`. */
export async function eventually(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
