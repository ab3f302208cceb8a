/**
 * Folding turns into a session's running summary: with the app's {@link Summarizer}, or by
 * asking the session's own model. Either way the turn's AbortSignal ends the wait.
 * @internal
 */
import { LlamemError, invalidArgument } from "../errors.js";
import type { ModelSummaryOptions, Summarizer, Turn } from "./memory.js";
import { keyOf, type RenderItem, type Rendered, type Renderer } from "./render.js";

/** The label of the summary message, which is sent as a system message after the system prompt. */
export const SUMMARY_LABEL = "Summary of the earlier conversation:\n";

/** The instruction after the turns when the model writes the summary. */
export const DEFAULT_SUMMARY_PROMPT =
  "Summarize the conversation so far in a few sentences. Keep names, facts, decisions and open questions. Reply with the summary only.";

/** Most tokens of a model-written summary unless the options say: a quarter of the budget, 1 to 128. */
export function summaryMaxTokens(o: ModelSummaryOptions, budget: number): number {
  return o.maxTokens ?? Math.max(1, Math.min(128, Math.floor(budget / 4)));
}

/** What writing a summary with the session's model needs. */
export interface ModelSummaryHost {
  readonly renderer: Renderer;
  /** The system prompt as the prompt has it (none, or one item), so its cells are reused. */
  readonly system: readonly RenderItem[];
  /** The previous summary as the prompt has it, so its cells are reused. */
  readonly summary: RenderItem | undefined;
  /** Tokens the sequence holds: a request and its summary must fit in them. */
  readonly contextSize: number;
  /** Generates greedily after `prompt`, at most `maxTokens` tokens, and resolves with the text. */
  complete(prompt: Int32Array, maxTokens: number, signal: AbortSignal | undefined): Promise<string>;
  /**
   * Writes the summary after everything the sequence already holds: appends `instruction` as a
   * user message after the cached conversation, generates greedily, then removes that tail.
   * Resolves with undefined when the cache cannot be used so (the request is then rendered from
   * the turns' text and sent through {@link complete}).
   */
  tail?(instruction: string, maxTokens: number, signal: AbortSignal | undefined): Promise<string | undefined>;
}

/**
 * The instruction of a summary written after the whole cached conversation: the kept turns are
 * in the cache too, so it names the last turn to cover.
 */
export function tailInstruction(prompt: string, turns: readonly Turn[]): string {
  const last = turns[turns.length - 1]?.[0];
  if (!last) return prompt;
  const start = last.content.replace(/\s+/g, " ").trim().slice(0, 60);
  return `${prompt}\nCover the conversation above only up to and including the ${last.role} message that begins "${start}".`;
}

/** A new running summary, and what of the folded turns the model could not read. */
export interface SummaryText {
  readonly text: string;
  /** Characters of over-long messages left out of the model's requests (0: it read every turn whole). */
  readonly cutChars: number;
}

/**
 * The new running summary after folding `turns` into `previous`: the app's summarizer when
 * `how` is a function (given the turn's signal), else the model's own, via `host`. Ends with
 * ERR_ABORTED as soon as `signal` aborts, even if the summarizer never settles.
 */
export async function summarizeTurns(
  how: Summarizer | ModelSummaryOptions,
  turns: readonly Turn[],
  previous: string | undefined,
  budget: number,
  signal: AbortSignal | undefined,
  host: ModelSummaryHost,
): Promise<SummaryText> {
  let text: unknown;
  let cutChars = 0;
  if (typeof how === "function") {
    text = await untilAborted(Promise.resolve().then(() => how(turns, previous, { signal })), signal, "summarizing");
  } else {
    const prompt = how.prompt ?? DEFAULT_SUMMARY_PROMPT;
    const maxTokens = summaryMaxTokens(how, budget);
    const onTail = host.tail ? await host.tail(tailInstruction(prompt, turns), maxTokens, signal) : undefined;
    if (onTail !== undefined) return { text: onTail.trim(), cutChars: 0 };
    const ask: RenderItem = { key: {}, role: "user", content: prompt };
    // A fold whose request does not fit the context (a long history set at once) is written in
    // parts, oldest first, each part's summary going on from the one before.
    let base: readonly RenderItem[] = host.summary ? [...host.system, host.summary] : host.system;
    let rest = turns;
    do {
      let n = rest.length;
      let part = messagesOf(rest.slice(0, n));
      const cutFrom: CutFrom = new Map();
      let r = await host.renderer.render(base.concat(part, [ask]));
      for (let cuts = 0; r.tokens.length + maxTokens >= host.contextSize; ) {
        const excess = r.tokens.length + maxTokens - host.contextSize + 1;
        if (n > 1) {
          n = turnsThatFit(r, base.length, rest.slice(0, n), excess);
          part = messagesOf(rest.slice(0, n));
        } else {
          // One turn too long to read with the instruction (a document pasted near the context's
          // size): its longest message is cut, and says so, rather than no fold ever fitting.
          const cut = cuts++ < MAX_CUTS ? cutLongest(part, r, base.length, excess, cutFrom) : undefined;
          if (!cut) {
            throw new LlamemError("ERR_CONTEXT_FULL", `a turn to summarize takes ${r.tokens.length} tokens with the instruction and the summary's ${maxTokens}; the context holds ${host.contextSize} per sequence`);
          }
          part = cut;
        }
        r = await host.renderer.render(base.concat(part, [ask]));
      }
      text = (await host.complete(r.tokens, maxTokens, signal)).trim();
      for (const it of part) {
        const c = cutFrom.get(keyOf(it));
        if (c) cutChars += c.whole.length - c.kept;
      }
      rest = rest.slice(n);
      base = [...host.system, { key: {}, role: "system", content: SUMMARY_LABEL + (text as string) }];
    } while (rest.length > 0);
  }
  if (typeof text !== "string") invalidArgument("the summarizer must resolve with a string");
  return { text, cutChars };
}

