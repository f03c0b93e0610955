// npm run release:pack [-- --out DIR] [-- --require-all]
//
// Packs every package of a release into DIR (default: release/):
//   torkbot-sandbox-<version>.tgz                  the root package (API, CLI, plist)
//   torkbot-sandbox-<platform>-<version>.tgz       each platform package that is built here
// and writes DIR/pack-report.json (what was packed, sizes, file lists).
//
// The root package is packed from a staging copy with a fresh TypeScript
// build, so files left in dist/ by sources that no longer exist cannot ship.
// A platform package that is not built on this machine (a darwin-arm64
// package needs a Mac) is skipped with the reason; --require-all turns that
// into a failure, for the release job that has gathered every platform's build.
//
// Every listing is checked before anything is reported: no source maps, no
// TypeScript sources, no tests, no absolute paths of the build machine
// inside shipped files, catalogs that match their images.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { manifestProblems, readJson, releasePackages, ROOT } from "./lib/packages.mjs";

/**
 * Size budget of a platform package, packed: every user downloads it, so it
 * stays within what npm's maintainers call practical for one tarball
 * (~120 MiB) with room for the addon and initrd to grow. An image that
 * would take it past this ships in an image package of its own
 * (docs/packaging.md).
 */
const PLATFORM_PACKED_BUDGET = 100e6;
/**
 * Beyond this, npmjs.org has been seen to refuse a publish (413 Payload Too
 * Large, npm/cli#4794 at 229.9 MB, npm/documentation#1691 above 200 MB):
 * said loudly for an image package, which has no smaller form yet.
 */
const REGISTRY_REFUSES_ABOVE = 200e6;

/** A refusal with its reason; thrown so the staging directory is still removed. */
class PackError extends Error {}

let goModCacheValue; // go env GOMODCACHE, asked once (null: no Go here)

const args = process.argv.slice(2);
const requireAll = args.includes("--require-all");
const outIndex = args.indexOf("--out");
const out = resolve(outIndex >= 0 && args[outIndex + 1] ? args[outIndex + 1] : join(ROOT, "release"));
for (const arg of args) {
  if (arg.startsWith("--") && arg !== "--out" && arg !== "--require-all") {
    console.error(`release:pack: unknown option ${arg} (options: --out DIR, --require-all)`);
    process.exit(2);
  }
}

const rootManifest = readJson(join(ROOT, "package.json"));
const stage = mkdtempSync(join(tmpdir(), "torkbot-sandbox-pack-"));
try {
  // 1. The root package, staged: its manifest, README, and the `files`
  //    entries, with dist/ compiled fresh into the stage.
  cpSync(join(ROOT, "package.json"), join(stage, "package.json"));
  for (const name of readdirSync(ROOT)) {
    if (/^(README|LICENSE|LICENCE)(\..*)?$/i.test(name)) cpSync(join(ROOT, name), join(stage, name));
  }
  for (const entry of rootManifest.files) {
    if (entry === "dist") continue;
    if (!existsSync(join(ROOT, entry))) fail(`package.json files names ${entry}, which does not exist`);
    cpSync(join(ROOT, entry), join(stage, entry), { recursive: true });
  }
  execFileSync(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, "tsconfig.json"), "--outDir", join(stage, "dist")], {
    stdio: "inherit",
  });

  // The platform table, from the build that ships.
  const table = await import(pathToFileURL(join(stage, "dist/artifacts.js")).href);
  const inconsistent = manifestProblems(table);
  if (inconsistent.length > 0) fail(`the manifests disagree with the platform table (src/artifacts.ts):\n  ${inconsistent.join("\n  ")}`);

  mkdirSync(out, { recursive: true });
  // Tarballs of an earlier run must not pass for this run's (a platform
  // skipped now would otherwise leave its old tarball in place).
  for (const name of readdirSync(out)) {
    if (/^torkbot-sandbox-.*\.tgz$/.test(name) || name === "pack-report.json") rmSync(join(out, name));
  }

  const packed = [pack(stage, "root")];
  const skipped = [];
  for (const { name, directory, problems: missing } of releasePackages(table)) {
    const problems = [...missing, ...catalogDigestProblems(directory)];
    if (problems.length > 0) {
      const reason = `${name} is not built here:\n    ${problems.join("\n    ")}\n  (recipe: ${relative(ROOT, directory)}/README.md)`;
      if (requireAll) fail(reason);
      skipped.push({ name, problems });
      console.error(`release:pack: skipped ${reason}`);
      continue;
    }
    const result = pack(directory, name);
    const isImage = table.IMAGE_PACKAGES.some((row) => table.imagePackageName(row.key) === name);
    if (!isImage && result.size > PLATFORM_PACKED_BUDGET) {
      fail(`${name} is ${mb(result.size)} packed, over the platform package budget of ${mb(PLATFORM_PACKED_BUDGET)}: move an image into an image package (IMAGE_PACKAGES in src/artifacts.ts)`);
    }
    if (isImage && result.size > REGISTRY_REFUSES_ABOVE) {
      console.error(`release:pack: warning: ${name} is ${mb(result.size)} packed; npmjs.org has refused publishes above ~${mb(REGISTRY_REFUSES_ABOVE)} (docs/packaging.md)`);
    }
    packed.push(result);
  }

  const report = {
    version: rootManifest.version,
    packed: packed.map(({ name, version, filename, size, unpackedSize, files }) => ({
      name,
      version,
      tarball: join(out, filename),
      size,
      unpackedSize,
      files: files.map(({ path, size }) => ({ path, size })),
    })),
    skipped,
  };
  writeFileSync(join(out, "pack-report.json"), `${JSON.stringify(report, null, 2)}\n`);
  for (const p of report.packed) {
    console.log(`release:pack: ${relative(process.cwd(), p.tarball)}  ${mb(p.size)} packed, ${mb(p.unpackedSize)} unpacked, ${p.files.length} files`);
  }
} catch (error) {
  if (!(error instanceof PackError)) throw error;
  console.error(`release:pack: ${error.message}`);
  process.exitCode = 1;
} finally {
  rmSync(stage, { recursive: true, force: true });
}

