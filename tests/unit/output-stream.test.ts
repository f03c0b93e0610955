// Spawn output streams: 0.6.0's queue semantics (iterate again, break
// discards nothing, a failure on every empty read), the backpressure rule
// and the bound on unread output.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { MAX_UNREAD_BYTES, OutputStream, PAUSE_THRESHOLD_BYTES } from "../../src/output-stream.js";

const chunk = (bytes: number, fill = 1) => new Uint8Array(bytes).fill(fill);
const settledWithin = async (promise: Promise<unknown>, ms = 20) =>
  Promise.race([promise.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms))]);

async function drain(stream: AsyncIterable<Uint8Array>): Promise<number> {
  let bytes = 0;
  for await (const piece of stream) bytes += piece.byteLength;
  return bytes;
}

describe("OutputStream", () => {
  test("a stream nobody reads never pauses the process and keeps at most MAX_UNREAD_BYTES", async () => {
    const stream = new OutputStream("stdout");
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on("warning", onWarning);
    try {
      for (let index = 0; index < MAX_UNREAD_BYTES / PAUSE_THRESHOLD_BYTES + 8; index += 1) {
        assert.equal(stream.push(chunk(PAUSE_THRESHOLD_BYTES)), undefined);
      }
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off("warning", onWarning);
    }
    stream.end();
    assert.equal(await drain(stream), MAX_UNREAD_BYTES, "the first 16 MiB are kept, the rest dropped");
    assert.equal(warnings.length, 1, "one warning");
    assert.match(warnings[0]?.message ?? "", /bytes of stdout were not read/);
  });

  test("while a loop reads, pushes past the threshold pause until the reader catches up", async () => {
    const stream = new OutputStream("stdout");
    const reader = stream[Symbol.asyncIterator]();
    const first = reader.next(); // reading has started; this read is pending
    assert.equal(stream.push(chunk(10)), undefined, "delivered straight to the waiting read");
    assert.equal((await first).value?.length, 10);

    assert.equal(stream.push(chunk(PAUSE_THRESHOLD_BYTES)), undefined, "at the threshold: no pause");
    const paused = stream.push(chunk(1));
    assert.ok(paused instanceof Promise, "over the threshold: pause");
    assert.equal(await settledWithin(paused), false, "stays paused while nothing is read");
    await reader.next(); // drains the big chunk: back under the threshold
    assert.equal(await settledWithin(paused), true);
    // A reader slower than the process loses nothing: it is paused instead.
    for (let index = 0; index < MAX_UNREAD_BYTES / PAUSE_THRESHOLD_BYTES + 8; index += 1) {
      const pause = stream.push(chunk(PAUSE_THRESHOLD_BYTES));
      if (pause) {
        await reader.next();
        await pause;
      }
    }
    stream.end();
    let rest = 0;
    for (let step = await reader.next(); !step.done; step = await reader.next()) rest += step.value.byteLength;
    assert.ok(rest > 0);
  });

  test("break discards nothing and releases a paused process; a new loop reads on", async () => {
    const stream = new OutputStream("stdout");
    stream.push(chunk(1, 1));
    let seen = 0;
    for await (const piece of stream) {
      seen = piece[0] as number;
      const paused = [stream.push(chunk(PAUSE_THRESHOLD_BYTES, 2)), stream.push(chunk(1, 3))];
      assert.ok(paused[1] instanceof Promise, "read by this loop: over the threshold pauses");
      break; // for await calls return(): nobody reads any more
    }
    assert.equal(seen, 1);
    const left: number[] = [];
    assert.equal(stream.push(chunk(PAUSE_THRESHOLD_BYTES, 4)), undefined, "after break nothing pauses");
    stream.end();
    for await (const piece of stream) left.push(piece[0] as number);
    assert.deepEqual(left, [2, 3, 4]);
  });

  test("buffered chunks come out in order, then the end", async () => {
    const stream = new OutputStream("stdout");
    stream.push(chunk(1, 1));
    stream.push(chunk(1, 2));
    stream.end();
    stream.push(chunk(1, 3)); // after the end: dropped
    const seen: number[] = [];
    for await (const piece of stream) seen.push(piece[0] as number);
    assert.deepEqual(seen, [1, 2]);
  });

  test("a failure comes after the buffered chunks, and to every later read, as in 0.6.0", async () => {
    const stream = new OutputStream("stdout");
    const lost = new Error("vmm exited");
    stream.push(chunk(1));
    stream.fail(lost);
    const reader = stream[Symbol.asyncIterator]();
    assert.equal((await reader.next()).done, false);
    await assert.rejects(reader.next(), lost);
    await assert.rejects(reader.next(), lost);
    await assert.rejects(stream[Symbol.asyncIterator]().next(), lost);
  });

  test("reads waiting when the process is lost reject", async () => {
    const stream = new OutputStream("stdout");
    const pending = [stream[Symbol.asyncIterator]().next(), stream[Symbol.asyncIterator]().next()];
    stream.fail(new Error("vmm exited"));
    for (const read of pending) await assert.rejects(read, /vmm exited/);
  });
});
