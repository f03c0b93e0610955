// The built-in debian:13 image, an agent's workbench, in real VMs: the
// booted image is the one its facts file describes (every tool's version,
// the qcow2's sha256 and size, the store's context.base), it keeps
// debian:13-slim's layout and trust store, and the tools do what agent code
// asks of them on inputs made on this machine: node and npm (a local
// tarball, `npm ci` of a project), a venv with a local wheel, gh, rg, jq,
// file, ffmpeg, ImageMagick, pdftotext and exiftool. No network is needed:
// the writable root is a COW store in memory and inputs arrive in a mount.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { defineSandbox, fs, rootfs } from "@torkbot/sandbox";
import { npmProject, npmTarball, pdf, wheel } from "./fixtures/agent-files.mjs";
import { MemoryBlockStore } from "./fixtures/memory-block-store.mjs";
import { childProcesses } from "./helpers.mjs";

const require = createRequire(import.meta.url);

/** 0.6.0's alpine:3.23 tool set by Debian package name (issue 14). */
const DEBIAN_PACKAGES = [
  "bash", "ca-certificates", "coreutils", "curl", "ffmpeg", "file", "findutils", "gh", "git", "imagemagick",
  "jq", "less", "libimage-exiftool-perl", "openssh-client", "poppler-utils", "python3", "python3-pip",
  "python3-venv", "ripgrep", "tar", "unzip", "xz-utils", "zip",
];

/**
 * The images directory the runtime boots debian:13 from: the platform
 * directory's when SANDBOX_PLATFORM_DIR lists it, else its image package's.
 */
function imagesDirectory() {
  const override = process.env.SANDBOX_PLATFORM_DIR && join(process.env.SANDBOX_PLATFORM_DIR, "artifacts/images");
  if (override && existsSync(join(override, "debian-13.facts.json"))) return override;
  return join(dirname(require.resolve("@torkbot/sandbox-image-debian-13-linux-x64/package.json")), "artifacts/images");
}

