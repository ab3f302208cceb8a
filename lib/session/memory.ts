/**
 * The vocabulary of a session's memory: its messages and turns, the memory options and what they
 * resolve to, and the events it reports. The policy itself is in planner.ts (what to evict),
 * summarizer.ts, archive.ts and cache-sync.ts (the KV cache); session.ts runs it.
 */
import { invalidArgument } from "../errors.js";
import { DEFAULTS } from "../options.js";
import type { ChatMessage, ChatToolCall } from "../model.js";
import type { Sequence } from "../sequence.js";
import { resolveRecall, type RecallOptions, type RecalledTurn, type ResolvedRecall } from "./recall.js";

/** One message of a session's history. */
export interface SessionMessage {
  readonly role: ChatMessage["role"];
  readonly content: string;
  /** An assistant message's reasoning, apart from its answer (kept in the prompt only with `keepReasoning`). */
  readonly reasoning?: string;
  /** An assistant message's tool calls. */
  readonly toolCalls?: readonly ChatToolCall[];
  /** A tool message: the call it answers, and the tool's name. */
  readonly toolCallId?: string;
  readonly name?: string;
  /** Pinned messages (and the turns holding them) are never evicted. */
  readonly pinned?: boolean;
  /** When the message was added, in ms since the epoch. */
  readonly timestamp: number;
}

/** A message given to {@link ChatSession.setHistory}; the timestamp defaults to now. */
export interface SessionMessageInput {
  readonly role: ChatMessage["role"];
  readonly content: string;
  readonly pinned?: boolean;
  readonly timestamp?: number;
}

/** A user message and the replies that follow it (never split by eviction). */
export type Turn = readonly SessionMessage[];

/**
 * Writes the summary of turns that are folded out of the prompt. Receives exactly the turns
 * evicted this time, the summary written before (if any), and the turn's `signal` (the
 * `signal` of the prompt that needed the summary; undefined if it had none). Returns the new
 * running summary. When the signal aborts, the turn ends with ERR_ABORTED at once, whether or not
 * the summarizer stops: pass the signal on (to `fetch`, say) so its work stops too.
 */
export type Summarizer = (
  turns: readonly Turn[],
  previousSummary: string | undefined,
  options: { readonly signal: AbortSignal | undefined },
) => Promise<string>;

/** Summaries written by the session's own model. */
export interface ModelSummaryOptions {
  /** The instruction appended after the turns to summarize (a default asks for a short factual summary). */
  prompt?: string;
  /** Most tokens of a summary (default: a quarter of the budget, at most 128). */
  maxTokens?: number;
}

/** Where evicted turns go. */
export interface ArchiveOptions {
  /** Append evicted turns to this JSONL file (one {@link ArchivedTurn} a line) instead of keeping them in memory. */
  path?: string;
  /** Turns whose newest message is older than this many ms are archived at the next prompt. */
  maxAge?: number;
  /**
   * Most turns the in-memory archive (`chat.archive`) keeps; past it the oldest are forgotten,
   * reported as `forgotten` on the event that archived the new ones. Default: `recall.maxTurns`
   * when given, else 10,000. An archive file keeps every turn.
   */
  maxTurns?: number;
}

/** How a session keeps its prompt within bounds. */
export type MemoryStrategy = "slidingWindow" | "tokenBudget" | "summarize";

