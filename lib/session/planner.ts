/**
 * Eviction planning, as pure functions over turns described by their token counts, ages and
 * pins: which turns the age limit, the sliding window and the token budget evict, and how many
 * of the oldest turns shed a given excess. No model, no cache: the session renders the prompt,
 * describes its turns with {@link describeTurns}, asks these functions, and performs what they
 * decide (archiving, summarizing, re-rendering, reporting).
 * @internal
 */
import { invalidArgument } from "../errors.js";
import type { ResolvedMemory, SessionMessage, Turn } from "./memory.js";
import { keyOf, type Rendered, type RenderItem, type Span } from "./render.js";

/** A turn of the history as the planner sees it. */
export interface TurnFacts {
  /** Its tokens in the rendered prompt; undefined when the template gives its messages no spans. */
  readonly tokens: number | undefined;
  /** The timestamp of its newest message (ms since the epoch). */
  readonly newest: number;
  /** A pinned turn (holding a pinned or a system message) is never evicted. */
  readonly pinned: boolean;
}

/**
 * Where the turns of `history` start, and its length last: each user message starts a turn;
 * leading other messages form their own.
 */
export function turnStarts(history: readonly { readonly role: string }[]): number[] {
  // Indexed loops here and below: they run once or twice a turn, mostly before the engine has
  // optimized them, where for...of allocates an iterator result per message of a long history.
  const starts: number[] = [];
  for (let i = 0; i < history.length; i++) if (i === 0 || (history[i] as { readonly role: string }).role === "user") starts.push(i);
  starts.push(history.length);
  return starts;
}

/** Splits history into turns (see {@link turnStarts}). */
export function splitTurns<T extends { readonly role: string }>(history: readonly T[]): T[][] {
  // Each turn is sliced at its end, in one array of its size (pushing grows arrays in steps).
  const starts = turnStarts(history);
  const turns: T[][] = new Array<T[]>(starts.length - 1);
  for (let k = 0; k + 1 < starts.length; k++) turns[k] = history.slice(starts[k], starts[k + 1]);
  return turns;
}

/** Whether `m` pins its turn (never evicted): `pinned: true`, a system message, or one `isPinned` returns true for. */
export function pinnedMessage(m: SessionMessage, isPinned?: (m: SessionMessage) => boolean): boolean {
  return m.pinned === true || m.role === "system" || isPinned?.(m) === true;
}

/** The prompt budget in tokens for a sequence of `contextSize` tokens and replies of `maxTokens`. */
export function budgetTokens(memory: Pick<ResolvedMemory, "budget">, contextSize: number, maxTokens: number): number {
  const b = memory.budget;
  const tokens = b === undefined ? contextSize - maxTokens - 16 : b < 1 ? Math.floor(b * contextSize) : b;
  if (tokens < 1) {
    invalidArgument(`the prompt budget is ${tokens} tokens: the sequence holds ${contextSize} and a reply takes up to ${maxTokens}; set memory.budget or a smaller maxTokens`);
  }
  // A prompt must leave room for at least one generated token.
  return Math.min(tokens, contextSize - 1);
}

/** The newest timestamp of `messages` (-Infinity for none); a loop, so any length is fine. */
export function newestTimestamp(messages: readonly { readonly timestamp: number }[]): number {
  let newest = -Infinity;
  for (let i = 0; i < messages.length; i++) {
    const t = (messages[i] as { readonly timestamp: number }).timestamp;
    if (t > newest) newest = t;
  }
  return newest;
}

/**
 * Describes `turns` for planning: each turn's tokens from the spans of `rendered` (undefined if
 * one of its messages has no span there), its newest timestamp, and whether it is pinned: a
 * message with `pinned: true`, a `system` message, or one `isPinned` returns true for.
 */
