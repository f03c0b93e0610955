// exec and spawn through the public API against one real VM (QEMU, the
// built-in debian:13-slim image, our kernel and init).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { defineSandbox, rootfs } from "@torkbot/sandbox";

describe("exec and spawn in a booted sandbox", () => {
  let lane;
  before(async () => {
    lane = await defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") }).boot({ cwd: "/tmp" });
  });
  after(async () => {
    await lane?.close();
  });

  it("returns stdout and an empty stderr", async () => {
    assert.deepEqual(await lane.exec("printf", ["ready"]), { exitCode: 0, stdout: "ready", stderr: "" });
  });

  it("runs in the boot cwd by default", async () => {
    const r = await lane.exec("pwd");
    assert.equal(r.stdout, "/tmp\n");
  });

  it("honours cwd and env per call", async () => {
    const r = await lane.exec("sh", ["-c", 'printf "%s %s" "$(pwd)" "$GREETING"'], {
      cwd: "/etc",
      env: { GREETING: "hello there" },
    });
    assert.deepEqual(r, { exitCode: 0, stdout: "/etc hello there", stderr: "" });
  });

  it("gives init's environment plus the call's, and in a cwd PWD, SANDBOX_EXEC_CWD and the login profile, as 0.6.0", async () => {
    const r = await lane.exec("sh", ["-c", 'printf "%s|%s|%s|%s|%s|%s" "$HOME" "$TERM" "$X" "$PWD" "$SANDBOX_EXEC_CWD" "$PATH"'], { env: { X: "1" } });
    // HOME=/ and TERM=linux are what the kernel hands init; PATH is /etc/profile's for root.
    assert.equal(r.stdout, "/|linux|1|/tmp|/tmp|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  });

  it("reads the login profile in a cwd, and runs the command as is without one", async () => {
    const env = { PATH: "/custom:/usr/bin:/bin" };
    // /etc/profile sets root's PATH over the one the call gave: it was read.
    const inCwd = await lane.exec("sh", ["-c", 'printf "%s" "$PATH"'], { env });
    assert.equal(inCwd.stdout, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    const bare = await defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") }).boot();
    try {
      const r = await bare.exec("/bin/sh", ["-c", 'printf "%s|%s|%s" "$PATH" "$(pwd)" "${SANDBOX_EXEC_CWD-unset}"'], { env });
      assert.equal(r.stdout, "/custom:/usr/bin:/bin|/|unset", "no cwd anywhere: no shell, no profile, from /");
      const relative = await bare.exec("pwd", [], { cwd: "etc" });
      assert.equal(relative.stdout, "/etc\n", "a relative cwd resolves against /");
    } finally {
      await bare.close();
    }
  });

  it("reports the exit code", async () => {
    const r = await lane.exec("sh", ["-c", "echo oops >&2; exit 3"]);
    assert.deepEqual(r, { exitCode: 3, stdout: "", stderr: "oops\n" });
  });

  it("gives 127 and a reason for a command that cannot start", async () => {
    const r = await lane.exec("no-such-command-here", ["x"]);
    assert.equal(r.exitCode, 127);
    assert.match(r.stderr, /no-such-command-here/);
  });

  it("fails as 0.6.0's cd does for a cwd that does not exist", async () => {
    const r = await lane.exec("true", [], { cwd: "/does/not/exist" });
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr, /can't cd to \/does\/not\/exist/);
  });

  it("gives 128+N for a signal, with `killed by signal N` appended to stderr", async () => {
    const r = await lane.exec("sh", ["-c", "printf partial >&2; kill -9 $$"]);
    assert.deepEqual(r, { exitCode: 128 + 9, stdout: "", stderr: "partial\nkilled by signal 9\n" });
    const term = await lane.exec("sh", ["-c", "kill -TERM $$"], { cwd: "/" });
    assert.deepEqual(term, { exitCode: 128 + 15, stdout: "", stderr: "killed by signal 15\n" });
  });

  it("kills a command whose exec output passes 64 MiB, and rejects saying so", async () => {
    await assert.rejects(lane.exec("sh", ["-c", "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; echo survived >&2"]), {
      code: "ERR_SANDBOX_EXEC_OUTPUT_LIMIT",
      message: /exceeded 64 MiB .* the command was killed; use spawn\(\)/,
    });
    const r = await lane.exec("sh", ["-c", "pgrep -x yes || echo gone"]);
    assert.equal(r.stdout, "gone\n");
  });

  it("decodes output as UTF-8", async () => {
    const r = await lane.exec("printf", ["gr\\303\\274\\303\\237e \\342\\234\\223"]);
    assert.equal(r.stdout, "grüße ✓");
  });

  it("returns large output whole", async () => {
    const r = await lane.exec("sh", ["-c", "head -c 3000000 /dev/zero | tr '\\0' a"]);
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout.length, 3_000_000);
    assert.ok(/^a+$/.test(r.stdout));
  });

  it("runs execs concurrently", async () => {
    // Each command stamps its start and end with the guest's clock: they
    // ran at once if each started before the other ended, whatever the
    // load on the host makes the round trips cost.
    const script = (word) => `date +%s%N; sleep 1; date +%s%N; echo ${word}`;
    const [a, b] = await Promise.all([lane.exec("sh", ["-c", script("a")]), lane.exec("sh", ["-c", script("b")])]);
    const stamps = [a, b].map((r, i) => {
      const [start, end, word] = r.stdout.trim().split("\n");
      assert.equal(word, ["a", "b"][i], r.stdout);
      return { start: BigInt(start), end: BigInt(end) };
    });
    assert.ok(stamps[0].start < stamps[1].end && stamps[1].start < stamps[0].end, JSON.stringify(stamps, (_, v) => String(v)));
  });

  it("streams spawn output in order as it is produced", async () => {
    const proc = await lane.spawn("sh", ["-c", "for i in 1 2 3; do echo chunk$i; sleep 0.3; done; echo done >&2"]);
    const seen = [];
    const decoder = new TextDecoder();
    for await (const chunk of proc.stdout) seen.push({ at: Date.now(), text: decoder.decode(chunk) });
    let stderr = "";
    for await (const chunk of proc.stderr) stderr += decoder.decode(chunk);
    assert.deepEqual(await proc.exit, { exitCode: 0 });
    assert.equal(seen.map((c) => c.text).join(""), "chunk1\nchunk2\nchunk3\n");
    assert.equal(seen.length, 3, "each chunk arrives on its own, not buffered to the end");
    assert.ok(seen[2].at - seen[0].at >= 450, "chunks arrive as they are produced");
    assert.equal(stderr, "done\n");
  });

  it("resolves spawn exit even when nobody reads the output, past the 16 MiB kept unread", async () => {
    const proc = await lane.spawn("sh", ["-c", "head -c 20000000 /dev/zero; echo ignored >&2; exit 4"]);
    assert.deepEqual(await proc.exit, { exitCode: 4 });
    let kept = 0;
    for await (const chunk of proc.stdout) kept += chunk.byteLength;
    // Chunks are kept whole: the last one that fits may end short of 16 MiB.
    assert.ok(kept <= 16 * 1024 * 1024 && kept > 16 * 1024 * 1024 - 65536, `kept ${kept} bytes: the first 16 MiB, the rest dropped`);
  });

  it("resolves spawn() once the process has started", async () => {
    const proc = await lane.spawn("sh", ["-c", "echo $$ > /tmp/spawned; sleep 30"]);
    // The process exists by the time spawn() resolved: it can be signalled.
    const r = await lane.exec("sh", ["-c", "for i in $(seq 50); do [ -s /tmp/spawned ] && break; sleep 0.1; done; kill $(cat /tmp/spawned)"]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual(await proc.exit, { exitCode: 128 + 15 });
  });

  it("lets a spawn's streams be read again: break discards nothing", async () => {
    const proc = await lane.spawn("sh", ["-c", "for i in 1 2 3 4; do echo line$i; sleep 0.2; done"]);
    const decoder = new TextDecoder();
    let first = "";
    for await (const chunk of proc.stdout) {
      first += decoder.decode(chunk);
      break;
    }
    let rest = "";
    for await (const chunk of proc.stdout) rest += decoder.decode(chunk);
    assert.equal(first + rest, "line1\nline2\nline3\nline4\n");
    assert.deepEqual(await proc.exit, { exitCode: 0 });
  });
});

describe("resources", () => {
  it("gives the guest the vCPUs and memory asked for", async () => {
    const lane = await defineSandbox({
      rootfs: rootfs.builtIn("debian:13-slim"),
      resources: { cpus: 2, memoryMiB: 384 },
    }).boot();
    try {
      assert.equal((await lane.exec("nproc")).stdout, "2\n");
      const meminfo = (await lane.exec("cat", ["/proc/meminfo"])).stdout;
      const totalKiB = Number(/MemTotal:\s+(\d+) kB/.exec(meminfo)[1]);
      // The kernel keeps some memory for itself: MemTotal is a bit below 384 MiB.
      assert.ok(totalKiB > 300 * 1024 && totalKiB <= 384 * 1024, `MemTotal ${totalKiB} kB`);
    } finally {
      await lane.close();
    }
  });
});