/** Options of a session's memory. */
export interface MemoryOptions {
  /**
   * Most tokens of a formatted prompt: an integer >= 1, or a fraction in (0, 1) of the
   * sequence's context. Default: the sequence's context minus the reply's maxTokens minus 16.
   */
  budget?: number;
  /**
   * "tokenBudget" (default) drops the oldest whole turns until the prompt fits; "slidingWindow"
   * keeps the last `keepLastTurns` turns (and drops more if the budget demands); "summarize"
   * folds the oldest turns into a running summary, keeping `keepLastTurns` turns verbatim.
   */
  strategy?: MemoryStrategy;
  /**
   * Never leave out the system prompt (default true). With false, a prompt that is still over
   * the budget when no turn is left to evict is sent without it.
   */
  keepSystem?: boolean;
  /** Turns kept verbatim besides the new one (default 8 for slidingWindow, 2 for summarize); fewer when the budget demands. */
  keepLastTurns?: number;
  /** Pins more messages: those it returns true for are never evicted, like `pinned: true` ones. */
  pinned?: (message: SessionMessage) => boolean;
  /** For "summarize": a function, or options of summaries written by the model itself (default). */
  summarize?: Summarizer | ModelSummaryOptions;
  /** Where evicted turns go (default: an in-memory list). */
  archive?: ArchiveOptions;
  /**
   * How the KV cache follows an eviction. "shift" (default) cuts the evicted turns' cells out
   * and shifts the later ones back, evaluating only what is new; the kept cells were computed
   * while the evicted turns were visible, so this approximates a fresh evaluation (as llama.cpp's
   * context shift does). "prefix" keeps only the cells before the first evicted token and
   * evaluates the rest again: slower, and exactly what a fresh context would compute.
   */
  kvReuse?: "shift" | "prefix";
  /**
   * For "summarize": summarize ahead of need. Once the prompt after a turn (with its reply) holds
   * more than this fraction of the budget, the next fold is written in the background right after
   * the turn; the next prompt uses it if it has finished and cancels it if not. `false` (the
   * default, DEFAULTS.summarizeAhead) turns it off; 0.75 suits interactive chats. Only for sessions on a sequence of their own (not in a pool).
   */
  summarizeAhead?: number | false;
  /**
   * For summaries the model writes ahead of need: a free sequence of the session's context to
   * write them on. They then run beside the turns (the context's engine batches the two) instead
   * of in the pauses between them, and a prompt never cancels one; a finished one waits for the
   * prompt that needs the fold, and a prompt that needs it before it is done waits for the rest. The conversation is copied to it (with `kvUnified`, its
   * cells are shared, not copied), and the session keeps room for the summary's tokens out of its
   * budget. A session created on a Model with `summarizeAhead` gets one (its context has a second
   * sequence and a unified KV cache) unless `context.sequences` is given.
   */
  summarySequence?: Sequence;
  /**
   * Recall archived turns by meaning: each evicted turn is embedded as it is archived, and before
   * a prompt the archived turns most similar to the new message are placed, in a marked block,
   * just before it (so the cached history stays valid), within `maxTokens`. Off by default.
   */
  recall?: RecallOptions;
}

/** An evicted turn as the archive keeps it. */
export interface ArchivedTurn {
  readonly messages: Turn;
  /** When it was archived, in ms since the epoch. */
  readonly archivedAt: number;
  /** The policy that evicted it. */
  readonly reason: MemoryEventKind;
}

/**
 * What a memory decision did: "prune" dropped turns, "summarize" folded them into the summary,
 * "archive" moved turns past maxAge, "omitSystem" left the system prompt out, "rewrite" found
 * the template writing kept messages differently from what the cache holds (a past reply's
 * reasoning dropped, a system prompt moved): the cache is kept up to the first changed token;
 * "recall" placed archived turns back in the prompt (or says why recall failed).
 */
export type MemoryEventKind = "prune" | "summarize" | "archive" | "omitSystem" | "rewrite" | "recall";

/** Every {@link MemoryEventKind}. @internal */
export const MEMORY_EVENT_KINDS: readonly MemoryEventKind[] = ["prune", "summarize", "archive", "omitSystem", "rewrite", "recall"];

