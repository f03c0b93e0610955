// npm run artifacts:link-current
//
// Materialises this machine's platform package under
// node_modules/@torkbot/sandbox-<platform>/, and the image packages it boots
// under node_modules/@torkbot/sandbox-image-<key>/, with the layout an
// installed user gets: package.json copied, and every other file the package ships (as
// `npm pack` would list it) a symlink into platform-packages/<platform>/.
// The runtime resolves artifacts only through the installed package (or
// SANDBOX_PLATFORM_DIR), so development runs go the users' way.
//
// Why symlinks per file and not copies: a rebuilt addon or image replaces the
// file under platform-packages/ (new inode), and a copy or hard link would
// keep serving the old one. Why not one symlink for the directory: Node
// resolves the package's realpath, and the runtime would then see everything
// in platform-packages/<platform>/, shipped or not (e.g. the kernel .config the
// package leaves out). package.json is a real file so that the resolved
// package directory is the one under node_modules.
//
// Rerun it when the set of files changes (a new image, the helper appearing);
// `npm run build` ends with it.

import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import { packageFiles, packagesFor, platformTable, ROOT } from "./lib/packages.mjs";

const table = await platformTable();
const key = table.detectPlatformKey();
if (!table.PLATFORMS.some((p) => p.key === key)) {
  fail(`this machine is ${key}; packages exist for ${table.SUPPORTED_PLATFORMS.join(", ")}`);
}
// The platform package and the image packages this platform boots.
const packages = packagesFor(table, key);
const unbuilt = packages.filter((p) => p.problems.length > 0);
if (unbuilt.length > 0) {
  fail(unbuilt.map((p) => `${relative(ROOT, p.directory)} is not built:\n  ${p.problems.join("\n  ")}`).join("\n") + "\nrun `npm run build`");
}
for (const { name, directory } of packages) link(name, directory);

function link(name, source) {
  const target = join(ROOT, "node_modules", name);
  mkdirSync(dirname(target), { recursive: true });
  // Built beside the target and renamed into place, so a reader never sees a
  // half-made package.
  const staging = mkdtempSync(join(dirname(target), `.${basename(target)}.link-`));
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
    console.log(`artifacts:link-current: ${relative(ROOT, target)} → ${relative(ROOT, source)} (${files.length} files)`);
  } finally {
    if (existsSync(staging)) rmSync(staging, { recursive: true, force: true });
  }
}

function fail(message) {
  console.error(`artifacts:link-current: ${message}`);
  process.exit(1);
}
