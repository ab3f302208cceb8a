/**
 * Keeping a sequence's KV cache in line with a session's prompt: which messages sit in which
 * cells ({@link Layout}), cutting evicted messages' cells out and shifting the rest back, and
 * copying an idle peer session's cells when it shares a longer prefix. The peers are the
 * sessions on the same Context, registered here.
 * @internal
 */
import type { Context } from "../context.js";
import type { Sequence } from "../sequence.js";
import type { SessionMessage } from "./memory.js";
import { commonPrefix, keyOf, type Rendered } from "./render.js";

/** Copying another sequence's cells pays off only for a prefix at least this long. */
const MIN_SHARED_PREFIX = 16;

/** Which messages sit in which cells, as of the end of the last turn. */
export interface Layout {
  /** The sequence's tokens when the layout was taken; a layout is only used while they are unchanged. */
  readonly tokens: readonly number[];
  /** `prompt` is false for the reply generated last (its cells hold the sampled tokens). */
  readonly items: readonly LayoutItem[];
}

/** The cells [start, end) of one message; `key` is its identity (a history entry, the system or summary message). */
export interface LayoutItem {
  readonly key: object;
  readonly start: number;
  readonly end: number;
  readonly prompt: boolean;
}

/** What the cache kept of the messages that stay: the `kvReused` and `reevaluatedTokens` of memory events. */
export interface KvOutcome {
  readonly kvReused: boolean;
  readonly reevaluatedTokens: number;
}

/** A session as prefix sharing sees it. */
export interface CachePeer {
  /** The sequence holding its cache; undefined while spilled. */
  sequence(): Sequence | undefined;
  /** True during a turn (its cache is changing). */
  busy(): boolean;
}

/** The sessions of each context, whose cells the others may copy. */
const peersByContext = new WeakMap<Context, Set<CachePeer>>();

/** Registers `peer` as a session on `context`. */
export function joinPeers(context: Context, peer: CachePeer): void {
  let peers = peersByContext.get(context);
  if (!peers) peersByContext.set(context, (peers = new Set()));
  peers.add(peer);
}

/** Unregisters `peer` (a disposed session). */
export function leavePeers(context: Context, peer: CachePeer): void {
  peersByContext.get(context)?.delete(peer);
}

/** The sessions registered on `context`. */
export function peersOn(context: Context): Iterable<CachePeer> {
  return peersByContext.get(context) ?? [];
}

/** Whether two token lists are equal. */
export function sameTokens(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && commonPrefix(a, b) === a.length;
}

/**
 * Brings `seq`'s cache in line with the prompt `r` before generating. With `shift`, the cells
 * of messages that were in the layout `before` and are gone from `r` are cut out and the later
 * cells shifted back, and new messages placed before kept ones (a new summary) are inserted
 * into the cache in place (when that keeps more than the plain common prefix; from the cells of
 * `prepared` when it holds them evaluated already, see Sequence.insertTokens). Then, if an idle
 * peer on the same context holds a longer prefix of the prompt, its cells are copied. What still
 * differs is evaluated by generation. Returns how many tokens of kept messages need evaluating
 * again.
 */
export async function fitCache(seq: Sequence, r: Rendered, before: Layout | undefined, o: { shift: boolean; self: CachePeer; prepared?: Sequence | undefined }): Promise<KvOutcome> {
  const prompt = r.tokens;
  const max = prompt.length - 1;
  const cached = seq.tokens;
  const keys = new Set(r.items.map(keyOf));
  const valid = before !== undefined && sameTokens(before.tokens, cached);
  const gone = valid ? before.items.filter((it) => !keys.has(it.key)) : [];
  const run = valid && o.shift && seq.context.info.canShift ? insertedRun(r, before) : undefined;
  // A new message with the very tokens of a dropped one in its place (a summary rewritten the
  // same) keeps that one's cells instead.
  const same = run && gone.find((d) => d.start === run.start && d.end === run.end && sameTokens(cached.slice(d.start, d.end), Array.from(prompt.subarray(d.start, d.end))));
  const dropped = same ? gone.filter((d) => d !== same) : gone;
  const inserted = same ? undefined : run;
  if ((dropped.length > 0 || inserted) && o.shift) {
    const removed = new Uint8Array(cached.length);
    for (const d of dropped) removed.fill(1, d.start, d.end);
    // Walk the cache without the dropped cells: how far would it then match the prompt (with the
    // inserted run skipped over in the prompt)?
    let matched = 0;
    let cut = cached.length;
    for (let c = 0; c < cached.length; c++) {
      if (removed[c]) continue;
      if (inserted && matched === inserted.start) matched = inserted.end;
      if (matched >= max || cached[c] !== prompt[matched]) {
        cut = c;
        break;
      }
      matched++;
    }
    // Inserting pays only if cells after the run are kept; else the run is just evaluated.
    const insert = inserted !== undefined && matched > inserted.end;
    const kept = insert ? matched - (inserted.end - inserted.start) : Math.min(matched, inserted?.start ?? matched);
    if (kept > commonPrefix(cached, prompt, max)) {
      if (cut < cached.length) await seq.removeTokens(cut, cached.length);
      // From the last range back, so earlier positions stay put while later ones shift.
      dropped.sort((a, b) => b.start - a.start);
      for (const d of dropped) {
        if (d.start < cut) await seq.removeTokens(d.start, d.end);
      }
      if (insert && !(await seq.insertTokens(inserted.start, prompt.subarray(inserted.start, inserted.end), o.prepared))) {
        await seq.removeTokens(inserted.start, seq.tokens.length);
      }
    }
  }
  await sharePrefix(seq, prompt, o.self);
  // What generation will really reuse: the common prefix, unless the cache lost positions the
  // rest attends to (a sliding window's, a recurrent state's), when it starts over.
  const reused = await seq.keepPrefix(prompt);
  // Tokens of messages that were in the last prompt and now need evaluating again.
  const kept = new Set<object>();
  for (const it of before?.items ?? []) if (it.prompt) kept.add(it.key);
  let keptEnd = 0;
  r.items.forEach((it, i) => {
    const span = r.spans[i];
    if (span && kept.has(keyOf(it))) keptEnd = span.end;
  });
  const reevaluatedTokens = Math.max(0, keptEnd - reused);
  return { kvReused: reevaluatedTokens === 0, reevaluatedTokens };
}