/** One memory decision, reported through `onMemoryEvent`. */
export interface MemoryEvent {
  readonly kind: MemoryEventKind;
  /** Why, in words (the budget and size, the window, the age limit). */
  readonly reason: string;
  /** The turns taken out of the prompt (for "omitSystem", the system message). */
  readonly dropped: readonly Turn[];
  /**
   * Prompt tokens before and after this decision. A "prune" of a long history's oldest turns that
   * could not fit, or that were outside the sliding window, made before they were rendered (its
   * reason says "evicted unrendered"), gives an estimate for `tokensBefore`: the rendered
   * messages' mean tokens times the evicted ones.
   */
  readonly tokensBefore: number;
  readonly tokensAfter: number;
  /** Time taken by the decision (summarizing included) in ms. */
  readonly ms: number;
  /**
   * Whether the messages kept after the evicted ones stayed in the KV cache (cut out and shifted
   * in place). False when they had to be evaluated again: kvReuse "prefix", a cache that cannot
   * shift, a new summary placed before them, or a cache that no longer holds positions they
   * attend to (a sliding-window layer's oldest, a recurrent state), which starts over.
   */
  readonly kvReused: boolean;
  /** Tokens of kept messages evaluated again because of this turn's evictions (as generation really evaluates them). */
  readonly reevaluatedTokens: number;
  /**
   * For "summarize" events: "inline" when the summary was written during this turn, "ahead" when
   * a summary written in the background after the last turn was used, "cancelled" when a
   * background summary had not finished when this prompt came and was cancelled (it folded
   * nothing: `dropped` is empty). Undefined for other kinds.
   */
  readonly summary?: "inline" | "ahead" | "cancelled";
  /** For "summarize" events: prompt tokens the model evaluated to write (or start) that summary; 0 for an app summarizer. */
  readonly summaryTokens?: number;
  /**
   * For "summarize" events the model wrote: characters of the folded turns it could not read.
   * A turn too long to fit one request with the instruction has its longest message cut (its
   * text then says how much is left out here). Absent when the model read every turn whole.
   */
  readonly summaryCutChars?: number;
  /** For "rewrite" events: the position of the first token that differs from the cache (the cells before it are kept). */
  readonly firstChangedToken?: number;
  /** For "rewrite" events: tokens of reasoning the last reply held in the cache and the prompt now leaves out (the saving). */
  readonly reasoningTokens?: number;
  /** For "recall" events: the archived turns placed in the prompt, with their similarity scores, best first. */
  readonly recalled?: readonly RecalledTurn[];
  /** For "recall" events: why recall could not run this time (the turn went on without it). */
  readonly error?: Error;
  /**
   * Archived turns forgotten, oldest first, to stay within a cap: for "recall" events, by the
   * recall store (its `maxTurns`, `maxBytes` or `maxAge`) since the last recall event; for
   * "prune", "summarize" and "archive" events, by the in-memory archive (`archive.maxTurns`) to
   * make room for this event's turns. Absent when none was.
   */
  readonly forgotten?: number;
}

/** The options with defaults applied. @internal */
export interface ResolvedMemory {
  readonly budget: number | undefined;
  readonly strategy: MemoryStrategy;
  readonly keepSystem: boolean;
  readonly keepLastTurns: number;
  readonly pinned: ((message: SessionMessage) => boolean) | undefined;
  readonly summarize: Summarizer | ModelSummaryOptions;
  readonly archivePath: string | undefined;
  /** Most turns the in-memory archive keeps. */
  readonly archiveMaxTurns: number;
  readonly maxAge: number | undefined;
  readonly kvReuse: "shift" | "prefix";
  readonly summarizeAhead: number | false;
  readonly summarySequence: Sequence | undefined;
  readonly recall: ResolvedRecall | undefined;
}

const STRATEGIES: readonly MemoryStrategy[] = ["slidingWindow", "tokenBudget", "summarize"];

const isObject = (x: unknown): x is object => typeof x === "object" && x !== null && !Array.isArray(x);

