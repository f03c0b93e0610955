// Host-controlled mounts in real VMs: fs.memory and hand-written
// SandboxFileSystem objects served to the guest over FUSE, checked from both
// sides; and the 0.6.0 ways of making them (a literal source, detached and
// spread fs.memory methods, seed keys without "/", a stat without writable).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { defineSandbox, fs, rootfs } from "@torkbot/sandbox";

const debian = defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") });
const signal = new AbortController().signal;
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** A filesystem with only the read methods: it must mount read-only. */
function readOnlyFileSystem(files) {
  const encoder = new TextEncoder();
  return {
    async stat(path) {
      if (path === "/") return { type: "directory", sizeBytes: null, mediaType: null, modifiedAtMs: null };
      const body = files[path];
      if (body === undefined) throw new Error(`not found: ${path}`);
      return { type: "file", sizeBytes: encoder.encode(body).length, mediaType: null, modifiedAtMs: 0 };
    },
    async list(path) {
      if (path !== "/") throw new Error(`not a directory: ${path}`);
      return Object.keys(files).map((name) => ({ name: name.slice(1), type: "file" }));
    },
    async read({ path, range }) {
      const body = encoder.encode(files[path]);
      return range ? body.subarray(range.offset, range.offset + range.length) : body;
    },
  };
}

/**
 * A POSIX filesystem made the 0.6.0 way from fs.memory's detached methods,
 * whose stat leaves `writable` out: 0.6.0 showed such entries read-only
 * (0444 files, 0555 directories), though root may still write.
 */
function statWithoutWritable(memory) {
  const { stat, ...rest } = memory;
  return {
    ...rest,
    async stat(path) {
      const { writable, ...described } = await stat(path);
      return described;
    },
  };
}

