/**
 * Where a session's KV cache lives and how it generates: the {@link SessionRunner} interface,
 * and the runner of a session on a sequence of its own. (A pool's slot is the other runner.)
 * @internal
 */
import type { Context } from "../context.js";
import { LlamemError } from "../errors.js";
import type { Sequence } from "../sequence.js";

/** Tokens and bytes a session's cache takes, and where it is while a pool has it spilled. */
export interface Footprint {
  readonly tokens: number;
  readonly bytes: number;
  readonly spilled: "memory" | "disk" | undefined;
}

/** Where a session's KV cache lives: its own sequence, or a slot of a pool. */
export interface SessionRunner {
  /**
   * The context whose sequence holds the cache. The session takes the model, the sequence's
   * size and whether its cache can shift from it, and shares cells with the sessions on it.
   */
  readonly context: Context;
  /** The sequence holding the session's cache, undefined while spilled. */
  readonly sequence: Sequence | undefined;
  /** Makes the cache resident (restoring a spilled state) for a turn; ERR_ABORTED if `signal` aborts while it waits. */
  acquire(signal?: AbortSignal): Promise<Sequence>;
  /** Ends the turn begun by {@link acquire}. */
  release(): void;
  saveState(): Promise<Buffer>;
  restoreState(state: Buffer): Promise<void>;
  footprint(): Promise<Footprint>;
  dispose(): Promise<void>;
}

/** A session on a sequence of its own. */
export class SequenceRunner implements SessionRunner {
  readonly context: Context;

  constructor(readonly sequence: Sequence) {
    this.context = sequence.context;
  }

  async acquire(): Promise<Sequence> {
    if (this.context.disposed) throw new LlamemError("ERR_DISPOSED", "the session's context was disposed");
    return this.sequence;
  }

  release(): void {}

  saveState(): Promise<Buffer> {
    return this.sequence.saveState();
  }

  restoreState(state: Buffer): Promise<void> {
    return this.sequence.restoreState(state);
  }

  /** The sequence's tokens, and their share of the context's KV bytes (bytes per cell times tokens). */
  async footprint(): Promise<Footprint> {
    const tokens = this.sequence.tokens.length;
    const m = await this.context.memory();
    return { tokens, bytes: m.cells > 0 ? Math.round((tokens * m.kv) / m.cells) : 0, spilled: undefined };
  }

  async dispose(): Promise<void> {}
}

/**
 * Restores a saved KV state; false when it cannot go into this context (a state restores only
 * into a context of the layout it was saved from: sequences, kvUnified, KV types) or does not
 * fit it. The session then resumes from its history alone.
 */
export async function restoreOrForget(restore: () => Promise<void>): Promise<boolean> {
  try {
    await restore();
    return true;
  } catch (err) {
    if (err instanceof LlamemError && (err.code === "ERR_STATE_MISMATCH" || err.code === "ERR_CONTEXT_FULL")) return false;
    throw err;
  }
}
