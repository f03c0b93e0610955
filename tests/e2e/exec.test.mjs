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

  it("keeps PATH and HOME when env adds variables", async () => {
    const r = await lane.exec("sh", ["-c", 'printf "%s|%s" "$HOME" "$PATH"'], { env: { X: "1" } });
    assert.match(r.stdout, /^\/root\|.*\/usr\/bin/);
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

  it("gives 127 for a cwd that does not exist", async () => {
    const r = await lane.exec("true", [], { cwd: "/does/not/exist" });
    assert.equal(r.exitCode, 127);
    assert.match(r.stderr, /\/does\/not\/exist/);
  });

  it("gives 128+N for a signal", async () => {
    const r = await lane.exec("sh", ["-c", "kill -9 $$"]);
    assert.equal(r.exitCode, 128 + 9);
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
    const started = Date.now();
    const [a, b] = await Promise.all([
      lane.exec("sh", ["-c", "sleep 1; echo a"]),
      lane.exec("sh", ["-c", "sleep 1; echo b"]),
    ]);
    assert.equal(a.stdout, "a\n");
    assert.equal(b.stdout, "b\n");
    // Run one after the other they would take at least two seconds.
    assert.ok(Date.now() - started < 1900, `took ${Date.now() - started} ms`);
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

  it("resolves spawn exit even when nobody reads the output", async () => {
    const proc = await lane.spawn("sh", ["-c", "echo ignored; echo ignored >&2; exit 4"]);
    assert.deepEqual(await proc.exit, { exitCode: 4 });
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
