/**
 * A pool session's place: the sequence it holds while resident, else its state in the pool's
 * spill store. The slot is the session's runner; the pool decides who gets which sequence.
 * @internal
 */
import type { Context } from "../../context.js";
import type { Sequence } from "../../sequence.js";
import type { Footprint, SessionRunner } from "../runner.js";
import type { SessionPool } from "./pool.js";

export class PoolSlot implements SessionRunner {
  /** The sequence holding the cache while resident. */
  sequence: Sequence | undefined;
  inTurn = false;
  /** The session was disposed during a turn: the pool frees the slot when the turn ends. */
  removed = false;
  /** The pool's clock at the end of the slot's last turn: the least recently used is spilled first. */
  lastUsed = 0;
  /** A spill of this slot's cache in progress; its next turn waits for it. */
  pending: Promise<void> = Promise.resolve();
  onDispose: () => Promise<void> = async () => {};
  /** A lease's prompt: the pool gives it the free sequence sharing most of it. */
  hint: ArrayLike<number> | undefined;

  constructor(
    readonly pool: SessionPool,
    readonly id: number,
  ) {}

  get context(): Context {
    return this.pool.context;
  }

  acquire(signal?: AbortSignal): Promise<Sequence> {
    return this.pool.acquire(this, signal);
  }

  release(): void {
    this.pool.release(this);
  }

  saveState(): Promise<Buffer> {
    return this.pool.saveState(this);
  }

  restoreState(state: Buffer): Promise<void> {
    return this.pool.restoreState(this, state);
  }

  footprint(): Promise<Footprint> {
    return this.pool.footprint(this);
  }

  dispose(): Promise<void> {
    return this.onDispose();
  }
}
