// @torkbot/sandbox/s3: a SandboxBlockStore on S3-compatible object storage
// (AWS S3, Cloudflare R2, MinIO, Ceph RGW, versitygw...), so that a lane is
// resumable on any machine that reaches the bucket, and a lease so that two
// sandboxes never attach one lane at once. Its own entry point: only users of
// it load @aws-sdk/client-s3 (an optional peer dependency).
//
// Objects under `<keyPrefix>/` (docs/cow.md has the consistency argument):
//
//   lease.json                 who holds the lane; created with If-None-Match: *,
//                              renewed and released with If-Match on its ETag
//   manifest.json              the lane's one committed state: the base it
//                              applies to, the block size, and the data
//                              objects with the runs of blocks each holds
//   data/<base>/<gen>-<n>-<r>  blocks, concatenated in the order of the runs
//
// write() uploads new data objects (never overwriting one); flush() commits
// them by writing the manifest last, with If-Match on the manifest this
// store read or wrote, so a crash at any point leaves the previous manifest,
// which names only objects that were complete before it was written.

import { hostname } from "node:os";
import { randomUUID } from "node:crypto";
import {
  DeleteObjectCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  type GetObjectCommandOutput,
  type PutObjectCommandInput,
} from "@aws-sdk/client-s3";
import { codedError, ErrorCodes } from "./errors.js";
import type { SandboxBlockChunk, SandboxBlockRange, SandboxBlockStore, SandboxBlockStoreContext } from "./rootfs.js";

export type S3BlockStoreOptions = {
  /** The bucket. It must exist. */
  readonly bucket: string;
  /** The lane's folder in the bucket, e.g. "lanes/github-worker". One lane per prefix. */
  readonly keyPrefix: string;
  /**
   * The client to talk through. Default: `new S3Client({})`, configured by
   * the AWS SDK's environment (AWS_REGION, AWS_ENDPOINT_URL, credentials).
   * Other S3 implementations usually need `forcePathStyle: true`.
   */
  readonly client?: S3Client;
  /** Bytes per block, a multiple of 512 (default 4096, the built-in images' ext4 block). */
  readonly blockSize?: number;
  /** Most bytes of blocks in one data object (default 4 MiB): a flush costs size / objectSize PUTs. */
  readonly objectSize?: number;
  /** Most S3 requests in flight for one read() or one write() (default 8). */
  readonly concurrency?: number;
  /** Each S3 request is aborted after this many ms (default 30000): a store call never hangs the guest for good. */
  readonly requestTimeoutMs?: number;
  /**
   * The lease: `ttlMs` (default 30000) is how long it outlives its holder
   * when that one dies without releasing it; it is renewed every ttlMs / 3.
   * `holder` names this attachment in the errors others get (default: host
   * name and pid).
   */
  readonly lease?: { readonly ttlMs?: number; readonly holder?: string };
};

type Run = readonly [start: number, count: number];
type DataObject = { readonly key: string; readonly runs: readonly Run[] };
type Manifest = {
  readonly format: typeof MANIFEST_FORMAT;
  readonly base: string;
  readonly blockSize: number;
  readonly generation: number;
  readonly holder: string;
  /** Random per attach(): tells this attachment's own manifest from another's. */
  readonly attachment: string;
  readonly objects: readonly DataObject[];
};
/** Where one block lives: its object and its place (in blocks) in it. */
type Location = { readonly object: DataObject; readonly slot: number };
/** The committed state: the manifest read or written last, its ETag, and the block map it gives. */
type State = { readonly manifest: Manifest; readonly etag: string | undefined; readonly index: Map<number, Location> };
type Command = GetObjectCommand | PutObjectCommand | DeleteObjectCommand;
/** What the lease needs of its store: the bucket, its key, and requests under the store's timeout. */
type LeaseIo = {
  readonly lane: string;
  readonly bucket: string;
  readonly key: string;
  send<T>(command: Command, what: string): Promise<T>;
};

const MANIFEST_FORMAT = "torkbot-sandbox-lane/1";
const MiB = 1024 * 1024;

