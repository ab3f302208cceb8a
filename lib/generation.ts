/**
 * The one generation engine. A {@link GenerationJob} holds everything about one generation on
 * one sequence: the prompt still to evaluate, its sampler, stop strings, UTF-8 assembly, limits,
 * timings, and the resync of the sequence's tokens after a failed decode. The context's
 * {@link Engine} drives every job in flight with one batched decode per step, so one sequence
 * generating alone, many sequences of a pool, and prompt evaluation all run the same loop.
 */
import { LlamemError, fromNative, invalidArgument } from "./errors.js";
import type { NativeBatchEntry, NativeBatchResult, NativeContext } from "./internal/native.js";
import { DEFAULTS, type SamplingOptions } from "./options.js";
import { jsonSchemaToGrammar, type JsonSchema } from "./grammar/json-schema.js";
import { checkGbnf } from "./grammar/gbnf.js";
import type { Sampler } from "./sampler.js";
import type { Drafter, DraftStats } from "./speculative.js";

/** Options of {@link Sequence.generate}. */
export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 256). */
  maxTokens?: number;
  /** Stop when the output contains one of these strings; the stop string is not emitted. */
  stop?: string[];
  /** Cancels generation; the iterator throws ERR_ABORTED. */
  signal?: AbortSignal;
  /** Parse special-token text in the prompt (default false; true for chat-formatted prompts). */
  parseSpecial?: boolean;
  /** Add BOS as the model is configured to (default true). */
  addSpecial?: boolean;
  /**
   * Called with each generated token id, before its text is emitted. If it throws, the
   * generation ends and the iterator throws that error.
   */
  onToken?: (token: number) => void;
  /**
   * Record each generated token's log-probability and those of the `logprobs` most likely tokens
   * (0 to 100), from the raw logits (before samplers change them), in the result's `logprobs`.
   */
  logprobs?: number;
  /**
   * A GBNF grammar (llama.cpp's format, with a `root` rule) the output must follow. The
   * generation ends when the grammar is complete (the model can then only end its turn).
   */
  grammar?: string;
  /**
   * A JSON Schema the output must satisfy: turned into a grammar, so the text parses as JSON and
   * validates. Keywords that cannot be enforced exactly are ERR_INVALID_ARGUMENT, naming where.
   */
  jsonSchema?: JsonSchema;
}

/** Why a generation ended. */
export type StopReason = "eog" | "maxTokens" | "stop" | "contextFull" | "aborted";

/** Figures of the last generation. */
export interface GenerationResult {
  text: string;
  stopReason: StopReason;
  /** Tokens of the prompt (including those reused from the KV cache). */
  promptTokens: number;
  /** Prompt tokens actually evaluated (the rest were reused from the KV cache). */
  evaluatedPromptTokens: number;
  generatedTokens: number;
  /** Wall time from the call to the first piece, in ms. */
  timeToFirstTokenMs: number;
  promptTokensPerSecond: number;
  generatedTokensPerSecond: number;
  /** With the `logprobs` option: one entry per generated token. */
  logprobs?: TokenLogprob[];
  /** On a context with a draft model: the tokens drafted for this generation and those accepted. */
  draft?: DraftStats;
  /**
   * Generated tokens the device sampled inside the decode (see `backendSampling`); the others
   * were sampled on the CPU.
   */
  backendSampledTokens: number;
}

/** A generated token's log-probability, and the most likely tokens' at its position. */
export interface TokenLogprob {
  readonly token: number;
  /** The natural log of its probability under the model (softmax of the raw logits). */
  readonly logprob: number;
  /** The most likely tokens there, best first. */
  readonly top: readonly { readonly token: number; readonly logprob: number }[];
}

/** The generation options, checked before anything starts: a bad one never leaves a sequence busy. @internal */
export interface CheckedGenerateOptions {
  readonly maxTokens: number;
  readonly stops: readonly string[];
  readonly signal: AbortSignal | undefined;
  readonly onToken: ((token: number) => void) | undefined;
  /** The grammar of `grammar` or `jsonSchema`. */
  readonly grammar: string | undefined;
  /** Top alternatives to record, or -1 for no log-probabilities. */
  readonly logprobs: number;
}

