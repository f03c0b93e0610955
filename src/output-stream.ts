// One output stream of a spawned process (stdout or stderr): an async
// iterable of the raw chunks the native side delivers, with backpressure.
//
// The rule: a stream pauses the process only while someone is reading it.
//  - Before the first `next()` (no `for await` started yet) chunks are
//    buffered without limit and never pause the process, so a caller that
//    reads neither stream, or reads one to the end before the other, still
//    sees `exit` settle. The cost is memory for the output nobody reads.
//  - While a reader is iterating, `push` returns a promise whenever the
//    unread bytes exceed PAUSE_THRESHOLD_BYTES; the native side waits for it
//    before delivering more output, so the process blocks on its pipe until
//    the reader has caught up (back to the threshold or below).
//  - Leaving the loop early (`break`, `return`, a throw: the iterator's
//    `return()`) abandons the stream: its buffer is dropped and the rest of
//    its output is discarded, never pausing the process again.
// A stream can be iterated once.

export const PAUSE_THRESHOLD_BYTES = 1024 * 1024;

type Outcome = { readonly failed: false } | { readonly failed: true; readonly error: unknown };

interface PendingRead {
  resolve(result: IteratorResult<Uint8Array>): void;
  reject(error: unknown): void;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

export class OutputStream implements AsyncIterable<Uint8Array> {
  readonly #chunks: Uint8Array[] = [];
  #unreadBytes = 0;
  #reader: "none" | "reading" | "abandoned" = "none";
  #iterated = false;
  #outcome: Outcome | undefined;
  readonly #pendingReads: PendingRead[] = [];
  readonly #pausedWriters: (() => void)[] = [];

  /** Delivers one chunk; a returned promise means "pause until it resolves". */
  push(chunk: Uint8Array): Promise<void> | undefined {
    if (this.#reader === "abandoned" || this.#outcome !== undefined) return undefined;
    const read = this.#pendingReads.shift();
    if (read !== undefined) {
      read.resolve({ done: false, value: chunk });
      return undefined;
    }
    this.#chunks.push(chunk);
    this.#unreadBytes += chunk.byteLength;
    if (this.#reader !== "reading" || this.#unreadBytes <= PAUSE_THRESHOLD_BYTES) return undefined;
    return new Promise((resolve) => this.#pausedWriters.push(resolve));
  }

  /** The process exited: readers get the buffered chunks, then the end. */
  end(): void {
    this.#settle({ failed: false });
  }

  /** The process was lost: readers get the buffered chunks, then `error` (once). */
  fail(error: unknown): void {
    this.#settle({ failed: true, error });
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    if (this.#iterated) throw new TypeError("this process output stream is already being read; iterate it once");
    this.#iterated = true;
    return {
      next: () => this.#next(),
      return: async () => {
        this.#abandon();
        return DONE;
      },
    };
  }

  #next(): Promise<IteratorResult<Uint8Array>> {
    if (this.#reader === "none") this.#reader = "reading";
    const chunk = this.#chunks.shift();
    if (chunk !== undefined) {
      this.#unreadBytes -= chunk.byteLength;
      if (this.#unreadBytes <= PAUSE_THRESHOLD_BYTES) this.#resumeWriters();
      return Promise.resolve({ done: false, value: chunk });
    }
    const outcome = this.#outcome;
    if (this.#reader === "abandoned" || outcome?.failed === false) return Promise.resolve(DONE);
    if (outcome?.failed === true) {
      this.#outcome = { failed: false };
      return Promise.reject(outcome.error);
    }
    return new Promise((resolve, reject) => this.#pendingReads.push({ resolve, reject }));
  }

  #abandon(): void {
    this.#reader = "abandoned";
    this.#chunks.length = 0;
    this.#unreadBytes = 0;
    this.#resumeWriters();
    for (const read of this.#pendingReads.splice(0)) read.resolve(DONE);
  }

  #settle(outcome: Outcome): void {
    if (this.#outcome !== undefined) return;
    this.#outcome = outcome;
    this.#resumeWriters();
    // Reads only wait when the buffer is empty, so they get the outcome now.
    const reads = this.#pendingReads.splice(0);
    if (reads.length > 0 && outcome.failed) this.#outcome = { failed: false };
    for (const [index, read] of reads.entries()) {
      if (outcome.failed && index === 0) read.reject(outcome.error);
      else read.resolve(DONE);
    }
  }

  #resumeWriters(): void {
    for (const resume of this.#pausedWriters.splice(0)) resume();
  }
}
