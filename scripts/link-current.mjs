// npm run artifacts:link-current
//
// Materialises this machine's platform package under
// node_modules/@torkbot/sandbox-<platform>/ with the layout an installed user
// gets: package.json copied, and every other file the package ships (as
// `npm pack` would list it) a symlink into platform-packages/<platform>/.
// The runtime resolves artifacts only through the installed package (or
// SANDBOX_PLATFORM_DIR), so development runs go the users' way.
//
// Why symlinks per file and not copies: a rebuilt addon or image replaces the
// file under platform-packages/ (new inode), and a copy or hard link would
// keep serving the old one. Why not one symlink for the directory: Node
// resolves the package's realpath, and the runtime would then see everything
// in platform-packages/<platform>/, shipped or not (e.g. kernel modules the
// package leaves out). package.json is a real file so that the resolved
// package directory is the one under node_modules.
//
// Rerun it when the set of files changes (a new image, the helper appearing);
// `npm run build` ends with it.

import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { packageFiles, platformDirectory, platformProblems, platformTable, ROOT } from "./lib/packages.mjs";

const table = await platformTable();
const key = table.detectPlatformKey();
const platform = table.PLATFORMS.find((p) => p.key === key);
if (platform === undefined) {
  fail(`this machine is ${key}; packages exist for ${table.SUPPORTED_PLATFORMS.join(", ")}`);
}
const source = platformDirectory(key);
const problems = platformProblems(platform, source, table);
if (problems.length > 0) {
  fail(`platform-packages/${key} is not built:\n  ${problems.join("\n  ")}\nrun \`npm run build\``);
}

const name = table.platformPackageName(key);
const target = join(ROOT, "node_modules", name);
mkdirSync(dirname(target), { recursive: true });
// Built beside the target and renamed into place, so a reader never sees a
// half-made package.
const staging = mkdtempSync(join(dirname(target), `.${key}.link-`));
try {
  chmodSync(staging, 0o755); // mkdtemp's 0700 would become the package's mode
  const files = packageFiles(source);
  for (const file of files) {
    const from = join(source, file);
    const to = join(staging, file);
    mkdirSync(dirname(to), { recursive: true });
    if (file === "package.json") copyFileSync(from, to);
    else symlinkSync(relative(dirname(join(target, file)), from), to);
  }
  rmSync(target, { recursive: true, force: true });
  renameSync(staging, target);
  console.log(`artifacts:link-current: ${relative(ROOT, target)} → platform-packages/${key} (${files.length} files)`);
} finally {
  if (existsSync(staging)) rmSync(staging, { recursive: true, force: true });
}

function fail(message) {
  console.error(`artifacts:link-current: ${message}`);
  process.exit(1);
}