async function ok(lane, script, options) {
  const r = await lane.exec("bash", ["-c", `set -euo pipefail\n${script}`], options);
  assert.equal(r.exitCode, 0, `${script}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

/** Milliseconds from boot() to the first exec's answer, and the sandbox. */
async function timedBoot(definition, options) {
  const start = performance.now();
  const lane = await definition.boot(options);
  await ok(lane, "true");
  return { lane, ms: Math.round(performance.now() - start) };
}

describe("the debian:13 image", () => {
  const images = imagesDirectory();
  const facts = JSON.parse(readFileSync(join(images, "debian-13.facts.json"), "utf8"));
  const catalog = JSON.parse(readFileSync(join(images, "catalog.json"), "utf8")); // the catalog beside the image

  it("is the image its facts file and catalog entry describe", () => {
    const image = join(images, facts.file);
    const digest = createHash("sha256").update(readFileSync(image)).digest("hex");
    assert.equal(facts.name, "debian:13");
    assert.equal(digest, facts.sha256);
    assert.equal(statSync(image).size, facts.sizeBytes);
    const entry = catalog["debian:13"];
    assert.deepEqual([entry.file, entry.sha256, entry.virtualSizeBytes], [facts.file, facts.sha256, facts.virtualSizeBytes]);
  });

  it("has a version in its facts for every tool of the set, Node 24 and npm 11", () => {
    const packages = new Set(Object.values(facts.tools).map((tool) => tool.package));
    assert.deepEqual(DEBIAN_PACKAGES.filter((name) => !packages.has(name)), [], "packages missing from the facts");
    for (const [name, tool] of Object.entries(facts.tools)) {
      assert.ok(tool.version && tool.command && tool.reports, `${name}: ${JSON.stringify(tool)}`);
    }
    assert.match(facts.tools.node.version, /^24\.\d+\.\d+$/);
    assert.equal(facts.tools.node.reports, `v${facts.tools.node.version}`);
    assert.match(facts.tools.npm.version, /^11\.\d+\.\d+$/);
  });

  describe("booted read-only, beside debian:13-slim", () => {
    let lane;
    let slim;
    before(async () => {
      // Same run, one after the other, after a first boot that pays for
      // loading the addon and the engine probe: the figures compare.
      const warm = await timedBoot(defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") }));
      await warm.lane.close();
      const tools = await timedBoot(defineSandbox({ rootfs: rootfs.builtIn("debian:13") }));
      lane = tools.lane;
      const plain = await timedBoot(defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") }));
      slim = plain.lane;
      console.log(`# boot → first exec: debian:13 ${tools.ms} ms, debian:13-slim ${plain.ms} ms (first boot of the process: ${warm.ms} ms)`);
    });
    after(async () => {
      await lane?.close();
      await slim?.close();
    });

    // The root is read-only: npm's cache and logs go to the tmpfs.
    const readOnlyEnv = { npm_config_cache: "/tmp/npm-cache" };

    it("every tool reports the version its facts record", async () => {
      for (const [name, tool] of Object.entries(facts.tools)) {
        const program = tool.command.split(" ")[0];
        const first = (await ok(lane, `command -v ${program} >/dev/null; ${tool.command} 2>&1 || true`, { env: readOnlyEnv })).split("\n")[0];
        assert.equal(first, tool.reports, `${name}: ${tool.command}`);
      }
      const debian = Object.values(facts.tools).filter((tool) => DEBIAN_PACKAGES.includes(tool.package));
      const installed = await ok(lane, `dpkg-query -W -f '\${Package} \${Version}\\n' ${debian.map((t) => t.package).join(" ")}`);
      assert.deepEqual(installed.trim().split("\n").sort(), debian.map((t) => `${t.package} ${t.version}`).sort());
    });

    it("has the agent directories, the C.UTF-8 locale and no package caches", async () => {
      assert.equal(await ok(lane, "for d in /workspace /mnt /tmp; do test -d $d && echo $d; done"), "/workspace\n/mnt\n/tmp\n");
      assert.match(await ok(lane, "locale -a"), /^C\.utf8$/m);
      // A command with a cwd runs in a login shell (0.6.0's `cd` then
      // `exec`), whose profile sets the image's locale.
      const utf8 = `echo "$LANG"; python3 -c 'import locale, sys; print(locale.getpreferredencoding(), sys.getfilesystemencoding())'`;
      assert.equal(await ok(lane, utf8, { cwd: "/tmp" }), "C.UTF-8\nUTF-8 utf-8\n");
      assert.equal(await ok(lane, "find /var/lib/apt/lists /var/cache/apt /var/log/apt /var/tmp -type f ! -name lock"), "");
      assert.equal(await ok(lane, "ls -A /root"), ".bashrc\n.profile\n"); // no .npm, .cache or .config left by the build
      assert.equal(await ok(lane, "find /usr/share/man /usr/share/info /usr/share/doc -type f ! -name copyright | wc -l"), "0\n");
    });

    it("keeps debian:13-slim's trust-store layout", async () => {
      const layout = `stat -c '%n %F %a %U:%G' /etc/ssl /etc/ssl/certs /etc/ssl/certs/ca-certificates.crt \
        /usr/share/ca-certificates /usr/local/share/ca-certificates /etc/ca-certificates.conf /usr/sbin/update-ca-certificates; \
        readlink /etc/ssl/certs/ca-certificates.crt || true`;
      assert.equal(await ok(lane, layout), await ok(slim, layout));
      // Node keeps its own roots; npm is pointed at the system store.
      assert.equal(await ok(lane, "npm config get cafile", { env: readOnlyEnv }), "/etc/ssl/certs/ca-certificates.crt\n");
    });
  });

  describe("an agent's work on a writable root", () => {
    const work = mkdtempSync(join(tmpdir(), "debian-13-e2e-"));
    const store = new MemoryBlockStore();
    let lane;
    // No network: npm must not look for its own updates.
    const env = { npm_config_update_notifier: "false", npm_config_audit: "false", npm_config_fund: "false" };
    before(async () => {
      const tarball = npmTarball(work, "greet", "1.0.0");
      const project = npmProject(work, tarball);
      const wheelFile = wheel(work);
      const files = {
        [`/${tarball.file}`]: tarball.bytes,
        "/app/package.json": project["package.json"],
        "/app/package-lock.json": project["package-lock.json"],
        [`/${wheelFile.file}`]: wheelFile.bytes,
        "/doc.pdf": pdf({ title: "Quarterly sandbox report", text: "Hello from a generated PDF" }),
        "/notes/a.txt": "alpha\nthe needle is here\nomega\n",
        "/notes/b.md": "nothing to see\n",
      };
      lane = await defineSandbox({ rootfs: rootfs.cow({ base: rootfs.builtIn("debian:13"), writable: store }) })
        .boot({ cwd: "/root", mounts: { "/workspace": fs.virtual(fs.memory({ files })) } });
    });
    after(async () => {
      await lane?.close();
      rmSync(work, { recursive: true, force: true });
      assert.deepEqual(childProcesses(), [], "no VMM left running");
    });

    it("names the exact image as the store's context.base", () => {
      assert.equal(store.contexts[0]?.base, `built-in:debian:13:qcow2:linux:x64:sha256:${facts.sha256}`);
    });

    it("runs node -e and npm --version", async () => {
      assert.equal(await ok(lane, `node -e 'console.log(process.version, process.platform, 6 * 7)'`), `v${facts.tools.node.version} linux 42\n`);
      assert.equal(await ok(lane, "npm --version", { env }), `${facts.tools.npm.version}\n`);
    });

    it("npm installs a local tarball and npm ci installs a locked project", async () => {
      const installed = await ok(lane, `mkdir -p /root/scratch && cd /root/scratch && npm init -y >/dev/null
        npm install /workspace/greet-1.0.0.tgz
        node -e 'console.log(require("greet").greet("npm install"))'`, { env });
      assert.match(installed, /hello npm install from greet@1\.0\.0\n$/);
      const ci = await ok(lane, `cp -r /workspace/app /workspace/greet-1.0.0.tgz /root/
        cd /root/app && npm ci
        node -e 'console.log(require("greet").greet("npm ci"))'
        node -p 'require("./node_modules/greet/package.json").version'`, { env });
      assert.match(ci, /hello npm ci from greet@1\.0\.0\n1\.0\.0\n$/);
    });

    it("makes a venv and pip installs a local wheel into it", async () => {
      const out = await ok(lane, `python3 -m venv /root/venv
        /root/venv/bin/pip install --no-index --disable-pip-version-check /workspace/hello_wheel-1.0-py3-none-any.whl
        /root/venv/bin/python -c 'import hello_wheel; print(hello_wheel.greet())'
        /root/venv/bin/pip show hello-wheel | grep ^Version`);
      assert.match(out, /Successfully installed hello-wheel-1\.0\n/);
      assert.match(out, /hello from a local wheel\nVersion: 1\.0\n$/);
    });

    it("runs gh, rg, jq and file", async () => {
      assert.match(await ok(lane, "gh --version"), /^gh version \d+\.\d+\.\d+/);
      assert.equal(await ok(lane, "rg -n needle /workspace/notes"), "/workspace/notes/a.txt:2:the needle is here\n");
      assert.equal(await ok(lane, `echo '{"a":[1,2,3],"b":"x"}' | jq -c '{sum: (.a | add), b}'`), `{"sum":6,"b":"x"}\n`);
      assert.match(await ok(lane, "file -b /workspace/greet-1.0.0.tgz /workspace/doc.pdf"), /^gzip compressed data.*\nPDF document, version 1\.4/);
    });

    it("ffmpeg converts a generated tone", async () => {
      const out = await ok(lane, `cd /root
        ffmpeg -hide_banner -loglevel error -f lavfi -i sine=frequency=440:duration=2 -ar 48000 tone.wav
        ffmpeg -hide_banner -loglevel error -i tone.wav -c:a libopus -b:a 48k tone.ogg
        ffprobe -v error -show_entries stream=codec_name,sample_rate:format=duration -of json tone.ogg
        file -b tone.ogg`);
      const probed = JSON.parse(out.slice(0, out.lastIndexOf("}") + 1));
      assert.equal(probed.streams[0].codec_name, "opus");
      assert.ok(Math.abs(Number(probed.format.duration) - 2) < 0.1, `duration ${probed.format.duration}`);
      assert.match(out, /Ogg data, Opus audio/);
    });

    it("ImageMagick resizes a generated PNG, and exiftool reads it back", async () => {
      const out = await ok(lane, `cd /root
        convert -size 320x240 gradient:red-blue in.png
        convert in.png -resize 50% out.png
        identify -format '%w %h %m\\n' out.png
        exiftool -s -s -s -ImageSize -FileType out.png`);
      assert.equal(out, "160 120 PNG\n160x120\nPNG\n");
    });

    it("pdftotext extracts a generated PDF's text, and exiftool reads and rewrites its title", async () => {
      assert.equal((await ok(lane, "pdftotext -layout /workspace/doc.pdf - 2>/dev/null")).trim(), "Hello from a generated PDF");
      assert.equal(await ok(lane, "exiftool -s -s -s -Title -PageCount /workspace/doc.pdf"), "Quarterly sandbox report\n1\n");
      const rewritten = await ok(lane, `cd /root
        exiftool -q -Title='Rewritten in the guest' -o doc2.pdf /workspace/doc.pdf
        exiftool -s -s -s -Title doc2.pdf
        pdftotext doc2.pdf - 2>/dev/null`);
      assert.equal(rewritten.trim(), "Rewritten in the guest\nHello from a generated PDF");
    });
  });
});
