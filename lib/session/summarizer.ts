/**
 * Folding turns into a session's running summary: with the app's {@link Summarizer}, or by
 * asking the session's own model. Either way the turn's AbortSignal ends the wait.
 * @internal
 */
import { LlamemError, invalidArgument } from "../errors.js";
import type { ModelSummaryOptions, Summarizer, Turn } from "./memory.js";
import type { RenderItem, Renderer } from "./render.js";

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
  /** The system prompt and the previous summary as the prompt has them, so their cells are reused. */
  readonly base: readonly RenderItem[];
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
): Promise<string> {
  let text: unknown;
  if (typeof how === "function") {
    text = await untilAborted(Promise.resolve().then(() => how(turns, previous, { signal })), signal, "summarizing");
  } else {
    const prompt = how.prompt ?? DEFAULT_SUMMARY_PROMPT;
    const maxTokens = summaryMaxTokens(how, budget);
    const onTail = host.tail ? await host.tail(tailInstruction(prompt, turns), maxTokens, signal) : undefined;
    if (onTail !== undefined) return onTail.trim();
    const messages: RenderItem[] = [];
    for (const m of turns.flat()) messages.push({ key: m, role: m.role, content: m.content });
    const ask: RenderItem = { key: {}, role: "user", content: prompt };
    const r = await host.renderer.render(host.base.concat(messages, [ask]));
    text = (await host.complete(r.tokens, maxTokens, signal)).trim();
  }
  if (typeof text !== "string") invalidArgument("the summarizer must resolve with a string");
  return text;
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