/** Checks the options every generation shares; ERR_INVALID_ARGUMENT names the bad one. @internal */
export function checkGenerateOptions(o: GenerateOptions | undefined): CheckedGenerateOptions {
  if (o !== undefined && (o === null || typeof o !== "object")) invalidArgument("options must be an object");
  const maxTokens = o?.maxTokens ?? DEFAULTS.maxTokens;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) invalidArgument("maxTokens must be a non-negative integer");
  const stop = o?.stop ?? [];
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== "string")) invalidArgument("stop must be an array of strings");
  const signal = o?.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) invalidArgument("signal must be an AbortSignal");
  const onToken = o?.onToken;
  if (onToken !== undefined && typeof onToken !== "function") invalidArgument("onToken must be a function");
  const logprobs = o?.logprobs ?? -1;
  if (o?.logprobs !== undefined && (!Number.isInteger(logprobs) || logprobs < 0 || logprobs > 100)) invalidArgument("logprobs must be an integer in [0, 100]");
  return { maxTokens, stops: stop.filter((s) => s.length > 0), signal, onToken, grammar: grammarOf(o), logprobs };
}

/** The grammar a generation follows: `grammar` as given, or `jsonSchema`'s. @internal */
export function grammarOf(o: Pick<GenerateOptions, "grammar" | "jsonSchema"> | undefined): string | undefined {
  if (o?.grammar !== undefined && o.jsonSchema !== undefined) invalidArgument("grammar and jsonSchema cannot both be given");
  if (o?.grammar !== undefined) {
    if (typeof o.grammar !== "string" || o.grammar.trim().length === 0) invalidArgument("grammar must be a non-empty GBNF string");
    // Checked here so a bad grammar says where (llama.cpp tells only its log), and so the shapes
    // llama.cpp's parser mishandles (a repetition {m,n} with n < m) never reach it.
    checkGbnf(o.grammar, "root", "grammar");
    return o.grammar;
  }
  return o?.jsonSchema === undefined ? undefined : jsonSchemaToGrammar(o.jsonSchema, { where: "jsonSchema" });
}

/** The tokens one sequence holds in the KV cache, positions 0..n-1, in order. @internal */
export class SequenceTokens {
  readonly list: number[] = [];

  constructor(
    /** The sequence id in the context. */
    readonly id: number,
  ) {}

  get length(): number {
    return this.list.length;
  }

  append(tokens: ArrayLike<number>): void {
    // A loop, not push(...tokens): a spread of a long prompt overflows the call stack.
    for (let i = 0; i < tokens.length; i++) this.list.push(tokens[i] as number);
  }

  truncate(length: number): void {
    this.list.length = length;
  }

  replace(tokens: readonly number[]): void {
    this.list.length = 0;
    this.append(tokens);
  }
}

/**
 * Decodes token pieces into whole UTF-8 characters and cuts the text at the first stop string.
 * Text that could still turn into a stop string is held back, so a stop string is never emitted.
 */
class PieceText {
  readonly #stops: readonly string[];
  readonly #holdback: number;
  readonly #decoder = new TextDecoder("utf-8");
  #pending = "";
  /** The text emitted so far. */
  text = "";

  constructor(stops: readonly string[]) {
    this.#stops = stops;
    this.#holdback = stops.reduce((m, s) => Math.max(m, s.length - 1), 0);
  }

