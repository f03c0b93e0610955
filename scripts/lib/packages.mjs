// Shared by the packaging scripts (release-pack.mjs, link-current.mjs) and
// the package tests: where the packages are, what each one ships, and whether
// a platform package is complete enough to pack.
//
// The platform table itself lives in src/artifacts.ts (PLATFORMS), because the
// runtime needs it too; scripts read the compiled copy in dist/.

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** The compiled platform table and helpers (dist/artifacts.js), or a clear error. */
export async function platformTable() {
  const compiled = join(ROOT, "dist/artifacts.js");
  if (!existsSync(compiled)) {
    throw new Error(`${compiled} is missing: run \`npm run build:ts\` (or \`npm run build\`) first`);
  }
  return import(pathToFileURL(compiled).href);
}

export function readJson(path) {
  return JSON.parse(readFileSync(path, "utf8"));
}

export function platformDirectory(key) {
  return join(ROOT, "platform-packages", key);
}

/**
 * The files `npm pack` puts in the package at `directory`, relative to it:
 * package.json, README/LICENSE files, and what the `files` field names.
 * Only the subset of npm's rules our manifests use is implemented (plain
 * file and directory paths, no globs or negations, no .npmignore); a
 * manifest that needs more is refused rather than guessed at. The package
 * tests compare this list with npm's own (`npm pack --json`), so a
 * divergence fails there.
 */
export function packageFiles(directory) {
  const manifest = readJson(join(directory, "package.json"));
  const files = new Set(["package.json"]);
  for (const name of readdirSync(directory)) {
    if (/^(README|LICENSE|LICENCE)(\..*)?$/i.test(name) && statSync(join(directory, name)).isFile()) files.add(name);
  }
  for (const entry of manifest.files ?? []) {
    if (/[*?[\]{}!]/.test(entry)) {
      throw new Error(`${directory}/package.json: files entry ${JSON.stringify(entry)} uses a pattern; scripts/lib/packages.mjs handles plain paths only`);
    }
    const path = join(directory, entry);
    if (!existsSync(path)) continue;
    if (statSync(path).isDirectory()) {
      for (const file of walk(path)) files.add(relative(directory, file));
    } else {
      files.add(relative(directory, path));
    }
  }
  return [...files].sort();
}

function* walk(directory) {
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) yield* walk(path);
    else if (entry.isFile() || entry.isSymbolicLink()) yield path;
  }
}

/**
 * What keeps a platform package from being shipped, one line per problem
 * (empty: complete). `platform` is a row of the table.
 */
export function platformProblems(platform, directory, { HELPER_FILE, ADDON_FILE }) {
  const problems = [];
  const need = (file, why) => {
    if (!existsSync(join(directory, file))) problems.push(`${file} is missing (${why})`);
  };
  need(ADDON_FILE, "the native addon");
  if (platform.helperRequired) need(HELPER_FILE, "the libkrun helper this platform boots with");
  need("artifacts/kernel/vmlinux", "the guest kernel");
  need("artifacts/kernel/initrd.cpio", "the initrd");
  const catalogPath = join(directory, "artifacts/images/catalog.json");
  if (!existsSync(catalogPath)) {
    problems.push("artifacts/images/catalog.json is missing (the built-in image catalog)");
  } else {
    const catalog = readJson(catalogPath);
    if (Object.keys(catalog).length === 0) problems.push("artifacts/images/catalog.json lists no image");
    for (const [name, entry] of Object.entries(catalog)) {
      if (!existsSync(join(directory, "artifacts/images", entry.file))) {
        problems.push(`artifacts/images/${entry.file} is missing (image ${name} of the catalog)`);
      }
    }
  }
  return problems;
}

/**
 * Differences between the manifests on disk and the platform table: each
 * platform package's name/version/os/cpu/libc, and the root's exact
 * optionalDependencies. Empty when consistent.
 */
export function manifestProblems(platforms, platformPackageName) {
  const root = readJson(join(ROOT, "package.json"));
  const problems = [];
  const expectedOptional = Object.fromEntries(
    platforms.map((p) => [platformPackageName(p.key), root.version]).sort(([a], [b]) => a.localeCompare(b)),
  );
  if (JSON.stringify(root.optionalDependencies ?? {}) !== JSON.stringify(expectedOptional)) {
    problems.push(`package.json optionalDependencies should be ${JSON.stringify(expectedOptional)} (exact versions, sorted), is ${JSON.stringify(root.optionalDependencies)}`);
  }
  for (const platform of platforms) {
    const path = join(platformDirectory(platform.key), "package.json");
    if (!existsSync(path)) {
      problems.push(`${path} is missing`);
      continue;
    }
    const manifest = readJson(path);
    const expect = (field, actual, wanted) => {
      if (JSON.stringify(actual) !== JSON.stringify(wanted)) {
        problems.push(`${path}: ${field} should be ${JSON.stringify(wanted)}, is ${JSON.stringify(actual)}`);
      }
    };
    expect("name", manifest.name, platformPackageName(platform.key));
    expect("version", manifest.version, root.version);
    expect("os", manifest.os, [platform.os]);
    expect("cpu", manifest.cpu, [platform.cpu]);
    expect("libc", manifest.libc, platform.libc === undefined ? undefined : [platform.libc]);
    expect("license", manifest.license, root.license);
    if (manifest.scripts !== undefined) problems.push(`${path}: a platform package has no scripts (nothing may run at install)`);
  }
  return problems;
}
