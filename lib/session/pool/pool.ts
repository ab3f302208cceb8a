/**
 * Many chat sessions on one context: one sequence each while they take turns (the context's
 * generation engine decodes their turns together, one batch per step), and idle sessions'
 * caches spilled to RAM or disk when there are more sessions than sequences.
 */
import { LlamemError, invalidArgument } from "../../errors.js";
import type { Context } from "../../context.js";
import { contextSide } from "../../internal/handles.js";
import type { Sequence } from "../../sequence.js";
import { decodeState } from "../../state.js";
import { readSession } from "../persist.js";
import { restoreOrForget, type Footprint } from "../runner.js";
import { ChatSession, checkFingerprint, withArchive, type LoadSessionOptions, type SessionOptions } from "../session.js";
import { commonPrefix } from "../render.js";
import { copyLongestPrefix } from "../cache-sync.js";
import { PoolSlot } from "./slot.js";
import { SpillStore } from "./spill.js";

/** A lease takes over a cached prefix shorter than this only when it is the sequence's whole cache. */
const MIN_REUSED_PREFIX = 16;

/** Options of {@link createPool}. */
export interface PoolOptions {
  /**
   * Where idle sessions' caches go when a session needs a sequence and none is free. States are
   * kept in RAM up to `memoryBytes` (default 1 GiB); beyond that, the least recently used are
   * written to files in `dir` (default: a new directory under the system's temp directory).
   */
  spill?: { memoryBytes?: number; dir?: string };
}

/** Figures of a pool. */
export interface PoolStats {
  sessions: number;
  /** Sessions whose cache is in a sequence, and the context's sequences. */
  resident: number;
  sequences: number;
  /** Spilled sessions by place, and the bytes of their states. */
  spilledMemory: number;
  spilledDisk: number;
  spilledBytes: number;
  /** Tokens and bytes of the resident sessions' KV cells. */
  kvTokens: number;
  kvBytes: number;
  /** Batched decodes run on the context since the pool began, and the tokens they held. */
  steps: number;
  batchedTokens: number;
  /** Summaries written and turns evicted, over all sessions. */
  summaries: number;
  turnsEvicted: number;
}

/**
 * Starts a pool on `context`, which should have been created with `sequences: N` for N sessions
 * to run at once (more sessions are spilled and restored in turn). The pool uses every sequence
 * of the context; do not run other work on them.
 */
export function createPool(context: Context, options: PoolOptions = {}): SessionPool {
  return new SessionPool(context, options);
}

/** Sessions sharing one context. Create it with {@link createPool}. */
export class SessionPool {
  /** The context the sessions run on. */
  readonly context: Context;
  readonly #slots = new Map<ChatSession, PoolSlot>();
  readonly #owners = new Map<Sequence, PoolSlot>();
  readonly #waiters: (() => void)[] = [];
  readonly #spilled: SpillStore;
  /** The engine's figures when the pool began. */
  readonly #start: { steps: number; batchedTokens: number };
  #clock = 0;
  #nextId = 0;
  #bytesPerCell: Promise<number> | undefined;

  /** @internal Use {@link createPool}. */
  constructor(context: Context, options: PoolOptions) {
    if (options === null || typeof options !== "object") invalidArgument("createPool(context, options): options must be an object");
    this.#start = { ...contextSide(context).engine.stats };
    this.context = context;
    this.#spilled = new SpillStore(options.spill);
  }

  /** Starts a session in the pool (it gets a sequence at its first turn). */
  async createSession(options: SessionOptions = {}): Promise<ChatSession> {
    if (options?.context !== undefined) invalidArgument("options.context does not apply to a pool's sessions");
    return this.#add(options);
  }

  /** Resumes a saved session in the pool; its cache is restored into a sequence at its next turn. */
  async loadSession(path: string, options: LoadSessionOptions = {}): Promise<ChatSession> {
    const { header, state } = await readSession(path);
    await checkFingerprint(this.context.model, header, path);
    const session = this.#add(withArchive(options, header));
    await session.restore(header, state);
    return session;
  }

