// Shared by the packaging scripts (release-pack.mjs, link-current.mjs) and
// the package tests: where the packages are, what each one ships, and whether
// a platform package is complete enough to pack.
//
// The platform table itself lives in src/artifacts.ts (PLATFORMS), because the
// runtime needs it too; scripts read the compiled copy in dist/.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
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

/** Where an image package (a row of IMAGE_PACKAGES) is built: beside the platform packages. */
export function imagePackageDirectory(key) {
  return join(ROOT, "platform-packages", `image-${key}`);
}

/**
 * Every package of a release but the root, as { name, directory, problems }:
 * the platform packages and the image packages, with what keeps each from
 * being shipped (empty: complete).
 */
export function releasePackages(table) {
  return [
    ...table.PLATFORMS.map((platform) => {
      const directory = platformDirectory(platform.key);
      return { name: table.platformPackageName(platform.key), directory, problems: platformProblems(platform, directory, table) };
    }),
    ...table.IMAGE_PACKAGES.map((row) => {
      const directory = imagePackageDirectory(row.key);
      return { name: table.imagePackageName(row.key), directory, problems: catalogProblems(directory, [row.image]) };
    }),
  ];
}

/**
 * The packages to materialise for development on platform `key`: its
 * platform package and the image packages it boots.
 */
export function packagesFor(table, key) {
  return releasePackages(table).filter(({ name }) =>
    name === table.platformPackageName(key) ||
    table.IMAGE_PACKAGES.some((row) => name === table.imagePackageName(row.key) && row.platforms.includes(key)));
}

/**
 * The files `npm pack` puts in the package at `directory`, relative to it,
 * as npm itself lists them (`npm pack --dry-run --json`): npm's rules
 * (`files`, ignore files, README/LICENSE, what is always left out), not a
 * copy of them.
 *
 * npm builds the whole tarball even for a dry run (seconds per 100 MB of
 * images), so its answer is kept under node_modules/.cache/, keyed by what
 * the answer can depend on: package.json, the ignore files and the paths
 * present (not their contents, which a rebuild changes without changing
 * the list).
 */
export function packageFiles(directory) {
  const key = createHash("sha256");
  for (const name of ["package.json", ".npmignore", ".gitignore"]) {
    const path = join(directory, name);
    key.update(`${name}\0${existsSync(path) ? readFileSync(path) : ""}\0`);
  }
  for (const path of walk(directory)) key.update(`${relative(directory, path)}\0`);
  const cache = join(ROOT, "node_modules/.cache/torkbot-packlist", `${key.digest("hex").slice(0, 32)}.json`);
  if (existsSync(cache)) return readJson(cache);
  const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts", "--loglevel=error"], {
    cwd: directory,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 64 << 20,
  });
  const files = JSON.parse(out)[0].files.map((f) => f.path).sort();
  mkdirSync(dirname(cache), { recursive: true });
  writeFileSync(`${cache}.tmp`, JSON.stringify(files));
  renameSync(`${cache}.tmp`, cache);
  return files;
}

function* walk(directory) {
  for (const entry of readdirSync(directory, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) yield* walk(path);
    else yield path;
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
  return [...problems, ...catalogProblems(directory, [])];
}

/**
 * What is wrong with a package's artifacts/images/: no catalog, an empty
 * one, a listed image or its facts file missing, or one of `required`
 * names not listed.
 */
function catalogProblems(directory, required) {
  const catalogPath = join(directory, "artifacts/images/catalog.json");
  if (!existsSync(catalogPath)) return ["artifacts/images/catalog.json is missing (the built-in image catalog)"];
  const problems = [];
  const catalog = readJson(catalogPath);
  if (Object.keys(catalog).length === 0) problems.push("artifacts/images/catalog.json lists no image");
  for (const name of required) {
    if (catalog[name] === undefined) problems.push(`artifacts/images/catalog.json does not list ${name}`);
  }
  for (const [name, entry] of Object.entries(catalog)) {
    for (const file of [entry.file, entry.file.replace(/\.qcow2$/, ".facts.json")]) {
      if (!existsSync(join(directory, "artifacts/images", file))) {
        problems.push(`artifacts/images/${file} is missing (image ${name} of the catalog)`);
      }
    }
  }
  return problems;
}

/**
 * Differences between the manifests on disk and the tables of
 * src/artifacts.ts: each platform package's name/version/os/cpu/libc, each
 * image package's name/version/os/cpu, and the root's exact
 * optionalDependencies. Empty when consistent.
 */
export function manifestProblems({ PLATFORMS: platforms, IMAGE_PACKAGES: images, platformPackageName, imagePackageName }) {
  const root = readJson(join(ROOT, "package.json"));
  const problems = [];
  const expectedOptional = Object.fromEntries(
    [...platforms.map((p) => platformPackageName(p.key)), ...images.map((i) => imagePackageName(i.key))]
      .map((name) => [name, root.version])
      .sort(([a], [b]) => a.localeCompare(b)),
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
    const expect = fieldCheck(path, problems);
    expect("name", manifest.name, platformPackageName(platform.key));
    expect("version", manifest.version, root.version);
    expect("os", manifest.os, [platform.os]);
    expect("cpu", manifest.cpu, [platform.cpu]);
    expect("libc", manifest.libc, platform.libc === undefined ? undefined : [platform.libc]);
    expect("license", manifest.license, root.license);
    if (manifest.scripts !== undefined) problems.push(`${path}: a platform package has no scripts (nothing may run at install)`);
  }
  for (const image of images) {
    const path = join(imagePackageDirectory(image.key), "package.json");
    if (!existsSync(path)) {
      problems.push(`${path} is missing`);
      continue;
    }
    const manifest = readJson(path);
    const expect = fieldCheck(path, problems);
    expect("name", manifest.name, imagePackageName(image.key));
    expect("version", manifest.version, root.version);
    expect("os", manifest.os, [image.os]);
    expect("cpu", manifest.cpu, [image.cpu]);
    expect("files", manifest.files, ["artifacts/images/"]);
    expect("license", manifest.license, root.license);
    if (manifest.scripts !== undefined) problems.push(`${path}: an image package has no scripts (nothing may run at install)`);
  }
  return problems;
}

/** expect(field, actual, wanted) for the manifest at `path`, pushing a line per mismatch. */
function fieldCheck(path, problems) {
  return (field, actual, wanted) => {
    if (JSON.stringify(actual) !== JSON.stringify(wanted)) {
      problems.push(`${path}: ${field} should be ${JSON.stringify(wanted)}, is ${JSON.stringify(actual)}`);
    }
  };
}
