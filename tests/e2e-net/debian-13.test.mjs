// The debian:13 image's git, npm and apt through a network policy, in a real
// VM: `git clone` over smart HTTP (git http-backend), `npm install` and
// `npm i -g` from an npm registry, and `apt-get install` from an apt
// repository, all HTTPS origins on this namespace's loopback that answer
// only requests carrying a token. The token is added by a
// matchHttp(...).accept(middleware) on the host; the guest never has it, and
// its git and npm trust the interception CA through the image's own store.
// Runs only inside the network namespace tests/e2e-net/run.sh makes.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { defineSandbox, network, rootfs } from "@torkbot/sandbox";
import { debPackage, npmTarball } from "../e2e/fixtures/agent-files.mjs";
import { listenInOrigins } from "./origins.mjs";
import { pki } from "./pki.mjs";

const ORIGIN = "198.51.100.10";
const RESOLVER = "192.0.2.53";
const HOST = "code.origin.test";
const PORT = 9444;
const TOKEN = "s3cret-forge-token-never-in-the-guest";

/**
 * git http-backend behind a Node handler (a CGI bridge): the request's
 * method, path, query and body in, its CGI headers and body out.
 */
function gitHttpBackend(projectRoot, prefix) {
  return (req, res) => {
    const url = new URL(req.url, "https://origin.invalid");
    const child = spawn("git", ["http-backend"], {
      env: {
        PATH: process.env.PATH,
        GIT_PROJECT_ROOT: projectRoot,
        GIT_HTTP_EXPORT_ALL: "1",
        REQUEST_METHOD: req.method,
        PATH_INFO: url.pathname.slice(prefix.length),
        QUERY_STRING: url.search.slice(1),
        CONTENT_TYPE: req.headers["content-type"] ?? "",
        ...(req.headers["content-length"] ? { CONTENT_LENGTH: req.headers["content-length"] } : {}),
        HTTP_CONTENT_ENCODING: req.headers["content-encoding"] ?? "",
        GIT_PROTOCOL: req.headers["git-protocol"] ?? "",
        REMOTE_ADDR: req.socket.remoteAddress ?? "",
      },
      stdio: ["pipe", "pipe", "inherit"],
    });
    req.pipe(child.stdin);
    let head = Buffer.alloc(0);
    let headersDone = false;
    child.stdout.on("data", (chunk) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      headersDone = true;
      let status = 200;
      for (const line of head.subarray(0, end).toString("latin1").split("\r\n")) {
        const colon = line.indexOf(":");
        const [name, value] = [line.slice(0, colon).trim(), line.slice(colon + 1).trim()];
        if (name.toLowerCase() === "status") status = Number.parseInt(value, 10);
        else res.setHeader(name, value);
      }
      res.writeHead(status);
      res.write(head.subarray(end + 4));
    });
    child.on("close", (code) => {
      if (!headersDone) res.writeHead(502).end(`git http-backend exited ${code} without headers\n`);
      else res.end();
    });
  };
}

/** A bare repository with two commits, the second adding a README. */
function bareRepository(dir) {
  const work = join(dir, "work");
  const git = (...args) => execFileSync("git", ["-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid", ...args], { stdio: "pipe" });
  git("init", "-q", "-b", "main", work);
  git("-C", work, "commit", "-q", "--allow-empty", "-m", "first");
  writeFileSync(join(work, "README"), "cloned through the sandbox's policy\n");
  git("-C", work, "add", "README");
  git("-C", work, "commit", "-q", "-m", "add a README");
  mkdirSync(join(dir, "repos"));
  git("clone", "-q", "--bare", work, join(dir, "repos/project.git"));
  return join(dir, "repos");
}

/**
 * A flat apt repository (`deb URI ./`) holding one package: its Packages
 * index made by the host's dpkg-scanpackages, and an unsigned Release that
 * names the index by SHA256 (the guest's source says trusted=yes).
 * Returns the repository's files by name.
 */
function aptRepository(dir, deb) {
  const repo = join(dir, "apt");
  mkdirSync(repo);
  writeFileSync(join(repo, deb.file), deb.bytes);
  const packages = execFileSync("dpkg-scanpackages", ["--multiversion", "."], { cwd: repo, stdio: ["ignore", "pipe", "ignore"] });
  const sha256 = createHash("sha256").update(packages).digest("hex");
  const release = `Date: ${new Date().toUTCString()}\nSHA256:\n ${sha256} ${packages.length} Packages\n`;
  return { [deb.file]: deb.bytes, Packages: packages, Release: Buffer.from(release) };
}