/** Validates memory options and applies the defaults. @internal */
export function resolveMemory(o: MemoryOptions = {}): ResolvedMemory {
  if (!isObject(o)) invalidArgument("memory must be an object");
  const strategy = o.strategy ?? "tokenBudget";
  if (!STRATEGIES.includes(strategy)) invalidArgument(`memory.strategy must be one of ${STRATEGIES.join(", ")}`);
  if (o.keepSystem !== undefined && typeof o.keepSystem !== "boolean") invalidArgument("memory.keepSystem must be true or false");
  if (o.pinned !== undefined && typeof o.pinned !== "function") invalidArgument("memory.pinned must be a function");
  if (o.archive !== undefined && !isObject(o.archive)) invalidArgument("memory.archive must be an object");
  const b = o.budget;
  if (b !== undefined && !(Number.isFinite(b) && ((b > 0 && b < 1) || (Number.isInteger(b) && b >= 1)))) {
    invalidArgument("memory.budget must be an integer >= 1 (tokens) or a fraction in (0, 1) of the context");
  }
  const keepLastTurns = o.keepLastTurns ?? (strategy === "slidingWindow" ? 8 : 2);
  if (!Number.isInteger(keepLastTurns) || keepLastTurns < 0) invalidArgument("memory.keepLastTurns must be a non-negative integer");
  const archivePath = o.archive?.path;
  if (archivePath !== undefined && (typeof archivePath !== "string" || archivePath.length === 0)) invalidArgument("memory.archive.path must be a file path");
  const maxAge = o.archive?.maxAge;
  if (maxAge !== undefined && !(Number.isFinite(maxAge) && maxAge >= 0)) invalidArgument("memory.archive.maxAge must be a non-negative number of ms");
  const recall = resolveRecall(o.recall);
  // The in-memory archive follows recall's cap, so a chat with a bounded recall store has a bounded heap.
  const archiveMaxTurns = o.archive?.maxTurns ?? o.recall?.maxTurns ?? DEFAULTS.recall.maxTurns;
  if (!Number.isInteger(archiveMaxTurns) || archiveMaxTurns < 1) invalidArgument("memory.archive.maxTurns must be a positive integer");
  const kvReuse = o.kvReuse ?? "shift";
  if (kvReuse !== "shift" && kvReuse !== "prefix") invalidArgument('memory.kvReuse must be "shift" or "prefix"');
  const ahead = o.summarizeAhead ?? DEFAULTS.summarizeAhead;
  if (ahead !== false && !(typeof ahead === "number" && ahead > 0 && ahead <= 1)) invalidArgument("memory.summarizeAhead must be a fraction in (0, 1] of the budget, or false");
  const s = o.summarize === undefined ? {} : o.summarize;
  if (typeof s !== "function") {
    if (!isObject(s)) invalidArgument("memory.summarize must be a function or an object");
    if (s.prompt !== undefined && typeof s.prompt !== "string") invalidArgument("memory.summarize.prompt must be a string");
    if (s.maxTokens !== undefined && (!Number.isInteger(s.maxTokens) || s.maxTokens < 1)) invalidArgument("memory.summarize.maxTokens must be a positive integer");
  }
  return {
    budget: b,
    strategy,
    keepSystem: o.keepSystem ?? true,
    keepLastTurns,
    pinned: o.pinned,
    summarize: s,
    archivePath,
    archiveMaxTurns,
    maxAge,
    kvReuse,
    summarizeAhead: ahead,
    summarySequence: o.summarySequence,
    recall,
  };
}

/** Whether `m` has the shape of a {@link SessionMessage} (for data read back from files). @internal */
export function isSessionMessage(m: unknown): m is SessionMessage {
  if (typeof m !== "object" || m === null) return false;
  const o = m as Record<string, unknown>;
  return (
    typeof o["role"] === "string" &&
    typeof o["content"] === "string" &&
    typeof o["timestamp"] === "number" &&
    Number.isFinite(o["timestamp"]) &&
    (o["pinned"] === undefined || typeof o["pinned"] === "boolean") &&
    (o["reasoning"] === undefined || typeof o["reasoning"] === "string") &&
    (o["toolCalls"] === undefined || (Array.isArray(o["toolCalls"]) && o["toolCalls"].every((c) => typeof c === "object" && c !== null && typeof (c as Record<string, unknown>)["name"] === "string"))) &&
    (o["toolCallId"] === undefined || typeof o["toolCallId"] === "string") &&
    (o["name"] === undefined || typeof o["name"] === "string")
  );
}

/** A plain copy of a checked message (no stray fields), `pinned` only when true. @internal */
export function copyMessage(m: SessionMessage): SessionMessage {
  return {
    role: m.role,
    content: m.content,
    ...(m.reasoning === undefined ? {} : { reasoning: m.reasoning }),
    ...(m.toolCalls === undefined ? {} : { toolCalls: m.toolCalls.map((c) => ({ ...(c.id === undefined ? {} : { id: c.id }), name: c.name, arguments: c.arguments })) }),
    ...(m.toolCallId === undefined ? {} : { toolCallId: m.toolCallId }),
    ...(m.name === undefined ? {} : { name: m.name }),
    ...(m.pinned ? { pinned: true } : {}),
    timestamp: m.timestamp,
  };
}
