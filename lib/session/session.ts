/**
 * Chat sessions: the turn flow. A turn adds the user message, applies the memory policy (the
 * planner decides which turns go; this file archives, summarizes, prunes and reports them),
 * brings the KV cache in line with the new prompt (cache-sync.ts), generates and records the
 * reply. Also creating, saving and loading sessions.
 */
import { LlamemError, invalidArgument } from "../errors.js";
import { Model } from "../model.js";
import { Context, type ContextOptions } from "../context.js";
import { Sequence } from "../sequence.js";
import { checkGenerateOptions, grammarOf, type GenerateOptions, type GenerationResult } from "../generation.js";
import type { JsonSchema } from "../grammar/json-schema.js";
import { ReasoningSplitter, opensThinking, thinkingTags, type ThinkingTags } from "../chat/reasoning.js";
import { toolCallFormat, type ToolCallFormat } from "../chat/tool-calls.js";
import { commonPrefix } from "./render.js";
import { Toolbox, type SessionTool, type ToolCallRecord } from "./tools.js";
import { checkToolChoice, parseArguments, type ToolChoice } from "../chat/tool-calls.js";
import { RECALL_LABEL, RecallIndex, turnText, type RecalledTurn } from "./recall.js";
import { DEFAULTS, samplerBaton, samplingOf, type SamplingOptions } from "../options.js";
import { decodeState } from "../state.js";
import { Archive } from "./archive.js";
import { fitCache, joinPeers, layoutAfter, leavePeers, peersOn, sameTokens, type CachePeer, type Layout, type LayoutItem } from "./cache-sync.js";
import {
  copyMessage,
  resolveMemory,
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
import { readSession, writeSession, type SavedHeader, type SavedRef } from "./persist.js";
import { agedOut, budgetTokens, describeTurns, outsideWindow, pinnedFacts, pinnedMessage, promptFloor, splitTurns, toFold, toShed, turnStarts, type TurnFacts } from "./planner.js";
import { Renderer, itemOf, keyOf, messageOf, yieldToLoop, type RenderItem, type Rendered } from "./render.js";
import { SequenceRunner, restoreOrForget, type SessionRunner } from "./runner.js";
import { SUMMARY_LABEL, summarizeTurns, summaryMaxTokens, untilAborted } from "./summarizer.js";

/** Options of {@link createSession}. */
export interface SessionOptions extends SamplingOptions {
  /** The system prompt, sent first in every prompt. */
  system?: string;
  /** How the prompt is kept within bounds (default: drop the oldest turns to fit the context). */
  memory?: MemoryOptions;
  /** Most tokens of a reply, unless a prompt says otherwise (default 256, DEFAULTS.maxTokens). */
  maxTokens?: number;
  /** Stop strings of every reply (a prompt's own `stop` replaces them). */
  stop?: string[];
  /** A chat template to use instead of the model's own. */
  template?: string;
  /** Called with every memory decision (prune, summarize, archive), before the reply is generated. */
  onMemoryEvent?: (event: MemoryEvent) => void;
  /** Options of the context created when the target is a Model. */
  context?: ContextOptions;
  /**
   * Tools the model may call, by name. A turn runs the calls the model makes, sends each result
   * back as a tool message, and goes on until the model answers (at most DEFAULTS.maxToolRounds
   * rounds). Needs a Jinja chat template whose tool-call format llamem knows (Hermes/Qwen,
   * Llama 3.x, Mistral).
   */
  tools?: Readonly<Record<string, SessionTool>>;
  /** Pin the turns that hold tool calls, so the memory policy never evicts them (default false). A call and its result are never split either way. */
  pinToolCalls?: boolean;
  /** `enable_thinking` for reasoning models' templates (default: the template's own). */
  thinking?: boolean;
  /** Keep each reply's reasoning in the prompt of later turns (default false: dropped, as the families' templates do, saving context and KV cells). */
  keepReasoning?: boolean;
  /** More variables for the chat template (chat_template_kwargs). */
  templateVariables?: Record<string, unknown>;
}

/** Options of {@link ChatSession.prompt} and {@link ChatSession.stream}. */
export interface PromptOptions extends SamplingOptions {
  /** Most tokens of the reply (default: the session's maxTokens). */
  maxTokens?: number;
  /** Stop strings (default: the session's). */
  stop?: string[];
  /**
   * Cancels the turn: the iterator throws ERR_ABORTED and the history is left as it was. It also
   * reaches a summarizer the turn runs (which the turn stops waiting for when it aborts).
   */
  signal?: AbortSignal;
  /** Pin this turn: it is never evicted. */
  pinned?: boolean;
  /** Called with each generated token id. */
  onToken?: (token: number) => void;
  /** A GBNF grammar the reply must follow (not with tools called this turn). */
  grammar?: string;
  /** A JSON Schema the reply must satisfy (not with tools called this turn). */
  jsonSchema?: JsonSchema;
  /** Which tools the model should call: "auto" (default: it may), "none", "required" (one call, forced by a grammar), or one tool by name. */
  toolChoice?: ToolChoice;
  /** Record each reply token's log-probability and the top n alternatives (see GenerateOptions.logprobs); in `respond().generation.logprobs`. */
  logprobs?: number;
}

/** One event of a turn, from {@link ChatSession.events}. */
export type TurnEvent =
  /** A piece of the answer. */
  | { readonly type: "text"; readonly text: string }
  /** A piece of the model's reasoning (models that think before answering). */
  | { readonly type: "reasoning"; readonly text: string }
  /** A tool call the session ran, with its result. */
  | { readonly type: "toolCall"; readonly call: ToolCallRecord };

/** What a turn produced, from {@link ChatSession.respond}. */
export interface SessionReply {
  /** The answer. */
  readonly text: string;
  /** The reasoning before it, if the model reasoned. */
  readonly reasoning: string | undefined;
  /** The tool calls run during the turn, in order. */
  readonly toolCalls: readonly ToolCallRecord[];
  /** The figures of the last generation of the turn. */
  readonly generation: GenerationResult;
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
  /**
   * With memory.recall: archived turns its store keeps, and the bytes of the embedding context
   * recall created on a Model (KV cache and compute buffers; 0 with an app function).
   */
  recall?: { turns: number; contextBytes: number };
}

/** A memory decision before the KV outcome is known. */
type PendingEvent = Omit<MemoryEvent, "kvReused" | "reevaluatedTokens">;

/** Turns an eviction handles between turns of the event loop (about a millisecond's work). */
const EVICT_SLICE = 1024;

/**
 * A "tokenBudget" history longer than this many messages is checked for old turns that cannot
 * fit before it is rendered whole (Session#pruneUnfit), starting from this many newest turns.
 */
const UNFIT_CHECK_MESSAGES = 512;
const UNFIT_FIRST_TURNS = 64;

/** A summary written in the background after a turn (summarizing ahead of need). */
interface Ahead {
  readonly abort: AbortController;
  /** The turns it folds and the summary it extends. */
  readonly fold: readonly Turn[];
  readonly previous: string | undefined;
  /** Settles (never rejects) once the work has stopped and the sequence holds what it held before. */
  done: Promise<void>;
  /** The new summary, once written, and the characters of its turns the model could not read. */
  text?: string;
  cutChars?: number;
  /** Prompt tokens evaluated for it, and the time it ran. */
  tokens: number;
  ms: number;
  /** Set when the history changed under it: it is dropped without an event. */
  discarded?: boolean;
  /**
   * The model's summary tokens generated so far. A cancelled summary keeps them: the next idle
   * time goes on from there (greedy decoding continues as if never stopped) while its turns are
   * still in the history and the summary it extends is still the current one.
   */
  partial: number[];
  /** Written on `memory.summarySequence`, beside the turns: a prompt does not cancel it. */
  readonly beside: boolean;
  /** Set once the work has stopped, written or not. */
  finished?: boolean;
  /** The summary sequence holds the summary evaluated as the message it becomes (see #prepare). */
  prepared?: boolean;
}

/** What became of the background summary when a turn began. */
type AheadOutcome =
  | { readonly ready: { readonly fold: readonly Turn[]; readonly previous: string | undefined; readonly text: string; readonly cutChars: number; readonly tokens: number; readonly prepared?: Sequence | undefined } }
  | { readonly cancelled: { readonly tokens: number; readonly ms: number } }
  | { readonly running: Ahead };

/** Tokens of `messages` evicted unrendered, estimated from the prompt `r` of `items` rendered items. */
function unrenderedTokens(r: Rendered, items: number, messages: number): number {
  return Math.round((r.tokens.length * messages) / Math.max(1, items));
}

/** The memory event's `summaryCutChars`: present only where the model could not read every turn whole. */
function cutOf(chars: number): { summaryCutChars?: number } {
  return chars > 0 ? { summaryCutChars: chars } : {};
}

/** An id for a call the model gave none: unique within the session's turn. */
function toolCallId(round: number, index: number): string {
  return `call_${round}_${index}`;
}

/** ERR_CONTEXT_FULL for a prompt of `tokens` (`what`) in a sequence of `contextSize`. */
function contextFull(what: string, tokens: number, contextSize: number): LlamemError {
  return new LlamemError(
    "ERR_CONTEXT_FULL",
    `${what} ${tokens} tokens but the context holds ${contextSize} per sequence; send a shorter message or use a larger contextSize`,
  );
}

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
  /** This session as its context's other sessions see it when sharing prefixes. */
  readonly #peer: CachePeer = { sequence: () => this.#runner.sequence, busy: () => this.#busy };
  #system: string | undefined;
  #summary: { readonly key: object; readonly text: string } | undefined;
  #history: SessionMessage[] = [];
  #layout: Layout | undefined;
  #busy = false;
  #last: GenerationResult | undefined;
  #disposed = false;
  #disposing: Promise<void> | undefined;
  /** The turn in progress: aborting it is how dispose() ends it; `ended` settles when it has. */
  #turn: { readonly abort: AbortController; readonly ended: Promise<void> } | undefined;
  /** True while the turn's consumer holds a piece (the stream is suspended at a yield). */
  #parked = false;
  /** The messages whose tokens the cache held at the end of the last turn (the prompt's and the reply), for summaries written after them. */
  #cachedItems: readonly RenderItem[] | undefined;
  /** The summary being written, or written, in the background since the last turn. */
  #ahead: Ahead | undefined;
  /** A summary sequence holding the summary message this turn's fold inserts, evaluated ahead. */
  #prepared: Sequence | undefined;
  /** A background summary cancelled by a prompt, to go on with in the next idle time. */
  #paused: Ahead | undefined;
  #counters = { summaries: 0, turnsEvicted: 0, evaluatedTokens: 0, generatedTokens: 0 };
  readonly #tools: Toolbox | undefined;
  readonly #toolFormat: ToolCallFormat | undefined;
  readonly #thinking: ThinkingTags | undefined;
  readonly #keepReasoning: boolean;
  readonly #pinToolCalls: boolean;
  /** The archived turns' vectors, when memory.recall is on. */
  readonly #recall: RecallIndex | undefined;
  /** The recalled block of the turn in progress, placed just before its user message. */
  #recalled: { readonly key: object; readonly before: SessionMessage; readonly text: string } | undefined;
  /** A failure to embed archived turns, reported by the next recall event. */
  #recallError: Error | undefined;
  /** Archived turns the recall store forgot (its cap or age limit) since the last recall event. */
  #recallForgotten = 0;
  /** Whether the turns archived before this session (a loaded session's, an archive file's) were given to recall. */
  #recallPrimed = false;
  /** Tokens of reasoning each reply held in the cache, reported when a later prompt leaves it out. */
  readonly #reasoningTokens = new WeakMap<SessionMessage, number>();

  /** @internal Use {@link createSession}, {@link loadSession} or a pool. */
  constructor(runner: SessionRunner, options: SessionOptions, ownedContext?: Context) {
    checkSessionOptions(options);
    if (options.system !== undefined && typeof options.system !== "string") invalidArgument("system must be a string");
    const maxTokens = options.maxTokens ?? DEFAULTS.maxTokens;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) invalidArgument("maxTokens must be a non-negative integer");
    if (options.template !== undefined && typeof options.template !== "string") invalidArgument("template must be a string");
    if (options.onMemoryEvent !== undefined && typeof options.onMemoryEvent !== "function") invalidArgument("onMemoryEvent must be a function");
    // Every option a turn uses is checked here, so a bad one fails the session, not its first turn.
    checkGenerateOptions({ maxTokens, stop: options.stop });
    samplerBaton(samplingOf(options), runner.context.model.info.vocabSize);
    this.#runner = runner;
    this.#memory = resolveMemory(options.memory);
    this.#recall = this.#memory.recall ? new RecallIndex(this.#memory.recall) : undefined;
    this.#archive = new Archive(this.#memory.archivePath, this.#memory.archiveMaxTurns);
    const model = runner.context.model;
    const source = options.template ?? model.info.chatTemplate;
    if (options.thinking !== undefined && typeof options.thinking !== "boolean") invalidArgument("thinking must be true or false");
    if (options.keepReasoning !== undefined && typeof options.keepReasoning !== "boolean") invalidArgument("keepReasoning must be true or false");
    if (options.pinToolCalls !== undefined && typeof options.pinToolCalls !== "boolean") invalidArgument("pinToolCalls must be true or false");
    if (options.templateVariables !== undefined && (options.templateVariables === null || typeof options.templateVariables !== "object")) invalidArgument("templateVariables must be an object");
    this.#tools = options.tools === undefined ? undefined : new Toolbox(options.tools);
    if (this.#tools && this.#tools.definitions.length > 0) {
      this.#toolFormat = source === undefined ? undefined : toolCallFormat(source);
      if (!this.#toolFormat) invalidArgument("tools: this chat template writes tool calls in a format llamem does not know (it knows Hermes/Qwen, Qwen3-Coder/Qwen3.5/Nemotron 3 Nano, Llama 3.x and Mistral); pass a template that does");
    }
    this.#thinking = thinkingTags(source);
    this.#keepReasoning = options.keepReasoning ?? false;
    this.#pinToolCalls = options.pinToolCalls ?? false;
    this.#renderer = new Renderer(model, {
      template: options.template,
      ...(this.#tools && this.#tools.definitions.length > 0 ? { tools: this.#tools.definitions } : {}),
      ...(options.thinking === undefined ? {} : { thinking: options.thinking }),
      ...(options.templateVariables === undefined ? {} : { variables: options.templateVariables }),
    });
    this.#sampling = samplingOf(options);
    this.#maxTokens = maxTokens;
    this.#stop = options.stop;
    this.#onEvent = options.onMemoryEvent;
    this.#ownedContext = ownedContext;
    this.#system = options.system;
    this.#checkSummarySequence(runner);
    joinPeers(runner.context, this.#peer);
  }

  /** ERR_INVALID_ARGUMENT unless `memory.summarySequence` is a free sequence of the session's context where the model writes summaries ahead of need. */
  #checkSummarySequence(runner: SessionRunner): void {
    const mem = this.#memory;
    const beside = mem.summarySequence;
    if (beside === undefined) return;
    if (!(beside instanceof Sequence) || beside.context !== runner.context) invalidArgument("memory.summarySequence must be a sequence of the session's context");
    if (!(runner instanceof SequenceRunner) || beside === runner.sequence) invalidArgument("memory.summarySequence must be another sequence than the session's own (and not in a pool)");
    if (mem.strategy !== "summarize" || mem.summarizeAhead === false || typeof mem.summarize === "function") {
      invalidArgument('memory.summarySequence is for summaries the model writes ahead of need: strategy "summarize", summarizeAhead, and no summarize function');
    }
    for (const peer of peersOn(runner.context)) {
      if (peer.sequence() === beside) invalidArgument(`memory.summarySequence: sequence ${beside.id} has a session`);
    }
  }

  /**
   * The prompt budget for replies of `maxTokens`: the memory's, less room for a summary written
   * beside the turns (its instruction and tokens take cells of their own while the conversation
   * goes on).
   */
  #budget(maxTokens: number): number {
    const budget = budgetTokens(this.#memory, this.#runner.context.info.sequenceContextSize, maxTokens);
    if (this.#memory.summarySequence === undefined) return budget;
    const reserve = summaryMaxTokens(this.#memory.summarize as ModelSummaryOptions, budget) + DEFAULTS.summaryInstructionTokens;
    if (budget - reserve < 1) invalidArgument(`memory.summarySequence: the budget of ${budget} tokens leaves no room beside ${reserve} for the summary; use a larger context`);
    return budget - reserve;
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
    return this.#last;
  }

  /** The in-memory archive, its newest `memory.archive.maxTurns` turns (empty when the archive is a file; see {@link readArchive}). */
  get archive(): readonly ArchivedTurn[] {
    return this.#archive.entries;
  }

  /** The JSONL file evicted turns are appended to; undefined when they are kept in memory. */
  get archivePath(): string | undefined {
    return this.#archive.path;
  }

  /** Every archived turn, from memory or from the archive file (ERR_ARCHIVE_INVALID for a damaged line). */
  readArchive(): Promise<ArchivedTurn[]> {
    return this.#archive.read();
  }

  /** Replaces the history (timestamps default to now). The KV cache keeps whatever prefix still matches. */
  setHistory(messages: readonly SessionMessageInput[]): void {
    this.#ensureIdle();
    if (!Array.isArray(messages)) invalidArgument("setHistory(messages): messages must be an array");
    // A background summary folds turns of the old history: stop it (the next turn waits for it to end).
    if (this.#ahead) {
      this.#ahead.discarded = true;
      this.#ahead.abort.abort();
    }
    this.#paused = undefined;
    const now = Date.now();
    this.#history = messages.map((m, i) => {
      if (!m || typeof m.role !== "string" || typeof m.content !== "string") invalidArgument(`setHistory: message ${i} needs a string role and content`);
      const timestamp = m.timestamp ?? now;
      if (!Number.isFinite(timestamp)) invalidArgument(`setHistory: message ${i} has an invalid timestamp`);
      return m.pinned ? { role: m.role, content: m.content, pinned: true, timestamp } : { role: m.role, content: m.content, timestamp };
    });
  }

  /** Sends a user message and resolves with the whole reply (the answer, without reasoning). */
  async prompt(text: string, options: PromptOptions = {}): Promise<string> {
    return (await this.respond(text, options)).text;
  }

  /** Sends a user message and resolves with the answer, the reasoning, the tool calls run and the figures. */
  async respond(text: string, options: PromptOptions = {}): Promise<SessionReply> {
    let answer = "";
    let reasoning: string | undefined;
    const toolCalls: ToolCallRecord[] = [];
    // The pieces are collected, not taken as they come (unless options.onToken wants them).
    for await (const e of this.collectEvents(text, options)) {
      if (e.type === "text") answer += e.text;
      else if (e.type === "reasoning") reasoning = (reasoning ?? "") + e.text;
      else toolCalls.push(e.call);
    }
    return { text: answer, reasoning, toolCalls, generation: this.#last as GenerationResult };
  }

  /**
   * Sends a user message and streams the answer in pieces (reasoning and tool calls are left
   * out; {@link events} has them). Before generating, the memory policy runs (reporting each
   * decision) and the KV cache is brought in line with the new prompt. A turn that fails or is
   * aborted leaves the history as it was (evictions stay done). ERR_CONTEXT_FULL when the prompt
   * cannot fit the sequence; if it could not fit even with every evictable turn gone, nothing is
   * evicted.
   */
  async *stream(text: string, options: PromptOptions = {}): AsyncGenerator<string, void, void> {
    for await (const e of this.events(text, options)) if (e.type === "text") yield e.text;
  }

  /**
   * Sends a user message and streams the turn's events: pieces of the answer, pieces of the
   * reasoning, and each tool call the session ran with its result. With tools, the answer of a
   * generation comes once it has ended (its text may turn out to be a call).
   */
  events(text: string, options: PromptOptions = {}): AsyncGenerator<TurnEvent, void, void> {
    return this.#events(text, options, true);
  }

  /** {@link events} for a caller that collects the events rather than taking each as it comes (see Sequence.collect). @internal */
  collectEvents(text: string, options: PromptOptions = {}): AsyncGenerator<TurnEvent, void, void> {
    return this.#events(text, options, false);
  }

  /** {@link events}; `consumer`: whether the caller takes the pieces as they come (see GenerationJob.streams). */
  async *#events(text: string, options: PromptOptions, consumer: boolean): AsyncGenerator<TurnEvent, void, void> {
    this.#ensureIdle();
    if (typeof text !== "string") invalidArgument("prompt(text): text must be a string");
    if (options === null || typeof options !== "object") invalidArgument("prompt(text, options): options must be an object");
    const maxTokens = options.maxTokens ?? this.#maxTokens;
    // Every option is checked before anything starts: a bad one evicts nothing and leaves the session idle.
    const { onToken } = checkGenerateOptions({ maxTokens, stop: options.stop ?? this.#stop, signal: options.signal, onToken: options.onToken, ...(options.logprobs === undefined ? {} : { logprobs: options.logprobs }) });
    if (options.pinned !== undefined && typeof options.pinned !== "boolean") invalidArgument("pinned must be true or false");
    samplerBaton({ ...this.#sampling, ...samplingOf(options) }, this.#runner.context.model.info.vocabSize);
    const userGrammar = grammarOf(options);
    checkToolChoice(options.toolChoice, this.#tools && ((name) => (this.#tools as Toolbox).has(name)));
    const tools = this.#toolFormat && options.toolChoice !== "none" ? this.#toolFormat : undefined;
    if (userGrammar !== undefined && tools && options.toolChoice !== undefined && options.toolChoice !== "auto") {
      invalidArgument("grammar and jsonSchema cannot be combined with a toolChoice that forces a call");
    }
    this.#busy = true;
    // dispose() ends the turn through this controller, whatever the caller's own signal does.
    const abort = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, abort.signal]) : abort.signal;
    let ended!: () => void;
    this.#turn = { abort, ended: new Promise<void>((resolve) => (ended = resolve)) };
    const user: SessionMessage = options.pinned ? { role: "user", content: text, pinned: true, timestamp: Date.now() } : { role: "user", content: text, timestamp: Date.now() };
    this.#history.push(user);
    let done = false;
    try {
      // A summary started after the last turn: used if it has finished, cancelled if not.
      let ahead = await this.#takeAhead();
      const seq = await this.#runner.acquire(signal);
      try {
        const recallEvent = await this.#recallFor(user, maxTokens, signal);
        let choice: ToolChoice = options.toolChoice ?? "auto";
        let retries = 0;
        for (let round = 0; ; round++) {
          if (signal.aborted) throw new LlamemError("ERR_ABORTED", "the turn was aborted before it started");
          const before = this.#layout;
          const cachedBefore = seq.tokens.slice();
          const { sequenceContextSize, canShift } = this.#runner.context.info;
          const { rendered, events } = await this.#plan(seq, maxTokens, signal, ahead);
          ahead = undefined;
          const prepared = this.#prepared;
          this.#prepared = undefined;
          const kv = await fitCache(seq, rendered, before, { shift: this.#memory.kvReuse === "shift" && canShift, self: this.#peer, prepared });
          await this.#releasePrepared(prepared);
          if (round === 0 && recallEvent) this.#onEvent?.({ ...recallEvent, kvReused: kv.kvReused, reevaluatedTokens: 0 });
          for (const e of events) this.#onEvent?.({ ...e, ...kv });
          if (events.length === 0) this.#reportRewrite(rendered, before, cachedBefore, kv.reevaluatedTokens);
          if (rendered.tokens.length >= sequenceContextSize) throw contextFull("the prompt has", rendered.tokens.length, sequenceContextSize);
          const useTools = tools !== undefined && choice !== "none";
          const forced = useTools && (choice === "required" || typeof choice === "object");
          const grammar = forced ? tools.grammar(this.#tools?.definitions ?? [], typeof choice === "object" ? choice.name : undefined) : useTools ? undefined : userGrammar;
          const splitter = this.#thinking && !forced ? new ReasoningSplitter(this.#thinking, opensThinking(await this.#promptText(rendered), this.#thinking)) : undefined;
          // Every session generates on its sequence: the context's one engine batches a pool's turns together.
          const generateOptions: GenerateOptions = {
            ...this.#sampling,
            ...samplingOf(options),
            maxTokens,
            stop: options.stop ?? this.#stop,
            signal,
            onToken,
            ...(options.logprobs === undefined ? {} : { logprobs: options.logprobs }),
            ...(grammar === undefined ? {} : { grammar }),
          };
          const gen = consumer ? seq.generate(rendered.tokens, generateOptions) : seq.collect(rendered.tokens, generateOptions);
          for await (const piece of gen) {
            const part = splitter ? splitter.push(piece) : { reasoning: "", content: piece };
            if (part.reasoning) yield* this.#emit({ type: "reasoning", text: part.reasoning });
            // With tools, the answer waits for the end: its text may be a call.
            if (part.content && !useTools) yield* this.#emit({ type: "text", text: part.content });
          }
          const tail = splitter?.end();
          if (tail?.reasoning) yield* this.#emit({ type: "reasoning", text: tail.reasoning });
          if (tail?.content && !useTools) yield* this.#emit({ type: "text", text: tail.content });
          const result = seq.lastGeneration as GenerationResult;
          this.#last = result;
          const reasoning = splitter && splitter.reasoning.length > 0 ? splitter.reasoning : undefined;
          const answer = splitter ? splitter.content : result.text;
          const parsed = useTools ? tools.parse(answer, this.#tools?.definitions) : { content: answer, calls: [] };
          const calls = round < DEFAULTS.maxToolRounds ? parsed.calls : [];
          const reply: SessionMessage = {
            role: "assistant",
            content: calls.length > 0 ? parsed.content : answer,
            ...(reasoning === undefined ? {} : { reasoning }),
            ...(calls.length === 0 ? {} : { toolCalls: calls.map((c, i) => ({ id: c.id ?? toolCallId(round, i), name: c.name, arguments: parseArguments(c.arguments) })) }),
            timestamp: Date.now(),
          };
          this.#history.push(reply);
          if (reasoning !== undefined && !this.#keepReasoning) {
            this.#reasoningTokens.set(reply, (await this.#runner.context.model.tokenize(reasoning, { addSpecial: false })).length);
          }
          this.#layout = layoutAfter(rendered, reply, seq.tokens);
          this.#cachedItems = [...rendered.items, { key: reply, ...messageOf(reply) }];
          this.#counters.evaluatedTokens += result.evaluatedPromptTokens;
          this.#counters.generatedTokens += result.generatedTokens;
          if (calls.length === 0) {
            if (useTools && reply.content.length > 0) yield* this.#emit({ type: "text", text: reply.content });
            break;
          }
          let failed = false;
          for (const [i, call] of calls.entries()) {
            const record = await (this.#tools as Toolbox).run({ ...call, id: reply.toolCalls?.[i]?.id }, signal);
            failed ||= record.error;
            this.#history.push({ role: "tool", content: record.result, ...(record.id === undefined ? {} : { toolCallId: record.id }), name: record.name, timestamp: Date.now() });
            yield* this.#emit({ type: "toolCall", call: record });
          }
          if (failed) retries++;
          // A forced call is made once; then the model answers or calls again on its own. After
          // too many bad calls, or rounds, it answers without tools.
          choice = retries > DEFAULTS.maxToolRetries || round + 1 >= DEFAULTS.maxToolRounds ? "none" : "auto";
        }
        done = true;
      } finally {
        this.#runner.release();
      }
    } catch (err) {
      // A turn ended by dispose() says so, whatever stage it was in.
      if (this.#disposed && abort.signal.aborted) throw new LlamemError("ERR_DISPOSED", "the session was disposed during the turn", { cause: err });
      throw err;
    } finally {
      if (!done) {
        const i = this.#history.lastIndexOf(user);
        if (i >= 0) this.#history.splice(i);
      }
      this.#busy = false;
      this.#turn = undefined;
      // The block served this turn; the next one recalls for its own message.
      this.#recalled = undefined;
      ended();
      if (done) this.#startAhead();
    }
  }

  /**
   * Finds the archived turns most similar to the new message and places them, as one marked
   * block within the recall allowance, just before it. Returns the "recall" event (undefined
   * when recall is off or found nothing); a failure is reported in it, and the turn goes on.
   */
  async #recallFor(user: SessionMessage, maxTokens: number, signal: AbortSignal): Promise<PendingEvent | undefined> {
    const index = this.#recall;
    if (!index) return undefined;
    const t0 = performance.now();
    await this.#primeRecall();
    const failed = this.#recallError;
    this.#recallError = undefined;
    let forgotten = 0;
    const event = (recalled: readonly RecalledTurn[], reason: string, error?: Error): PendingEvent => ({
      kind: "recall",
      reason,
      dropped: [],
      tokensBefore: 0,
      tokensAfter: 0,
      ms: performance.now() - t0,
      recalled,
      ...(error === undefined ? {} : { error }),
      ...(forgotten > 0 ? { forgotten } : {}),
    });
    if (failed) return event([], `archived turns could not be embedded, so recall may miss them: ${failed.message}`, failed);
    forgotten = this.#recallForgotten;
    this.#recallForgotten = 0;
    const forgot = forgotten > 0 ? `; the store forgot ${forgotten} older archived turn(s) to stay within its limits` : "";
    try {
      const found = await index.search(user.content, this.#inHistory(), signal);
      if (found.length === 0) return forgotten > 0 ? event([], `nothing recalled${forgot}`) : undefined;
      const { recall } = this.#memory;
      const budget = this.#budget(maxTokens);
      const allowance = (recall?.maxTokens ?? 0) < 1 ? Math.floor((recall?.maxTokens ?? 0) * budget) : (recall?.maxTokens ?? 0);
      const model = this.#runner.context.model;
      const kept: RecalledTurn[] = [];
      let text = RECALL_LABEL;
      for (const r of found) {
        const next = `${text}${kept.length > 0 ? "\n\n" : ""}${turnText(r.turn)}`;
        if ((await model.tokenize(next, { addSpecial: false })).length > allowance) break;
        text = next;
        kept.push(r);
      }
      if (kept.length === 0) return event([], `${found.length} archived turn(s) matched, but none fits the recall allowance of ${allowance} tokens${forgot}`);
      this.#recalled = { key: {}, before: user, text };
      const scores = kept.map((r) => r.score.toFixed(3)).join(", ");
      return event(kept, `recalled ${kept.length} archived turn(s) (scores ${scores})${forgot}`);
    } catch (err) {
      if (signal.aborted) throw err;
      const error = err instanceof Error ? err : new Error(String(err));
      return event([], `recall failed, the turn goes on without it: ${error.message}`, error);
    }
  }

  /**
   * Gives recall the turns archived before this session started (the archive file's, or a loaded
   * session's; vectors are not saved, so they are embedded again), once.
   */
  async #primeRecall(): Promise<void> {
    if (this.#recallPrimed || !this.#recall) return;
    this.#recallPrimed = true;
    try {
      const archived = await this.#archive.read();
      if (archived.length > 0) this.#recallForgotten += await this.#recall.add(archived.map((a) => a.messages));
    } catch (err) {
      this.#recallError = err instanceof Error ? err : new Error(String(err));
    }
  }

  /** Recall's skip test: whether an archived turn's text is that of a turn still in the history. */
  #inHistory(): (turn: Turn, text: string) => boolean {
    const texts = new Set(splitTurns(this.#history).map(turnText));
    return (_turn, text) => texts.has(text);
  }

  /**
   * What recall would bring back for `text` now: the archived turns most similar to it, with
   * their scores, best first (before the allowance is applied). ERR_INVALID_ARGUMENT without
   * `memory.recall`.
   */
  async recall(text: string): Promise<readonly RecalledTurn[]> {
    this.#ensureIdle();
    if (typeof text !== "string") invalidArgument("recall(text): text must be a string");
    const index = this.#recall;
    if (!index) invalidArgument("recall() needs a session with memory.recall");
    await this.#primeRecall();
    if (this.#recallError) throw this.#recallError;
    return index.search(text, this.#inHistory());
  }

  /** Yields one event to the turn's consumer, marking the turn parked while it holds it. */
  async *#emit(e: TurnEvent): AsyncGenerator<TurnEvent, void, void> {
    this.#parked = true;
    try {
      yield e;
    } finally {
      this.#parked = false;
    }
  }

  /** The prompt's text (to see whether it leaves the model inside its reasoning). */
  async #promptText(r: Rendered): Promise<string> {
    const tail = r.tokens.subarray(Math.max(0, r.tokens.length - 16));
    return this.#runner.context.model.detokenize(tail, { special: true });
  }

  /**
   * Reports a "rewrite" when the prompt differs from the cache inside messages the cache held
   * (the template wrote them differently this time, or a reply's reasoning was left out).
   */
  #reportRewrite(r: Rendered, before: Layout | undefined, cached: readonly number[], reevaluated: number): void {
    if (!before || !sameTokens(before.tokens, cached)) return;
    const first = commonPrefix(cached, r.tokens);
    if (first >= cached.length) return;
    const held = new Set(before.items.map((it) => it.key));
    let keptEnd = 0;
    let known = true;
    r.items.forEach((it, i) => {
      const span = r.spans[i];
      if (!held.has(keyOf(it))) return;
      if (span) keptEnd = span.end;
      else known = false;
    });
    // Spans are unknown past a rewritten message: then the cached messages are taken to cover as
    // many positions of the new prompt as they did of the cache.
    if (!known) keptEnd = Math.min(cached.length, r.tokens.length - 1);
    let reasoningTokens = 0;
    for (const it of before.items) {
      if (!it.prompt) reasoningTokens += this.#reasoningTokens.get(it.key as SessionMessage) ?? 0;
    }
    // A reply that tokenizes differently from how it was sampled is common and not worth an event;
    // a change before it (the template rewrote an earlier message) or dropped reasoning is.
    const replyStart = before.items.find((it) => !it.prompt)?.start ?? cached.length;
    if (first >= replyStart && reasoningTokens === 0) return;
    const why = reasoningTokens > 0 ? `the last reply's reasoning (${reasoningTokens} tokens) is left out of the prompt` : "the chat template wrote earlier messages differently";
    this.#onEvent?.({
      kind: "rewrite",
      reason: `${why}: the cache is kept up to token ${first} and evaluated from there`,
      dropped: [],
      tokensBefore: cached.length,
      tokensAfter: r.tokens.length,
      ms: 0,
      kvReused: false,
      reevaluatedTokens: Math.max(reevaluated, keptEnd - first),
      firstChangedToken: first,
      ...(reasoningTokens > 0 ? { reasoningTokens } : {}),
    });
  }

  /** @internal Starts the template sandbox's thread for a Jinja template, ahead of the first prompt (Renderer.warm). */
  warm(): Promise<void> {
    return this.#renderer.warm();
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
      ...(this.#recall ? { recall: { turns: await this.#recall.size(), contextBytes: await this.#recall.contextBytes() } } : {}),
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
      // A background summary would change the cache while it is read: cancel it (the next turn starts another).
      await this.#cancelAhead();
      const state = await this.#runner.saveState();
      const refOf = (key: object): SavedRef | undefined => {
        if (key === this.#systemKey) return "system";
        if (key === this.#summary?.key) return "summary";
        const i = this.#history.indexOf(key as SessionMessage);
        return i >= 0 ? i : undefined;
      };
      const layout = this.#layout && sameTokens(this.#layout.tokens, decodeState(state).tokens) ? this.#layout : undefined;
      const header: Omit<SavedHeader, "version"> = {
        model: await this.#runner.context.model.fingerprint(),
        system: this.#system ?? null,
        summary: this.#summary?.text ?? null,
        history: this.#history,
        archive: { path: this.#archive.path ?? null, entries: this.#archive.entries.slice() },
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

  /**
   * @internal Restores what {@link save} wrote: `header` was read by readSession (its shape
   * checked) and its fingerprint checked by the caller. ERR_STATE_MISMATCH when the layout names
   * cells the saved state does not have.
   */
  async restore(header: SavedHeader, state: Buffer): Promise<void> {
    this.#ensureIdle();
    await this.#cancelAhead();
    this.#cachedItems = undefined;
    this.#system = header.system ?? undefined;
    this.#history = header.history.map(copyMessage);
    const c = header.counters;
    this.#counters = { summaries: c.summaries, turnsEvicted: c.turnsEvicted, evaluatedTokens: c.evaluatedTokens, generatedTokens: c.generatedTokens };
    if (header.summary !== null) this.#summary = { key: {}, text: header.summary };
    if (header.archive.path === null) this.#archive.restore(header.archive.entries);
    if (!(await restoreOrForget(() => this.#runner.restoreState(state)))) return;
    if (!header.layout) return;
    const tokens = decodeState(state).tokens;
    const keyOf = (ref: SavedRef): object | undefined =>
      ref === "system" ? this.#systemKey : ref === "summary" ? this.#summary?.key : this.#history[ref];
    const items: LayoutItem[] = [];
    for (const it of header.layout) {
      if (it.end > tokens.length) throw new LlamemError("ERR_STATE_MISMATCH", `the saved layout names cells up to ${it.end}; the saved state holds ${tokens.length}`);
      const key = keyOf(it.ref);
      if (key) items.push({ key, start: it.start, end: it.end, prompt: it.prompt });
    }
    this.#layout = { tokens, items };
  }

  /**
   * Ends the session: a turn in progress is aborted (its stream throws ERR_DISPOSED), then its
   * pool slot, or the context it created from a Model, is freed. Other sessions are unaffected.
   * Every call resolves once that is done. Called from inside the turn's own loop (while the
   * stream is suspended at a piece), it does not wait for the turn: the slot is freed when the
   * stream is resumed or closed.
   */
  dispose(): Promise<void> {
    this.#disposing ??= this.#dispose();
    return this.#disposing;
  }

  async #dispose(): Promise<void> {
    this.#disposed = true;
    await this.#cancelAhead();
    const turn = this.#turn;
    if (turn) {
      turn.abort.abort();
      // Waiting while the consumer holds a piece would wait for the caller itself.
      if (!this.#parked) await turn.ended;
    }
    leavePeers(this.#runner.context, this.#peer);
    await this.#runner.dispose();
    await this.#recall?.dispose();
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

  /** The items of the prompt: the system prompt (when `withSystem`), the summary, `history` (the session's by default) with the recalled block. */
  #items(withSystem: boolean, history: readonly SessionMessage[] = this.#history): RenderItem[] {
    const items: RenderItem[] = [];
    if (withSystem && this.#system !== undefined) items.push({ key: this.#systemKey, role: "system", content: this.#system });
    if (this.#summary) items.push({ key: this.#summary.key, role: "system", content: SUMMARY_LABEL + this.#summary.text });
    for (let i = 0; i < history.length; i++) {
      const m = history[i] as SessionMessage;
      if (this.#recalled && m === this.#recalled.before) items.push({ key: this.#recalled.key, role: "system", content: this.#recalled.text });
      // Past replies' reasoning leaves the prompt unless the app keeps it.
      items.push(itemOf(m, this.#keepReasoning));
    }
    return items;
  }

  /**
   * Takes `turns` out of the history and archives them. Returns `forgotten` (for the event) when
   * the in-memory archive forgot older turns to make room.
   */
  async #evict(turns: readonly Turn[], kind: MemoryEventKind): Promise<Partial<PendingEvent>> {
    const gone = new Set<SessionMessage>();
    for (let t = 0; t < turns.length; t++) {
      for (const m of turns[t] as Turn) gone.add(m);
      // A long history's first prompt evicts thousands of turns at once: 5,000 took 2-4 ms here.
      if (t % EVICT_SLICE === EVICT_SLICE - 1) await yieldToLoop();
    }
    this.#history = this.#history.filter((m) => !gone.has(m));
    this.#counters.turnsEvicted += turns.length;
    const archiveForgot = await this.#archive.add(turns, kind, Date.now());
    // Recall is a help, never a reason to fail the turn: a failure is reported by the next recall event.
    const forgotten = await this.#recall?.add(turns).catch((err: unknown) => {
      this.#recallError = err instanceof Error ? err : new Error(String(err));
      return 0;
    });
    this.#recallForgotten += forgotten ?? 0;
    return archiveForgot > 0 ? { forgotten: archiveForgot } : {};
  }

  /** Tokens of the system prompt in `r` (0 without one), undefined when its span is unknown. */
  #systemTokens(r: Rendered): number | undefined {
    const i = r.items.findIndex((it) => keyOf(it) === this.#systemKey);
    if (i < 0) return 0;
    const span = r.spans[i];
    return span ? span.end - span.start : undefined;
  }

  /**
   * Evicts, before the whole history is rendered, the oldest turns of a long history that cannot
   * fit: those before the newest turns whose prompt (with the system prompt and the pinned turns)
   * is over the budget without them. The token budget would shed every one of them; rendering
   * them only to count their tokens took most of the first prompt after a 10,000-message
   * setHistory (0.9 of 1.1 s, its template renders holding a core). The newest turns are rendered
   * in growing numbers, up to half the history; the first message of the oldest of them is left
   * out of the count (as the first message after the system prompt, or first of all, its tokens
   * may differ from the whole prompt's), so the count never exceeds what the whole prompt would
   * give those turns. Undefined when nothing was evicted (the turns may fit, or the template gives
   * its messages no spans).
   */
  async #pruneUnfit(budget: number, contextSize: number, isPinned: ((m: SessionMessage) => boolean) | undefined): Promise<PendingEvent | undefined> {
    const t0 = performance.now();
    const history = this.#history;
    // The turns as index ranges, and which are pinned, without a slice per turn: on 10,000
    // messages the slices alone took 3-4 ms.
    const starts = turnStarts(history);
    const turnCount = starts.length - 1;
    const pinnedAt: boolean[] = new Array<boolean>(turnCount);
    for (let t = 0; t < turnCount; t++) {
      let pinned = false;
      for (let i = starts[t] as number; i < (starts[t + 1] as number) && !pinned; i++) pinned = pinnedMessage(history[i] as SessionMessage, isPinned);
      pinnedAt[t] = pinned;
      if (t % EVICT_SLICE === EVICT_SLICE - 1) await yieldToLoop();
    }
    for (let n = UNFIT_FIRST_TURNS; 2 * n < turnCount; n *= 2) {
      const from = turnCount - n;
      // The prompt without the older turns that are not pinned: the pinned ones, then the newest n.
      const kept: SessionMessage[] = [];
      for (let t = 0; t < from; t++) if (pinnedAt[t] === true) for (let i = starts[t] as number; i < (starts[t + 1] as number); i++) kept.push(history[i] as SessionMessage);
      for (let i = starts[from] as number; i < history.length; i++) kept.push(history[i] as SessionMessage);
      const items = this.#items(true, kept);
      const r = await this.#renderer.render(items);
      const firstKept = history[starts[from] as number] as SessionMessage;
      const span = r.spans[items.findIndex((it) => keyOf(it) === firstKept)];
      if (!span) return undefined;
      // A prompt that cannot fit even with every evictable turn gone is refused by the planner, which then evicts nothing: so nothing here either.
      const droppable = this.#memory.keepSystem ? 0 : this.#systemTokens(r);
      const floor = droppable === undefined ? undefined : promptFloor(r.tokens.length, describeTurns(splitTurns(kept), r, isPinned), droppable);
      if (floor === undefined || floor >= contextSize) return undefined;
      const without = r.tokens.length - (span.end - span.start);
      if (without <= budget) continue;
      const drop: Turn[] = [];
      let dropped = 0;
      for (let t = 0; t < from; t++) {
        if (pinnedAt[t] === true) continue;
        drop.push(history.slice(starts[t], starts[t + 1]));
        dropped += (starts[t + 1] as number) - (starts[t] as number);
        if (drop.length % EVICT_SLICE === 0) await yieldToLoop();
      }
      if (drop.length === 0) return undefined;
      const extra = await this.#evict(drop, "prune");
      const estimate = unrenderedTokens(r, items.length, dropped);
      return {
        kind: "prune",
        reason: `the newest ${n} turn(s) with the system prompt and the pinned turns take at least ${without} tokens, over the budget of ${budget}: the ${drop.length} older turn(s) cannot fit (evicted unrendered; tokensBefore is estimated)`,
        dropped: drop,
        tokensBefore: r.tokens.length + estimate,
        tokensAfter: r.tokens.length,
        ms: performance.now() - t0,
        ...extra,
      };
    }
    return undefined;
  }

  /**
   * Evicts, before the whole history is rendered, the turns of a long history outside the sliding
   * window: the window counts turns, not tokens, so the planner would evict the same ones after
   * rendering them all (1.1 s of the first prompt after a 10,000-message setHistory, one slice of
   * it over 10 ms on the JS thread). Returns the event, completed from the prompt rendered next;
   * undefined when no turn is outside.
   */
  async #windowUnrendered(isPinned: ((m: SessionMessage) => boolean) | undefined): Promise<((r: Rendered) => PendingEvent) | undefined> {
    const t0 = performance.now();
    const turns = splitTurns(this.#history);
    const drop = outsideWindow(pinnedFacts(turns, isPinned), this.#memory.keepLastTurns).map((i) => turns[i] as Turn);
    if (drop.length === 0) return undefined;
    let dropped = 0;
    for (const t of drop) dropped += t.length;
    const extra = await this.#evict(drop, "prune");
    await yieldToLoop();
    return (r) => ({
      kind: "prune",
      reason: `sliding window of ${this.#memory.keepLastTurns} turn(s) (evicted unrendered; tokensBefore is estimated)`,
      dropped: drop,
      tokensBefore: r.tokens.length + unrenderedTokens(r, r.items.length, dropped),
      tokensAfter: r.tokens.length,
      ms: performance.now() - t0,
      ...extra,
    });
  }

  /**
   * Applies the memory policy to the history with the new user message and returns the prompt to
   * send. The planner decides which turns go; this performs it, rendering again after each step.
   */
  async #plan(seq: Sequence, maxTokens: number, signal: AbortSignal | undefined, ahead: AheadOutcome | undefined): Promise<{ rendered: Rendered; events: PendingEvent[] }> {
    const mem = this.#memory;
    const contextSize = this.#runner.context.info.sequenceContextSize;
    const budget = this.#budget(maxTokens);
    const events: PendingEvent[] = [];
    let withSystem = true;
    const pinned = this.#pinToolCalls
      ? (m: SessionMessage) => m.toolCalls !== undefined || m.role === "tool" || mem.pinned?.(m) === true
      : mem.pinned;
    if (mem.strategy === "tokenBudget" && mem.maxAge === undefined && this.#history.length > UNFIT_CHECK_MESSAGES) {
      const unfit = await this.#pruneUnfit(budget, contextSize, pinned);
      if (unfit) events.push(unfit);
    }
    const outside = mem.strategy === "slidingWindow" && mem.maxAge === undefined && this.#history.length > UNFIT_CHECK_MESSAGES ? await this.#windowUnrendered(pinned) : undefined;
    let r = await this.#renderer.render(this.#items(withSystem));
    if (outside) events.push(outside(r));
    let turns: Turn[] = splitTurns(this.#history);
    let facts: TurnFacts[] = describeTurns(turns, r, pinned);
    // Describing, then evicting, a long history's turns each take milliseconds: the event loop
    // runs between them, and before the next render.
    await yieldToLoop();
    const pick = (indices: readonly number[]): Turn[] => indices.map((i) => turns[i] as Turn);
    const update = async () => {
      await yieldToLoop();
      r = await this.#renderer.render(this.#items(withSystem));
      turns = splitTurns(this.#history);
      facts = describeTurns(turns, r, pinned);
    };

    // A prompt that cannot fit even with every evictable turn gone evicts nothing.
    const droppable = mem.keepSystem ? 0 : this.#systemTokens(r);
    const floor = droppable === undefined ? undefined : promptFloor(r.tokens.length, facts, droppable);
    if (floor !== undefined && floor >= contextSize) throw contextFull("the new message and the turns that cannot be evicted take", floor, contextSize);

    const archiveNote = (forgotten: number | undefined) =>
      forgotten === undefined ? "" : `; the in-memory archive forgot ${forgotten} older turn(s) to stay within ${mem.archiveMaxTurns}`;
    const record = async (kind: MemoryEventKind, reason: string, dropped: readonly Turn[], act: () => Promise<Partial<PendingEvent> | void>) => {
      const t0 = performance.now();
      const tokensBefore = r.tokens.length;
      const extra = (await act()) ?? {};
      await update();
      events.push({ kind, reason: reason + archiveNote(extra.forgotten), dropped, tokensBefore, tokensAfter: r.tokens.length, ms: performance.now() - t0, ...extra });
    };

    if (mem.maxAge !== undefined) {
      const old = pick(agedOut(facts, Date.now() - mem.maxAge));
      if (old.length > 0) await record("archive", `${old.length} turn(s) older than ${mem.maxAge} ms`, old, () => this.#evict(old, "archive"));
    }
    if (mem.strategy === "slidingWindow") {
      const over = pick(outsideWindow(facts, mem.keepLastTurns));
      if (over.length > 0) await record("prune", `sliding window of ${mem.keepLastTurns} turn(s)`, over, () => this.#evict(over, "prune"));
    }
    let tooSoon = false;
    if (mem.strategy === "summarize" && ahead && "running" in ahead && r.tokens.length > budget) {
      // This prompt needs the summary written beside the turns: wait for the rest of it, if any.
      const a = ahead.running;
      tooSoon = !this.#keepsLastTurns(a.fold);
      if (this.#stillFits(a) && !tooSoon) await untilAborted(a.done, signal, "waiting for the summary");
      const outcome = await this.#takeAhead(true);
      if (outcome) ahead = outcome;
    }
    if (mem.strategy === "summarize" && ahead && "cancelled" in ahead) {
      const { tokens, ms } = ahead.cancelled;
      const n = r.tokens.length;
      const reason = tooSoon
        ? `the summary written beside the turns would fold one of the last ${mem.keepLastTurns} turn(s) this prompt keeps`
        : "the summary started after the last turn had not finished when this prompt came";
      events.push({ kind: "summarize", reason, dropped: [], tokensBefore: n, tokensAfter: n, ms, summary: "cancelled", summaryTokens: tokens });
    }
    if (mem.strategy === "summarize" && ahead && "ready" in ahead) {
      // Used only while it still fits: its turns are all in the history and it extends the current summary.
      const { fold, text, cutChars, tokens, prepared } = ahead.ready;
      if (this.#stillFits(ahead.ready) && this.#keepsLastTurns(fold)) {
        this.#prepared = prepared;
        await record("summarize", `summarized ahead of need (the last prompt passed ${mem.summarizeAhead} of the budget of ${budget})`, fold, async () => {
          this.#summary = { key: {}, text };
          this.#counters.summaries++;
          return { ...(await this.#evict(fold, "summarize")), summary: "ahead", summaryTokens: tokens, ...cutOf(cutChars) };
        });
      } else {
        await this.#releasePrepared(prepared);
      }
    }
    if (mem.strategy === "summarize") {
      // The first fold keeps keepLastTurns verbatim; if the prompt is still over, the oldest are folded to cover the excess.
      for (let first = true; ; first = false) {
        const fold = pick(toFold(facts, r.tokens.length - budget, mem.keepLastTurns, first));
        if (fold.length === 0) break;
        const reason = `prompt of ${r.tokens.length} tokens over the budget of ${budget}`;
        await record("summarize", reason, fold, async () => {
          const { text, tokens, cutChars } = await this.#write(seq, fold, budget, signal);
          this.#summary = { key: {}, text };
          this.#counters.summaries++;
          return { ...(await this.#evict(fold, "summarize")), summary: "inline", summaryTokens: tokens, ...cutOf(cutChars) };
        });
      }
    }
    if (r.tokens.length > budget) {
      const dropped: Turn[] = [];
      const t0 = performance.now();
      const tokensBefore = r.tokens.length;
      let forgotten: number | undefined;
      for (let drop = pick(toShed(facts, r.tokens.length - budget)); drop.length > 0; drop = pick(toShed(facts, r.tokens.length - budget))) {
        // Choosing thousands of turns, then evicting them, each take milliseconds.
        await yieldToLoop();
        const f = (await this.#evict(drop, "prune")).forgotten;
        if (f !== undefined) forgotten = (forgotten ?? 0) + f;
        for (const t of drop) dropped.push(t);
        await update();
      }
      if (dropped.length > 0) {
        const reason = `prompt of ${tokensBefore} tokens over the budget of ${budget}${archiveNote(forgotten)}`;
        events.push({ kind: "prune", reason, dropped, tokensBefore, tokensAfter: r.tokens.length, ms: performance.now() - t0, ...(forgotten === undefined ? {} : { forgotten }) });
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

  /**
   * The running summary with `turns` folded in, by the app's summarizer or the model (generating
   * on `seq`), and the prompt tokens the model evaluated for it (also added to `sink.tokens`, even
   * when it fails). Does not change the session.
   */
  async #write(
    seq: Sequence,
    turns: readonly Turn[],
    budget: number,
    signal: AbortSignal | undefined,
    sink?: { tokens: number; partial?: number[] },
  ): Promise<{ text: string; tokens: number; cutChars: number }> {
    let tokens = 0;
    const count = (result: GenerationResult | undefined) => {
      if (!result) return;
      tokens += result.evaluatedPromptTokens;
      if (sink) sink.tokens += result.evaluatedPromptTokens;
      this.#counters.evaluatedTokens += result.evaluatedPromptTokens;
      this.#counters.generatedTokens += result.generatedTokens;
    };
    /** Greedy generation after `prompt`, counting what it evaluated even when it fails or is aborted. */
    const generate = async (prompt: Int32Array, maxTokens: number, sig: AbortSignal | undefined, onToken?: (token: number) => void): Promise<string> => {
      const last = seq.lastGeneration;
      let result: GenerationResult | undefined;
      try {
        result = await seq.complete(prompt, { temperature: 0, maxTokens, signal: sig, onToken });
        return result.text;
      } finally {
        count(result ?? (seq.lastGeneration !== last ? seq.lastGeneration : undefined));
      }
    };
    // The request starts with the cached system prompt and summary, so only the turns and the instruction are new.
    const head = this.#items(true, []);
    const { text, cutChars } = await summarizeTurns(this.#memory.summarize, turns, this.#summary?.text, budget, signal, {
      renderer: this.#renderer,
      system: head.filter((it) => keyOf(it) === this.#systemKey),
      summary: head.find((it) => keyOf(it) === this.#summary?.key),
      contextSize: this.#runner.context.info.sequenceContextSize,
      complete: generate,
      tail: (instruction, maxTokens, sig) => this.#onTail(seq, turns, instruction, maxTokens, sig, generate, sink?.partial),
    });
    return { text, tokens, cutChars };
  }

  /**
   * Writes a summary after everything `seq` holds: the cached conversation (as of the last turn),
   * then `instruction` as a user message. Only the instruction's tokens are evaluated; the tail
   * (instruction and summary) is removed afterwards, so the sequence holds exactly what it held.
   * Undefined when the cache is not the last turn's or does not hold every message of `turns`.
   */
  async #onTail(
    seq: Sequence,
    turns: readonly Turn[],
    instruction: string,
    maxTokens: number,
    signal: AbortSignal | undefined,
    generate: (prompt: Int32Array, maxTokens: number, signal: AbortSignal | undefined, onToken?: (token: number) => void) => Promise<string>,
    partial?: number[],
  ): Promise<string | undefined> {
    const items = this.#cachedItems;
    const layout = this.#layout;
    const cached = seq.tokens.slice();
    if (!items || !layout || cached.length === 0 || !sameTokens(layout.tokens, cached)) return undefined;
    const keys = new Set(items.map(keyOf));
    if (!turns.every((t) => t.every((m) => keys.has(m)))) return undefined;
    const reply = items[items.length - 1];
    if (!reply || reply.role !== "assistant" || reply.content.length === 0) return undefined;
    // The cache ends with the reply's tokens: what follows is the reply's end of turn, the instruction and the assistant header.
    const { model } = this.#renderer;
    const messages = items.map(messageOf);
    // A template that refuses the instruction's place (or rewrites the turns before it) falls back to summarizing from text.
    const [before, full] = await Promise.all([
      this.#renderer.apply(messages, false),
      this.#renderer.apply([...messages, { role: "user", content: instruction }], true),
    ]).catch(() => [undefined, undefined]);
    if (before === undefined || full === undefined) return undefined;
    const at = before.lastIndexOf(reply.content);
    if (at < 0 || !full.startsWith(before)) return undefined;
    const suffix = await model.tokenize(full.slice(at + reply.content.length), { addSpecial: false, parseSpecial: true });
    if (suffix.length === 0 || cached.length + suffix.length + maxTokens >= this.#runner.context.info.sequenceContextSize) return undefined;
    if (!partial) return this.#tailGenerate(seq, cached, suffix, maxTokens, signal, generate);
    // Going on with a summary begun in an earlier idle time: its tokens so far follow the instruction.
    const done = partial.length;
    if (done >= maxTokens) return this.#renderer.model.detokenize(partial);
    const text = await this.#tailGenerate(seq, cached, [...suffix, ...partial], maxTokens - done, signal, generate, (t) => partial.push(t));
    return done === 0 ? text : this.#renderer.model.detokenize(partial);
  }

  /** Generates after `cached` (what `seq` holds) and `suffix`, then removes everything after `cached`. */
  async #tailGenerate(
    seq: Sequence,
    cached: readonly number[],
    suffix: readonly number[],
    maxTokens: number,
    signal: AbortSignal | undefined,
    generate: (prompt: Int32Array, maxTokens: number, signal: AbortSignal | undefined, onToken?: (token: number) => void) => Promise<string>,
    onToken?: (token: number) => void,
  ): Promise<string> {
    try {
      return await generate(Int32Array.from([...cached, ...suffix]), maxTokens, signal, onToken);
    } finally {
      // Removing at the end is exact: the cells before it are untouched.
      if (seq.tokens.length > cached.length && !seq.busy) await seq.removeTokens(cached.length, seq.tokens.length);
    }
  }

  /**
   * Summarizes ahead of need after a turn: when the cache (prompt and reply) holds more than
   * `summarizeAhead` of the budget, writes in the background the fold the next turn would make.
   * Only on a sequence of the session's own (a pool's slot may be taken between turns).
   */
  #startAhead(): void {
    const mem = this.#memory;
    if (mem.strategy !== "summarize" || mem.summarizeAhead === false || this.#disposed || this.#ahead) return;
    if (!(this.#runner instanceof SequenceRunner)) return;
    const seq = this.#runner.sequence;
    if (!seq) return;
    const budget = this.#budget(this.#maxTokens);
    const paused = this.#paused;
    this.#paused = undefined;
    if (paused && this.#stillFits(paused)) {
      this.#runAhead(paused.fold, paused.previous, budget, paused.partial, paused.tokens);
      return;
    }
    if (seq.tokens.length <= mem.summarizeAhead * budget) return;
    // The next turn's first fold: every unpinned turn but the last keepLastTurns (the new turn is not yet there).
    const turns = splitTurns(this.#history);
    const facts = pinnedFacts(turns, mem.pinned);
    facts.push({ tokens: undefined, newest: 0, pinned: false });
    // A fold written beside the turns waits for the prompt that needs it, which usually comes a
    // turn or more later: it may take the last turn but one, so that it frees more and the next
    // fold comes later. The prompt that uses it checks that keepLastTurns are still left.
    const keep = mem.summarySequence !== undefined ? Math.max(0, mem.keepLastTurns - 1) : mem.keepLastTurns;
    const fold = toFold(facts, 1, keep, true).map((i) => turns[i] as Turn);
    if (fold.length === 0) return;
    if (mem.summarySequence !== undefined) {
      // Written beside the turns and used when needed, a fold is worth writing once it frees a
      // good share of the budget: a fold of one turn would be needed again a turn later.
      const sizes = new Map(this.#layout?.items.map((it) => [it.key, it.end - it.start]) ?? []);
      let tokens = 0;
      for (const m of fold.flat()) tokens += sizes.get(m) ?? 0;
      if (tokens < DEFAULTS.summaryMinFold * budget) return;
    }
    this.#runAhead(fold, this.#summary?.text, budget, [], 0);
  }

  /**
   * Evaluates a summary written beside the turns as the message it becomes, right after the
   * system prompt, on the summary sequence (its copy of the conversation cut back to that
   * prompt; removing at the end is exact). The fold then shares those cells instead of
   * evaluating the message in the turn (Sequence.insertTokens). False where it cannot: no
   * in-place reuse, or a layout where the summary does not follow a prompt this sequence holds.
   */
  async #prepare(beside: Sequence, fold: readonly Turn[], text: string): Promise<boolean> {
    if (this.#memory.kvReuse !== "shift" || !beside.context.info.canShift) return false;
    const gone = new Set<object>(fold.flat());
    const current = this.#summary?.key;
    const items = this.#items(true).filter((it) => !gone.has(keyOf(it)) && keyOf(it) !== current);
    const at = items[0] !== undefined && keyOf(items[0]) === this.#systemKey ? 1 : 0;
    items.splice(at, 0, { key: {}, role: "system", content: SUMMARY_LABEL + text });
    const r = await this.#renderer.render(items);
    const span = r.spans[at];
    if (!span || span.end <= span.start || !sameTokens(beside.tokens.slice(0, span.start), Array.from(r.tokens.subarray(0, span.start)))) return false;
    await beside.removeTokens(span.start, beside.tokens.length);
    await beside.evaluate(r.tokens.subarray(span.start, span.end));
    return true;
  }

  /** Whether folding `fold` in this prompt leaves the last keepLastTurns turns before the new message verbatim. */
  #keepsLastTurns(fold: readonly Turn[]): boolean {
    const turns = splitTurns(this.#history);
    const kept = new Set<object>(turns.slice(Math.max(0, turns.length - 1 - this.#memory.keepLastTurns), -1).flat());
    return fold.every((t) => t.every((m) => !kept.has(m)));
  }

  /** Whether a background summary can still be used: its turns are all in the history and it extends the current summary. */
  #stillFits(a: { readonly fold: readonly Turn[]; readonly previous: string | undefined }): boolean {
    const inHistory = new Set(this.#history);
    return a.previous === this.#summary?.text && a.fold.every((t) => t.every((m) => inHistory.has(m)));
  }

  /**
   * Starts writing the summary of `fold` in the background, going on from `partial` (the model's
   * tokens so far): on `memory.summarySequence` when there is one (a copy of the conversation,
   * beside the turns), else on the session's sequence between turns.
   */
  #runAhead(fold: readonly Turn[], previous: string | undefined, budget: number, partial: number[], tokens: number): void {
    const beside = this.#memory.summarySequence;
    const ahead: Ahead = { abort: new AbortController(), fold, previous, done: Promise.resolve(), tokens, ms: 0, partial, beside: beside !== undefined };
    const t0 = performance.now();
    if (beside) {
      ahead.done = (async () => {
        // Copied now, while the session's sequence is idle (the caller's next prompt may follow at once).
        await (this.#runner.sequence as Sequence).copyTo(beside);
        try {
          const { text, cutChars } = await this.#write(beside, fold, budget, ahead.abort.signal, ahead);
          if (!ahead.abort.signal.aborted) {
            ahead.text = text;
            ahead.cutChars = cutChars;
            ahead.prepared = await this.#prepare(beside, fold, text).catch(() => false);
          }
        } finally {
          if (!beside.busy && ahead.prepared !== true) await beside.clear();
        }
      })()
        .catch(() => undefined)
        .finally(() => {
          ahead.ms = performance.now() - t0;
          ahead.finished = true;
        });
      this.#ahead = ahead;
      return;
    }
    ahead.done = (async () => {
      // Let the caller take the reply first.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (ahead.abort.signal.aborted) return;
      const seqNow = await this.#runner.acquire(ahead.abort.signal);
      try {
        const { text, cutChars } = await this.#write(seqNow, fold, budget, ahead.abort.signal, ahead);
        if (!ahead.abort.signal.aborted) {
          ahead.text = text;
          ahead.cutChars = cutChars;
        }
      } finally {
        this.#runner.release();
      }
    })()
      .catch(() => undefined)
      .finally(() => {
        ahead.ms = performance.now() - t0;
      });
    this.#ahead = ahead;
  }

  /**
   * Ends the background summary, if any: what it wrote if it had finished, else it is cancelled
   * (and awaited). One written beside the turns is kept unless `end`: returned as running (done or
   * not), it is used by the prompt that needs the fold, so folds come no more often than needed.
   */
  async #takeAhead(end = false): Promise<AheadOutcome | undefined> {
    const a = this.#ahead;
    if (!a) return undefined;
    // (One that stopped without a summary, say on a failed copy, is ended now, so another can start.)
    if (a.beside && !end && !(a.finished === true && a.text === undefined)) return { running: a };
    if (a.text === undefined) a.abort.abort();
    await a.done;
    this.#ahead = undefined;
    if (a.discarded) return undefined;
    if (a.text !== undefined) {
      const prepared = a.prepared === true ? this.#memory.summarySequence : undefined;
      return { ready: { fold: a.fold, previous: a.previous, text: a.text, cutChars: a.cutChars ?? 0, tokens: a.tokens, prepared } };
    }
    // Kept for the next idle time (dropped there if this turn folds or changes the summary).
    this.#paused = a;
    return { cancelled: { tokens: a.tokens, ms: a.ms } };
  }

  /** Cancels the background summary and waits until it has stopped. */
  async #cancelAhead(): Promise<void> {
    this.#paused = undefined;
    const a = this.#ahead;
    if (!a) return;
    a.discarded = true;
    a.abort.abort();
    await a.done;
    if (this.#ahead === a) this.#ahead = undefined;
    await this.#releasePrepared(a.prepared === true ? this.#memory.summarySequence : undefined);
  }

  /** Drops the summary sequence's prepared cells (the conversation keeps those it shares). */
  async #releasePrepared(beside: Sequence | undefined): Promise<void> {
    if (beside && !beside.busy && !beside.context.disposed) await beside.clear().catch(() => undefined);
  }
}

/** ERR_INVALID_ARGUMENT unless `options` is an object. */
function checkSessionOptions(options: unknown): void {
  if (options === null || typeof options !== "object") invalidArgument("session options must be an object");
}

/** Which sequence a new session runs on, and the context it creates when given a Model. */
async function sequenceFor(target: Model | Context | Sequence, options: SessionOptions): Promise<{ seq: Sequence; owned?: Context; options: SessionOptions }> {
  checkSessionOptions(options);
  if (target instanceof Model) {
    const m = options.memory;
    // Summaries the model writes ahead of need get a sequence of their own beside the session's,
    // sharing its cells (unified KV), unless the app shaped the context itself.
    const beside =
      m !== undefined && m !== null && typeof m === "object" && m.strategy === "summarize" && typeof m.summarizeAhead === "number" &&
      typeof m.summarize !== "function" && m.summarySequence === undefined && options.context?.sequences === undefined && options.context?.kvUnified !== false;
    const owned = await target.createContext(beside ? { ...options.context, sequences: 2, kvUnified: true } : options.context);
    if (!beside) return { seq: owned.sequence(0), owned, options };
    return { seq: owned.sequence(0), owned, options: { ...options, memory: { ...m, summarySequence: owned.sequence(1) } } };
  }
  if (options.context !== undefined) invalidArgument("options.context applies only when the session is created from a Model");
  if (target instanceof Context) return { seq: target.sequence(0), options };
  if (target instanceof Sequence) return { seq: target, options };
  return invalidArgument("createSession(target): target must be a Model, Context or Sequence");
}

function sessionOn(seq: Sequence, options: SessionOptions, owned: Context | undefined): ChatSession {
  for (const peer of peersOn(seq.context)) {
    if (peer.sequence() === seq) invalidArgument(`sequence ${seq.id} already has a session; dispose it first`);
  }
  return new ChatSession(new SequenceRunner(seq), options, owned);
}

/**
 * Starts a chat session. On a Model it creates (and owns) a context with `options.context`; on a
 * Context it uses sequence 0; on a Sequence, that sequence. One session per sequence.
 */
export async function createSession(target: Model | Context | Sequence, options: SessionOptions = {}): Promise<ChatSession> {
  const { seq, owned, options: o } = await sequenceFor(target, options);
  try {
    const session = sessionOn(seq, o, owned);
    // A sandbox that cannot start fails the first render, which says why.
    await session.warm().catch(() => undefined);
    return session;
  } catch (err) {
    await owned?.dispose();
    throw err;
  }
}

/** Options of {@link loadSession}: those of {@link createSession} (less the saved system prompt), and where the archive goes. */
export interface LoadSessionOptions extends Omit<SessionOptions, "system"> {
  /**
   * Append evicted turns to the archive file the session was saved with (default false). A
   * session file never chooses on its own where llamem writes: without this, evicted turns go to
   * `memory.archive.path` if the options name one, else to memory (`chat.archive`).
   * `memory.archive.path` wins over this. The saved path is in effect only if you trust the file.
   */
  resumeArchiveFile?: boolean;
}

/**
 * Resumes a session written by {@link ChatSession.save}: history, summary, archive and KV cache,
 * so the next prompt evaluates only what is new. ERR_STATE_MISMATCH if it was saved with another
 * model or the file is damaged. A KV state that this context cannot take (another layout:
 * sequences, kvUnified, KV types; or too many tokens) is left out, and the next prompt evaluates
 * the history again. Evicted turns go where `options` say, never to a path named by the file
 * unless `options.resumeArchiveFile` is true.
 */
export async function loadSession(target: Model | Context | Sequence, path: string, options: LoadSessionOptions = {}): Promise<ChatSession> {
  const model = target instanceof Model ? target : target instanceof Context ? target.model : target instanceof Sequence ? target.context.model : undefined;
  if (!model) invalidArgument("loadSession(target, path): target must be a Model, Context or Sequence");
  checkSessionOptions(options);
  const { header, state } = await readSession(path);
  await checkFingerprint(model, header, path);
  const sessionOptions = withArchive(options, header);
  const { seq, owned, options: o } = await sequenceFor(target, sessionOptions);
  let session: ChatSession | undefined;
  try {
    session = sessionOn(seq, o, owned);
    await session.restore(header, state);
    await session.warm().catch(() => undefined);
    return session;
  } catch (err) {
    // Disposing the session unregisters it and disposes the context it owns.
    if (session) await session.dispose();
    else await owned?.dispose();
    throw err;
  }
}

/** Throws ERR_STATE_MISMATCH unless `header` was saved from `model`. @internal */
export async function checkFingerprint(model: Model, header: SavedHeader, path: string): Promise<void> {
  if (header.model !== (await model.fingerprint())) {
    throw new LlamemError("ERR_STATE_MISMATCH", `${path} was saved from a different model; load that model to resume it`);
  }
}

/**
 * The session options for loading `header` with `options`: the saved system prompt, and the
 * archive file from the options; the saved archive file only with `resumeArchiveFile: true`. @internal
 */
export function withArchive(options: LoadSessionOptions, header: SavedHeader): SessionOptions {
  checkSessionOptions(options);
  const { resumeArchiveFile, ...rest } = options;
  if (rest.memory !== undefined && (rest.memory === null || typeof rest.memory !== "object")) invalidArgument("memory must be an object");
  if (resumeArchiveFile !== undefined && typeof resumeArchiveFile !== "boolean") invalidArgument("resumeArchiveFile must be true or false");
  const path = rest.memory?.archive?.path ?? (resumeArchiveFile === true ? (header.archive.path ?? undefined) : undefined);
  return { ...rest, system: header.system ?? undefined, memory: { ...rest.memory, archive: { ...rest.memory?.archive, path } } };
}
