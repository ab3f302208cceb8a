/**
 * Many chat sessions on one context: one sequence each, their pending tokens decoded together
 * (one evalBatch per step, sessions joining and leaving between steps), and idle sessions'
 * caches spilled to RAM or disk when there are more sessions than sequences.
 */
import { mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LlamemError, fromNative, invalidArgument } from "../errors.js";
import type { Context } from "../context.js";
import type { Model } from "../model.js";
import type { NativeBatchEntry, NativeBatchResult } from "../native.js";
import { Sampler } from "../sampler.js";
import type { GenerateOptions, GenerationResult, Sequence, StopReason } from "../sequence.js";
import { decodeState } from "../state.js";
import { readSession } from "./persist.js";
import { commonPrefix } from "./render.js";
import { ChatSession, checkFingerprint, restoreOrForget, withArchive, type LoadSessionOptions, type SessionOptions, type SessionRunner } from "./session.js";
import { AsyncQueue, TextAssembler } from "./text.js";

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
  /** Batched decodes run, and the tokens they held. */
  steps: number;
  batchedTokens: number;
  /** Summaries written and turns evicted, over all sessions. */
  summaries: number;
  turnsEvicted: number;
}

/** A spilled state: in RAM, or in a file. */
type Spilled = { readonly memory: Buffer; readonly tokens: number } | { readonly path: string; readonly bytes: number; readonly tokens: number };

/** One generation in the batch loop. */
interface Job {
  readonly seq: Sequence;
  readonly prompt: Int32Array;
  readonly promptLength: number;
  readonly options: GenerateOptions;
  readonly maxTokens: number;
  readonly sampler: Sampler | undefined;
  readonly release: () => void;
  readonly text: TextAssembler;
  readonly queue: AsyncQueue<string>;
  readonly t0: number;
  /** Prompt tokens evaluated so far; the next sampled token to feed back once the prompt is done. */
  offset: number;
  next: number | undefined;
  generated: number;
  promptMs: number;
  firstMs: number;
  genStart: number;
  cancelled: boolean;
  result: GenerationResult | undefined;
  settle: () => void;
  readonly settled: Promise<void>;
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
  readonly #jobs: Job[] = [];
  readonly #waiters: (() => void)[] = [];
  readonly #memoryBytes: number;
  readonly #dir: string | undefined;
  #tempDir: Promise<string> | undefined;
  #running = false;
  #clock = 0;
  #nextId = 0;
  #bytesPerCell: Promise<number> | undefined;
  #stepCount = 0;
  #batchedTokens = 0;

  /** @internal Use {@link createPool}. */
  constructor(context: Context, options: PoolOptions) {
    const memoryBytes = options.spill?.memoryBytes ?? 1024 ** 3;
    if (!(memoryBytes >= 0)) invalidArgument("spill.memoryBytes must be a non-negative number");
    this.context = context;
    this.#memoryBytes = memoryBytes;
    this.#dir = options.spill?.dir;
  }