/** A SandboxBlockStore over S3-compatible object storage, leased to one sandbox at a time. */
export class S3BlockStore implements SandboxBlockStore {
  readonly blockSize: number;
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #objectSize: number;
  readonly #concurrency: number;
  readonly #timeoutMs: number;
  readonly #ttlMs: number;
  readonly #holder: string;
  /** The lease while attached. */
  #lease: Lease | undefined;
  #state: State | undefined;
  /** Data objects write() uploaded that the next flush() commits. */
  #staged: DataObject[] = [];
  /** Deletions of objects no manifest names any more; awaited by detach(). */
  #deleting = new Set<Promise<void>>();

  constructor(options: S3BlockStoreOptions) {
    const { bucket, keyPrefix } = options ?? {};
    if (typeof bucket !== "string" || bucket === "") throw new TypeError("S3BlockStore: bucket must be a non-empty string");
    if (typeof keyPrefix !== "string") throw new TypeError("S3BlockStore: keyPrefix must be a string, e.g. \"lanes/worker-1\"");
    this.blockSize = integer(options.blockSize ?? 4096, "blockSize", 512, 16 * MiB);
    if (this.blockSize % 512 !== 0) throw new RangeError(`S3BlockStore: blockSize must be a multiple of 512, got ${this.blockSize}`);
    const objectSize = integer(options.objectSize ?? 4 * MiB, "objectSize", this.blockSize, 1024 * MiB);
    this.#objectSize = objectSize - (objectSize % this.blockSize);
    this.#concurrency = integer(options.concurrency ?? 8, "concurrency", 1, 256);
    this.#timeoutMs = integer(options.requestTimeoutMs ?? 30_000, "requestTimeoutMs", 100, 3_600_000);
    this.#ttlMs = integer(options.lease?.ttlMs ?? 30_000, "lease.ttlMs", 1000, 3_600_000);
    this.#holder = `${options.lease?.holder ?? "sandbox"} on ${hostname()} pid ${process.pid}`;
    this.#client = options.client ?? new S3Client({});
    this.#bucket = bucket;
    this.#prefix = keyPrefix.replace(/\/+$/, "");
  }

  /** Where the lane lives, for messages: s3://bucket/prefix. */
  get lane(): string {
    return `s3://${this.#bucket}/${this.#prefix}`;
  }