/** Cuts of one turn's messages before its request is given up as too long. */
const MAX_CUTS = 8;

/** Tokens a cut message keeps at least (else the turn is too long to summarize at all). */
const MIN_KEPT_TOKENS = 16;

/** The whole text of each cut message and the characters of it kept, by the cut item's key. */
type CutFrom = Map<object, { readonly whole: string; readonly kept: number }>;

/**
 * `items` with the longest message cut so that the request `r` (`lead` items, then `items`, then
 * the instruction) sheds about `excess` tokens, its text ending with a note of what was left out
 * (recorded in `cutFrom`); undefined when that would leave it under MIN_KEPT_TOKENS.
 */
function cutLongest(items: readonly RenderItem[], r: Rendered, lead: number, excess: number, cutFrom: CutFrom): RenderItem[] | undefined {
  let at = -1;
  for (let i = 0; i < items.length; i++) if (at < 0 || (items[i] as RenderItem).content.length > (items[at] as RenderItem).content.length) at = i;
  const m = items[at];
  if (!m) return undefined;
  const span = r.spans[lead + at];
  // Without its span, a message is taken at four characters a token.
  const tokens = span ? span.end - span.start : Math.ceil(m.content.length / 4);
  // The note adds tokens of its own: a margin of a quarter more.
  const keep = tokens - Math.ceil(excess * 1.25) - MIN_KEPT_TOKENS;
  if (keep < MIN_KEPT_TOKENS) return undefined;
  // A message cut again is cut further from its whole text, so that its note counts everything left out.
  const before = cutFrom.get(keyOf(m));
  const whole = before?.whole ?? m.content;
  const chars = Math.floor(((before?.kept ?? m.content.length) * keep) / tokens);
  const key = {};
  cutFrom.set(key, { whole, kept: chars });
  const out = items.slice();
  out[at] = { key, role: m.role, content: `${whole.slice(0, chars)}\n[${whole.length - chars} more characters of this message are left out here]` };
  return out;
}

/** The items of the messages of `turns`, keyed by the messages. */
function messagesOf(turns: readonly Turn[]): RenderItem[] {
  const out: RenderItem[] = [];
  for (const t of turns) for (const m of t) out.push({ key: m, role: m.role, content: m.content });
  return out;
}

/**
 * How many of the oldest of `turns` to ask for so that the request `r` (`lead` items, then the
 * turns' messages, then the instruction) sheds `excess` tokens: from the messages' spans, at
 * least one fewer than now and at least one; half as many where the spans are unknown.
 */
function turnsThatFit(r: Rendered, lead: number, turns: readonly Turn[], excess: number): number {
  let end = lead;
  const ends: number[] = [];
  for (const t of turns) {
    end += t.length;
    ends.push(end);
  }
  const last = r.spans[end - 1];
  if (!last) return Math.max(1, turns.length >> 1);
  // Tokens to keep of the turns: where the last message ends, less the excess.
  const limit = last.end - excess;
  let n = 0;
  for (let k = 0; k < ends.length - 1; k++) {
    const span = r.spans[(ends[k] as number) - 1];
    if (!span) return Math.max(1, turns.length >> 1);
    if (span.end > limit) break;
    n = k + 1;
  }
  return Math.max(1, Math.min(n, turns.length - 1));
}

/**
 * `work`, or ERR_ABORTED as soon as `signal` aborts (whether or not `work` settles later; its
 * late outcome is ignored). A rejection of `work` after the abort is ERR_ABORTED too.
 */
export function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return work;
  const aborted = () => new LlamemError("ERR_ABORTED", `${what} was aborted`, { cause: signal.reason });
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.reject(aborted());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(aborted());
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(signal.aborted ? aborted() : err);
      },
    );
  });
}
