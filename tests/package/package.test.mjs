// The package as users get it: `npm run release:pack` makes the tarballs, a
// fresh project in a temp dir installs them with `npm install --offline`
// (no registry: it points at a closed port), and then
//   - the seed README's code, compiled with TypeScript, boots a real VM on
//     Node 20, 22 and 24;
//   - both built-in images boot from the installed packages: debian:13-slim
//     from the platform package, debian:13 from its own image package;
//   - a file using every exported type passes `tsc --noEmit`;
//   - CommonJS `require()` sees the same exports;
//   - without the platform package, the first boot() names what to install;
//   - `npx @torkbot/sandbox setup-macos` says it is macOS-only here, and with
//     the platform forced to darwin runs a codesign STAND-IN (the one stand-in
//     this suite uses: there is no macOS here) with the right arguments;
//   - every package listing is clean, and sizes are reported.
// Runs on linux-x64 (the platform package built here); elsewhere it skips.

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { nodeBinaries } from "./node-binaries.mjs";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const FIXTURES = fileURLToPath(new URL("fixtures/", import.meta.url));
const TSC = join(ROOT, "node_modules/typescript/bin/tsc");
const PLATFORM = "linux-x64-gnu";
const PLATFORM_PACKAGE = `@torkbot/sandbox-${PLATFORM}`;
const IMAGE_PACKAGE = "@torkbot/sandbox-image-debian-13-linux-x64";
// The platform package budget release:pack enforces (docs/packaging.md).
const PLATFORM_PACKED_BUDGET = 100e6;
const VERSION = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;
// Nothing listens there: any registry request fails at once instead of
// reaching the network (on top of --offline).
const NO_REGISTRY = "http://127.0.0.1:9/";

const supported = process.platform === "linux" && process.arch === "x64";
const skip = supported ? false : `the package test installs the ${PLATFORM} package, this is ${process.platform}-${process.arch}`;

let work; // temp dir of this run, removed at the end
let report; // release/pack-report.json of the run
let project; // the fresh project with everything installed

/** Runs a command, returning { status, stdout, stderr }; never throws on exit status. */
function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: "utf8", timeout: 180_000, ...options });
  if (result.error) throw result.error;
  return result;
}

/** Runs a command that must succeed; the failure message carries its output. */
function ok(command, args, options = {}) {
  const result = run(command, args, options);
  assert.equal(result.status, 0, `${command} ${args.join(" ")} exited ${result.status}\n${result.stdout}\n${result.stderr}`);
  return result;
}

function npmInstall(directory, specs) {
  return ok("npm", [
    "install", "--offline", `--registry=${NO_REGISTRY}`, `--cache=${join(work, "npm-cache")}`,
    "--no-audit", "--no-fund", "--loglevel=error", ...specs,
  ], { cwd: directory });
}

function newProject(name, manifest = {}) {
  const directory = join(work, name);
  mkdirSync(directory);
  writeFileSync(join(directory, "package.json"), JSON.stringify({ name, private: true, type: "module", ...manifest }, null, 2));
  return directory;
}

const tarball = (name) => {
  const entry = report.packed.find((p) => p.name === name);
  assert.ok(entry, `release:pack did not pack ${name}`);
  return entry.tarball;
};

/** tsconfig of a user project; TypeScript and @types/node come from this repo's node_modules (offline). */
function writeTsconfig(directory, files, noEmit) {
  writeFileSync(join(directory, "tsconfig.json"), JSON.stringify({
    compilerOptions: {
      target: "ES2022",
      lib: ["ES2022", "esnext.disposable"],
      module: "NodeNext",
      moduleResolution: "NodeNext",
      strict: true,
      skipLibCheck: false,
      types: ["node"],
      typeRoots: [join(ROOT, "node_modules/@types")],
      outDir: "out",
      noEmit,
    },
    files,
  }, null, 2));
}

