/**
 * Speculative decoding with a draft model. A small model of the same vocabulary, on a context of
 * its own, proposes the next tokens of each generating sequence; the engine then verifies them in
 * its one batched decode on the target, sampling with the generation's own sampler at every draft
 * position and keeping the drafts up to the first one that sample disagrees with. Every emitted
 * token is the target's own sample after the same prefix, so the output is what decoding without a
 * draft gives, only with fewer target decodes when the draft guesses well (bit for bit where the
 * backend computes a batch of tokens as it computes one: on the CPU, f16 weights; quantized
 * kernels round a batch differently, which can tip a near-tie).
 */
import { fromNative, invalidArgument, LlamemError } from "./errors.js";
import { native, type NativeBatchEntry, type NativeContext, type NativeContextOptions } from "./internal/native.js";
import { nativeModel } from "./internal/handles.js";
import { SequenceTokens } from "./generation.js";
import { Sampler } from "./sampler.js";
import { DEFAULTS } from "./options.js";
import type { Model } from "./model.js";
import type { ContextMemory } from "./context.js";

/** Options of speculative decoding: `createContext({ draft })`. */
export interface DraftOptions {
  /**
   * The draft model: smaller than the context's, with the same vocabulary. It must stay loaded
   * while the context lives.
   */
  model: Model;
  /** Most tokens drafted per step, 1 to 64 (default 8). */
  maxDraftTokens?: number;
  /**
   * Drafting stops at a token the draft model gives a probability below this, 0 to 1 (default
   * 0.5): an unlikely draft is likely rejected, and each drafted token costs a draft decode.
   */
  minProbability?: number;
}

/** What speculative decoding did: tokens drafted, and those the target accepted. */
export interface DraftStats {
  /** Draft tokens proposed and verified. */
  drafted: number;
  /** Of which the target's sampler agreed with (each saves a target decode). */
  accepted: number;
}

/** One sequence's request for a draft: its cached tokens, the token fed next, and the most to draft. @internal */
export interface DraftRequest {
  readonly seq: number;
  readonly history: readonly number[];
  readonly next: number;
  readonly max: number;
}

/** The checked options of a draft. @internal */
export interface CheckedDraftOptions {
  readonly model: Model;
  readonly maxDraftTokens: number;
  readonly minProbability: number;
}

/** Checks `draft` against the target model: option ranges, a live generative model, and the vocabulary. @internal */
export function checkDraftOptions(target: Model, o: DraftOptions): CheckedDraftOptions {
  if (o === null || typeof o !== "object") invalidArgument("draft must be an object { model, maxDraftTokens, minProbability }");
  const model = o.model;
  if (model === null || typeof model !== "object" || typeof model.tokenToPiece !== "function") invalidArgument("draft.model must be a Model from loadModel()");
  if (model.disposed) throw new LlamemError("ERR_DISPOSED", "draft.model was disposed");
  const maxDraftTokens = o.maxDraftTokens ?? DEFAULTS.draft.maxDraftTokens;
  if (!Number.isInteger(maxDraftTokens) || maxDraftTokens < 1 || maxDraftTokens > 64) invalidArgument("draft.maxDraftTokens must be an integer in [1, 64]");
  const minProbability = o.minProbability ?? DEFAULTS.draft.minProbability;
  if (typeof minProbability !== "number" || !(minProbability >= 0 && minProbability <= 1)) invalidArgument("draft.minProbability must be a number in [0, 1]");
  for (const [m, which] of [[target, "the model"], [model, "draft.model"]] as const) {
    // A recurrent state cannot take back the steps of rejected drafts.
    if (m.info.recurrent) invalidArgument(`speculative decoding needs an attention KV cache: ${which} is recurrent or hybrid`);
    if (!m.info.hasDecoder) invalidArgument(`speculative decoding needs decoder models: ${which} is an encoder`);
  }
  checkVocabularies(target, model);
  return { model, maxDraftTokens, minProbability };
}

/** Token ids compared between the two vocabularies: the first ones (special and byte tokens) and a spread over the rest. */
const COMPARED_HEAD = 512;
const COMPARED_SPREAD = 1024;

