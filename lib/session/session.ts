/**
 * Chat sessions: history as data, a memory policy that keeps the prompt within a token budget,
 * and a KV cache that follows the history (evicted turns are cut out of the cache in place,
 * shared system prompts are copied between sequences, state is saved with the history).
 */
import { LlamemError, invalidArgument } from "../errors.js";
import { Model } from "../model.js";
import { Context, type ContextOptions } from "../context.js";
import { Sequence, type GenerateOptions, type GenerationResult, type SequenceHost } from "../sequence.js";
import type { SamplingOptions } from "../sampler.js";
import { decodeState } from "../state.js";
import {
  Archive,
  budgetTokens,
  resolveMemory,
  splitTurns,
  type ArchivedTurn,
  type MemoryEvent,
  type MemoryEventKind,
  type MemoryOptions,
  type ModelSummaryOptions,
  type ResolvedMemory,
  type SessionMessage,
  type SessionMessageInput,
  type Turn,
} from "./memory.js";
import { commonPrefix, Renderer, type RenderItem, type Rendered } from "./render.js";
import { readSession, writeSession, type SavedHeader, type SavedRef } from "./persist.js";

/** Options of {@link createSession}. */
export interface SessionOptions extends SamplingOptions {
  /** The system prompt, sent first in every prompt. */
  system?: string;
  /** How the prompt is kept within bounds (default: drop the oldest turns to fit the context). */
  memory?: MemoryOptions;
  /** Most tokens of a reply, unless a prompt says otherwise (default 256). */
  maxTokens?: number;
  /** Stop strings of every reply (a prompt's own `stop` replaces them). */
  stop?: string[];
  /** A chat template to use instead of the model's own. */
  template?: string;
  /** Called with every memory decision (prune, summarize, archive), before the reply is generated. */
  onMemoryEvent?: (event: MemoryEvent) => void;
  /** Options of the context created when the target is a Model. */
  context?: ContextOptions;
}

/** Options of {@link ChatSession.prompt} and {@link ChatSession.stream}. */
export interface PromptOptions extends SamplingOptions {
  /** Most tokens of the reply (default: the session's maxTokens). */
  maxTokens?: number;
  /** Stop strings (default: the session's). */
  stop?: string[];
  /** Cancels the turn: the iterator throws ERR_ABORTED and the history is left as it was. */
  signal?: AbortSignal;
  /** Pin this turn: it is never evicted. */
  pinned?: boolean;
  /** Called with each generated token id. */
  onToken?: (token: number) => void;
}

/** Figures of a session. */
export interface SessionStats {
  /** Messages and turns in the history (evicted ones excluded). */
  messages: number;
  turns: number;
  /** Tokens the session holds in the KV cache (or in its spilled state). */
  kvTokens: number;
  /** Bytes of those tokens' KV cells (or of the spilled state). */
  kvBytes: number;
  /** True while the session's cache is in a sequence; false when spilled to RAM or disk by a pool. */
  resident: boolean;
  /** Where a spilled state is: "memory", "disk", or undefined when resident. */
  spilled: "memory" | "disk" | undefined;
  /** Summaries written and turns evicted (pruned, summarized or archived by age). */
  summaries: number;
  turnsEvicted: number;
  /** Prompt tokens evaluated and tokens generated, over all turns. */
  evaluatedTokens: number;
  generatedTokens: number;
}

/** Where a session's KV cache lives: its own sequence, or a slot of a pool. @internal */
export interface SessionRunner {
  readonly model: Model;
  readonly sequenceContextSize: number;
  readonly canShift: boolean;
  /** The native context, naming the sessions that can share cells. */
  readonly contextKey: object;
  /** The sequence holding the session's cache, undefined while spilled. */
  readonly sequence: Sequence | undefined;
  /** Makes the cache resident (restoring a spilled state) for a turn. */
  acquire(): Promise<Sequence>;
  /** Ends the turn begun by {@link acquire}. */
  release(): void;
  /** Generates after `prompt`, reusing the cached prefix; the figures are in {@link lastGeneration}. */
  generate(seq: Sequence, prompt: Int32Array, options: GenerateOptions): AsyncGenerator<string, void, void>;
  readonly lastGeneration: GenerationResult | undefined;
  saveState(): Promise<Buffer>;
  restoreState(state: Buffer): Promise<void>;
  footprint(): Promise<{ tokens: number; bytes: number; spilled: "memory" | "disk" | undefined }>;
  dispose(): Promise<void>;
}