describe("debian:13's git, npm and apt through HTTP interception", () => {
  const seen = [];
  let dir;
  let server;
  let dnsmasq;
  let lane;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "sandbox-debian-13-net-"));
    const tls = pki(dir, "forge", HOST);
    const repos = bareRepository(dir);
    const tarball = npmTarball(dir, "greet", "1.0.0");
    const apt = aptRepository(dir, debPackage(dir, "torkbot-apt", "installed from the apt origin"));
    const registry = `https://${HOST}:${PORT}/npm`;
    const packument = {
      name: "greet",
      "dist-tags": { latest: "1.0.0" },
      versions: {
        "1.0.0": { name: "greet", version: "1.0.0", main: "index.js", dist: { tarball: `${registry}/greet/-/${tarball.file}`, integrity: tarball.integrity } },
      },
    };
    const git = gitHttpBackend(repos, "/git");
    server = createServer({ key: tls.key, cert: tls.cert }, (req, res) => {
      seen.push({ path: req.url, authorization: req.headers.authorization });
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        res.writeHead(401, { "www-authenticate": 'Bearer realm="forge"' }).end("token required\n");
        return;
      }
      const path = new URL(req.url, "https://origin.invalid").pathname;
      if (path.startsWith("/git/")) return git(req, res);
      const aptFile = path.startsWith("/apt/") ? apt[path.slice("/apt/".length).replace(/^\.\//, "")] : undefined;
      if (aptFile !== undefined) return res.writeHead(200, { "content-type": "application/octet-stream" }).end(aptFile);
      if (path === "/npm/greet") return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(packument));
      if (path === `/npm/greet/-/${tarball.file}`) return res.writeHead(200, { "content-type": "application/octet-stream" }).end(tarball.bytes);
      res.writeHead(404).end("no such package\n");
    });
    await listenInOrigins(server, PORT, ORIGIN);
    dnsmasq = spawn("dnsmasq", [
      "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", `--listen-address=${RESOLVER}`,
      "--port=53", `--address=/${HOST}/${ORIGIN}`, "--log-facility=-",
    ], { stdio: "ignore" });
    process.env.NODE_EXTRA_CA_CERTS = tls.ca; // the upstream side trusts the origin
    const inject = (request) => request.headers.set("authorization", `Bearer ${TOKEN}`);
    lane = await defineSandbox({
      rootfs: rootfs.builtIn("debian:13"),
      network: network.policy((conn) => {
        if (conn.matchDns({ ip: RESOLVER })?.accept()) return;
        // The origin is documentation space, not public.
        conn.matchHttp({ hostname: HOST, port: PORT })?.accept(inject);
      }),
    }).boot({ cwd: "/tmp" });
  });

  after(async () => {
    await lane?.close();
    delete process.env.NODE_EXTRA_CA_CERTS;
    server?.close();
    dnsmasq?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const run = async (script, env) => {
    const r = await lane.exec("bash", ["-c", `set -euo pipefail\n${script}`], { env });
    assert.ok(!(r.stdout + r.stderr).includes(TOKEN), "the guest saw the token");
    assert.equal(r.exitCode, 0, `${script}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    return r.stdout;
  };

  it("git clones over smart HTTP with the token the middleware adds", async () => {
    const out = await run(`git clone -q https://${HOST}:${PORT}/git/project.git /tmp/project
      cat /tmp/project/README
      git -C /tmp/project log --format=%s`);
    assert.equal(out, "cloned through the sandbox's policy\nadd a README\nfirst\n");
    const gitRequests = seen.filter((r) => r.path.startsWith("/git/"));
    assert.ok(gitRequests.some((r) => r.path.includes("/git-upload-pack")), "a smart HTTP fetch reached the origin");
    assert.ok(gitRequests.every((r) => r.authorization === `Bearer ${TOKEN}`));
  });

  it("npm installs from the registry origin, trusting the interception CA", async () => {
    // npm's cache on the tmpfs keeps the ephemeral root's changes small.
    const out = await run(`mkdir -p /tmp/app && cd /tmp/app && npm init -y >/dev/null
      npm install --no-audit --no-fund --registry https://${HOST}:${PORT}/npm/ greet
      node -e 'console.log(require("greet").greet("the registry"))'`, { npm_config_cache: "/tmp/npm-cache", npm_config_update_notifier: "false" });
    assert.match(out, /hello the registry from greet@1\.0\.0\n$/);
    assert.ok(seen.some((r) => r.path === "/npm/greet/-/greet-1.0.0.tgz" && r.authorization === `Bearer ${TOKEN}`));
  });

  // The built-in root is writable under a network policy (as in 0.6.0), so
  // global installs land where they would on any machine.
  it("npm i -g installs from the registry origin into /usr/local", async () => {
    const out = await run(`npm install -g --no-audit --no-fund --registry https://${HOST}:${PORT}/npm/ greet
      node -e 'console.log(require("/usr/local/lib/node_modules/greet").greet("a global install"))'`, { npm_config_cache: "/tmp/npm-cache", npm_config_update_notifier: "false" });
    assert.match(out, /hello a global install from greet@1\.0\.0\n$/);
  });

  it("apt-get installs from an apt repository origin", async () => {
    // Only this origin's source: the image's own point at mirrors the
    // namespace cannot reach.
    const out = await run(`mkdir -p /tmp/apt-parts
      echo "deb [trusted=yes] https://${HOST}:${PORT}/apt ./" > /tmp/e2e.list
      opts=(-o Dir::Etc::SourceList=/tmp/e2e.list -o Dir::Etc::SourceParts=/tmp/apt-parts)
      apt-get "\${opts[@]}" -q update >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get "\${opts[@]}" -q -y install torkbot-apt >/dev/null
      dpkg-query -W -f '\${Status}\n' torkbot-apt
      torkbot-apt`);
    assert.equal(out, "install ok installed\ninstalled from the apt origin\n");
    assert.ok(seen.some((r) => r.path.endsWith("/torkbot-apt_1.0_all.deb") && r.authorization === `Bearer ${TOKEN}`));
  });
});
