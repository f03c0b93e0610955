// Finds the platform directory for this machine and reads what it holds.
//
// Layout of a platform directory (the @torkbot/sandbox-<platform> package):
//   package.json                      name, version, os/cpu/libc
//   sandbox.node                      the native addon
//   sandbox-krun                      the libkrun helper executable (when the
//                                     platform ships the libkrun engine; on
//                                     macOS it is what `setup-macos` signs)
//   artifacts/kernel/vmlinux          guest kernel
//   artifacts/kernel/initrd.cpio      initrd with sandbox-init
//   artifacts/images/catalog.json     { "<built-in name>": { file, format, sha256,
//                                       virtualSizeBytes, platform, arch } }
//   artifacts/images/<file>           the images the catalog names
//
// A built-in image too large to ride in the platform package has a package
// of its own, @torkbot/sandbox-image-<key> (IMAGE_PACKAGES), with the same
// artifacts/images/ layout; its catalog is merged with the platform's.
//
// Search order (first hit wins): $SANDBOX_PLATFORM_DIR; the installed
// @torkbot/sandbox-<platform> package. Nothing else: a development checkout
// gets the same layout an installed user has, materialised under
// node_modules by `npm run artifacts:link-current` (scripts/link-current.mjs),
// so development runs resolve artifacts exactly the way users do.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { codedError, ErrorCodes } from "./errors.js";

/**
 * The platform table: one row per platform package. package.json of each
 * package under platform-packages/, the root's optionalDependencies and the
 * release scripts are checked against it (tests/unit/platform-packages.test.ts,
 * scripts/release-pack.mjs).
 */
export const PLATFORMS = [
  { key: "linux-x64-gnu", os: "linux", cpu: "x64", libc: "glibc", helperRequired: false },
  { key: "linux-arm64-gnu", os: "linux", cpu: "arm64", libc: "glibc", helperRequired: false },
  // On macOS the VM runs through libkrun on Hypervisor.framework, whose
  // entitlement only an executable can carry (not a library loaded into
  // node): the helper is required there.
  { key: "darwin-arm64", os: "darwin", cpu: "arm64", libc: undefined, helperRequired: true },
] as const;

export const SUPPORTED_PLATFORMS: readonly string[] = PLATFORMS.map((platform) => platform.key);

/**
 * Built-in images shipped as packages of their own, the way esbuild ships
 * platforms: optional dependencies of the root, installed where `os`/`cpu`
 * match, each holding artifacts/images/{catalog.json,<image>}. An image goes
 * here when it would take the platform package past the size budget
 * (docs/packaging.md). `platforms`: the platform keys that boot it.
 */
export const IMAGE_PACKAGES = [
  { key: "debian-13-linux-x64", image: "debian:13", os: "linux", cpu: "x64", platforms: ["linux-x64-gnu"] },
] as const;
export const ADDON_FILE = "sandbox.node";
/** The libkrun helper, beside the addon (vmm/krun looks for it there). */
export const HELPER_FILE = "sandbox-krun";

/** e.g. "linux-x64-gnu", "linux-arm64-musl", "darwin-arm64". */
export function detectPlatformKey(): string {
  if (process.platform !== "linux") return `${process.platform}-${process.arch}`;
  const report = process.report.getReport() as { header?: { glibcVersionRuntime?: unknown } };
  const libc = typeof report.header?.glibcVersionRuntime === "string" ? "gnu" : "musl";
  return `linux-${process.arch}-${libc}`;
}

export function platformPackageName(platformKey: string): string {
  return `@torkbot/sandbox-${platformKey}`;
}

export function imagePackageName(imageKey: string): string {
  return `@torkbot/sandbox-image-${imageKey}`;
}

export interface PlatformSearch {
  readonly platformKey: string;
  /** $SANDBOX_PLATFORM_DIR, when set and non-empty. */
  readonly overrideDirectory: string | undefined;
  /** This package's version: the platform package must have the same one. */
  readonly packageVersion?: string;
  /** `require.resolve`: returns a path or throws when the package is absent. */
  readonly resolve: (specifier: string) => string;
}

export function findPlatformDirectory(search: PlatformSearch): string {
  const packageName = platformPackageName(search.platformKey);
  if (search.overrideDirectory !== undefined) {
    if (!existsSync(join(search.overrideDirectory, ADDON_FILE))) {
      throw codedError(
        ErrorCodes.notInstalled,
        `SANDBOX_PLATFORM_DIR is ${search.overrideDirectory}, but it has no ${ADDON_FILE}: point it at a built platform directory or unset it`,
      );
    }
    return search.overrideDirectory;
  }
  let installed: string | undefined;
  try {
    installed = dirname(search.resolve(`${packageName}/package.json`));
  } catch {
    installed = undefined;
  }
  if (installed !== undefined) {
    if (!existsSync(join(installed, ADDON_FILE))) {
      throw codedError(
        ErrorCodes.notInstalled,
        `${packageName} is installed at ${installed} but has no ${ADDON_FILE}: reinstall it`,
      );
    }
    // The root pins its platform packages to its own exact version; a
    // different one got there by hand (or by a hoisting accident) and would
    // pair this API with another build's addon, kernel and images.
    const found = installedVersion(installed);
    if (search.packageVersion !== undefined && found !== search.packageVersion) {
      throw codedError(
        ErrorCodes.notInstalled,
        `@torkbot/sandbox ${search.packageVersion} needs ${packageName}@${search.packageVersion}, but ${installed} holds version ${found ?? "(unreadable)"}: run npm install ${packageName}@${search.packageVersion}`,
      );
    }
    return installed;
  }
  throw notInstalledError(search.platformKey, search.packageVersion);
}