/** The label of the summary message. */
const SUMMARY_LABEL = "Summary of the earlier conversation:\n";
const DEFAULT_SUMMARY_PROMPT =
  "Summarize the conversation so far in a few sentences. Keep names, facts, decisions and open questions. Reply with the summary only.";
/** Copying another sequence's cells pays off only for a prefix at least this long. */
const MIN_SHARED_PREFIX = 16;

/** Which messages sit in which cells, as of the end of the last turn. */
interface Layout {
  /** The sequence's tokens when the layout was taken; a layout is only used while they are unchanged. */
  readonly tokens: readonly number[];
  /** `prompt` is false for the reply generated last (its cells hold the sampled tokens). */
  readonly items: readonly { readonly key: object; readonly start: number; readonly end: number; readonly prompt: boolean }[];
}

/** A memory decision before the KV outcome is known. */
type PendingEvent = Omit<MemoryEvent, "kvReused" | "reevaluatedTokens">;

/** Sessions by native context, for prefix sharing between them. */
const sessionsByContext = new WeakMap<object, Set<ChatSession>>();

/** A conversation with a model. Create it with {@link createSession} or a pool's `createSession`. */
export class ChatSession {
  readonly #runner: SessionRunner;
  readonly #renderer: Renderer;
  readonly #memory: ResolvedMemory;
  readonly #archive: Archive;
  readonly #sampling: SamplingOptions;
  readonly #maxTokens: number;
  readonly #stop: string[] | undefined;
  readonly #onEvent: ((event: MemoryEvent) => void) | undefined;
  readonly #ownedContext: Context | undefined;
  readonly #systemKey = {};
  #system: string | undefined;
  #summary: { readonly key: object; readonly text: string } | undefined;
  #history: SessionMessage[] = [];
  #layout: Layout | undefined;
  #busy = false;
  #disposed = false;
  #counters = { summaries: 0, turnsEvicted: 0, evaluatedTokens: 0, generatedTokens: 0 };