/**
 * The draft must read and write the target's token ids: the same size, type and BOS/EOS, and the
 * same text for the ids compared (all of a small vocabulary; the first 512 and 1,024 spread over
 * a large one, so the check stays well under a millisecond per thousand ids).
 */
function checkVocabularies(target: Model, draft: Model): void {
  const a = target.info;
  const b = draft.info;
  const differ = (what: string) => invalidArgument(`draft.model has another vocabulary than the model (${what}); a draft must share the model's tokenizer`);
  if (a.vocabSize !== b.vocabSize) differ(`${b.vocabSize} tokens against ${a.vocabSize}`);
  if (a.vocabType !== b.vocabType) differ(`${b.vocabType} against ${a.vocabType}`);
  if (a.bos !== b.bos || a.eos !== b.eos) differ("BOS or EOS differ");
  const n = a.vocabSize;
  const step = Math.max(1, Math.floor((n - COMPARED_HEAD) / COMPARED_SPREAD));
  for (let id = 0; id < n; id += id < COMPARED_HEAD ? 1 : step) {
    if (!target.tokenToPiece(id, { special: true }).equals(draft.tokenToPiece(id, { special: true }))) differ(`token ${id}`);
  }
}

/**
 * The draft model's context, one draft sequence beside each target sequence, and the proposing
 * loop. Each draft sequence follows its target lazily: before a draft it keeps the longest prefix
 * it shares with the target's tokens and evaluates the rest, so any edit of the target's cache
 * (a removed range, a restored state, a summary) is followed without hooks. @internal
 */
export class Drafter {
  readonly #native: NativeContext;
  /** The target context's work queue, which the draft's native work goes through (they share thread pools). */
  #enqueue: <T>(op: () => T | Promise<T>) => Promise<T> = async (op) => op();
  readonly #seqs: SequenceTokens[];
  readonly #sampler: Sampler;
  readonly #batchSize: number;
  readonly maxDraftTokens: number;
  readonly minProbability: number;
  readonly stats: DraftStats = { drafted: 0, accepted: 0 };

  private constructor(handle: NativeContext, sampler: Sampler, o: CheckedDraftOptions, sequences: number, batchSize: number) {
    this.#native = handle;
    this.#sampler = sampler;
    this.#batchSize = batchSize;
    this.maxDraftTokens = o.maxDraftTokens;
    this.minProbability = o.minProbability;
    this.#seqs = Array.from({ length: sequences }, (_, i) => new SequenceTokens(i));
  }

  /**
   * The draft context, shaped as the target's (`baton`: its sequences, size, cache types), on the
   * target's thread pools: two pools of spinning threads on the same cores would slow both.
   */
  static async create(o: CheckedDraftOptions, baton: NativeContextOptions, target: NativeContext): Promise<Drafter> {
    // The draft's own pick (greedy, no penalties): it guesses what the target most likely says.
    // Drafts read the top token's probability (logprobs), which only the CPU samples give.
    const sampler = new Sampler(o.model, { temperature: 0, repeatPenalty: 1, frequencyPenalty: 0, presencePenalty: 0, dryMultiplier: 0 }, { cpu: true });
    try {
      const handle = await native().Context.create(nativeModel(o.model), { ...baton, embeddings: false }, target);
      return new Drafter(handle, sampler, o, baton.sequences, handle.info().batchSize);
    } catch (err) {
      sampler.dispose();
      throw fromNative(err);
    }
  }

  /** Runs the draft's native work in the target context's queue (one computes at a time on the shared pools). */
  runIn(enqueue: <T>(op: () => T | Promise<T>) => Promise<T>): void {
    this.#enqueue = enqueue;
  }