/**
 * The directories of the installed image packages this platform boots,
 * resolved like the platform package (and held to the same exact version).
 * One that is not installed is left out: booting its image then names it.
 */
export function findImagePackageDirectories(search: PlatformSearch): string[] {
  const directories: string[] = [];
  for (const row of IMAGE_PACKAGES) {
    if (!(row.platforms as readonly string[]).includes(search.platformKey)) continue;
    const packageName = imagePackageName(row.key);
    let installed: string;
    try {
      installed = dirname(search.resolve(`${packageName}/package.json`));
    } catch {
      continue;
    }
    const found = installedVersion(installed);
    if (search.packageVersion !== undefined && found !== search.packageVersion) {
      throw codedError(
        ErrorCodes.notInstalled,
        `@torkbot/sandbox ${search.packageVersion} needs ${packageName}@${search.packageVersion}, but ${installed} holds version ${found ?? "(unreadable)"}: run npm install ${packageName}@${search.packageVersion}`,
      );
    }
    directories.push(installed);
  }
  return directories;
}

function installedVersion(directory: string): string | undefined {
  try {
    const manifest = JSON.parse(readFileSync(join(directory, "package.json"), "utf8")) as { version?: unknown };
    return typeof manifest.version === "string" ? manifest.version : undefined;
  } catch {
    return undefined;
  }
}

function notInstalledError(platformKey: string, version: string | undefined): Error {
  const packageName = platformPackageName(platformKey);
  if (!SUPPORTED_PLATFORMS.includes(platformKey)) {
    const rosetta = platformKey === "darwin-x64"
      ? " On an Apple silicon Mac, this Node may be an x64 build running under Rosetta: use an arm64 Node."
      : "";
    return codedError(
      ErrorCodes.notInstalled,
      `unsupported native sandbox target: ${platformKey}: @torkbot/sandbox does not support this platform; supported: ${SUPPORTED_PLATFORMS.join(", ")}.${rosetta}`,
    );
  }
  return codedError(
    ErrorCodes.notInstalled,
    [
      `missing ${packageName} artifact ${ADDON_FILE}; reinstall @torkbot/sandbox for ${platformKey}.`,
      `The package "${packageName}" could not be found, and it is needed to boot sandboxes on this platform (detected ${platformKey}).`,
      `Install it: npm install ${packageName}${version === undefined ? "" : `@${version}`}`,
      `It is an optional dependency of @torkbot/sandbox, so likely causes are:`,
      `  - dependencies were installed with --omit=optional (or --no-optional): reinstall without it;`,
      `  - node_modules was copied from another platform (e.g. macOS into a Linux container): run the install on this machine;`,
      `  - in a checkout of this repository: run \`npm run build\` (it ends with \`npm run artifacts:link-current\`);`,
      `  - for a platform directory elsewhere, set SANDBOX_PLATFORM_DIR.`,
    ].join("\n"),
  );
}

export interface CatalogImage {
  readonly file: string;
  readonly format: "qcow2";
  readonly sha256: string;
  readonly virtualSizeBytes: number;
  readonly platform: string;
  readonly arch: string;
}

export interface InstalledArtifacts {
  readonly directory: string;
  readonly kernelPath: string;
  readonly initrdPath: string;
  readonly imagesDirectory: string;
  readonly catalogPath: string;
  /** Every installed image: the platform package's, then the image packages'. */
  readonly catalog: ReadonlyMap<string, CatalogImage>;
  /** The catalog.json each image is listed in (its file is beside it). */
  readonly catalogOf: ReadonlyMap<string, string>;
}

/**
 * The platform directory's kernel, initrd and catalog, with the catalogs of
 * the image packages in `imageDirectories` merged in (a name the platform
 * package lists stays the platform package's).
 */