export function describeTurns(turns: readonly Turn[], rendered: Rendered, isPinned?: (m: SessionMessage) => boolean): TurnFacts[] {
  const { items, spans } = rendered;
  // The items follow the history's order (the system prompt, the summary or a recall block may
  // come between its messages), so one forward walk finds each message's item: no map of a long
  // history's every item, built on every render. A message not found ahead (another order) falls
  // back to such a map. Keys are unique (an item's key is its identity across renders). The walk
  // and the newest timestamp are inline: this runs once a turn, mostly before the engine has
  // optimized it, where each call costs.
  let next = 0;
  let byKey: Map<object, Span | undefined> | undefined;
  const facts: TurnFacts[] = new Array<TurnFacts>(turns.length);
  for (let t = 0; t < turns.length; t++) {
    const turn = turns[t] as Turn;
    let tokens: number | undefined = 0;
    let pinned = false;
    let newest = -Infinity;
    for (let i = 0; i < turn.length; i++) {
      const m = turn[i] as SessionMessage;
      if (tokens !== undefined) {
        let span: Span | undefined;
        if (!byKey) {
          let k = next;
          while (k < items.length && keyOf(items[k] as RenderItem) !== m) k++;
          if (k < items.length) {
            span = spans[k];
            next = k + 1;
          } else {
            byKey = new Map();
            for (let j = 0; j < items.length; j++) byKey.set(keyOf(items[j] as RenderItem), spans[j]);
          }
        }
        if (byKey) span = byKey.get(m);
        tokens = span ? tokens + (span.end - span.start) : undefined;
      }
      pinned ||= pinnedMessage(m, isPinned);
      if (m.timestamp > newest) newest = m.timestamp;
    }
    facts[t] = { tokens, newest, pinned };
  }
  return facts;
}

/**
 * Facts of turns that were not rendered, for the choices that need only which turns are pinned
 * (a window of turns, the first fold): sizes unknown, times not read.
 */
export function pinnedFacts(turns: readonly Turn[], isPinned?: (m: SessionMessage) => boolean): TurnFacts[] {
  const facts: TurnFacts[] = new Array<TurnFacts>(turns.length);
  for (let t = 0; t < turns.length; t++) facts[t] = { tokens: undefined, newest: 0, pinned: (turns[t] as Turn).some((m) => pinnedMessage(m, isPinned)) };
  return facts;
}

/** Indices of the turns that may be evicted, oldest first: not pinned, and not the last (the turn being prompted). */
export function evictable(turns: readonly TurnFacts[]): number[] {
  const out: number[] = [];
  for (let i = 0; i + 1 < turns.length; i++) if (!(turns[i] as TurnFacts).pinned) out.push(i);
  return out;
}

/** The evictable turns whose newest message is older than `limit` (ms since the epoch). */
export function agedOut(turns: readonly TurnFacts[], limit: number): number[] {
  return evictable(turns).filter((i) => (turns[i] as TurnFacts).newest < limit);
}

/** The sliding window's evictions: the oldest evictable turns beyond the last `keepLastTurns`. */
export function outsideWindow(turns: readonly TurnFacts[], keepLastTurns: number): number[] {
  const e = evictable(turns);
  return e.slice(0, Math.max(0, e.length - keepLastTurns));
}

/**
 * How many of the oldest `tokens` (turns' token counts, oldest first) to drop to shed `excess`
 * tokens: at least one, at most all. A turn of unknown size stops the count before it (it is
 * dropped alone when it comes first), so the caller renders again and asks once more.
 */
export function countToShed(tokens: readonly (number | undefined)[], excess: number): number {
  let shed = 0;
  for (let k = 0; k < tokens.length; k++) {
    const n = tokens[k];
    if (n === undefined) return Math.max(1, k);
    shed += n;
    if (shed >= excess) return k + 1;
  }
  return tokens.length;
}

/** The token budget's evictions: the oldest evictable turns that shed `excess` tokens (none when there is no excess). */
export function toShed(turns: readonly TurnFacts[], excess: number): number[] {
  if (excess <= 0) return [];
  const e = evictable(turns);
  return e.slice(0, countToShed(e.map((i) => (turns[i] as TurnFacts).tokens), excess));
}

/**
 * The turns to fold into the summary. The first fold of a turn takes every evictable turn but
 * the last `keepLastTurns` (at least one); a later fold, needed when the prompt is still over the
 * budget, takes the oldest that shed the `excess`.
 */
export function toFold(turns: readonly TurnFacts[], excess: number, keepLastTurns: number, first: boolean): number[] {
  if (excess <= 0) return [];
  if (!first) return toShed(turns, excess);
  const e = evictable(turns);
  return e.slice(0, Math.max(1, e.length - keepLastTurns));
}

/**
 * The fewest tokens the prompt can shrink to: `total` less every evictable turn and the
 * `droppable` tokens (the system prompt when it may be left out). Undefined when an evictable
 * turn's size is unknown. A summary written while folding only adds to it, so a floor at or
 * above the context means no plan can make the prompt fit.
 */
export function promptFloor(total: number, turns: readonly TurnFacts[], droppable = 0): number | undefined {
  let floor = total - droppable;
  const e = evictable(turns);
  for (let k = 0; k < e.length; k++) {
    const n = (turns[e[k] as number] as TurnFacts).tokens;
    if (n === undefined) return undefined;
    floor -= n;
  }
  return floor;
}