  /** @internal Use {@link createSession}, {@link loadSession} or a pool. */
  constructor(runner: SessionRunner, options: SessionOptions, ownedContext?: Context) {
    if (options.system !== undefined && typeof options.system !== "string") invalidArgument("system must be a string");
    const maxTokens = options.maxTokens ?? 256;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) invalidArgument("maxTokens must be a non-negative integer");
    this.#runner = runner;
    this.#memory = resolveMemory(options.memory);
    this.#archive = new Archive(this.#memory.archivePath);
    this.#renderer = new Renderer(runner.model, options.template);
    this.#sampling = samplingOf(options);
    this.#maxTokens = maxTokens;
    this.#stop = options.stop;
    this.#onEvent = options.onMemoryEvent;
    this.#ownedContext = ownedContext;
    this.#system = options.system;
    let peers = sessionsByContext.get(runner.contextKey);
    if (!peers) sessionsByContext.set(runner.contextKey, (peers = new Set()));
    peers.add(this);
  }

  /** The conversation (evicted turns excluded), oldest first. */
  get history(): readonly SessionMessage[] {
    return this.#history;
  }

  /** The system prompt. */
  get system(): string | undefined {
    return this.#system;
  }

  /** The running summary of the turns folded out of the prompt, if any. */
  get summary(): string | undefined {
    return this.#summary?.text;
  }

  /** The sequence holding the session's KV cache (undefined while a pool has spilled it). */
  get sequence(): Sequence | undefined {
    return this.#runner.sequence;
  }

  /** The figures of the last reply. */
  get lastGeneration(): GenerationResult | undefined {
    return this.#runner.lastGeneration;
  }

  /** The in-memory archive (empty when the archive is a file; see {@link readArchive}). */
  get archive(): readonly ArchivedTurn[] {
    return this.#archive.entries;
  }

  /** Every archived turn, from memory or from the archive file. */
  readArchive(): Promise<ArchivedTurn[]> {
    return this.#archive.read();
  }

  /** Replaces the history (timestamps default to now). The KV cache keeps whatever prefix still matches. */
  setHistory(messages: readonly SessionMessageInput[]): void {
    this.#ensureIdle();
    if (!Array.isArray(messages)) invalidArgument("setHistory(messages): messages must be an array");
    const now = Date.now();
    this.#history = messages.map((m, i) => {
      if (!m || typeof m.role !== "string" || typeof m.content !== "string") invalidArgument(`setHistory: message ${i} needs a string role and content`);
      const timestamp = m.timestamp ?? now;
      if (!Number.isFinite(timestamp)) invalidArgument(`setHistory: message ${i} has an invalid timestamp`);
      return m.pinned ? { role: m.role, content: m.content, pinned: true, timestamp } : { role: m.role, content: m.content, timestamp };
    });
  }

  /** Sends a user message and resolves with the whole reply. */
  async prompt(text: string, options: PromptOptions = {}): Promise<string> {
    let reply = "";
    for await (const piece of this.stream(text, options)) reply += piece;
    return reply;
  }

  /**
   * Sends a user message and streams the reply in pieces. Before generating, the memory policy
   * runs (reporting each decision) and the KV cache is brought in line with the new prompt.
   * A turn that fails or is aborted leaves the history as it was (evictions stay done).
   */
  async *stream(text: string, options: PromptOptions = {}): AsyncGenerator<string, void, void> {
    this.#ensureIdle();
    if (typeof text !== "string") invalidArgument("prompt(text): text must be a string");
    const maxTokens = options.maxTokens ?? this.#maxTokens;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) invalidArgument("maxTokens must be a non-negative integer");
    this.#busy = true;
    const user: SessionMessage = options.pinned ? { role: "user", content: text, pinned: true, timestamp: Date.now() } : { role: "user", content: text, timestamp: Date.now() };
    this.#history.push(user);
    let done = false;
    try {
      const seq = await this.#runner.acquire();
      try {
        const before = this.#layout;
        const { signal, onToken } = options;
        const { rendered, events } = await this.#plan(seq, maxTokens, signal);
        const kv = await this.#fitCache(seq, rendered, before);
        for (const e of events) this.#onEvent?.({ ...e, ...kv });
        const gen = this.#runner.generate(seq, rendered.tokens, {
          ...this.#sampling,
          ...samplingOf(options),
          maxTokens,
          stop: options.stop ?? this.#stop,
          signal,
          onToken,
        });
        for await (const piece of gen) yield piece;
        const result = this.#runner.lastGeneration as GenerationResult;
        const reply: SessionMessage = { role: "assistant", content: result.text, timestamp: Date.now() };
        this.#history.push(reply);
        this.#layout = layoutAfter(rendered, reply, seq.tokens);
        this.#counters.evaluatedTokens += result.evaluatedPromptTokens;
        this.#counters.generatedTokens += result.generatedTokens;
        done = true;
      } finally {
        this.#runner.release();
      }
    } finally {
      if (!done) {
        const i = this.#history.indexOf(user);
        if (i >= 0) this.#history.splice(i, 1);
      }
      this.#busy = false;
    }
  }

  /** Tokens in the KV cache, bytes, summaries and evictions. */
  async stats(): Promise<SessionStats> {
    const f = await this.#runner.footprint();
    return {
      messages: this.#history.length,
      turns: splitTurns(this.#history).length,
      kvTokens: f.tokens,
      kvBytes: f.bytes,
      resident: f.spilled === undefined,
      spilled: f.spilled,
      ...this.#counters,
    };
  }

  /**
   * Saves the history, summary, archive (its entries, or its file's path) and the KV state to
   * `path`, atomically. {@link loadSession} resumes without evaluating the prompt again.
   */
  async save(path: string): Promise<number> {
    this.#ensureIdle();
    this.#busy = true;
    try {
      const state = await this.#runner.saveState();
      const refOf = (key: object): SavedRef | undefined => {
        if (key === this.#systemKey) return "system";
        if (key === this.#summary?.key) return "summary";
        const i = this.#history.indexOf(key as SessionMessage);
        return i >= 0 ? i : undefined;
      };
      const layout = this.#layout && sameTokens(this.#layout.tokens, decodeState(state).tokens) ? this.#layout : undefined;
      const header: Omit<SavedHeader, "version"> = {
        model: await this.#runner.model.fingerprint(),
        system: this.#system ?? null,
        summary: this.#summary?.text ?? null,
        history: this.#history,
        archive: { path: this.#archive.path ?? null, entries: [...this.#archive.entries] },
        layout: layout
          ? layout.items.flatMap((it) => {
              const ref = refOf(it.key);
              return ref === undefined ? [] : [{ ref, start: it.start, end: it.end, prompt: it.prompt }];
            })
          : null,
        counters: { ...this.#counters },
      };
      return await writeSession(path, header, state);
    } finally {
      this.#busy = false;
    }
  }

  /** @internal Restores what {@link save} wrote (the fingerprint was checked by the caller). */
  async restore(header: SavedHeader, state: Buffer): Promise<void> {
    this.#ensureIdle();
    this.#system = header.system ?? undefined;
    this.#history = header.history;
    this.#counters = { ...header.counters };
    if (header.summary !== null) this.#summary = { key: {}, text: header.summary };
    if (header.archive.path === null) this.#archive.restore(header.archive.entries);
    if (!(await restoreOrForget(() => this.#runner.restoreState(state)))) return;
    const keyOf = (ref: SavedRef): object | undefined =>
      ref === "system" ? this.#systemKey : ref === "summary" ? this.#summary?.key : this.#history[ref];
    const items = (header.layout ?? []).flatMap((it) => {
      const key = keyOf(it.ref);
      return key ? [{ key, start: it.start, end: it.end, prompt: it.prompt }] : [];
    });
    this.#layout = header.layout ? { tokens: decodeState(state).tokens, items } : undefined;
  }

  /** Ends the session: frees its pool slot, or the context it created from a Model. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    sessionsByContext.get(this.#runner.contextKey)?.delete(this);
    await this.#runner.dispose();
    await this.#ownedContext?.dispose();
  }

  /** `await using session = await createSession(...)` disposes it at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  #ensureIdle(): void {
    if (this.#disposed) throw new LlamemError("ERR_DISPOSED", "the session was disposed; create a new one");
    if (this.#busy) throw new LlamemError("ERR_BUSY", "the session is busy with another turn; await it or abort it first");
  }

  #items(withSystem: boolean): RenderItem[] {
    const items: RenderItem[] = [];
    if (withSystem && this.#system !== undefined) items.push({ key: this.#systemKey, role: "system", content: this.#system });
    if (this.#summary) items.push({ key: this.#summary.key, role: "system", content: SUMMARY_LABEL + this.#summary.text });
    for (const m of this.#history) items.push({ key: m, role: m.role, content: m.content });
    return items;
  }

  #pinned(turn: Turn): boolean {
    return turn.some((m) => m.pinned === true || m.role === "system" || this.#memory.pinned?.(m) === true);
  }

  /** Turns that may be evicted, oldest first: not pinned, and not the turn being prompted. */
  #evictable(): Turn[] {
    return splitTurns(this.#history)
      .slice(0, -1)
      .filter((t) => !this.#pinned(t));
  }

  async #evict(turns: readonly Turn[], kind: MemoryEventKind): Promise<void> {
    const gone = new Set<SessionMessage>(turns.flat());
    this.#history = this.#history.filter((m) => !gone.has(m));
    this.#counters.turnsEvicted += turns.length;
    await this.#archive.add(turns, kind, Date.now());
  }

  /** The tokens of the oldest turns, from the rendered spans; undefined where a span is unknown. */
  #turnTokens(r: Rendered, turn: Turn): number | undefined {
    let n = 0;
    for (const m of turn) {
      const i = r.items.findIndex((it) => it.key === m);
      const span = r.spans[i];
      if (!span) return undefined;
      n += span.end - span.start;
    }
    return n;
  }

  /** How many of the oldest `turns` to drop to shed `excess` tokens (at least one). */
  #turnsToDrop(r: Rendered, turns: readonly Turn[], excess: number): number {
    let shed = 0;
    for (let k = 0; k < turns.length; k++) {
      const n = this.#turnTokens(r, turns[k] as Turn);
      if (n === undefined) return Math.max(1, k);
      shed += n;
      if (shed >= excess) return k + 1;
    }
    return turns.length;
  }

  /** Applies the memory policy to the history with the new user message; returns the prompt to send. */
  async #plan(seq: Sequence, maxTokens: number, signal: AbortSignal | undefined): Promise<{ rendered: Rendered; events: PendingEvent[] }> {
    const mem = this.#memory;
    const budget = budgetTokens(mem, this.#runner.sequenceContextSize, maxTokens);
    const events: PendingEvent[] = [];
    let withSystem = true;
    let r = await this.#renderer.render(this.#items(withSystem));
    const record = async (kind: MemoryEventKind, reason: string, dropped: readonly Turn[], act: () => Promise<void>) => {
      const t0 = performance.now();
      const tokensBefore = r.tokens.length;
      await act();
      r = await this.#renderer.render(this.#items(withSystem));
      events.push({ kind, reason, dropped, tokensBefore, tokensAfter: r.tokens.length, ms: performance.now() - t0 });
    };

    if (mem.maxAge !== undefined) {
      const limit = Date.now() - mem.maxAge;
      const old = this.#evictable().filter((t) => Math.max(...t.map((m) => m.timestamp)) < limit);
      if (old.length > 0) await record("archive", `${old.length} turn(s) older than ${mem.maxAge} ms`, old, () => this.#evict(old, "archive"));
    }
    if (mem.strategy === "slidingWindow") {
      const turns = this.#evictable();
      const over = turns.slice(0, Math.max(0, turns.length - mem.keepLastTurns));
      if (over.length > 0) {
        await record("prune", `sliding window of ${mem.keepLastTurns} turn(s)`, over, () => this.#evict(over, "prune"));
      }
    }
    if (r.tokens.length > budget && mem.strategy === "summarize") {
      let first = true;
      for (let turns = this.#evictable(); r.tokens.length > budget && turns.length > 0; turns = this.#evictable()) {
        // The first fold keeps keepLastTurns verbatim; if the prompt is still over, fold the oldest to cover the excess.
        const n = first ? Math.max(1, turns.length - mem.keepLastTurns) : this.#turnsToDrop(r, turns, r.tokens.length - budget);
        const fold = turns.slice(0, n);
        first = false;
        const reason = `prompt of ${r.tokens.length} tokens over the budget of ${budget}`;
        await record("summarize", reason, fold, async () => {
          await this.#summarize(seq, fold, budget, signal);
          await this.#evict(fold, "summarize");
        });
      }
    }
    if (r.tokens.length > budget) {
      const dropped: Turn[] = [];
      const t0 = performance.now();
      const tokensBefore = r.tokens.length;
      for (let turns = this.#evictable(); r.tokens.length > budget && turns.length > 0; turns = this.#evictable()) {
        const drop = turns.slice(0, this.#turnsToDrop(r, turns, r.tokens.length - budget));
        await this.#evict(drop, "prune");
        dropped.push(...drop);
        r = await this.#renderer.render(this.#items(withSystem));
      }
      if (dropped.length > 0) {
        const reason = `prompt of ${tokensBefore} tokens over the budget of ${budget}`;
        events.push({ kind: "prune", reason, dropped, tokensBefore, tokensAfter: r.tokens.length, ms: performance.now() - t0 });
      }
    }
    if (r.tokens.length > budget && !mem.keepSystem && this.#system !== undefined) {
      const system: Turn = [{ role: "system", content: this.#system, timestamp: Date.now() }];
      const reason = `prompt of ${r.tokens.length} tokens over the budget of ${budget} with no turn left to evict`;
      await record("omitSystem", reason, [system], async () => {
        withSystem = false;
      });
    }
    return { rendered: r, events };
  }

  /** Folds `turns` into the running summary, with the app's summarizer or the model. */
  async #summarize(seq: Sequence, turns: readonly Turn[], budget: number, signal: AbortSignal | undefined): Promise<void> {
    const s = this.#memory.summarize;
    const previous = this.#summary?.text;
    const text = typeof s === "function" ? await s(turns, previous) : await this.#modelSummary(seq, turns, s, budget, signal);
    if (typeof text !== "string") invalidArgument("the summarizer must resolve with a string");
    this.#summary = { key: {}, text };
    this.#counters.summaries++;
  }

  /**
   * Asks the model for the summary. The request starts with the cached system prompt, previous
   * summary and oldest turns, so only the instruction is evaluated before the summary is written.
   */
  async #modelSummary(seq: Sequence, turns: readonly Turn[], o: ModelSummaryOptions, budget: number, signal: AbortSignal | undefined): Promise<string> {
    const base = this.#items(true).filter((it) => it.key === this.#systemKey || it.key === this.#summary?.key);
    const messages = turns.flat().map((m) => ({ key: m, role: m.role, content: m.content }));
    const ask: RenderItem = { key: {}, role: "user", content: o.prompt ?? DEFAULT_SUMMARY_PROMPT };
    const r = await this.#renderer.render([...base, ...messages, ask]);
    const maxTokens = o.maxTokens ?? Math.max(1, Math.min(128, Math.floor(budget / 4)));
    for await (const _piece of this.#runner.generate(seq, r.tokens, { temperature: 0, maxTokens, signal })) {
      // collected into lastGeneration.text
    }
    const result = this.#runner.lastGeneration as GenerationResult;
    this.#counters.evaluatedTokens += result.evaluatedPromptTokens;
    this.#counters.generatedTokens += result.generatedTokens;
    return result.text.trim();
  }

  /**
   * Brings the cache in line with the prompt before generating: evicted messages' cells are cut
   * out and the later cells shifted back (kvReuse "shift"), or, for a new session, another
   * session's cells with the same prefix are copied. What still differs is evaluated by generate.
   */
  async #fitCache(seq: Sequence, r: Rendered, before: Layout | undefined): Promise<{ kvReused: boolean; reevaluatedTokens: number }> {
    const prompt = r.tokens;
    const max = prompt.length - 1;
    const cached = seq.tokens;
    const keys = new Set(r.items.map((it) => it.key));
    const valid = before !== undefined && sameTokens(before.tokens, cached);
    const dropped = valid ? before.items.filter((it) => !keys.has(it.key)) : [];
    if (dropped.length > 0 && this.#memory.kvReuse === "shift" && this.#runner.canShift) {
      const removed = new Uint8Array(cached.length);
      for (const d of dropped) removed.fill(1, d.start, d.end);
      // Walk the cache without the dropped cells: how far would it then match the prompt?
      let matched = 0;
      let cut = cached.length;
      for (let c = 0; c < cached.length; c++) {
        if (removed[c]) continue;
        if (matched >= max || cached[c] !== prompt[matched]) {
          cut = c;
          break;
        }
        matched++;
      }
      if (matched > commonPrefix(cached, prompt, max)) {
        if (cut < cached.length) await seq.removeTokens(cut, cached.length);
        // From the last range back, so earlier positions stay put while later ones shift.
        for (const d of [...dropped].sort((a, b) => b.start - a.start)) {
          if (d.start < cut) await seq.removeTokens(d.start, d.end);
        }
      }
    }
    await this.#sharePrefix(seq, prompt);
    // Tokens of messages that were in the last prompt and now need evaluating again.
    const kept = new Set((before?.items ?? []).filter((it) => it.prompt).map((it) => it.key));
    let keptEnd = 0;
    r.items.forEach((it, i) => {
      const span = r.spans[i];
      if (span && kept.has(it.key)) keptEnd = span.end;
    });
    const reevaluatedTokens = Math.max(0, keptEnd - commonPrefix(seq.tokens, prompt, max));
    return { kvReused: reevaluatedTokens === 0, reevaluatedTokens };
  }

  /** Copies the cells of an idle session on the same context whose cache shares a longer prefix. */
  async #sharePrefix(seq: Sequence, prompt: Int32Array): Promise<void> {
    const max = prompt.length - 1;
    let best: Sequence | undefined;
    let bestLength = Math.max(MIN_SHARED_PREFIX - 1, commonPrefix(seq.tokens, prompt, max));
    for (const peer of sessionsByContext.get(this.#runner.contextKey) ?? []) {
      const other = peer.#runner.sequence;
      if (peer === this || peer.#busy || !other || other === seq || other.busy) continue;
      const n = commonPrefix(other.tokens, prompt, max);
      if (n > bestLength) {
        best = other;
        bestLength = n;
      }
    }
    if (!best) return;
    await best.copyTo(seq);
    await seq.removeTokens(bestLength, seq.tokens.length);
  }
}

/** The sampling options set in `o`, so that unset ones do not override a session's defaults. */
function samplingOf(o: SamplingOptions): SamplingOptions {
  const keys = ["temperature", "topK", "topP", "minP", "repeatPenalty", "repeatLastN", "frequencyPenalty", "presencePenalty", "seed"] as const;
  const out: SamplingOptions = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/** The layout after a turn: the prompt's message spans, and the reply's cells after them. */
function layoutAfter(r: Rendered, reply: SessionMessage, tokens: readonly number[]): Layout {
  const items: { key: object; start: number; end: number; prompt: boolean }[] = [];
  let end = 0;
  let complete = true;
  r.items.forEach((it, i) => {
    const span = r.spans[i];
    if (!span) {
      complete = false;
      return;
    }
    items.push({ key: it.key, start: span.start, end: span.end, prompt: true });
    end = span.end;
  });
  // The reply's message starts with the assistant header that closes the prompt.
  if (complete) items.push({ key: reply, start: end, end: tokens.length, prompt: false });
  return { tokens: [...tokens], items };
}

/**
 * Restores a saved KV state; false when it cannot go into this context (a state restores only
 * into a context of the layout it was saved from: sequences, kvUnified, KV types) or does not
 * fit it. The session then resumes from its history alone. @internal
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

function sameTokens(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && commonPrefix(a, b) === a.length;
}


/** A session on one sequence, generating with {@link Sequence.generate}. */
class SequenceRunner implements SessionRunner {
  readonly model: Model;
  readonly sequenceContextSize: number;
  readonly canShift: boolean;
  readonly contextKey: object;
  readonly #host: SequenceHost;

  constructor(readonly sequence: Sequence) {
    this.#host = sequence.host;
    this.model = this.#host.model;
    this.sequenceContextSize = this.#host.sequenceContextSize;
    this.canShift = this.#host.canShift;
    this.contextKey = this.#host.native;
  }

  async acquire(): Promise<Sequence> {
    this.#host.check();
    return this.sequence;
  }

  release(): void {}

  async *generate(seq: Sequence, prompt: Int32Array, options: GenerateOptions): AsyncGenerator<string, void, void> {
    yield* seq.generate(prompt, options);
  }

  get lastGeneration(): GenerationResult | undefined {
    return this.sequence.lastGeneration;
  }

  saveState(): Promise<Buffer> {
    return this.sequence.saveState();
  }

  restoreState(state: Buffer): Promise<void> {
    return this.sequence.restoreState(state);
  }

  async footprint(): Promise<{ tokens: number; bytes: number; spilled: undefined }> {
    const tokens = this.sequence.tokens.length;
    const m = await this.#host.enqueue(() => this.#host.native.memory());
    return { tokens, bytes: m.cells > 0 ? Math.round((tokens * m.rows.reduce((s, r) => s + r.context, 0)) / m.cells) : 0, spilled: undefined };
  }

  async dispose(): Promise<void> {}
}

/** Which sequence a new session runs on, and the context it creates when given a Model. */
async function sequenceFor(target: Model | Context | Sequence, options: SessionOptions): Promise<{ seq: Sequence; owned?: Context }> {
  if (target instanceof Model) {
    const owned = await target.createContext(options.context);
    return { seq: owned.sequence(0), owned };
  }
  if (options.context !== undefined) invalidArgument("options.context applies only when the session is created from a Model");
  if (target instanceof Context) return { seq: target.sequence(0) };
  if (target instanceof Sequence) return { seq: target };
  return invalidArgument("createSession(target): target must be a Model, Context or Sequence");
}

function sessionOn(seq: Sequence, options: SessionOptions, owned: Context | undefined): ChatSession {
  const runner = new SequenceRunner(seq);
  for (const peer of sessionsByContext.get(runner.contextKey) ?? []) {
    if (peer.sequence === seq) invalidArgument(`sequence ${seq.id} already has a session; dispose it first`);
  }
  return new ChatSession(runner, options, owned);
}

/**
 * Starts a chat session. On a Model it creates (and owns) a context with `options.context`; on a
 * Context it uses sequence 0; on a Sequence, that sequence. One session per sequence.
 */
export async function createSession(target: Model | Context | Sequence, options: SessionOptions = {}): Promise<ChatSession> {
  const { seq, owned } = await sequenceFor(target, options);
  try {
    return sessionOn(seq, options, owned);
  } catch (err) {
    await owned?.dispose();
    throw err;
  }
}

/** Options of {@link loadSession}: those of {@link createSession}, less the saved system prompt. */
export type LoadSessionOptions = Omit<SessionOptions, "system">;

/**
 * Resumes a session written by {@link ChatSession.save}: history, summary, archive and KV cache,
 * so the next prompt evaluates only what is new. ERR_STATE_MISMATCH if it was saved with another
 * model. A KV state that this context cannot take (another layout: sequences, kvUnified, KV
 * types; or too many tokens) is left out, and the next prompt evaluates the history again.
 */
export async function loadSession(target: Model | Context | Sequence, path: string, options: LoadSessionOptions = {}): Promise<ChatSession> {
  const model =
    target instanceof Model ? target : target instanceof Context ? target.model : target instanceof Sequence ? target.host.model : undefined;
  if (!model) invalidArgument("loadSession(target, path): target must be a Model, Context or Sequence");
  const { header, state } = await readSession(path);
  await checkFingerprint(model, header, path);
  const { seq, owned } = await sequenceFor(target, options);
  try {
    const session = sessionOn(seq, withArchive(options, header), owned);
    await session.restore(header, state);
    return session;
  } catch (err) {
    await owned?.dispose();
    throw err;
  }
}

/** Throws ERR_STATE_MISMATCH unless `header` was saved from `model`. @internal */
export async function checkFingerprint(model: Model, header: SavedHeader, path: string): Promise<void> {
  if (header.model !== (await model.fingerprint())) {
    throw new LlamemError("ERR_STATE_MISMATCH", `${path} was saved from a different model; load that model to resume it`);
  }
}

/** The load options, with the saved archive file unless they name one. @internal */
export function withArchive(options: LoadSessionOptions, header: SavedHeader): SessionOptions {
  const path = options.memory?.archive?.path ?? header.archive.path ?? undefined;
  return { ...options, system: header.system ?? undefined, memory: { ...options.memory, archive: { ...options.memory?.archive, path } } };
}