  /** Adds a token's bytes; returns the text that may be emitted now and whether a stop string was hit. */
  push(piece: Uint8Array): { out: string; stopped: boolean } {
    this.#pending += this.#decoder.decode(piece, { stream: true });
    let hit = -1;
    for (const s of this.#stops) {
      const i = this.#pending.indexOf(s);
      if (i >= 0 && (hit < 0 || i < hit)) hit = i;
    }
    const stopped = hit >= 0;
    if (stopped) this.#pending = this.#pending.slice(0, hit);
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
class PieceQueue {
  readonly #items: string[] = [];
  #done = false;
  #failed = false;
  #error: unknown;
  #wake: (() => void) | undefined;

  push(item: string): void {
    this.#items.push(item);
    this.#notify();
  }

  end(err?: { error: unknown }): void {
    this.#done = true;
    if (err) {
      this.#failed = true;
      this.#error = err.error;
    }
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async *drain(): AsyncGenerator<string, void, void> {
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

/**
 * One step's share of a job: tokens to decode, and whether to sample after them. A generating
 * job on a context with a draft model also gets room for draft tokens, which the step fills in
 * (`tokens` then ends with `draft` tokens to verify).
 */
interface Part {
  readonly job: GenerationJob;
  tokens: Int32Array;
  readonly sample: boolean;
  readonly draftRoom: number;
  draft: number;
}

/** One generation (or, without a sampler, one prompt evaluation) on one sequence. @internal */
export class GenerationJob {
  readonly seq: SequenceTokens;
  readonly #prompt: Int32Array;
  readonly #promptLength: number;
  readonly #options: CheckedGenerateOptions;
  readonly #sampler: Sampler | undefined;
  readonly #text: PieceText;
  readonly queue = new PieceQueue();
  readonly #t0: number;
  /** Prompt tokens evaluated so far. */
  #offset = 0;
  /** The last sampled token, to feed back at the next step; undefined while the prompt is evaluated. */
  #next: number | undefined;
  #generated = 0;
  readonly #logprobs: TokenLogprob[] = [];
  /** Set by an engine with a draft model: the result reports the drafts. */
  drafting = false;
  #drafted = 0;
  #accepted = 0;
  #backendSampled = 0;
  #promptStart = 0;
  #promptMs = 0;
  #firstMs = 0;
  #genStart = 0;
  /**
   * When the native side finished the step that ended the prompt and the last step booked
   * (llama_time_us): a loop's steps can reach JS together, so the generation rate is timed on
   * the native clock, one step's end to another's.
   */
  #genStartUs = -1;
  #lastUs = -1;
  /** Microseconds llama.cpp spent in the decodes of this job's steps. */
  decodeUs = 0;
  /** The consumer stopped early: the engine drops the job at its next step. */
  cancelled = false;
  /**
   * Whether each step must reach JS as it ends: the pieces are streamed, given to `onToken`, or
   * checked for a stop string (which halts a loop). Else a loop's steps are booked together.
   */
  readonly streams: boolean;
  result: GenerationResult | undefined;
  readonly settled: Promise<void>;
  #settle!: () => void;
  /** While a native loop runs, the end the consumer sees waits for it (see {@link hold}). */
  #held = false;
  #pendingEnd: (() => void) | undefined;

  /**
   * @param prompt the tokens to evaluate (after the cached prefix); at least one.
   * @param promptLength the whole prompt's length, cached prefix included.
   * @param sampler the sampler, or undefined to evaluate the prompt only.
   * @param t0 when the call began (performance.now()), for the time to the first piece.
   * @param consumer whether someone takes the pieces as they come (a streaming caller); with an
   *   `onToken` callback or stop strings, each step is booked as it ends whatever this says.
   */
  constructor(seq: SequenceTokens, prompt: Int32Array, promptLength: number, options: CheckedGenerateOptions, sampler: Sampler | undefined, t0: number, consumer = true) {
    this.seq = seq;
    this.streams = consumer || options.onToken !== undefined || options.stops.length > 0;
    this.#prompt = prompt;
    this.#promptLength = promptLength;
    this.#options = options;
    this.#sampler = sampler;
    this.#text = new PieceText(options.stops);
    this.#t0 = t0;
    this.settled = new Promise<void>((resolve) => {
      this.#settle = resolve;
    });
  }

  get signal(): AbortSignal | undefined {
    return this.#options.signal;
  }

  get done(): boolean {
    return this.result !== undefined;
  }

  /** True once the prompt is evaluated and the job feeds back one sampled token per step. */
  get generating(): boolean {
    return this.#next !== undefined;
  }

  /**
   * This step's share, within `room` tokens of the batch: the fed-back token (with up to
   * `draftRoom` draft tokens after it), or the next prompt chunk.
   */
  part(room: number, draftRoom = 0): Part | undefined {
    if (room < 1 || this.done) return undefined;
    if (this.#next !== undefined) return { job: this, tokens: Int32Array.of(this.#next), sample: true, draftRoom: Math.max(0, Math.min(draftRoom, room - 1)), draft: 0 };
    const left = this.#prompt.length - this.#offset;
    if (left === 0) return undefined;
    if (this.#offset === 0) this.#promptStart = performance.now();
    const n = Math.min(left, room);
    return { job: this, tokens: this.#prompt.subarray(this.#offset, this.#offset + n), sample: n === left && this.#sampler !== undefined, draftRoom: 0, draft: 0 };
  }

  /**
   * Most draft tokens this step can verify: as many as the tokens still to generate allow after
   * the fed-back one's sample, and room in the sequence for all of them plus the next. None when
   * log-probabilities are asked for (they are recorded one token at a time).
   */
  draftLimit(capacity: number): number {
    if (this.#next === undefined || !this.#sampler || this.#options.logprobs >= 0) return 0;
    return Math.max(0, Math.min(this.#options.maxTokens - this.#generated - 1, capacity - this.seq.length - 2));
  }

  /** Whether the job samples text a draft can speed up (a sampler, and no log-probabilities to record). */
  get generatesText(): boolean {
    return this.#sampler !== undefined && this.#options.maxTokens > 0 && this.#options.logprobs < 0;
  }

  /** The token fed back at the next step (a draft continues from it). */
  get next(): number | undefined {
    return this.#next;
  }

  /**
   * The native batch entry of a part, which may take up to `steps` decodes in a native loop.
   * Prompt chunks go into the sampler's history, so repetition penalties see the prompt.
   */
  entry(part: Part, steps: number): NativeBatchEntry {
    const sampler = this.#sampler?.native ?? null;
    return {
      seq: this.seq.id, tokens: part.tokens, sampler, accept: sampler !== null && this.#next === undefined,
      sample: part.sample, logprobs: part.sample ? this.#options.logprobs : -1, draft: part.draft, steps,
    };
  }

  /**
   * Most decodes a part may take in a native loop, up to `max`: the steps this job's own limits
   * allow (its token budget, and the room in its sequence before the context is full), so the
   * native side stops where {@link take} would. A stop string or a cancel ends it from here.
   */
  loopSteps(part: Part, capacity: number, max: number): number {
    if (!part.sample || part.draft > 0) return 1;
    const left = this.#options.maxTokens - this.#generated;
    const room = capacity - this.seq.length - part.tokens.length;
    return Math.max(1, Math.min(max, left, room));
  }

  /**
   * Called before a native loop starts: an end during the loop settles the consumer only at
   * {@link release}, once the loop has returned and any cell decoded past the end is removed, so
   * the consumer never sees the sequence holding more than its tokens.
   */
  hold(): void {
    this.#held = true;
  }

  /** Ends the hold: an end that came during the loop reaches the consumer now. */
  release(): void {
    this.#held = false;
    const end = this.#pendingEnd;
    this.#pendingEnd = undefined;
    end?.();
  }

  /** Books a step's result: the tokens evaluated, then the token (or, after a draft, tokens) sampled. */
  take(part: Part, r: NativeBatchResult, capacity: number, decodeUs: number): void {
    this.decodeUs += decodeUs;
    this.#lastUs = r.doneUs;
    if (r.sampled !== undefined) return this.#takeVerified(part, r.sampled, r.pieces ?? [], r.eog === true, capacity);
    this.seq.append(part.tokens);
    if (this.#next === undefined) {
      this.#offset += part.tokens.length;
      if (this.#offset < this.#prompt.length) return;
      this.#promptMs = performance.now() - this.#promptStart;
      this.#genStart = performance.now();
      this.#genStartUs = r.doneUs;
      if (!this.#sampler || this.#options.maxTokens === 0) return this.finish("maxTokens");
    }
    if (r.backend === true) this.#backendSampled++;
    if (r.eog || r.token === undefined) return this.finish("eog");
    if (r.logprob !== undefined) {
      const top = Array.from(r.topTokens ?? [], (token, i) => ({ token, logprob: r.topLogprobs?.[i] as number }));
      this.#logprobs.push({ token: r.token, logprob: r.logprob, top });
    }
    if (this.#book(r.token, r.piece ?? new Uint8Array(0), this.seq.length, capacity)) this.#next = r.token;
  }

  /**
   * Books a verified draft: the sequence kept the fed-back token and the accepted drafts (the
   * native side removed the rest), and each sampled token is booked as if it had come from a
   * step of its own, at the sequence length it would have had then, so limits end the
   * generation at the same token as without a draft.
   */
  #takeVerified(part: Part, sampled: Int32Array, pieces: readonly Uint8Array[], eog: boolean, capacity: number): void {
    const accepted = sampled.length - 1;
    const base = this.seq.length;
    this.seq.append(part.tokens.subarray(0, part.tokens.length - part.draft + accepted));
    this.#drafted += part.draft;
    this.#accepted += accepted;
    for (let i = 0; i < sampled.length; i++) {
      if (eog && i === sampled.length - 1) return this.finish("eog");
      if (!this.#book(sampled[i] as number, pieces[i] ?? new Uint8Array(0), base + 1 + i, capacity)) return;
    }
    this.#next = sampled[sampled.length - 1];
  }

  /**
   * Books one sampled token, with the sequence `length` it follows: callback, text, stop strings
   * and limits. False when the generation ended with it.
   */
  #book(token: number, piece: Uint8Array, length: number, capacity: number): boolean {
    this.#generated++;
    try {
      this.#options.onToken?.(token);
    } catch (err) {
      // The documented rule: a throwing callback ends the generation with its own error.
      this.finish("aborted", err);
      return false;
    }
    const { out, stopped } = this.#text.push(piece);
    this.#emit(out);
    if (stopped) this.finish("stop");
    else if (this.#generated >= this.#options.maxTokens) this.finish("maxTokens");
    else if (length + 1 >= capacity) this.finish("contextFull");
    else return true;
    return false;
  }

  #emit(out: string): void {
    if (out.length === 0) return;
    if (this.#firstMs === 0) this.#firstMs = performance.now() - this.#t0;
    this.queue.push(out);
  }

  /** Ends the job: frees its sampler, flushes held-back text, records the figures and settles the consumer. */
  finish(stopReason: StopReason, error?: unknown): void {
    if (this.done) return;
    this.#sampler?.dispose();
    if (error === undefined) this.#emit(this.#text.end());
    const genMs = this.#genStartUs >= 0 ? (this.#lastUs - this.#genStartUs) / 1000 : this.#genStart > 0 ? performance.now() - this.#genStart : 0;
    const evaluated = this.#prompt.length;
    this.result = {
      text: this.#text.text,
      stopReason,
      promptTokens: this.#promptLength,
      evaluatedPromptTokens: evaluated,
      generatedTokens: this.#generated,
      timeToFirstTokenMs: this.#firstMs,
      promptTokensPerSecond: this.#promptMs > 0 ? (evaluated / this.#promptMs) * 1000 : 0,
      // The first token came with the prompt step, so the rate counts the ones after it.
      generatedTokensPerSecond: genMs > 0 && this.#generated > 1 ? ((this.#generated - 1) / genMs) * 1000 : 0,
      ...(this.#options.logprobs >= 0 ? { logprobs: this.#logprobs } : {}),
      ...(this.drafting ? { draft: { drafted: this.#drafted, accepted: this.#accepted } } : {}),
      backendSampledTokens: this.#backendSampled,
    };
    const end = () => {
      this.queue.end(error === undefined ? undefined : { error });
      this.#settle();
    };
    if (this.#held) this.#pendingEnd = end;
    else end();
  }
}

/** What the engine needs of its context. @internal */
export interface EngineContext {
  readonly native: NativeContext;
  /** Runs native work in order with every other operation on the context. */
  enqueue<T>(op: () => T | Promise<T>): Promise<T>;
  /** Most tokens one decode takes. */
  readonly batchSize: number;
  /** Tokens one sequence can hold. */
  readonly sequenceContextSize: number;
  /** The draft model's proposer, on a context with speculative decoding. */
  readonly drafter?: Drafter | undefined;
  /**
   * Whether a native loop may run: a loop can decode a token past a job's end, which is then
   * removed, and a recurrent state cannot take a step back.
   */
  readonly loops: boolean;
}

/** Decodes and figures of an engine since its context was created. @internal */
export interface EngineStats {
  /** Batched decodes run, and the tokens they held. */
  steps: number;
  batchedTokens: number;
}

/**
 * The context's generation loop: while jobs are in flight, one step decodes a token for every
 * generating job and prompt chunks in the room left, in one batch; jobs join and leave between
 * steps. While every job in flight generates (no prompt chunk waits, no draft), the steps run in
 * a native loop: the native side feeds each sampled token back itself and streams each step's
 * results here, so a token costs no round trip through the JS thread. A new job, other work on
 * the context or a job's end halts that loop after its current step. @internal
 */
export class Engine {
  readonly #ctx: EngineContext;
  #jobs: GenerationJob[] = [];
  #running = false;
  /** The jobs of the decode in flight. */
  #inFlight: readonly GenerationJob[] = [];
  /** A native call is queued or running, and whether it has started. */
  #calling = false;
  #started = false;
  /** Asked to halt before the queued native call started: it then runs one step. */
  #haltWanted = false;
  readonly stats: EngineStats = { steps: 0, batchedTokens: 0 };

  /** Whether generations verify drafts (speculative decoding), which samples on the CPU. */
  get drafts(): boolean {
    return this.#ctx.drafter !== undefined;
  }

  constructor(ctx: EngineContext) {
    this.#ctx = ctx;
  }

  /** Runs `job` to its end, streaming its pieces; stopping the iteration early cancels it. */
  async *run(job: GenerationJob): AsyncGenerator<string, void, void> {
    const signal = job.signal;
    // A decode holding only this job is aborted at once; a shared one drops the job at the next step.
    const onAbort = () => {
      if (this.#inFlight.length > 0 && this.#inFlight.every((j) => j === job)) this.#ctx.native.abort();
      else this.interrupt();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    job.drafting = this.drafts && job.generatesText;
    this.#jobs.push(job);
    // The new job joins at the next step, so a native loop in flight ends after its current one.
    this.interrupt();
    this.#kick();
    try {
      yield* job.queue.drain();
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (!job.done) {
        job.cancelled = true;
        this.interrupt();
        await job.settled;
      }
    }
  }

  /** Work waits on the context: a native loop in flight stops after its current step. */
  interrupt(): void {
    if (!this.#calling) return;
    if (this.#started) this.#ctx.native.haltLoop();
    else this.#haltWanted = true;
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
      // A bug here must fail the jobs waiting on the loop, not leave them hanging.
      for (const job of this.#jobs.splice(0)) {
        job.finish("aborted", fromNative(err));
        job.release();
      }
    } finally {
      // Reset in the same tick as the last check of #jobs, so a job added after it starts a new loop.
      this.#running = false;
    }
  }

  /**
   * Drops finished, cancelled and aborted jobs, then runs one batched decode for the rest, or a
   * native loop of them while every one generates.
   */
  async #step(): Promise<void> {
    for (const job of this.#jobs) {
      if (job.cancelled) job.finish("aborted");
      else if (job.signal?.aborted) job.finish("aborted", new LlamemError("ERR_ABORTED", "generation was aborted"));
    }
    this.#jobs = this.#jobs.filter((j) => !j.done);
    // In sequence order: with a KV stream per sequence, llama.cpp splits a batch wherever the next
    // sequence id is not the previous one plus one (llama_batch_allocr::split_equal, sequential),
    // and each split is a forward pass of its own.
    const parts = this.#plan().sort((a, b) => a.job.seq.id - b.job.seq.id);
    if (parts.length === 0) return;
    await this.#draft(parts);
    const capacity = this.#ctx.sequenceContextSize;
    const { maxSteps, maxMs } = DEFAULTS.generationLoop;
    const loops = this.#ctx.loops && !this.drafts && parts.length === this.#jobs.length && parts.every((p) => p.sample && p.draft === 0);
    const steps = loops ? maxSteps : 1;
    const entries = parts.map((p) => p.job.entry(p, loops ? p.job.loopSteps(p, capacity, maxSteps) : 1));
    const bySeq = new Map(parts.map((p) => [p.job.seq.id, p]));
    let bookError: unknown;
    let delivered = 0;
    const onStep = (results: NativeBatchResult[]) => {
      delivered++;
      try {
        this.#book(bySeq, results, capacity);
      } catch (err) {
        // A bug in booking must not be lost in the native callback: the loop stops and the engine fails.
        bookError ??= err;
        this.#ctx.native.haltLoop();
      }
    };
    let failure: LlamemError | undefined;
    for (const p of parts) p.job.hold();
    this.#inFlight = parts.map((p) => p.job);
    this.#calling = true;
    try {
      await this.#ctx.enqueue(() => {
        const n = this.#haltWanted ? 1 : steps;
        this.#haltWanted = false;
        this.#started = true;
        return this.#ctx.native.evalBatch(entries, { steps: n, maxMs, stream: parts.some((p) => p.job.streams), onStep });
      });
    } catch (err) {
      failure = fromNative(err);
    } finally {
      this.#inFlight = [];
      this.#calling = false;
      this.#started = false;
      this.#haltWanted = false;
    }
    try {
      if (bookError !== undefined) throw bookError;
      // A call that neither failed nor delivered a step would run the same step forever.
      if (failure === undefined && delivered === 0) throw new LlamemError("ERR_INTERNAL", "the native decode returned without a step");
      if (failure) await this.#resync(parts, failure);
      // A single step decodes nothing past an end; a loop, or a failed step, may have.
      if (loops || failure) await this.#trim(parts, failure);
    } finally {
      for (const p of parts) p.job.release();
    }
  }

  /** Books one step's results: each job takes its token, and a job that ends halts the loop. */
  #book(bySeq: ReadonlyMap<number, Part>, results: readonly NativeBatchResult[], capacity: number): void {
    this.stats.steps++;
    for (const r of results) {
      this.stats.batchedTokens += r.evaluated;
      const p = bySeq.get(r.seq);
      // A job that ended at an earlier step of this loop: its cells past the end go in #trim.
      if (!p || p.job.done) continue;
      const job = p.job;
      if (r.sampled !== undefined) this.#ctx.drafter?.verified(p.draft, r.sampled.length - 1);
      job.take(p, r, capacity, r.decodeUs);
      if (!job.done && job.cancelled) job.finish("aborted");
      else if (!job.done && job.signal?.aborted) job.finish("aborted", new LlamemError("ERR_ABORTED", "generation was aborted"));
      if (job.done) {
        this.#ctx.native.haltLoop();
        continue;
      }
      // What the next step of the loop feeds, if the native side goes on with this job.
      p.tokens = Int32Array.of(job.next as number);
      p.draft = 0;
    }
  }

  /**
   * Removes the cells a loop decoded past a job's end (it went on while the end was seen here,
   * or a step failed): removing at the end of a sequence is exact.
   */
  async #trim(parts: readonly Part[], failure: LlamemError | undefined): Promise<void> {
    if (failure?.code === "ERR_DISPOSED") return;
    const ended = parts.filter((p) => p.job.done);
    if (ended.length === 0) return;
    await this.#ctx.enqueue(() => {
      for (const p of ended) {
        const n = p.job.seq.length;
        if (this.#ctx.native.seqPosRange(p.job.seq.id)[1] >= n) this.#ctx.native.seqRemove(p.job.seq.id, n, -1);
      }
    });
  }

  /**
   * This step's tokens: one for each generating job first (with room for its drafts on a context
   * with a draft model), then prompt chunks in the room left.
   */
  #plan(): Part[] {
    let room = this.#ctx.batchSize;
    const parts: Part[] = [];
    const order = [...this.#jobs.filter((j) => j.generating), ...this.#jobs.filter((j) => !j.generating)];
    const drafter = this.#ctx.drafter;
    for (const job of order) {
      const draftRoom = drafter ? Math.min(drafter.maxDraftTokens, job.draftLimit(this.#ctx.sequenceContextSize)) : 0;
      const part = job.part(room, draftRoom);
      if (!part) continue;
      parts.push(part);
      room -= part.tokens.length + part.draftRoom;
    }
    return parts;
  }

  /** Fills the parts that have room for drafts with the draft model's proposals (the draft runs before the target's decode). */
  async #draft(parts: Part[]): Promise<void> {
    const drafter = this.#ctx.drafter;
    const asking = parts.filter((p) => p.draftRoom > 0);
    if (!drafter || asking.length === 0) return;
    const drafts = await drafter.propose(asking.map((p) => ({ seq: p.job.seq.id, history: p.job.seq.list, next: p.tokens[0] as number, max: p.draftRoom })));
    asking.forEach((p, i) => {
      const d = drafts[i];
      if (!d || d.length === 0) return;
      const tokens = new Int32Array(1 + d.length);
      tokens[0] = p.tokens[0] as number;
      tokens.set(d, 1);
      p.tokens = tokens;
      p.draft = d.length;
    });
  }

  /**
   * A failed decode fails the jobs in it; each sequence keeps what the cache actually holds of
   * the tokens the failed step fed (`p.tokens`, after the steps already booked).
   */
  async #resync(parts: readonly Part[], err: LlamemError): Promise<void> {
    for (const p of parts) {
      if (p.job.done) continue;
      if (err.code !== "ERR_DISPOSED") {
        const base = p.job.seq.length;
        const max = await this.#ctx.enqueue(() => this.#ctx.native.seqPosRange(p.job.seq.id)[1]).catch(() => base - 1);
        p.job.seq.append(p.tokens.subarray(0, Math.max(0, Math.min(p.tokens.length, max + 1 - base))));
      }
      p.job.finish("aborted", err);
    }
  }
}