  /**
   * Takes the lease (ERR_SANDBOX_STORE_IN_USE naming the holder when another
   * attachment has it), reads the manifest, refuses one written for another
   * base, and rewrites it under this attachment, so that a previous holder
   * whose lease expired can no longer commit a flush. Called by boot().
   */
  async attach(context: SandboxBlockStoreContext): Promise<void> {
    if (this.#lease !== undefined) {
      throw codedError(ErrorCodes.storeInUse, `${this.lane} is already attached by this S3BlockStore: close() its sandbox first`);
    }
    const lease = await Lease.take(
      { lane: this.lane, bucket: this.#bucket, key: this.#key("lease.json"), send: (command, what) => this.#send(command, what) },
      this.#ttlMs,
      this.#holder,
    );
    try {
      const state = await this.#load(context);
      const fenced = { ...state.manifest, holder: this.#holder, attachment: randomUUID() };
      const etag = await this.#putManifest(fenced, state.etag);
      this.#state = { manifest: fenced, etag, index: state.index };
      this.#staged = [];
      this.#lease = lease;
    } catch (error) {
      await lease.release().catch(() => undefined);
      throw error;
    }
  }

  /** Waits for background deletions and releases the lease. Called once the sandbox is closed. */
  async detach(_context: SandboxBlockStoreContext): Promise<void> {
    const lease = this.#lease;
    this.#lease = undefined;
    this.#state = undefined;
    await this.#abandon(this.#staged);
    this.#staged = [];
    await Promise.allSettled([...this.#deleting]);
    if (lease === undefined) return;
    try {
      await lease.release();
    } catch (error) {
      // Everything flushed is committed; only the next attachment waits.
      process.emitWarning(`${this.lane}: the lease was not released (${message(error)}); it expires ${this.#ttlMs} ms after its last renewal`);
    }
  }

  /** The blocks of the committed state. Without attach(), a read-only look at the last committed manifest. */
  async list(context: SandboxBlockStoreContext): Promise<readonly bigint[]> {
    if (this.#state === undefined || this.#lease === undefined) this.#state = await this.#load(context);
    return [...this.#state.index.keys()].map(BigInt);
  }

  async read(range: SandboxBlockRange, context: SandboxBlockStoreContext): Promise<readonly SandboxBlockChunk[]> {
    if (this.#state === undefined) this.#state = await this.#load(context);
    const { index } = this.#state;
    // Consecutive blocks in consecutive slots of one object are one ranged GET.
    const gets: { start: number; object: DataObject; slot: number; count: number }[] = [];
    const first = Number(range.start);
    for (let block = first; block < first + range.count; block++) {
      const at = index.get(block);
      if (at === undefined) continue;
      const last = gets.at(-1);
      if (last !== undefined && last.object === at.object && last.start + last.count === block && last.slot + last.count === at.slot) {
        last.count++;
      } else {
        gets.push({ start: block, object: at.object, slot: at.slot, count: 1 });
      }
    }
    return bounded(gets, this.#concurrency, async ({ start, object, slot, count }) => {
      const from = slot * this.blockSize;
      const length = count * this.blockSize;
      const got = await this.#send<GetObjectCommandOutput>(new GetObjectCommand({ Bucket: this.#bucket, Key: this.#key(object.key), Range: `bytes=${from}-${from + length - 1}` }), `read ${object.key}`);
      const data = await body(got);
      if (data.byteLength !== length) {
        throw new Error(`${this.lane}: ${object.key} gave ${data.byteLength} bytes for bytes ${from}-${from + length - 1}: the object is shorter than the manifest says`);
      }
      return { start: BigInt(start), data };
    });
  }

  /** Uploads the blocks as new data objects; the next flush() commits them. */
  async write(chunks: readonly SandboxBlockChunk[], _context: SandboxBlockStoreContext): Promise<void> {
    const { generation } = this.#held("write()").manifest;
    const objects = this.#pack(chunks, generation + 1);
    try {
      await bounded(objects, this.#concurrency, ({ object, parts }) =>
        this.#send(new PutObjectCommand({ Bucket: this.#bucket, Key: this.#key(object.key), Body: Buffer.concat(parts) }), `write ${object.key}`),
      );
    } catch (error) {
      // Nothing of a failed write() may be committed later.
      await this.#abandon(objects.map(({ object }) => object));
      throw error;
    }
    this.#staged.push(...objects.map(({ object }) => object));
  }

  /**
   * Commits what write() uploaded: the manifest, naming the new objects and
   * dropping those no block lives in any more, is written last and only over
   * the manifest this attachment wrote (If-Match).
   */
  async flush(_context: SandboxBlockStoreContext): Promise<void> {
    const state = this.#held("flush()");
    if (this.#staged.length === 0) return;
    this.#lease!.check();
    const { manifest: next, index, dropped } = commit(state.manifest, this.#staged);
    let etag: string | undefined;
    try {
      etag = await this.#putManifest(next, state.etag);
    } catch (error) {
      // A manifest PUT whose answer was lost (a timeout) may have landed: if
      // the manifest there is this attachment's own, this one supersedes it
      // (it holds the same staged objects, and newer ones).
      if (!(error instanceof ManifestConflict)) throw error;
      const there = await this.#current();
      if (there === undefined || there.manifest.attachment !== next.attachment) throw error;
      etag = await this.#putManifest(next, there.etag);
    }
    this.#state = { manifest: next, etag, index };
    this.#staged = [];
    // After the commit, nothing names them: a crash here only leaves garbage.
    for (const object of dropped) this.#deleteLater(object);
  }

  /** Sends one request under this store's timeout; failures name the lane and what was done. */
  async #send<T>(command: Command, what: string): Promise<T> {
    try {
      // send() is overloaded per command type; the callers name the output type they asked for.
      const send = this.#client.send.bind(this.#client) as (command: Command, options: { abortSignal: AbortSignal }) => Promise<unknown>;
      return (await send(command, { abortSignal: AbortSignal.timeout(this.#timeoutMs) })) as T;
    } catch (error) {
      throw s3Error(error, `${this.lane}: ${what}`);
    }
  }

  #key(relative: string): string {
    return this.#prefix === "" ? relative : `${this.#prefix}/${relative}`;
  }

  #held(call: string): State {
    if (this.#lease === undefined || this.#state === undefined) {
      throw new Error(`${this.lane}: ${call} needs the lease, and this S3BlockStore is not attached (boot a sandbox with it)`);
    }
    return this.#state;
  }

  /** The committed state: the manifest (or an empty lane), checked against this boot's base and block size. */
  async #load(context: SandboxBlockStoreContext): Promise<State> {
    const there = await this.#current();
    const etag = there?.etag;
    const manifest = there?.manifest ?? { format: MANIFEST_FORMAT, base: context.base, blockSize: this.blockSize, generation: 0, holder: "", attachment: "", objects: [] };
    if (manifest.base !== context.base) {
      throw new Error(`${this.lane} holds blocks written against the base ${manifest.base}; this boot is on ${context.base}: blocks over another base would be a corrupt disk (use another keyPrefix for a lane on this base)`);
    }
    if (manifest.blockSize !== this.blockSize) {
      throw new Error(`${this.lane} holds ${manifest.blockSize}-byte blocks; this S3BlockStore has blockSize ${this.blockSize}`);
    }
    return { manifest, etag, index: indexOf(manifest.objects) };
  }

  /** manifest.json as it is on the server, or undefined for a new lane. */
  async #current(): Promise<{ manifest: Manifest; etag: string | undefined } | undefined> {
    try {
      const got = await this.#send<GetObjectCommandOutput>(new GetObjectCommand({ Bucket: this.#bucket, Key: this.#key("manifest.json") }), "read manifest.json");
      return { manifest: parseManifest(new TextDecoder().decode(await body(got)), this.lane), etag: got.ETag };
    } catch (error) {
      if (isS3Status(error, 404)) return undefined;
      throw error;
    }
  }

  /** Writes the manifest over `etag` (or creates it when there is none); a lost race is the lease's loss. */
  async #putManifest(manifest: Manifest, etag: string | undefined): Promise<string | undefined> {
    const input: PutObjectCommandInput = {
      Bucket: this.#bucket,
      Key: this.#key("manifest.json"),
      Body: JSON.stringify(manifest),
      ContentType: "application/json",
      ...(etag === undefined ? { IfNoneMatch: "*" } : { IfMatch: etag }),
    };
    try {
      const put = await this.#send<{ ETag?: string }>(new PutObjectCommand(input), "write manifest.json");
      return put.ETag;
    } catch (error) {
      if (isS3Status(error, 412) || isS3Status(error, 409)) {
        throw new ManifestConflict(`${this.lane}: manifest.json changed under this attachment (another holder took the lane after this one's lease expired): nothing more is committed from here`, { cause: error });
      }
      throw error;
    }
  }

  /** Splits chunks into data objects of at most objectSize bytes. */
  #pack(chunks: readonly SandboxBlockChunk[], generation: number): { object: DataObject; parts: Uint8Array[] }[] {
    const perObject = this.#objectSize / this.blockSize;
    const base = this.#state!.manifest.base.replace(/[^A-Za-z0-9._:-]/g, "_");
    const tag = randomUUID().slice(0, 8);
    const out: { object: DataObject; parts: Uint8Array[] }[] = [];
    let runs: [number, number][] = [];
    let parts: Uint8Array[] = [];
    let blocks = 0;
    const close = () => {
      if (blocks === 0) return;
      const key = `data/${base}/${String(generation).padStart(10, "0")}-${String(out.length).padStart(5, "0")}-${tag}`;
      out.push({ object: { key, runs }, parts });
      runs = [];
      parts = [];
      blocks = 0;
    };
    for (const { start, data } of chunks) {
      for (let at = 0; at < data.byteLength; ) {
        const take = Math.min(data.byteLength - at, (perObject - blocks) * this.blockSize);
        const block = Number(start) + at / this.blockSize;
        const last = runs.at(-1);
        if (last !== undefined && last[0] + last[1] === block) last[1] += take / this.blockSize;
        else runs.push([block, take / this.blockSize]);
        parts.push(data.subarray(at, at + take));
        blocks += take / this.blockSize;
        at += take;
        if (blocks === perObject) close();
      }
    }
    close();
    return out;
  }

  /** Deletes uploaded objects no manifest will name (a failed or abandoned write). */
  async #abandon(objects: readonly DataObject[]): Promise<void> {
    await Promise.allSettled(objects.map((object) => this.#delete(object)));
  }

  #deleteLater(object: DataObject): void {
    const done: Promise<void> = this.#delete(object)
      .catch(() => undefined) // garbage left behind costs storage, not consistency
      .finally(() => this.#deleting.delete(done));
    this.#deleting.add(done);
  }

  async #delete(object: DataObject): Promise<void> {
    await this.#send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#key(object.key) }), `delete ${object.key}`);
  }
}

/** manifest.json is not the one this attachment wrote last. */
class ManifestConflict extends Error {}

/**
 * The lease object: JSON { holder, token, ttlMs, released }. Taken with
 * If-None-Match: * (or If-Match over an expired or released one), renewed
 * every ttl/3 with If-Match, released with If-Match. Expiry is judged on the
 * server's clock (its Date header against the object's Last-Modified), so
 * clocks of the machines do not matter.
 */
class Lease {
  readonly #io: LeaseIo;
  readonly #body: string;
  readonly #ttlMs: number;
  #etag: string;
  /** Local time of the last successful take or renewal. */
  #renewedAt: number;
  #lost: Error | undefined;
  #timer: NodeJS.Timeout | undefined;
  #renewing: Promise<void> | undefined;

  private constructor(io: LeaseIo, body: string, ttlMs: number, etag: string) {
    this.#io = io;
    this.#body = body;
    this.#ttlMs = ttlMs;
    this.#etag = etag;
    this.#renewedAt = Date.now();
    this.#timer = setInterval(() => void this.#renew(), Math.max(250, Math.floor(ttlMs / 3)));
    this.#timer.unref(); // a running VM keeps the process alive, not the lease
  }

  static async take(store: LeaseIo, ttlMs: number, holder: string): Promise<Lease> {
    const body = JSON.stringify({ holder, token: randomUUID(), ttlMs, released: false });
    const put = (condition: Partial<PutObjectCommandInput>) =>
      store.send<{ ETag?: string }>(new PutObjectCommand({ Bucket: store.bucket, Key: store.key, Body: body, ContentType: "application/json", ...condition }), "take lease.json");
    let etag: string | undefined;
    try {
      etag = (await put({ IfNoneMatch: "*" })).ETag;
    } catch (error) {
      if (!isS3Status(error, 412) && !isS3Status(error, 409)) throw error;
      const current = await Lease.#read(store);
      if (current.live) throw inUse(store, current);
      try {
        etag = (await put({ IfMatch: current.etag })).ETag;
      } catch (raced) {
        if (!isS3Status(raced, 412) && !isS3Status(raced, 409)) throw raced;
        throw inUse(store, await Lease.#read(store));
      }
    }
    if (etag === undefined) throw new Error(`${store.lane}: the server gave no ETag for lease.json; conditional writes cannot work on it`);
    // A server that ignores If-None-Match would let anyone take the lease:
    // check that it refuses to create what exists, before relying on it.
    let honoured = false;
    try {
      etag = (await put({ IfNoneMatch: "*" })).ETag ?? etag;
    } catch (error) {
      if (!isS3Status(error, 412) && !isS3Status(error, 409)) throw error;
      honoured = true;
    }
    if (!honoured) {
      await store.send(new DeleteObjectCommand({ Bucket: store.bucket, Key: store.key }), "delete lease.json").catch(() => undefined);
      throw new Error(`${store.lane}: this S3 endpoint ignores If-None-Match on PUT, so a lease cannot keep two sandboxes off one lane; use a server with conditional writes (AWS S3, R2, MinIO, Ceph RGW, versitygw: docs/cow.md)`);
    }
    return new Lease(store, body, ttlMs, etag);
  }

  /** The lease object as it is, and whether it still holds on the server's clock. */
  static async #read(store: LeaseIo): Promise<{ etag: string; holder: string; live: boolean; ageMs: number; ttlMs: number }> {
    let serverNow: number | undefined;
    const command = new GetObjectCommand({ Bucket: store.bucket, Key: store.key });
    command.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        const date = (result.response as { headers?: Record<string, string> }).headers?.date;
        if (date !== undefined) serverNow = Date.parse(date);
        return result;
      },
      { step: "deserialize", name: "torkbotServerDate" },
    );
    const got = await store.send<GetObjectCommandOutput>(command, "read lease.json");
    const text = new TextDecoder().decode(await body(got));
    let lease: { holder?: unknown; ttlMs?: unknown; released?: unknown };
    try {
      lease = JSON.parse(text) as typeof lease;
    } catch {
      lease = {};
    }
    const holder = typeof lease.holder === "string" ? lease.holder : "an unknown holder";
    const ttlMs = typeof lease.ttlMs === "number" && lease.ttlMs > 0 ? lease.ttlMs : 30_000;
    const now = serverNow !== undefined && Number.isFinite(serverNow) ? serverNow : Date.now();
    const modified = got.LastModified?.getTime() ?? now;
    // Last-Modified has a resolution of one second: count the whole second.
    const ageMs = Math.max(0, now - modified - 1000);
    return { etag: got.ETag ?? "", holder, live: lease.released !== true && ageMs <= ttlMs, ageMs, ttlMs };
  }

  /** Throws when the lease may have passed to another holder: nothing may be committed then. */
  check(): void {
    if (this.#lost !== undefined) throw this.#lost;
    const age = Date.now() - this.#renewedAt;
    if (age > this.#ttlMs) {
      throw new Error(`${this.#io.lane}: the lease was last renewed ${age} ms ago (ttl ${this.#ttlMs} ms) and another holder may have it: nothing more is committed from here`);
    }
  }

  async #renew(): Promise<void> {
    if (this.#renewing !== undefined || this.#lost !== undefined) return;
    this.#renewing = (async () => {
      try {
        const put = await this.#io.send<{ ETag?: string }>(
          new PutObjectCommand({ Bucket: this.#io.bucket, Key: this.#io.key, Body: this.#body, ContentType: "application/json", IfMatch: this.#etag }),
          "renew lease.json",
        );
        if (put.ETag !== undefined) this.#etag = put.ETag;
        this.#renewedAt = Date.now();
      } catch (error) {
        if (isS3Status(error, 412) || isS3Status(error, 409)) {
          this.#lost = new Error(`${this.#io.lane}: the lease was taken by another holder (it had expired): nothing more is committed from here`, { cause: error });
        }
        // Anything else: try again at the next tick; check() fails once the ttl has passed.
      } finally {
        this.#renewing = undefined;
      }
    })();
    await this.#renewing;
  }

  /** Marks the lease released, so the next attachment need not wait for it to expire. */
  async release(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#renewing;
    if (this.#lost !== undefined) return;
    const released = JSON.stringify({ ...(JSON.parse(this.#body) as object), released: true });
    await this.#io.send(
      new PutObjectCommand({ Bucket: this.#io.bucket, Key: this.#io.key, Body: released, ContentType: "application/json", IfMatch: this.#etag }),
      "release lease.json",
    );
  }
}

function inUse(store: LeaseIo, lease: { holder: string; ageMs: number; ttlMs: number }): Error {
  const left = Math.max(0, lease.ttlMs - lease.ageMs);
  return codedError(
    ErrorCodes.storeInUse,
    `${store.lane} is attached by ${lease.holder} (lease renewed ${Math.round(lease.ageMs / 1000)} s ago; it expires in ${Math.ceil(left / 1000)} s unless renewed): close that sandbox first, or wait for the lease to expire if its machine died`,
  );
}

/** The manifest after committing `staged` over `manifest`: objects holding no live block are dropped. */
function commit(manifest: Manifest, staged: readonly DataObject[]): { manifest: Manifest; index: Map<number, Location>; dropped: DataObject[] } {
  const all = [...manifest.objects, ...staged];
  const index = indexOf(all);
  const live = new Set<DataObject>();
  for (const { object } of index.values()) live.add(object);
  const next: Manifest = { ...manifest, generation: manifest.generation + 1, objects: all.filter((object) => live.has(object)) };
  return { manifest: next, index, dropped: all.filter((object) => !live.has(object)) };
}

/** Block → location; a later object's copy of a block supersedes an earlier one's. */
function indexOf(objects: readonly DataObject[]): Map<number, Location> {
  const index = new Map<number, Location>();
  for (const object of objects) {
    let slot = 0;
    for (const [start, count] of object.runs) {
      for (let i = 0; i < count; i++) index.set(start + i, { object, slot: slot + i });
      slot += count;
    }
  }
  return index;
}

/** Parses manifest.json defensively: the bucket may hold anything. */
function parseManifest(text: string, lane: string): Manifest {
  const bad = (why: string) => new Error(`${lane}/manifest.json is not a lane manifest (${why}); refusing to guess its blocks`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw bad("not JSON");
  }
  const m = value as Partial<Record<keyof Manifest, unknown>> | null;
  if (typeof m !== "object" || m === null || m.format !== MANIFEST_FORMAT) throw bad(`format is not ${MANIFEST_FORMAT}`);
  if (typeof m.base !== "string" || !isCount(m.blockSize) || !Number.isSafeInteger(m.generation) || !Array.isArray(m.objects)) throw bad("fields missing");
  const objects = m.objects.map((object: unknown, i) => {
    const o = object as { key?: unknown; runs?: unknown } | null;
    if (typeof o?.key !== "string" || !o.key.startsWith("data/") || !Array.isArray(o.runs)) throw bad(`object ${i}`);
    for (const run of o.runs as unknown[]) {
      if (!Array.isArray(run) || run.length !== 2 || !Number.isSafeInteger(run[0]) || run[0] < 0 || !isCount(run[1])) throw bad(`object ${i} has a bad run`);
    }
    return { key: o.key, runs: o.runs as Run[] };
  });
  return { format: MANIFEST_FORMAT, base: m.base, blockSize: m.blockSize as number, generation: m.generation as number, holder: String(m.holder ?? ""), attachment: String(m.attachment ?? ""), objects };
}

function isCount(value: unknown): boolean {
  return Number.isSafeInteger(value) && (value as number) > 0;
}

/** Runs `work` on every item with at most `limit` in flight; results in item order. */
async function bounded<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < items.length && !failed) {
      const i = next++;
      try {
        results[i] = await work(items[i]!);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.min(limit, items.length) }, worker));
  const rejected = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (rejected !== undefined) throw rejected.reason;
  return results;
}

async function body(got: GetObjectCommandOutput): Promise<Uint8Array> {
  if (got.Body === undefined) return new Uint8Array(0);
  return got.Body.transformToByteArray();
}

function isS3Status(error: unknown, status: number): boolean {
  const cause = (error as { cause?: unknown } | null)?.cause ?? error;
  return (cause as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode === status;
}

/** An S3 failure as an Error that says what was being done; the SDK's error stays its cause. */
function s3Error(error: unknown, what: string): Error {
  const status = (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
  const name = (error as { name?: string } | null)?.name;
  const detail = name === "TimeoutError" || name === "AbortError" ? "no answer in time" : message(error);
  return new Error(`${what} failed: ${detail}${status === undefined ? "" : ` (HTTP ${status})`}`, { cause: error });
}

function message(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) return error.errors.map(message).join("; ");
  return error instanceof Error ? error.message || error.name : String(error);
}

function integer(value: number, name: string, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new RangeError(`S3BlockStore: ${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}
