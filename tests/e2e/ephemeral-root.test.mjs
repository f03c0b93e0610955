// A built-in root under a network policy is writable, as in 0.6.0: an
// ephemeral copy-on-write view held in host memory (bounded, see
// docs/cow.md) and thrown away at close. Without a policy it stays
// read-only. Real VMs through the public API; the policy denies every flow
// and no test sends traffic.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { defineSandbox, fs, network, rootfs } from "@torkbot/sandbox";
import { debPackage } from "./fixtures/agent-files.mjs";
import { childProcesses } from "./helpers.mjs";

const withPolicy = () =>
  defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim"), network: network.policy(() => {}) });

/** A tiny .deb built on the host: one script in /usr/local/bin. */
async function ok(lane, script) {
  const r = await lane.exec("sh", ["-c", script]);
  assert.equal(r.exitCode, 0, `${script}: ${r.stderr}`);
  return r.stdout;
}

describe("ephemeral root under a network policy", () => {
  const work = mkdtempSync(join(tmpdir(), "ephemeral-e2e-"));
  after(() => {
    rmSync(work, { recursive: true, force: true });
    assert.deepEqual(childProcesses(), [], "no VMM left running");
  });

  it("takes dpkg -i and writes to /root and /usr/local, and the next boot is pristine", async () => {
    const deb = debPackage(work, "torkbot-ephemeral", "hello from an ephemeral package").bytes;
    const lane = await withPolicy().boot({ mounts: { "/mnt": fs.virtual(fs.memory({ files: { "/torkbot-ephemeral.deb": deb } })) } });
    try {
      assert.match(await ok(lane, "mount"), / on \/ type ext4 \(rw,/m);
      await ok(lane, "dpkg -i /mnt/torkbot-ephemeral.deb");
      assert.equal(await ok(lane, "torkbot-ephemeral"), "hello from an ephemeral package\n");
      await ok(lane, "echo kept > /root/note.txt && mkdir -p /usr/local/lib/e2e && echo x > /usr/local/lib/e2e/f && sync");
      assert.equal(await ok(lane, "cat /root/note.txt /usr/local/lib/e2e/f"), "kept\nx\n");
    } finally {
      await lane.close();
    }
    const again = await withPolicy().boot();
    try {
      const r = await again.exec("sh", ["-c", "ls /root/note.txt /usr/local/bin/torkbot-ephemeral /usr/local/lib/e2e; dpkg -s torkbot-ephemeral"]);
      assert.notEqual(r.exitCode, 0);
      assert.match(r.stderr, /'\/root\/note.txt': No such file/);
      assert.match(r.stderr, /'\/usr\/local\/bin\/torkbot-ephemeral': No such file/);
      assert.match(r.stderr, /package 'torkbot-ephemeral' is not installed/);
    } finally {
      await again.close();
    }
  });

  it("stays read-only without a network policy", async () => {
    const lane = await defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") }).boot();
    try {
      assert.match(await ok(lane, "mount"), / on \/ type ext4 \(ro,/m);
      const r = await lane.exec("sh", ["-c", "echo x > /root/note.txt"]);
      assert.notEqual(r.exitCode, 0);
      assert.match(r.stderr, /Read-only file system/);
    } finally {
      await lane.close();
    }
  });

  // The host side of the bound (held bytes never past it) is checked in
  // blockstore/ramstore; here, that the guest meets it as an I/O error.
  it("bounds the changes: raw writes past 256 MiB + 64 MiB fail with EIO in the guest", async () => {
    const lane = await withPolicy().boot();
    try {
      // Raw writes to the root device: every block counts, whatever ext4's
      // free space. O_DIRECT so the error reaches dd, not only the page cache.
      const r = await lane.exec("sh", [
        "-c",
        "dd if=/dev/zero of=$(findmnt -no SOURCE /) bs=1M count=360 oflag=direct 2>&1; echo rc=$?",
      ]);
      assert.match(r.stdout, /Input\/output error/, r.stdout);
      assert.doesNotMatch(r.stdout, /rc=0/);
      const copied = Number(/^(\d+) bytes/m.exec(r.stdout)?.[1]);
      const MiB = 1 << 20;
      assert.ok(copied >= 256 * MiB && copied <= 320 * MiB, `dd wrote ${copied} bytes`);
    } finally {
      await lane.close();
    }
  });
});