/**
 * The prompt tokens [start, end) of the messages that are new in `r` and come before messages
 * the cache holds from `before` (a summary written before the kept turns): one contiguous run,
 * or undefined.
 */
function insertedRun(r: Rendered, before: Layout): { start: number; end: number } | undefined {
  const had = new Set(before.items.filter((it) => it.prompt).map((it) => it.key));
  let run: { start: number; end: number } | undefined;
  let keptAfter = false;
  for (const [i, it] of r.items.entries()) {
    const span = r.spans[i];
    if (!span) return undefined;
    if (had.has(keyOf(it))) {
      if (run) keptAfter = true;
      continue;
    }
    if (keptAfter) break;
    if (run && span.start !== run.end) return undefined;
    run = run ? { start: run.start, end: span.end } : { start: span.start, end: span.end };
  }
  return run && keptAfter && run.end > run.start ? run : undefined;
}

/**
 * Copies the cells of an idle peer on the same context whose cache shares a longer prefix of
 * `prompt`, if its cache still holds what the rest of the prompt attends to there.
 */
async function sharePrefix(seq: Sequence, prompt: Int32Array, self: CachePeer): Promise<void> {
  const sources: PrefixSource[] = [];
  for (const peer of peersOn(seq.context)) {
    const other = peer.sequence();
    if (peer !== self && other) sources.push({ sequence: other, busy: () => peer.busy() || peer.sequence() !== other });
  }
  await copyLongestPrefix(seq, prompt, sources);
}

/** A sequence whose cells may be copied, and whether its owner is using it now. */
export interface PrefixSource {
  readonly sequence: Sequence;
  busy(): boolean;
}

/**
 * Gives `seq` the cells of the idle source sharing the longest prefix of `prompt`, when that is
 * at least {@link MIN_SHARED_PREFIX} tokens more than `seq` holds already and the source's cache
 * still holds what the rest of the prompt attends to there: the source's cells are copied and
 * cut after the shared prefix. Returns whether it copied.
 */
export async function copyLongestPrefix(seq: Sequence, prompt: ArrayLike<number>, sources: Iterable<PrefixSource>): Promise<boolean> {
  const max = prompt.length - 1;
  const own = commonPrefix(seq.tokens, prompt, max);
  const floor = Math.max(MIN_SHARED_PREFIX - 1, own > 0 && (await seq.holds(own)) ? own : 0);
  const candidates: { source: PrefixSource; other: Sequence; n: number }[] = [];
  for (const source of sources) {
    const other = source.sequence;
    if (source.busy() || other === seq || other.busy) continue;
    const n = commonPrefix(other.tokens, prompt, max);
    if (n > floor) candidates.push({ source, other, n });
  }
  candidates.sort((a, b) => b.n - a.n);
  for (const { source, other, n } of candidates) {
    if (!(await other.holds(n))) continue;
    // The source may have started a turn while we asked.
    if (source.busy() || other.busy || commonPrefix(other.tokens, prompt, max) < n) continue;
    await other.copyTo(seq);
    await seq.removeTokens(n, seq.tokens.length);
    return true;
  }
  return false;
}

/** The layout after a turn: the prompt's message spans, and the reply's cells after them. */
export function layoutAfter(r: Rendered, reply: SessionMessage, tokens: readonly number[]): Layout {
  const items: LayoutItem[] = [];
  let end = 0;
  let complete = true;
  r.items.forEach((it, i) => {
    const span = r.spans[i];
    if (!span) {
      complete = false;
      return;
    }
    items.push({ key: keyOf(it), start: span.start, end: span.end, prompt: true });
    end = span.end;
  });
  // The reply's message starts with the assistant header that closes the prompt.
  if (complete) items.push({ key: reply, start: end, end: tokens.length, prompt: false });
  return { tokens: tokens.slice(), items };
}
