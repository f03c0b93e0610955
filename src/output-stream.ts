// One output stream of a spawned process (stdout or stderr): an async
// iterable of the raw chunks the native side delivers, with 0.6.0's
// semantics and bounded memory.
//
// As in 0.6.0 the chunks wait in one queue that every iterator reads from:
// the stream can be iterated again (a new loop goes on where the last one
// stopped), leaving a loop early (`break`) discards nothing, and after a
// lost process every read that finds the queue empty rejects with the error.
//
// Memory and backpressure:
//  - While a loop is reading (an iterator has called next() and has not
//    been left through return(), which `for await` calls on break, return
//    and throw), `push` returns a promise whenever the unread bytes exceed
//    PAUSE_THRESHOLD_BYTES; the native side waits for it before delivering
//    more output, so the process blocks on its pipe until the reader has
//    caught up. A slow reader loses nothing.
//  - Otherwise (nobody reads yet, or every loop was left) nothing pauses
//    the process, so `exit` settles whether or not anyone reads, as in
//    0.6.0. Unread output is kept up to MAX_UNREAD_BYTES per stream; past
//    it, later chunks are dropped and a process warning says so once.
//    Pausing instead would hold the process on its pipe, and a caller that
//    awaits `exit` before reading (which 0.6.0 allowed) would wait for ever;
//    keeping everything would let one chatty command take the host's memory.
// An iterator that is neither read to the end nor left with return() counts
// as reading: it holds the process once 1 MiB is unread.

export const PAUSE_THRESHOLD_BYTES = 1024 * 1024;
/** Unread output kept per stream while nobody reads. */
export const MAX_UNREAD_BYTES = 16 * 1024 * 1024;

type Outcome = { readonly failed: false } | { readonly failed: true; readonly error: unknown };

interface PendingRead {
  resolve(result: IteratorResult<Uint8Array>): void;
  reject(error: unknown): void;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

export class OutputStream implements AsyncIterable<Uint8Array> {
  readonly #name: string;
  readonly #chunks: Uint8Array[] = [];
  #unreadBytes = 0;
  #droppedBytes = 0;
  /** Iterators between their first next() and their return(). */
  #readers = 0;
  #outcome: Outcome | undefined;
  readonly #pendingReads: PendingRead[] = [];
  readonly #pausedWriters: (() => void)[] = [];

  /** `name` ("stdout", "stderr") is for the warning about dropped output. */
  constructor(name: string) {
    this.#name = name;
  }

  /** Delivers one chunk; a returned promise means "pause until it resolves". */
  push(chunk: Uint8Array): Promise<void> | undefined {
    if (this.#outcome !== undefined) return undefined;
    const read = this.#pendingReads.shift();
    if (read !== undefined) {
      read.resolve({ done: false, value: chunk });
      return undefined;
    }
    if (this.#readers === 0 && this.#unreadBytes + chunk.byteLength > MAX_UNREAD_BYTES) {
      if (this.#droppedBytes === 0) {
        process.emitWarning(
          `sandbox spawn: more than ${MAX_UNREAD_BYTES} bytes of ${this.#name} were not read; later output is dropped until it is`,
          { code: "SANDBOX_OUTPUT_DROPPED" },
        );
      }
      this.#droppedBytes += chunk.byteLength;
      return undefined;
    }
    this.#chunks.push(chunk);
    this.#unreadBytes += chunk.byteLength;
    if (this.#readers === 0 || this.#unreadBytes <= PAUSE_THRESHOLD_BYTES) return undefined;
    return new Promise((resolve) => this.#pausedWriters.push(resolve));
  }

  /** The process exited: readers get the buffered chunks, then the end. */
  end(): void {
    this.#settle({ failed: false });
  }

  /** The process was lost: readers get the buffered chunks, then `error`. */
  fail(error: unknown): void {
    this.#settle({ failed: true, error });
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    let reading = false;
    const leave = () => {
      if (!reading) return;
      reading = false;
      this.#readers -= 1;
      if (this.#readers === 0) this.#resumeWriters();
    };
    return {
      next: () => {
        if (!reading && this.#outcome === undefined) {
          reading = true;
          this.#readers += 1;
        }
        const result = this.#next();
        // A loop that reached the end (or the error) no longer reads.
        result.then((step) => step.done && leave(), leave);
        return result;
      },
      return: async () => {
        leave();
        return DONE;
      },
    };
  }

  #next(): Promise<IteratorResult<Uint8Array>> {
    const chunk = this.#chunks.shift();
    if (chunk !== undefined) {
      this.#unreadBytes -= chunk.byteLength;
      if (this.#unreadBytes <= PAUSE_THRESHOLD_BYTES) this.#resumeWriters();
      return Promise.resolve({ done: false, value: chunk });
    }
    const outcome = this.#outcome;
    if (outcome?.failed === false) return Promise.resolve(DONE);
    if (outcome?.failed === true) return Promise.reject(outcome.error);
    return new Promise((resolve, reject) => this.#pendingReads.push({ resolve, reject }));
  }

  #settle(outcome: Outcome): void {
    if (this.#outcome !== undefined) return;
    this.#outcome = outcome;
    this.#resumeWriters();
    // Reads only wait when the buffer is empty, so they get the outcome now.
    for (const read of this.#pendingReads.splice(0)) {
      if (outcome.failed) read.reject(outcome.error);
      else read.resolve(DONE);
    }
  }

  #resumeWriters(): void {
    for (const resume of this.#pausedWriters.splice(0)) resume();
  }
}
