/**
 * Formats chat messages with the model's chat template and tokenizes them, keeping the token
 * span of every message so the session knows which KV cells hold which message.
 * @internal
 */
import type { ChatMessage, Model } from "../model.js";

/** A message to render, with the identity the session tracks it by. */
export interface RenderItem {
  /** Identity of the message across renders (the history entry, the system or summary message). */
  readonly key: object;
  readonly role: ChatMessage["role"];
  readonly content: string;
}

/** Token positions [start, end) of one message in a rendered prompt. */
export interface Span {
  readonly start: number;
  readonly end: number;
}

/** A rendered prompt. */
export interface Rendered {
  readonly items: readonly RenderItem[];
  /** The whole prompt (BOS if the model wants one and the template has none, then the template's text). */
  readonly tokens: Int32Array;
  /**
   * The span of each item, in `tokens`. Undefined from the first item whose tokens are not its own
   * (a template that rewrites earlier messages, or tokens merging across a boundary).
   */
  readonly spans: readonly (Span | undefined)[];
}

interface CachedPiece {
  readonly text: string;
  readonly first: boolean;
  readonly tokens: Int32Array;
}

export class Renderer {
  /** Tokens of each message's piece of text, so a render only tokenizes new messages' prefixes. */
  readonly #pieces = new WeakMap<object, CachedPiece>();

  constructor(
    readonly model: Model,
    readonly template: string | undefined,
  ) {}

  /** Formats `items` (with the assistant header when `addAssistant`) and tokenizes them. */
  async render(items: readonly RenderItem[], addAssistant = true): Promise<Rendered> {
    const messages = items.map((m) => ({ role: m.role, content: m.content }));
    const format = (n: number, assistant: boolean) =>
      this.model.applyChatTemplate(messages.slice(0, n), { addAssistant: assistant, template: this.template });
    const full = format(messages.length, addAssistant);
    const raw = await this.#tokenize(full);
    const { bos, addBos } = this.model.info;
    // Templates that write BOS themselves yield it from parseSpecial; the others get it added here.
    const lead = addBos && raw[0] !== bos ? 1 : 0;
    const tokens = lead ? withLead(bos, raw) : raw;

    // Each message's text is what format(0..i) adds to format(0..i-1); a template that rewrites
    // earlier text when a message is added has no per-message spans.
    const prefixes: string[] = [""];
    for (let i = 1; i <= messages.length; i++) {
      const text = format(i, false);
      if (!text.startsWith(prefixes[i - 1] as string)) break;
      prefixes.push(text);
    }
    const spans: (Span | undefined)[] = items.map(() => undefined);
    if (!full.startsWith(prefixes[prefixes.length - 1] as string)) return { items, tokens, spans };
    let pos = 0;
    for (let i = 0; i + 1 < prefixes.length; i++) {
      const item = items[i] as RenderItem;
      const text = (prefixes[i + 1] as string).slice((prefixes[i] as string).length);
      const first = i === 0;
      let piece = this.#pieces.get(item.key);
      if (!piece || piece.text !== text || piece.first !== first || !matchesAt(raw, pos, piece.tokens)) {
        // Tokenizing the whole prefix (not the piece alone) gives the tokens the piece has in context.
        const prefix = await this.#tokenize(prefixes[i + 1] as string);
        if (!startsWith(prefix, raw, pos)) break;
        piece = { text, first, tokens: prefix.slice(pos) };
        if (!matchesAt(raw, pos, piece.tokens)) break;
        this.#pieces.set(item.key, piece);
      }
      spans[i] = { start: lead + pos, end: lead + pos + piece.tokens.length };
      pos += piece.tokens.length;
    }
    return { items, tokens, spans };
  }

  #tokenize(text: string): Promise<Int32Array> {
    return this.model.tokenizeRaw(text, { addSpecial: false, parseSpecial: true });
  }
}

/** `first` then `rest` (no argument spread: a prompt can have millions of tokens). */
function withLead(first: number, rest: Int32Array): Int32Array {
  const out = new Int32Array(rest.length + 1);
  out[0] = first;
  out.set(rest, 1);
  return out;
}

/** Whether `a` begins with the first `n` tokens of `b`. */
function startsWith(a: Int32Array, b: Int32Array, n: number): boolean {
  if (a.length < n) return false;
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Whether `part` occurs in `whole` at `pos`. */
function matchesAt(whole: Int32Array, pos: number, part: Int32Array): boolean {
  if (pos + part.length > whole.length) return false;
  for (let i = 0; i < part.length; i++) if (whole[pos + i] !== part[i]) return false;
  return true;
}

/** Length of the common prefix of two token lists, at most `max`. */
export function commonPrefix(a: ArrayLike<number>, b: ArrayLike<number>, max = Infinity): number {
  const n = Math.min(a.length, b.length, max);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
