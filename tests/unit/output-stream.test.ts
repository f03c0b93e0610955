// Spawn output streams: buffering, the backpressure rule, abandonment, end/failure.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { OutputStream, PAUSE_THRESHOLD_BYTES } from "../../src/output-stream.js";

const chunk = (bytes: number, fill = 1) => new Uint8Array(bytes).fill(fill);
const settledWithin = async (promise: Promise<unknown>, ms = 20) =>
  Promise.race([promise.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms))]);

describe("OutputStream", () => {
  test("a stream nobody reads buffers without limit and never pauses the process", () => {
    const stream = new OutputStream();
    for (let index = 0; index < 8; index += 1) {
      assert.equal(stream.push(chunk(PAUSE_THRESHOLD_BYTES)), undefined);
    }
  });

  test("while read, pushes past the threshold pause until the reader catches up", async () => {
    const stream = new OutputStream();
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
  });

  test("buffered chunks come out in order, then the end", async () => {
    const stream = new OutputStream();
    stream.push(chunk(1, 1));
    stream.push(chunk(1, 2));
    stream.end();
    stream.push(chunk(1, 3)); // after the end: dropped
    const seen: number[] = [];
    for await (const piece of stream) seen.push(piece[0] as number);
    assert.deepEqual(seen, [1, 2]);
  });

  test("a failure is delivered after the buffered chunks, once", async () => {
    const stream = new OutputStream();
    const lost = new Error("vmm exited");
    stream.push(chunk(1));
    stream.fail(lost);
    const reader = stream[Symbol.asyncIterator]();
    assert.equal((await reader.next()).done, false);
    await assert.rejects(reader.next(), lost);
    assert.equal((await reader.next()).done, true);
  });

  test("a read waiting when the process is lost rejects", async () => {
    const stream = new OutputStream();
    const pending = stream[Symbol.asyncIterator]().next();
    stream.fail(new Error("vmm exited"));
    await assert.rejects(pending, /vmm exited/);
  });

  test("leaving the loop early discards the rest and releases a paused process", async () => {
    const stream = new OutputStream();
    const reader = stream[Symbol.asyncIterator]();
    const first = reader.next();
    stream.push(chunk(1));
    await first;
    stream.push(chunk(PAUSE_THRESHOLD_BYTES));
    const paused = stream.push(chunk(1));
    assert.ok(paused);
    await reader.return?.();
    assert.equal(await settledWithin(paused), true);
    assert.equal(stream.push(chunk(PAUSE_THRESHOLD_BYTES * 2)), undefined);
    assert.equal((await reader.next()).done, true);
  });

  test("a stream can be iterated once", () => {
    const stream = new OutputStream();
    stream[Symbol.asyncIterator]();
    assert.throws(() => stream[Symbol.asyncIterator](), /already being read/);
  });
});
