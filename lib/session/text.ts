/**
 * Streaming helpers for the session pool's own generation loop: turning token pieces into text
 * with stop strings, and a queue that feeds an async iterator from a producer.
 * @internal
 */

/**
 * Decodes token pieces into whole UTF-8 characters and cuts the text at the first stop string.
 * Text that could still turn into a stop string is held back, so a stop string is never emitted;
 * this is the same contract as {@link Sequence.generate}.
 */
export class TextAssembler {
  readonly #stops: string[];
  readonly #holdback: number;
  readonly #decoder = new TextDecoder("utf-8");
  #pending = "";
  /** The text emitted so far. */
  text = "";

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
    this.#holdback = this.#stops.reduce((m, s) => Math.max(m, s.length - 1), 0);
  }

  /** Adds a token's bytes; returns the text that may be emitted now and whether a stop string was hit. */
  push(piece: Uint8Array): { out: string; stopped: boolean } {
    this.#pending += this.#decoder.decode(piece, { stream: true });
    let stopped = false;
    let hit = -1;
    for (const s of this.#stops) {
      const i = this.#pending.indexOf(s);
      if (i >= 0 && (hit < 0 || i < hit)) hit = i;
    }
    if (hit >= 0) {
      this.#pending = this.#pending.slice(0, hit);
      stopped = true;
    }
    const upTo = stopped ? this.#pending.length : Math.max(0, this.#pending.length - this.#holdback);
    const out = this.#pending.slice(0, upTo);
    this.#pending = stopped ? "" : this.#pending.slice(upTo);
    this.text += out;
    return { out, stopped };
  }

  /** Flushes what was held back (an incomplete character or a partial stop string). */
  end(): string {
    const out = this.#pending + this.#decoder.decode();
    this.#pending = "";
    this.text += out;
    return out;
  }
}

/** A single-consumer queue: the producer pushes, ends or fails; the consumer iterates. */
export class AsyncQueue<T> {
  readonly #items: T[] = [];
  #done = false;
  #error: unknown;
  #failed = false;
  #wake: (() => void) | undefined;

  push(item: T): void {
    this.#items.push(item);
    this.#notify();
  }

  end(): void {
    this.#done = true;
    this.#notify();
  }

  fail(err: unknown): void {
    this.#failed = true;
    this.#error = err;
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, void> {
    for (;;) {
      const item = this.#items.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (this.#failed) throw this.#error;
      if (this.#done) return;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }
}