export function readInstalledArtifacts(directory: string, imageDirectories: readonly string[] = []): InstalledArtifacts {
  const required = (relative: string) => {
    const path = join(directory, relative);
    if (!existsSync(path)) {
      throw codedError(ErrorCodes.notInstalled, `the platform directory ${directory} is incomplete: ${relative} is missing`);
    }
    return path;
  };
  const kernelPath = required("artifacts/kernel/vmlinux");
  const initrdPath = required("artifacts/kernel/initrd.cpio");
  const catalogPath = required("artifacts/images/catalog.json");
  const catalog = new Map<string, CatalogImage>();
  const catalogOf = new Map<string, string>();
  const merge = (path: string) => {
    for (const [name, entry] of parseCatalog(readFileSync(path, "utf8"), path)) {
      if (catalog.has(name)) continue;
      catalog.set(name, entry);
      catalogOf.set(name, path);
    }
  };
  merge(catalogPath);
  for (const imageDirectory of imageDirectories) {
    const path = join(imageDirectory, "artifacts/images/catalog.json");
    if (!existsSync(path)) {
      throw codedError(ErrorCodes.notInstalled, `the image package ${imageDirectory} is incomplete: artifacts/images/catalog.json is missing; reinstall it`);
    }
    merge(path);
  }
  return { directory, kernelPath, initrdPath, imagesDirectory: dirname(catalogPath), catalogPath, catalog, catalogOf };
}

function parseCatalog(text: string, catalogPath: string): ReadonlyMap<string, CatalogImage> {
  const invalid = (reason: string) => codedError(ErrorCodes.artifactsInvalid, `invalid ${catalogPath}: ${reason}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw invalid(error instanceof Error ? error.message : String(error));
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw invalid("expected an object keyed by built-in rootfs name");
  }
  const catalog = new Map<string, CatalogImage>();
  for (const [name, value] of Object.entries(parsed)) {
    const entry = (value ?? {}) as Record<string, unknown>;
    const problem = catalogEntryProblem(entry);
    if (problem !== undefined) throw invalid(`entry ${JSON.stringify(name)}: ${problem}`);
    catalog.set(name, entry as unknown as CatalogImage);
  }
  return catalog;
}

const IDENTIFIER = /^[a-z0-9_-]+$/;

function catalogEntryProblem(entry: Record<string, unknown>): string | undefined {
  const { file, format, sha256, virtualSizeBytes, platform, arch } = entry;
  if (typeof file !== "string" || !/^[^/\\]+$/.test(file) || file === "." || file === "..") {
    return "file must be a file name inside artifacts/images";
  }
  if (format !== "qcow2") return `format must be "qcow2"`;
  if (typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256)) return "sha256 must be 64 lowercase hex digits";
  if (typeof virtualSizeBytes !== "number" || !Number.isSafeInteger(virtualSizeBytes) || virtualSizeBytes <= 0) {
    return "virtualSizeBytes must be a positive integer";
  }
  if (typeof platform !== "string" || !IDENTIFIER.test(platform)) return "platform must be an identifier like \"linux\"";
  if (typeof arch !== "string" || !IDENTIFIER.test(arch)) return "arch must be an identifier like \"x64\"";
  return undefined;
}

export interface BuiltInImage {
  readonly path: string;
  /** The exact base identity, also the COW store's `context.base`. */
  readonly base: string;
}

/**
 * The built-in image to use instead of one no platform package ships, named
 * in its "not installed" error: alpine:3.23 cannot be built without an
 * Alpine mirror (images/alpine-3.23/README.md), debian:13 has its tool set.
 */
const INSTEAD: Readonly<Record<string, string>> = { "alpine:3.23": "debian:13" };

function insteadHint(artifacts: InstalledArtifacts, name: string): string {
  const ownPackage = IMAGE_PACKAGES.find((row) => row.image === name);
  if (ownPackage !== undefined) {
    return `; it ships in ${imagePackageName(ownPackage.key)}, an optional dependency of @torkbot/sandbox on ${ownPackage.platforms.join(", ")}: install it (and not with --omit=optional)`;
  }
  const instead = INSTEAD[name];
  if (instead === undefined) return "";
  const where = artifacts.catalog.has(instead) ? "installed here" : `built by images/${instead.replaceAll(":", "-")}`;
  return `; rootfs.builtIn(${JSON.stringify(instead)}) has the same agent tool set (bash, git, node, npm, python3, pip, gh, ripgrep, jq, ffmpeg, imagemagick, poppler-utils, exiftool) and is ${where}`;
}

export function builtInImage(artifacts: InstalledArtifacts, name: string): BuiltInImage {
  const entry = artifacts.catalog.get(name);
  if (entry === undefined) {
    throw codedError(
      ErrorCodes.rootfsNotInstalled,
      `built-in rootfs ${JSON.stringify(name)} is not installed in ${artifacts.directory}: build it with its recipe (images/${name.replaceAll(":", "-")}) or install a platform package that ships it${insteadHint(artifacts, name)}`,
    );
  }
  const catalogPath = artifacts.catalogOf.get(name) ?? artifacts.catalogPath;
  const path = join(dirname(catalogPath), entry.file);
  if (!existsSync(path)) {
    throw codedError(
      ErrorCodes.notInstalled,
      `built-in rootfs ${JSON.stringify(name)} is listed in ${catalogPath}, but its image ${path} is missing`,
    );
  }
  return {
    path,
    base: `built-in:${name}:${entry.format}:${entry.platform}:${entry.arch}:sha256:${entry.sha256}`,
  };
}