  /**
   * @internal Lends a sequence for stateless work (a server's request without a conversation):
   * the free sequence whose cached tokens share the longest prefix with `prompt`, else an idle
   * session's (spilled first). It waits while every sequence is in use. The cells stay when the
   * lease ends, as a prompt cache the next lease or session reuses what it can of.
   */
  async lease(prompt: ArrayLike<number>, signal?: AbortSignal): Promise<{ readonly sequence: Sequence; release(): void }> {
    const slot = new PoolSlot(this, -1);
    slot.hint = prompt;
    const sequence = await this.acquire(slot, signal);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      slot.inTurn = false;
      slot.sequence = undefined;
      this.#owners.delete(sequence);
      this.#wake();
    };
    try {
      // Another idle sequence (a prompt cache, an idle session's) may hold more of the prompt: its cells are copied.
      const sources = this.context.sequences.map((other) => ({ sequence: other, busy: () => this.#owners.get(other)?.inTurn === true }));
      await copyLongestPrefix(sequence, prompt, sources);
    } catch (err) {
      release();
      throw err;
    }
    return { sequence, release };
  }

  /** Sequences no session or lease holds. */
  freeSequences(): number {
    return this.context.sequences.length - this.#owners.size;
  }

  /** Moves an idle session's cache out of its sequence now (to RAM, or disk past the budget). */
  async spill(session: ChatSession): Promise<void> {
    const slot = this.#slots.get(session);
    if (!slot) invalidArgument("spill(session): the session is not in this pool");
    if (slot.inTurn) throw new LlamemError("ERR_BUSY", "the session is in a turn; spill it when the turn ends");
    const seq = slot.sequence;
    if (!seq) return;
    slot.sequence = undefined;
    this.#owners.delete(seq);
    slot.pending = this.#spillOut(slot, seq);
    await slot.pending;
    this.#wake();
  }

  /** Sessions, residency, spilled bytes, KV use and batching figures. */
  async stats(): Promise<PoolStats> {
    const per = await this.#cellBytes();
    const engine = contextSide(this.context).engine.stats;
    const out: PoolStats = {
      sessions: this.#slots.size,
      resident: 0,
      sequences: this.context.info.sequences,
      spilledMemory: 0,
      spilledDisk: 0,
      spilledBytes: 0,
      kvTokens: 0,
      kvBytes: 0,
      steps: engine.steps - this.#start.steps,
      batchedTokens: engine.batchedTokens - this.#start.batchedTokens,
      summaries: 0,
      turnsEvicted: 0,
    };
    for (const [session, slot] of this.#slots) {
      const s = await session.stats();
      out.summaries += s.summaries;
      out.turnsEvicted += s.turnsEvicted;
      if (slot.sequence) {
        out.resident++;
        out.kvTokens += slot.sequence.tokens.length;
        out.kvBytes += slot.sequence.tokens.length * per;
      }
    }
    for (const s of this.#spilled.all()) {
      if (s.where === "memory") out.spilledMemory++;
      else out.spilledDisk++;
      out.spilledBytes += s.bytes;
    }
    return out;
  }

  /**
   * Disposes every session of the pool (turns in progress are aborted) and removes spill files.
   * The context stays open.
   */
  async dispose(): Promise<void> {
    await Promise.all([...this.#slots.keys()].map((s) => s.dispose()));
    await this.#spilled.dispose();
  }

  /** `await using pool = createPool(ctx)` disposes it at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  #add(options: SessionOptions): ChatSession {
    const slot = new PoolSlot(this, this.#nextId++);
    const session = new ChatSession(slot, options);
    this.#slots.set(session, slot);
    slot.onDispose = () => this.#remove(session, slot);
    return session;
  }

  async #remove(session: ChatSession, slot: PoolSlot): Promise<void> {
    this.#slots.delete(session);
    if (slot.inTurn) {
      // The turn still holds its sequence (its stream is suspended at a piece): freed at release().
      slot.removed = true;
      return;
    }
    await this.#free(slot);
  }

  /** Empties and frees a removed slot's sequence and drops its spilled state. */
  async #free(slot: PoolSlot): Promise<void> {
    const seq = slot.sequence;
    slot.sequence = undefined;
    if (seq) {
      this.#owners.delete(seq);
      if (!this.context.disposed) await seq.clear();
    }
    await this.#spilled.drop(slot);
    this.#wake();
  }

  /** @internal Gives `slot` a sequence with its cache, spilling the least recently used idle session if none is free. */
  async acquire(slot: PoolSlot, signal?: AbortSignal): Promise<Sequence> {
    slot.inTurn = true;
    try {
      // A failed spill was reported to the turn that caused it; this slot then starts from its history.
      await slot.pending.catch(() => undefined);
      while (!slot.sequence) {
        if (signal?.aborted || slot.removed) throw new LlamemError("ERR_ABORTED", "the turn was aborted while waiting for a sequence");
        const free = this.#freeFor(slot.hint);
        let victim: PoolSlot | undefined;
        for (const other of this.#slots.values()) {
          if (other.sequence && !other.inTurn && (!victim || other.lastUsed < victim.lastUsed)) victim = other;
        }
        const seq = free ?? victim?.sequence;
        if (!seq) {
          await new Promise<void>((resolve) => {
            const wake = () => {
              signal?.removeEventListener("abort", wake);
              resolve();
            };
            this.#waiters.push(wake);
            signal?.addEventListener("abort", wake, { once: true });
          });
          continue;
        }
        // Bind before any await so no other turn takes the same sequence.
        this.#owners.set(seq, slot);
        slot.sequence = seq;
        if (!free && victim) {
          victim.sequence = undefined;
          victim.pending = this.#spillOut(victim, seq);
          await victim.pending;
        }
      }
      if (this.#spilled.has(slot)) await this.#restoreIn(slot, slot.sequence);
      return slot.sequence;
    } catch (err) {
      this.release(slot);
      throw err;
    }
  }

  /**
   * The free sequence for a slot: with a prompt, the one sharing the longest prefix of it, if
   * that prefix is worth the cache it cuts (at least {@link MIN_REUSED_PREFIX} tokens, or the
   * whole cache), or an empty one the lease copies that prefix into; otherwise (and for a session,
   * which brings its own cache) the emptiest, so the prompt caches stay for requests that share them.
   */
  #freeFor(hint: ArrayLike<number> | undefined): Sequence | undefined {
    const free = this.context.sequences.filter((s) => !this.#owners.has(s));
    let best: Sequence | undefined;
    let bestShared = 0;
    for (const seq of hint ? free : []) {
      const shared = commonPrefix(seq.tokens, hint as ArrayLike<number>);
      if (shared > bestShared && (shared >= MIN_REUSED_PREFIX || shared === seq.tokens.length)) {
        best = seq;
        bestShared = shared;
      }
    }
    const emptiest = free.reduce<Sequence | undefined>((a, s) => (a === undefined || s.tokens.length < a.tokens.length ? s : a), undefined);
    // An empty sequence gets the prefix copied instead (lease() does it: milliseconds), so the
    // cache stays whole for the requests after: a burst sharing a system prompt evaluates it once.
    if (best && emptiest && emptiest !== best && emptiest.tokens.length === 0) return emptiest;
    return best ?? emptiest;
  }

  /** @internal Ends a turn: the slot becomes the most recently used. */
  release(slot: PoolSlot): void {
    slot.inTurn = false;
    slot.lastUsed = ++this.#clock;
    if (slot.removed) {
      // Its session was disposed during the turn. A failure here (the context disposed) leaves nothing to free.
      void this.#free(slot).catch(() => undefined);
      return;
    }
    this.#wake();
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Saves `seq`'s cache into the slot's spilled state and empties the sequence. */
  async #spillOut(slot: PoolSlot, seq: Sequence): Promise<void> {
    const tokens = seq.tokens.length;
    const state = await seq.saveState();
    await seq.clear();
    await this.#spilled.put(slot, state, tokens);
  }

  /** Restores a spilled (or loaded) state; one this context cannot take is dropped, and the next prompt evaluates the history. */
  async #restoreIn(slot: PoolSlot, seq: Sequence): Promise<void> {
    const state = await this.#spilled.take(slot);
    if (state) await restoreOrForget(() => seq.restoreState(state));
  }

  /** The bytes of one KV cell of the context. */
  #cellBytes(): Promise<number> {
    this.#bytesPerCell ??= this.context.memory().then((m) => (m.cells > 0 ? m.kv / m.cells : 0));
    return this.#bytesPerCell;
  }

  /** @internal A slot's footprint for its session's stats. */
  async footprint(slot: PoolSlot): Promise<Footprint> {
    const per = await this.#cellBytes();
    if (slot.sequence) return { tokens: slot.sequence.tokens.length, bytes: Math.round(slot.sequence.tokens.length * per), spilled: undefined };
    const s = this.#spilled.info(slot);
    return s ? { tokens: s.tokens, bytes: s.bytes, spilled: s.where } : { tokens: 0, bytes: 0, spilled: undefined };
  }

  /** @internal The cache of a slot as a state buffer, from its sequence or its spilled state. */
  async saveState(slot: PoolSlot): Promise<Buffer> {
    if (slot.sequence) return slot.sequence.saveState();
    const spilled = await this.#spilled.peek(slot);
    if (spilled) return spilled;
    const seq = await this.acquire(slot);
    try {
      return await seq.saveState();
    } finally {
      this.release(slot);
    }
  }

  /** @internal Takes a saved state; it is restored into a sequence at the slot's next turn. */
  async restoreState(slot: PoolSlot, state: Buffer): Promise<void> {
    const { tokens } = decodeState(state);
    if (slot.sequence) return slot.sequence.restoreState(state);
    await this.#spilled.put(slot, state, tokens.length);
  }
}