describe("mounts", () => {
  const workspace = fs.memory({ files: { "/task.txt": "hello from the host\n", "/big.bin": new Uint8Array(1 << 20).fill(7) } });
  const plain = fs.memory({ files: { "f.txt": "plain\n", "d/g.txt": "g\n" } });
  const quotaBytes = 256 * 1024;
  const small = fs.memory({ maxBytes: quotaBytes });
  let lane;

  before(async () => {
    lane = await debian.boot({
      mounts: {
        "/workspace": fs.virtual(workspace),
        "/mnt": fs.virtual(readOnlyFileSystem({ "/readme.txt": "read only\n" })),
        "/tmp": { kind: "virtual-fs", fileSystem: statWithoutWritable(plain) },
        "/srv": fs.virtual(small),
      },
      cwd: "/workspace",
    });
  });
  after(async () => {
    await lane?.close();
  });

  it("shows the host's files and uses the mount as the working directory", async () => {
    assert.deepEqual(await lane.exec("cat", ["task.txt"]), { exitCode: 0, stdout: "hello from the host\n", stderr: "" });
    assert.equal((await lane.exec("pwd")).stdout, "/workspace\n");
  });

  it("gives the host what the guest wrote, straight from the object", async () => {
    const r = await lane.exec("sh", ["-c", "echo made in guest > out.txt && mkdir -p a/b && ln -s ../out.txt a/link && ln out.txt hard.txt && mv out.txt moved.txt"]);
    assert.equal(r.exitCode, 0, r.stderr);
    const text = new TextDecoder().decode(await workspace.read({ path: "/moved.txt", signal }));
    assert.equal(text, "made in guest\n");
    assert.equal(await workspace.readlink("/a/link"), "../out.txt");
    assert.equal((await workspace.stat("/a/b")).type, "directory");
    assert.equal(new TextDecoder().decode(await workspace.read({ path: "/hard.txt", signal })), "made in guest\n");
  });

  it("answers ENOSPC past an fs.memory quota, which the host keeps", async () => {
    const write = await lane.exec("sh", ["-c", "head -c 1000000 /dev/zero > /srv/big"]);
    assert.notEqual(write.exitCode, 0);
    assert.match(write.stderr, /No space left on device/);
    const { sizeBytes } = await small.stat("/big");
    assert.ok(sizeBytes > 0 && sizeBytes <= quotaBytes - 1024, `${sizeBytes} bytes held`);
    // Empty files are charged 1 KiB each: a flood stops too. Freeing gives the room back.
    const flood = await lane.exec("sh", ["-c", "rm /srv/big; i=0; while touch /srv/e$i; do i=$((i+1)); done; echo $i"]);
    assert.match(flood.stderr, /No space left on device/);
    assert.equal(flood.stdout, `${quotaBytes / 1024}\n`);
    assert.equal((await small.list("/")).length, quotaBytes / 1024);
    const again = await lane.exec("sh", ["-c", "rm /srv/e* && head -c 100000 /dev/zero > /srv/big && stat -c %s /srv/big"]);
    assert.deepEqual(again, { exitCode: 0, stdout: "100000\n", stderr: "" });
  });

  it("extracts a tar tree that reads back identically on the host", async () => {
    const script = [
      "set -e",
      "mkdir -p /tmp/src/dir/sub && cd /tmp/src",
      "head -c 300000 /dev/urandom > dir/random.bin",
      "seq 1 20000 > dir/sub/numbers.txt",
      "printf 'x' > tiny",
      "ln -s dir/random.bin link-to-random",
      "ln dir/sub/numbers.txt hardlink.txt",
      "tar -cf /tmp/tree.tar .",
      "mkdir /workspace/tree && tar -xf /tmp/tree.tar -C /workspace/tree",
      "find . -type f | sort | xargs sha256sum",
    ].join("\n");
    const r = await lane.exec("bash", ["-c", script]);
    assert.equal(r.exitCode, 0, r.stderr);
    const expected = r.stdout.trim().split("\n").map((line) => line.split(/\s+/));
    assert.ok(expected.length >= 4);
    for (const [digest, path] of expected) {
      const bytes = await workspace.read({ path: `/tree/${path.slice(2)}`, signal });
      assert.equal(sha256(bytes), digest, path);
    }
    assert.equal(await workspace.readlink("/tree/link-to-random"), "dir/random.bin");
    // And the guest sees the same tree through the mount.
    const diff = await lane.exec("sh", ["-c", "cd /tmp/src && diff -r . /workspace/tree && echo same"]);
    assert.equal(diff.stdout, "same\n", diff.stderr);
  });

  it("maps the filesystem's errors to errno in the guest", async () => {
    const r = await lane.exec("sh", ["-c", [
      "cat nope 2>&1",
      "mkdir task.txt 2>&1",
      "mkdir -p full/inner && rmdir full 2>&1",
      "ls task.txt/x 2>&1",
      "true",
    ].join("; ")]);
    assert.match(r.stdout, /nope: No such file or directory/);
    assert.match(r.stdout, /task\.txt.?: File exists/);
    assert.match(r.stdout, /full'?: Directory not empty/);
    assert.match(r.stdout, /task\.txt\/x.?: Not a directory/);
  });

  it("refuses file names that are not UTF-8, which JavaScript could not tell apart", async () => {
    const before = await workspace.list("/");
    const r = await lane.exec("bash", ["-c", "touch $'bad-\\xff' 2>&1; touch $'bad-\\xfe' 2>&1; mkdir $'dir-\\xc3' 2>&1; true"]);
    assert.equal(r.stdout.match(/Invalid or incomplete multibyte or wide character/g)?.length, 3, r.stdout);
    assert.deepEqual(await workspace.list("/"), before, "nothing was created on the host");
  });

  it("mounts a filesystem without write methods read-only", async () => {
    const r = await lane.exec("sh", ["-c", "cat /mnt/readme.txt; touch /mnt/new 2>&1; echo rc=$?"]);
    assert.match(r.stdout, /^read only\n/);
    assert.match(r.stdout, /Read-only file system\nrc=1\n$/);
  });

  it("shows modes as 0.6.0 did: writable stats 0755/0644, others 0555/0444", async () => {
    const r = await lane.exec("stat", ["-c", "%n %a", "/workspace", "/workspace/task.txt", "/mnt", "/mnt/readme.txt", "/tmp", "/tmp/f.txt", "/tmp/d"]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, [
      "/workspace 755", "/workspace/task.txt 644", "/mnt 555", "/mnt/readme.txt 444", "/tmp 555", "/tmp/f.txt 444", "/tmp/d 555", "",
    ].join("\n"));
    // The mount is still writable (root passes the mode checks), as in 0.6.0.
    const w = await lane.exec("sh", ["-c", "cat /tmp/d/g.txt && echo more >> /tmp/f.txt"]);
    assert.deepEqual([w.exitCode, w.stdout], [0, "g\n"], w.stderr);
    assert.equal(new TextDecoder().decode(await plain.read({ path: "/f.txt", signal })), "plain\nmore\n");
  });

  it("serves 8 concurrent readers", async () => {
    const r = await lane.exec("bash", ["-c", "for i in $(seq 8); do sha256sum big.bin & done; wait"]);
    const digests = r.stdout.trim().split("\n").map((line) => line.split(/\s+/)[0]);
    assert.equal(digests.length, 8);
    assert.deepEqual(new Set(digests), new Set([sha256(new Uint8Array(1 << 20).fill(7))]));
  });
});

describe("mounts per boot", () => {
  it("gives two boots of one definition their own mounts", async () => {
    const one = await debian.boot({ mounts: { "/workspace": fs.virtual(fs.memory({ files: { "/who": "one\n" } })) } });
    const two = await debian.boot({ mounts: { "/workspace": fs.virtual(fs.memory({ files: { "/who": "two\n" } })) } });
    try {
      assert.equal((await one.exec("cat", ["/workspace/who"])).stdout, "one\n");
      assert.equal((await two.exec("cat", ["/workspace/who"])).stdout, "two\n");
    } finally {
      await Promise.all([one.close(), two.close()]);
    }
  });

  it("rejects a mount target that does not exist in the image, naming it", async () => {
    await assert.rejects(debian.boot({ mounts: { "/no/such/dir": fs.virtual(fs.memory()) } }), (err) => {
      assert.equal(err.code, "ERR_SANDBOX_BOOT");
      assert.match(err.message, /\/no\/such\/dir/);
      return true;
    });
  });
});
