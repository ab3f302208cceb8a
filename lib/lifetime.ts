/**
 * The lifetime of an object that owns native memory: use after dispose throws ERR_DISPOSED,
 * and dispose waits for the operations still in flight before freeing anything.
 * @internal
 */
import { LlamemError, fromNative } from "./errors.js";

export class Lifetime {
  #disposed = false;
  readonly #inFlight = new Set<Promise<unknown>>();
  readonly #listeners: (() => void)[] = [];

  constructor(private readonly what: string) {}

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Throws ERR_DISPOSED once dispose has begun. */
  check(): void {
    if (this.#disposed) throw new LlamemError("ERR_DISPOSED", `the ${this.what} was disposed; create a new one`);
  }

  /** Runs a native operation, tracked so dispose can wait for it; errors become LlamemErrors. */
  async run<T>(op: () => Promise<T>): Promise<T> {
    this.check();
    let promise: Promise<T>;
    try {
      promise = op();
    } catch (err) {
      throw fromNative(err);
    }
    this.#inFlight.add(promise);
    try {
      return await promise;
    } catch (err) {
      throw fromNative(err);
    } finally {
      this.#inFlight.delete(promise);
    }
  }

  /** Registers a callback run once, after the object is freed. */
  onDispose(fn: () => void): void {
    this.#listeners.push(fn);
  }

  /**
   * Marks the object disposed (new calls throw), calls `abort` so work in flight ends soon,
   * waits for it, then calls `free`.
   */
  async dispose(free: () => void | Promise<void>, abort?: () => void): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    abort?.();
    await Promise.allSettled([...this.#inFlight]);
    try {
      await free();
    } catch (err) {
      throw fromNative(err);
    } finally {
      for (const fn of this.#listeners.splice(0)) fn();
    }
  }
}