  /**
   * Draft tokens for each request, in the order given (none where the draft was unsure at once).
   * A failure of the draft context costs only this step's drafts: those sequences are emptied and
   * re-evaluated at their next draft, and the target generates on.
   */
  async propose(requests: readonly DraftRequest[]): Promise<Int32Array[]> {
    let states: { r: DraftRequest; todo: Int32Array; offset: number; drafts: number[]; done: boolean }[] = [];
    try {
      states = await this.#enqueue(() => requests.map((r) => ({ r, todo: this.#follow(r), offset: 0, drafts: [] as number[], done: r.max < 1 })));
      for (;;) {
        let room = this.#batchSize;
        const turn: { s: (typeof states)[number]; tokens: Int32Array; sample: boolean }[] = [];
        for (const s of states) {
          if (s.done || room < 1) continue;
          const left = s.todo.length - s.offset;
          // Catching up on the target's tokens, in chunks; then one draft token per step.
          const tokens = left > 0 ? s.todo.subarray(s.offset, s.offset + Math.min(left, room)) : Int32Array.of(s.drafts[s.drafts.length - 1] as number);
          turn.push({ s, tokens, sample: left === 0 || s.offset + tokens.length === s.todo.length });
          room -= tokens.length;
        }
        if (turn.length === 0) break;
        const entries: NativeBatchEntry[] = turn.map((t) => ({
          seq: t.s.r.seq, tokens: t.tokens, sampler: this.#sampler.native, accept: false, sample: t.sample, logprobs: t.sample ? 0 : -1, draft: 0, steps: 1,
        }));
        const results = await this.#enqueue(() => this.#native.evalBatch(entries, null));
        turn.forEach((t, i) => {
          const s = t.s;
          const seq = this.#seqs[s.r.seq] as SequenceTokens;
          seq.append(t.tokens);
          if (s.offset < s.todo.length) s.offset += t.tokens.length;
          if (!t.sample) return;
          const res = results[i];
          const token = res?.token;
          if (token === undefined || res?.eog || Math.exp(res?.logprob ?? -Infinity) < this.minProbability) {
            s.done = true;
            return;
          }
          s.drafts.push(token);
          if (s.drafts.length >= s.r.max) s.done = true;
        });
      }
    } catch (err) {
      const e = fromNative(err);
      if (e.code !== "ERR_DISPOSED") await this.#enqueue(() => requests.forEach((r) => this.#forget(r.seq))).catch(() => undefined);
      return requests.map(() => new Int32Array(0));
    }
    return states.map((s) => Int32Array.from(s.drafts));
  }

  /** Books a verified draft: how many of `drafted` tokens the target accepted. */
  verified(drafted: number, accepted: number): void {
    this.stats.drafted += drafted;
    this.stats.accepted += accepted;
  }

  /** Keeps the draft sequence's longest prefix shared with the target (at least one token left to evaluate) and returns the rest. */
  #follow(r: DraftRequest): Int32Array {
    const seq = this.#seqs[r.seq] as SequenceTokens;
    const want = r.history.length + 1;
    const held = seq.list;
    const max = Math.min(held.length, want - 1);
    let common = 0;
    while (common < max && held[common] === r.history[common]) common++;
    if (common < held.length) {
      if (!this.#native.seqRemove(r.seq, common, -1)) {
        this.#forget(r.seq);
        common = 0;
      } else {
        seq.truncate(common);
      }
    }
    const todo = new Int32Array(want - common);
    for (let i = common; i < r.history.length; i++) todo[i - common] = r.history[i] as number;
    todo[todo.length - 1] = r.next;
    return todo;
  }

  /** Empties a draft sequence, so its next draft evaluates the target's tokens afresh. */
  #forget(seq: number): void {
    try {
      this.#native.seqRemove(seq, 0, -1);
    } catch {
      // A disposed draft context has nothing left to forget.
    }
    this.#seqs[seq]?.truncate(0);
  }

  /** The draft context's memory (the draft model's weights are the draft model's). */
  async memory(): Promise<ContextMemory> {
    const m = await this.#enqueue(() => this.#native.memory());
    const sum = (k: "model" | "context" | "compute") => m.rows.reduce((s, r) => s + r[k], 0);
    return { rows: m.rows, weights: sum("model"), kv: sum("context"), compute: sum("compute"), cellsUsed: m.cellsUsed, cells: m.cells };
  }

  abort(): void {
    this.#native.abort();
  }

  async dispose(): Promise<void> {
    this.#sampler.dispose();
    await this.#native.dispose();
  }
}