describe("the npm package", { skip }, () => {
  before(() => {
    work = mkdtempSync(join(tmpdir(), "torkbot-sandbox-package-test-"));
    ok(process.execPath, [join(ROOT, "scripts/release-pack.mjs"), "--out", join(work, "packs")], { stdio: ["ignore", "pipe", "pipe"] });
    report = JSON.parse(readFileSync(join(work, "packs/pack-report.json"), "utf8"));
  });

  after(() => {
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  test("release:pack packs the root package and this platform's, with the files each must ship", (t) => {
    const root = report.packed.find((p) => p.name === "@torkbot/sandbox");
    const platform = report.packed.find((p) => p.name === PLATFORM_PACKAGE);
    assert.ok(root && platform, JSON.stringify(report.packed.map((p) => p.name)));
    const rootFiles = root.files.map((f) => f.path);
    for (const file of ["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "bin/torkbot-sandbox.js", "macos/entitlements.plist"]) {
      assert.ok(rootFiles.includes(file), `root package lacks ${file}`);
    }
    const platformFiles = platform.files.map((f) => f.path);
    for (const file of ["package.json", "README.md", "sandbox.node", "artifacts/kernel/vmlinux", "artifacts/kernel/initrd.cpio", "artifacts/images/catalog.json"]) {
      assert.ok(platformFiles.includes(file), `${PLATFORM_PACKAGE} lacks ${file}`);
    }
    // Build by-products the runtime never reads stay out.
    assert.ok(!platformFiles.includes("artifacts/kernel/config"), "the kernel's .config would ship");
    assert.ok(platformFiles.includes("artifacts/images/debian-13-slim.qcow2"));
    const image = report.packed.find((p) => p.name === IMAGE_PACKAGE);
    assert.ok(image, `release:pack did not pack ${IMAGE_PACKAGE}`);
    assert.deepEqual(image.files.map((f) => f.path).sort(), [
      "README.md", "artifacts/images/catalog.json", "artifacts/images/debian-13.facts.json", "artifacts/images/debian-13.qcow2", "package.json",
    ]);
    assert.ok(platform.size <= PLATFORM_PACKED_BUDGET, `${PLATFORM_PACKAGE} is ${platform.size} bytes packed, over the ${PLATFORM_PACKED_BUDGET} budget`);
    for (const p of report.packed) {
      t.diagnostic(`${p.name}: ${p.size} bytes packed, ${p.unpackedSize} unpacked, ${p.files.length} files`);
      for (const f of p.files.filter((f) => f.size > 1_000_000)) t.diagnostic(`  ${f.path}: ${f.size} bytes`);
    }
    for (const s of report.skipped) t.diagnostic(`skipped ${s.name}: ${s.problems.join("; ")}`);
  });

  test("npm pack --dry-run of every package directory lists no source maps, sources, tests or private paths", () => {
    const directories = [ROOT, join(ROOT, "platform-packages/darwin-arm64"), join(ROOT, "platform-packages/linux-arm64-gnu")];
    const listings = directories.map((directory) => {
      const { stdout } = ok("npm", ["pack", "--dry-run", "--json", "--ignore-scripts", "--loglevel=error", directory], { cwd: work });
      return JSON.parse(stdout)[0];
    });
    // The packed tarballs' listings are npm's own --json output of the same kind.
    for (const listing of [...listings, ...report.packed]) {
      for (const { path } of listing.files) {
        assert.doesNotMatch(path, /\.map$/, `${listing.name}: ${path}`);
        assert.doesNotMatch(path, /(^|\/)(tests?|__tests__|fixtures)\/|\.(test|spec)\.[cm]?[jt]s$/, `${listing.name}: ${path}`);
        assert.ok(!/\.[cm]?ts$/.test(path) || /\.d\.[cm]?ts$/.test(path), `${listing.name} ships the source ${path}`);
      }
      assert.equal(listing.version, VERSION, listing.name);
    }
    // Text files of the tarballs hold no path of this checkout (release:pack
    // checks every file, binaries included, before it writes the report).
    const text = report.packed.find((p) => p.name === "@torkbot/sandbox");
    const extracted = join(work, "root-extracted");
    mkdirSync(extracted);
    ok("tar", ["-xzf", text.tarball, "-C", extracted]);
    for (const { path } of text.files) {
      const content = readFileSync(join(extracted, "package", path), "utf8");
      assert.ok(!content.includes(ROOT.replace(/\/$/, "")), `${path} names ${ROOT}`);
      assert.ok(!content.includes("sourceMappingURL"), `${path} refers to a source map`);
    }
    // Platforms not built here still have manifests npm accepts, pinned to this version.
    for (const listing of listings.slice(1)) {
      assert.deepEqual(listing.files.map((f) => f.path).sort(), ["README.md", "package.json"], listing.name);
    }
  });

  test("a fresh project installs the tarballs with npm install --offline, no registry and no install scripts", (t) => {
    // overrides: the platform package comes in through the root package's
    // optionalDependencies edge, as from the registry; only the tarball is local.
    project = newProject("fresh-project", {
      overrides: { [PLATFORM_PACKAGE]: `file:${tarball(PLATFORM_PACKAGE)}`, [IMAGE_PACKAGE]: `file:${tarball(IMAGE_PACKAGE)}` },
    });
    const started = Date.now();
    npmInstall(project, [tarball("@torkbot/sandbox")]);
    t.diagnostic(`npm install --offline of the packed tarballs (cold cache): ${Date.now() - started} ms`);
    const installed = join(project, "node_modules/@torkbot");
    assert.ok(existsSync(join(installed, "sandbox/dist/index.js")));
    assert.ok(existsSync(join(installed, "sandbox-linux-x64-gnu/sandbox.node")));
    assert.ok(existsSync(join(installed, "sandbox-image-debian-13-linux-x64/artifacts/images/debian-13.qcow2")));
    assert.ok(!existsSync(join(installed, "sandbox-darwin-arm64")), "another platform's package was installed");
    // `sandbox` is 0.6.0's bin name; `torkbot-sandbox` is kept as an alias.
    assert.ok(existsSync(join(project, "node_modules/.bin/sandbox")));
    assert.ok(existsSync(join(project, "node_modules/.bin/torkbot-sandbox")));
    const lock = JSON.parse(readFileSync(join(project, "package-lock.json"), "utf8"));
    for (const [path, entry] of Object.entries(lock.packages)) {
      assert.ok(!entry.hasInstallScript, `${path} has an install script`);
    }
  });

  test("the seed README's code, compiled with tsc, boots a VM on Node 20, 22 and 24", { timeout: 600_000 }, (t) => {
    copyFileSync(join(FIXTURES, "seed.ts"), join(project, "seed.ts"));
    writeTsconfig(project, ["seed.ts"], false);
    ok(process.execPath, [TSC, "-p", join(project, "tsconfig.json")], { cwd: project });
    for (const node of nodeBinaries()) {
      const started = Date.now();
      // SANDBOX_PLATFORM_DIR from the caller's environment would bypass the installed package.
      const env = { ...process.env, SANDBOX_PLATFORM_DIR: "" };
      const { stdout } = ok(node.path, [join(project, "out/seed.js")], { cwd: project, env });
      const result = JSON.parse(stdout.trim().split("\n").at(-1));
      assert.equal(result.node, `v${node.version}`);
      assert.equal(result.stdout, "hello from the host\n");
      t.diagnostic(`Node ${node.version}: boot + exec + close in ${Date.now() - started} ms`);
    }
  });

  test("debian:13-slim and debian:13 both boot from the installed packages", { timeout: 600_000 }, () => {
    copyFileSync(join(FIXTURES, "both-images.mjs"), join(project, "both-images.mjs"));
    const env = { ...process.env, SANDBOX_PLATFORM_DIR: "" };
    const { stdout } = ok(process.execPath, [join(project, "both-images.mjs")], { cwd: project, env, timeout: 600_000 });
    const result = JSON.parse(stdout.trim().split("\n").at(-1));
    assert.match(result["debian:13-slim"], /^curl \d+\.\d+/);
    assert.match(result["debian:13"], /^v24\.\d+\.\d+ 11\.\d+\.\d+ git version /);
  });

  test("tsc --noEmit passes on a file that uses every exported type", () => {
    const types = readFileSync(join(FIXTURES, "types.ts"), "utf8");
    copyFileSync(join(FIXTURES, "types.ts"), join(project, "types.ts"));
    writeTsconfig(project, ["types.ts"], true);
    ok(process.execPath, [TSC, "-p", join(project, "tsconfig.json")], { cwd: project });
    // Every name the installed declarations export appears in the file.
    const exported = exportedNames(join(project, "node_modules/@torkbot/sandbox/dist/index.d.ts"));
    assert.ok(exported.length > 40, `only ${exported.length} exports found`);
    const missing = exported.filter((name) => !new RegExp(`\\b${name}\\b`).test(types));
    assert.deepEqual(missing, [], "exported by @torkbot/sandbox but not used in tests/package/fixtures/types.ts");
  });

  test("require() from CommonJS sees the four runtime exports, on Node 20, 22 and 24", () => {
    copyFileSync(join(FIXTURES, "require.cjs"), join(project, "require.cjs"));
    for (const node of nodeBinaries()) {
      const { stdout } = ok(node.path, [join(project, "require.cjs")], { cwd: project });
      assert.deepEqual(JSON.parse(stdout), ["defineSandbox", "fs", "network", "rootfs"], `Node ${node.version}`);
    }
  });

  test("without the platform package, the first boot() rejects naming the package and the platform", () => {
    // The root alone: offline, its optional platform dependencies cannot be fetched, and npm skips them.
    const bare = newProject("without-platform");
    npmInstall(bare, [tarball("@torkbot/sandbox")]);
    assert.ok(!existsSync(join(bare, "node_modules", PLATFORM_PACKAGE)));
    copyFileSync(join(FIXTURES, "no-platform.mjs"), join(bare, "no-platform.mjs"));
    const { stdout } = ok(process.execPath, [join(bare, "no-platform.mjs")], { cwd: bare, env: { ...process.env, SANDBOX_PLATFORM_DIR: "" } });
    const { code, message } = JSON.parse(stdout);
    assert.equal(code, "ERR_SANDBOX_NOT_INSTALLED");
    assert.match(message, new RegExp(`"${PLATFORM_PACKAGE}" could not be found`));
    assert.match(message, new RegExp(`detected ${PLATFORM}`));
    assert.match(message, new RegExp(`npm install ${PLATFORM_PACKAGE}@${VERSION.replaceAll(".", "\\.")}`));
    assert.match(message, /--omit=optional/);
  });

  describe("npx @torkbot/sandbox setup-macos", () => {
    const npx = (env) =>
      run("npx", ["--offline", `--registry=${NO_REGISTRY}`, `--cache=${join(work, "npm-cache")}`, "@torkbot/sandbox", "setup-macos"], {
        cwd: project,
        env: { ...process.env, SANDBOX_PLATFORM_DIR: "", SANDBOX_TEST_PLATFORM: "", ...env },
      });

    test("elsewhere than macOS: says it is macOS-only and exits 0", () => {
      const result = npx({});
      assert.equal(result.status, 0, result.stderr);
      assert.equal(result.stdout.trim(), `setup-macos is only needed on macOS (this machine is ${PLATFORM}); nothing to do.`);
    });

    /** A codesign stand-in on PATH, recording argv; returns its env and its log reader. */
    function codesignStandIn(name) {
      const directory = join(work, name);
      mkdirSync(join(directory, "bin"), { recursive: true });
      copyFileSync(join(FIXTURES, "codesign.mjs"), join(directory, "bin/codesign"));
      chmodSync(join(directory, "bin/codesign"), 0o755);
      const log = join(directory, "argv.log");
      writeFileSync(log, "");
      return {
        env: {
          PATH: `${join(directory, "bin")}${delimiter}${process.env.PATH}`,
          CODESIGN_STANDIN_LOG: log,
          CODESIGN_STANDIN_STATE: join(directory, "state"),
        },
        calls: () => readFileSync(log, "utf8").split("\n").filter(Boolean).map((line) => JSON.parse(line)),
      };
    }

    /** A darwin-arm64 platform directory: helper and addon files (bytes only; nothing runs them). */
    function darwinPackage(name) {
      const directory = join(work, name);
      mkdirSync(directory);
      writeFileSync(join(directory, "sandbox.node"), "addon bytes");
      writeFileSync(join(directory, "sandbox-krun"), "helper bytes");
      return directory;
    }

    test("on macOS (forced): signs the helper and the addon ad hoc with the shipped entitlements, then checks them", () => {
      const codesign = codesignStandIn("codesign-ok");
      const directory = darwinPackage("darwin-package");
      const result = npx({ ...codesign.env, SANDBOX_TEST_PLATFORM: "darwin-arm64", SANDBOX_PLATFORM_DIR: directory });
      assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
      const plist = join(project, "node_modules/@torkbot/sandbox/macos/entitlements.plist");
      const [sign, ...displays] = codesign.calls();
      assert.deepEqual(sign, ["--force", "--sign", "-", "--entitlements", plist, join(directory, "sandbox-krun"), join(directory, "sandbox.node")]);
      assert.deepEqual(displays, [
        ["--display", "--entitlements", "-", "--xml", join(directory, "sandbox-krun")],
        ["--display", "--entitlements", "-", "--xml", join(directory, "sandbox.node")],
      ]);
      assert.match(readFileSync(plist, "utf8"), /<key>com\.apple\.security\.hypervisor<\/key>\s*<true\/>/);
      assert.match(result.stdout, /done; they carry the com\.apple\.security\.hypervisor entitlement/);
    });

    test("on macOS (forced): a failing codesign fails the command", () => {
      const codesign = codesignStandIn("codesign-fails");
      const directory = darwinPackage("darwin-package-2");
      const result = npx({ ...codesign.env, CODESIGN_STANDIN_FAIL: "1", SANDBOX_TEST_PLATFORM: "darwin-arm64", SANDBOX_PLATFORM_DIR: directory });
      assert.equal(result.status, 1);
      assert.match(result.stdout, /codesign failed \(exit status 1\)/);
      assert.equal(codesign.calls().length, 1);
    });

    test("on macOS (forced) without the darwin package: names the package to install", () => {
      const codesign = codesignStandIn("codesign-unused");
      const result = npx({ ...codesign.env, SANDBOX_TEST_PLATFORM: "darwin-arm64" });
      assert.equal(result.status, 1);
      assert.match(result.stdout, /"@torkbot\/sandbox-darwin-arm64" could not be found/);
      assert.match(result.stdout, /detected darwin-arm64/);
      assert.deepEqual(codesign.calls(), []);
    });
  });
});

/** The names a declaration file exports, read with the TypeScript compiler API. */
function exportedNames(declarationFile) {
  const { stdout } = ok(process.execPath, ["--input-type=module", "-e", `
    import ts from ${JSON.stringify(join(ROOT, "node_modules/typescript/lib/typescript.js"))};
    const program = ts.createProgram([${JSON.stringify(declarationFile)}], { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, types: [] });
    const checker = program.getTypeChecker();
    const symbol = checker.getSymbolAtLocation(program.getSourceFile(${JSON.stringify(declarationFile)}));
    console.log(JSON.stringify(checker.getExportsOfModule(symbol).map((s) => s.name).sort()));
  `]);
  return JSON.parse(stdout);
}