  /** Starts a session in the pool (it gets a sequence at its first turn). */
  async createSession(options: SessionOptions = {}): Promise<ChatSession> {
    if (options.context !== undefined) invalidArgument("options.context does not apply to a pool's sessions");
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
    const out: PoolStats = {
      sessions: this.#slots.size,
      resident: 0,
      sequences: this.context.info.sequences,
      spilledMemory: 0,
      spilledDisk: 0,
      spilledBytes: 0,
      kvTokens: 0,
      kvBytes: 0,
      steps: this.#stepCount,
      batchedTokens: this.#batchedTokens,
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
      } else if (slot.spilled) {
        if ("memory" in slot.spilled) out.spilledMemory++;
        else out.spilledDisk++;
        out.spilledBytes += spilledBytes(slot.spilled);
      }
    }
    return out;
  }

  /** Disposes every session of the pool and removes spill files. The context stays open. */
  async dispose(): Promise<void> {
    await Promise.all([...this.#slots.keys()].map((s) => s.dispose()));
    if (this.#tempDir) await rm(await this.#tempDir, { recursive: true, force: true });
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
    const seq = slot.sequence;
    slot.sequence = undefined;
    if (seq) {
      this.#owners.delete(seq);
      if (!this.context.disposed) await seq.clear();
    }
    const spilled = slot.spilled;
    slot.spilled = undefined;
    if (spilled && "path" in spilled) await unlink(spilled.path).catch(() => undefined);
    this.#wake();
  }

  /** @internal Gives `slot` a sequence with its cache, spilling the least recently used idle session if none is free. */
  async acquire(slot: PoolSlot): Promise<Sequence> {
    slot.inTurn = true;
    try {
      // A failed spill was reported to the turn that caused it; this slot then starts from its history.
      await slot.pending.catch(() => undefined);
      while (!slot.sequence) {
        const free = this.context.sequences.find((s) => !this.#owners.has(s));
        let victim: PoolSlot | undefined;
        for (const other of this.#slots.values()) {
          if (other.sequence && !other.inTurn && (!victim || other.lastUsed < victim.lastUsed)) victim = other;
        }
        const seq = free ?? victim?.sequence;
        if (!seq) {
          await new Promise<void>((resolve) => this.#waiters.push(resolve));
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
      if (slot.spilled) await this.#restoreIn(slot, slot.sequence);
      return slot.sequence;
    } catch (err) {
      this.release(slot);
      throw err;
    }
  }

  /** @internal Ends a turn: the slot becomes the most recently used. */
  release(slot: PoolSlot): void {
    slot.inTurn = false;
    slot.lastUsed = ++this.#clock;
    this.#wake();
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Saves `seq`'s cache into the slot's spilled state and empties the sequence. */
  async #spillOut(slot: PoolSlot, seq: Sequence): Promise<void> {
    const tokens = seq.tokens.length;
    const memory = await seq.saveState();
    await seq.clear();
    slot.spilled = { memory, tokens };
    await this.#enforceBudget();
  }

  /** Writes the least recently used in-RAM states to disk until the rest fit the budget. */
  async #enforceBudget(): Promise<void> {
    const inMemory = [...this.#slots.values()].filter((s) => s.spilled && "memory" in s.spilled).sort((a, b) => a.lastUsed - b.lastUsed);
    let total = inMemory.reduce((n, s) => n + spilledBytes(s.spilled as Spilled), 0);
    for (const slot of inMemory) {
      if (total <= this.#memoryBytes) break;
      const spilled = slot.spilled;
      if (!spilled || !("memory" in spilled)) continue;
      const path = join(await this.#spillDir(), `session-${slot.id}.state`);
      try {
        await writeFile(path, spilled.memory);
      } catch (err) {
        throw new LlamemError("ERR_IO", `cannot spill a session to ${path}: ${(err as Error).message}`, { cause: err });
      }
      total -= spilled.memory.length;
      // The session may have been restored while the file was written.
      if (slot.spilled === spilled) slot.spilled = { path, bytes: spilled.memory.length, tokens: spilled.tokens };
      else await unlink(path).catch(() => undefined);
    }
  }

  #spillDir(): Promise<string> {
    if (this.#dir !== undefined) return Promise.resolve(this.#dir);
    this.#tempDir ??= mkdtemp(join(tmpdir(), "llamem-spill-"));
    return this.#tempDir;
  }

  /** Restores a spilled (or loaded) state; one this context cannot take is dropped, and the next prompt evaluates the history. */
  async #restoreIn(slot: PoolSlot, seq: Sequence): Promise<void> {
    const spilled = slot.spilled as Spilled;
    slot.spilled = undefined;
    if ("memory" in spilled) await restoreOrForget(() => seq.restoreState(spilled.memory));
    else {
      await restoreOrForget(() => seq.loadStateFile(spilled.path));
      await unlink(spilled.path).catch(() => undefined);
    }
  }

  /** @internal The bytes of one KV cell of the context. */
  #cellBytes(): Promise<number> {
    this.#bytesPerCell ??= this.context.memory().then((m) => (m.cells > 0 ? m.kv / m.cells : 0));
    return this.#bytesPerCell;
  }

  /** @internal A slot's footprint for its session's stats. */
  async footprint(slot: PoolSlot): Promise<{ tokens: number; bytes: number; spilled: "memory" | "disk" | undefined }> {
    const per = await this.#cellBytes();
    if (slot.sequence) return { tokens: slot.sequence.tokens.length, bytes: Math.round(slot.sequence.tokens.length * per), spilled: undefined };
    const s = slot.spilled;
    if (!s) return { tokens: 0, bytes: 0, spilled: undefined };
    return { tokens: s.tokens, bytes: spilledBytes(s), spilled: "memory" in s ? "memory" : "disk" };
  }

  /** @internal The cache of a slot as a state buffer, from its sequence or its spilled state. */
  async saveState(slot: PoolSlot): Promise<Buffer> {
    if (slot.sequence) return slot.sequence.saveState();
    const s = slot.spilled;
    if (s && "memory" in s) return s.memory;
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
    slot.spilled = { memory: state, tokens: tokens.length };
    await this.#enforceBudget();
  }

  /**
   * @internal Generates on `seq` in the batch loop: the cached prefix is kept, the rest of the
   * prompt joins the next steps (in chunks that fit the batch), then one token per step.
   */
  async *generate(slot: PoolSlot, seq: Sequence, prompt: Int32Array, options: GenerateOptions): AsyncGenerator<string, void, void> {
    const maxTokens = options.maxTokens ?? 256;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) invalidArgument("maxTokens must be a non-negative integer");
    if (options.signal?.aborted) throw new LlamemError("ERR_ABORTED", "generation was aborted before it started");
    if (prompt.length === 0) invalidArgument("the prompt is empty");
    const capacity = this.context.info.sequenceContextSize;
    if (prompt.length >= capacity) {
      throw new LlamemError("ERR_CONTEXT_FULL", `the prompt has ${prompt.length} tokens but the context holds ${capacity} per sequence; use a larger contextSize`);
    }
    const common = commonPrefix(seq.tokens, prompt, prompt.length - 1);
    if (common < seq.tokens.length) await seq.removeTokens(common, seq.tokens.length);
    const release = seq.claim();
    let sampler: Sampler | undefined;
    try {
      sampler = maxTokens > 0 ? new Sampler(this.context.model, options) : undefined;
    } catch (err) {
      release();
      throw err;
    }
    let settle = () => {};
    const settled = new Promise<void>((resolve) => {
      settle = resolve;
    });
    const job: Job = {
      seq,
      prompt: prompt.subarray(common),
      promptLength: prompt.length,
      options,
      maxTokens,
      sampler,
      release,
      text: new TextAssembler(options.stop ?? []),
      queue: new AsyncQueue<string>(),
      t0: performance.now(),
      offset: 0,
      next: undefined,
      generated: 0,
      promptMs: 0,
      firstMs: 0,
      genStart: 0,
      cancelled: false,
      result: undefined,
      settle,
      settled,
    };
    this.#jobs.push(job);
    this.#kick();
    try {
      yield* job.queue;
    } finally {
      if (!job.result) {
        // The consumer stopped early: the loop drops the job at its next step.
        job.cancelled = true;
        await job.settled;
      }
      slot.lastGeneration = job.result;
    }
  }

  #kick(): void {
    if (this.#running) return;
    this.#running = true;
    void this.#loop();
  }

  async #loop(): Promise<void> {
    try {
      while (this.#jobs.length > 0) await this.#step();
    } catch (err) {
      // A bug here must fail the turns waiting on the loop, not leave them hanging.
      for (const job of [...this.#jobs]) this.#finish(job, "aborted", fromNative(err));
    } finally {
      // Reset in the same tick as the last check of #jobs, so a job added after it starts a new loop.
      this.#running = false;
    }
  }

  /** Drops cancelled and aborted jobs, then runs one batched decode for the rest. */
  async #step(): Promise<void> {
    for (const job of [...this.#jobs]) {
      if (job.cancelled) this.#finish(job, "aborted");
      else if (job.options.signal?.aborted) this.#finish(job, "aborted", new LlamemError("ERR_ABORTED", "generation was aborted"));
    }
    const parts = this.#plan();
    if (parts.length === 0) return;
    // Prompt chunks go into the sampler's history (as Sequence.generate does), so repetition
    // penalties see the prompt; a generated token was accepted when it was sampled.
    const entries: NativeBatchEntry[] = parts.map((p) => {
      const sampler = p.job.sampler?.native;
      const isPrompt = p.job.next === undefined;
      return sampler ? { seq: p.job.seq.id, tokens: p.tokens, sampler, accept: isPrompt, sample: p.sample } : { seq: p.job.seq.id, tokens: p.tokens };
    });
    const bases = parts.map((p) => p.job.seq.tokens.length);
    let results: NativeBatchResult[];
    try {
      results = await this.context.enqueue(() => this.context.native.evalBatch(entries));
    } catch (err) {
      await this.#failStep(parts, bases, fromNative(err));
      return;
    }
    this.#stepCount++;
    this.#batchedTokens += parts.reduce((n, p) => n + p.tokens.length, 0);
    parts.forEach((p, i) => this.#take(p, results[i] as NativeBatchResult));
  }

  /** This step's tokens: one for each generating job first, then prompt chunks in the room left. */
  #plan(): { job: Job; tokens: Int32Array; sample: boolean }[] {
    let room = this.context.info.batchSize;
    const parts: { job: Job; tokens: Int32Array; sample: boolean }[] = [];
    for (const job of this.#jobs) {
      if (job.next === undefined || room < 1) continue;
      parts.push({ job, tokens: Int32Array.of(job.next), sample: true });
      room--;
    }
    for (const job of this.#jobs) {
      const left = job.prompt.length - job.offset;
      if (job.next !== undefined || left === 0 || room < 1) continue;
      const n = Math.min(left, room);
      parts.push({ job, tokens: job.prompt.subarray(job.offset, job.offset + n), sample: n === left });
      room -= n;
    }
    return parts;
  }

  /** Books a step's result for one job: the tokens it evaluated, and the token sampled. */
  #take(part: { job: Job; tokens: Int32Array; sample: boolean }, r: NativeBatchResult): void {
    const { job } = part;
    job.seq.appendEvaluated(part.tokens);
    if (job.next === undefined) {
      job.offset += part.tokens.length;
      if (job.offset < job.prompt.length) return;
      job.promptMs = performance.now() - job.t0;
      job.genStart = performance.now();
      if (!job.sampler) {
        this.#finish(job, "maxTokens");
        return;
      }
    }
    try {
      if (r.eog || r.token === undefined) {
        this.#finish(job, "eog");
        return;
      }
      job.generated++;
      job.options.onToken?.(r.token);
      const { out, stopped } = job.text.push(r.piece ?? Buffer.alloc(0));
      if (out.length > 0) {
        if (job.firstMs === 0) job.firstMs = performance.now() - job.t0;
        job.queue.push(out);
      }
      if (stopped) this.#finish(job, "stop");
      else if (job.generated >= job.maxTokens) this.#finish(job, "maxTokens");
      else if (job.seq.tokens.length + 1 >= this.context.info.sequenceContextSize) this.#finish(job, "contextFull");
      else job.next = r.token;
    } catch (err) {
      this.#finish(job, "aborted", fromNative(err));
    }
  }

  /** A failed decode fails the jobs in it; each sequence keeps what the cache actually holds. */
  async #failStep(parts: { job: Job; tokens: Int32Array }[], bases: number[], err: LlamemError): Promise<void> {
    for (const [i, p] of parts.entries()) {
      const base = bases[i] as number;
      const max = await this.context.enqueue(() => this.context.native.seqPosRange(p.job.seq.id)[1]).catch(() => base - 1);
      p.job.seq.appendEvaluated(p.tokens.subarray(0, Math.max(0, Math.min(p.tokens.length, max + 1 - base))));
      this.#finish(p.job, "aborted", err);
    }
  }

  #finish(job: Job, stopReason: StopReason, err?: LlamemError): void {
    const i = this.#jobs.indexOf(job);
    if (i < 0) return;
    this.#jobs.splice(i, 1);
    job.sampler?.dispose();
    job.release();
    const rest = err ? "" : job.text.end();
    if (rest.length > 0) {
      if (job.firstMs === 0) job.firstMs = performance.now() - job.t0;
      job.queue.push(rest);
    }
    const genMs = job.genStart > 0 ? performance.now() - job.genStart : 0;
    job.result = {
      text: job.text.text,
      stopReason,
      promptTokens: job.promptLength,
      evaluatedPromptTokens: job.prompt.length,
      generatedTokens: job.generated,
      timeToFirstTokenMs: job.firstMs,
      promptTokensPerSecond: job.promptMs > 0 ? (job.prompt.length / job.promptMs) * 1000 : 0,
      generatedTokensPerSecond: genMs > 0 && job.generated > 1 ? ((job.generated - 1) / genMs) * 1000 : 0,
    };
    if (err) job.queue.fail(err);
    else job.queue.end();
    job.settle();
  }
}

function spilledBytes(s: Spilled): number {
  return "memory" in s ? s.memory.length : s.bytes;
}

/** A pool session's place: a sequence while resident, else a spilled state. @internal */
export class PoolSlot implements SessionRunner {
  sequence: Sequence | undefined;
  spilled: Spilled | undefined;
  inTurn = false;
  lastUsed = 0;
  /** A spill of this slot's cache in progress; its next turn waits for it. */
  pending: Promise<void> = Promise.resolve();
  lastGeneration: GenerationResult | undefined;
  onDispose: () => Promise<void> = async () => {};
  readonly contextKey: object;

  constructor(
    readonly pool: SessionPool,
    readonly id: number,
  ) {
    this.contextKey = pool.context.native;
  }

  get model(): Model {
    return this.pool.context.model;
  }

  get sequenceContextSize(): number {
    return this.pool.context.info.sequenceContextSize;
  }

  get canShift(): boolean {
    return this.pool.context.info.canShift;
  }


  acquire(): Promise<Sequence> {
    return this.pool.acquire(this);
  }

  release(): void {
    this.pool.release(this);
  }

  generate(seq: Sequence, prompt: Int32Array, options: GenerateOptions): AsyncGenerator<string, void, void> {
    return this.pool.generate(this, seq, prompt, options);
  }

  saveState(): Promise<Buffer> {
    return this.pool.saveState(this);
  }

  restoreState(state: Buffer): Promise<void> {
    return this.pool.restoreState(this, state);
  }

  footprint(): Promise<{ tokens: number; bytes: number; spilled: "memory" | "disk" | undefined }> {
    return this.pool.footprint(this);
  }

  dispose(): Promise<void> {
    return this.onDispose();
  }
}