/** `npm pack` of one package directory, checked; returns npm's JSON for it. */
function pack(directory, label) {
  const json = execFileSync("npm", ["pack", directory, "--pack-destination", out, "--json", "--ignore-scripts", "--loglevel=error"], {
    encoding: "utf8",
    cwd: out,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const [result] = JSON.parse(json);
  const problems = listingProblems(directory, result.files.map((f) => f.path));
  if (problems.length > 0) fail(`the ${label} package would ship what it must not:\n  ${problems.join("\n  ")}`);
  return result;
}

/**
 * What must never be in a published package: source maps (they carry the
 * build's paths and sources), TypeScript sources, tests, and the build
 * machine's absolute paths (checkout, staging dir, Go module cache) inside
 * any shipped file, binaries included.
 */
function listingProblems(directory, files) {
  const problems = [];
  const privatePaths = [ROOT.replace(/\/$/, ""), stage, goModCache()].filter((p) => p !== undefined && p.length > 1);
  for (const file of files) {
    if (/\.map$/.test(file)) problems.push(`${file}: a source map`);
    if (/\.(ts|mts|cts)$/.test(file) && !/\.d\.(ts|mts|cts)$/.test(file)) problems.push(`${file}: a TypeScript source`);
    if (/(^|\/)(tests?|__tests__|fixtures)\//.test(file) || /\.(test|spec)\.[cm]?[jt]s$/.test(file)) problems.push(`${file}: a test file`);
    const bytes = readFileSync(join(directory, file));
    if (/\.[cm]?js$/.test(file) && bytes.includes("sourceMappingURL")) problems.push(`${file}: refers to a source map`);
    for (const path of privatePaths) {
      if (bytes.includes(path)) problems.push(`${file}: contains the build machine's path ${path}`);
    }
  }
  return problems;
}

function goModCache() {
  if (goModCacheValue === undefined) {
    try {
      goModCacheValue = execFileSync("go", ["env", "GOMODCACHE"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim() || null;
    } catch {
      goModCacheValue = null; // no Go here: nothing built here can hold its paths
    }
  }
  return goModCacheValue ?? undefined;
}

/** Each catalog entry's sha256 must be its image's: it is the COW store's `context.base`. */
function catalogDigestProblems(directory) {
  const catalogPath = join(directory, "artifacts/images/catalog.json");
  if (!existsSync(catalogPath)) return [];
  const problems = [];
  for (const [name, entry] of Object.entries(readJson(catalogPath))) {
    const image = join(directory, "artifacts/images", entry.file);
    if (!existsSync(image)) continue; // reported by releasePackages
    const digest = createHash("sha256").update(readFileSync(image)).digest("hex");
    if (digest !== entry.sha256) problems.push(`artifacts/images/${entry.file}: sha256 ${digest}, but the catalog says ${entry.sha256} for ${name}`);
  }
  return problems;
}

function mb(bytes) {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`;
}

function fail(message) {
  throw new PackError(message);
}
