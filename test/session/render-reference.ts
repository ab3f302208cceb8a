/**
 * The session renderer as it was before it was sliced for long histories (lib/session/render.ts
 * at the commit before), kept as the reference the sliced one must match token for token and
 * span for span. Test code only.
 */
import type { ChatMessage, Model } from "../../lib/model.js";
import { withBos } from "../../lib/chat/template.js";
import { keyOf, messageOf, type RenderFormat, type RenderItem, type Rendered, type Span } from "../../lib/session/render.js";

/** What identifies a message's rendering: every field the template reads. */
function signature(m: Readonly<ChatMessage>): string {
  return JSON.stringify(messageOf(m));
}

interface CachedPiece {
  readonly text: string;
  readonly first: boolean;
  readonly tokens: Int32Array;
}

/** The text a message adds to the rendered chat, as last seen: reused while the message is unchanged. */
interface CachedText {
  readonly signature: string;
  readonly first: boolean;
  readonly text: string;
}

/** Messages whose windows go to the template sandbox in one message. */
const WINDOW_SLICE = 256;

/** Lets the event loop run between template calls: one call on a long history takes milliseconds. */
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export class ReferenceRenderer {
  /** Tokens of each message's piece of text, so a render only tokenizes new messages' prefixes. */
  readonly #pieces = new WeakMap<object, CachedPiece>();
  /** Each message's piece of text, so a render calls the template for new messages only. */
  readonly #texts = new WeakMap<object, CachedText>();

  constructor(
    readonly model: Model,
    readonly format: RenderFormat,
  ) {}

  /** Formats `messages` with the session's template. */
  apply(messages: ChatMessage[], addAssistant: boolean): Promise<string> {
    return this.model.applyChatTemplate(messages, { ...this.format, addAssistant });
  }

  /** Formats `items` (with the assistant header when `addAssistant`) and tokenizes them. */
  async render(items: readonly RenderItem[], addAssistant = true): Promise<Rendered> {
    const messages = items.map(messageOf);
    const format = (n: number, assistant: boolean) => this.apply(n === messages.length ? messages : messages.slice(0, n), assistant);
    const full = await format(messages.length, addAssistant);
    const raw = await this.#tokenize(full);
    const tokens = withBos(this.model, raw);
    const lead = tokens.length - raw.length;

    const texts = await this.#pieceTexts(items, full, format);
    const spans: (Span | undefined)[] = items.map(() => undefined);
    let pos = 0;
    let at = 0;
    let byteAt = 0;
    let ends: Map<number, number> | undefined | null = null;
    for (let i = 0; i < texts.length; i++) {
      const item = items[i] as RenderItem;
      const text = texts[i] as string;
      const first = i === 0;
      at += text.length;
      byteAt += Buffer.byteLength(text);
      let piece = this.#pieces.get(keyOf(item));
      if (!piece || piece.text !== text || piece.first !== first || !matchesAt(raw, pos, piece.tokens)) {
        // Where the prompt's tokens render back to its text, a piece's tokens are those up to the
        // token that ends where the piece's text ends (none ends there: a token merges across).
        if (ends === null) ends = await this.#tokenEnds(raw, full);
        let own: Int32Array | undefined;
        if (ends) {
          const end = ends.get(byteAt);
          if (end === undefined) break;
          own = raw.slice(pos, end);
        } else {
          // Otherwise tokenizing the whole prefix gives the piece's tokens in context (slower).
          const prefix = await this.#tokenize(full.slice(0, at));
          if (!startsWith(prefix, raw, pos)) break;
          own = prefix.slice(pos);
          if (!matchesAt(raw, pos, own)) break;
        }
        piece = { text, first, tokens: own };
        this.#pieces.set(keyOf(item), piece);
      }
      spans[i] = { start: lead + pos, end: lead + pos + piece.tokens.length };
      pos += piece.tokens.length;
    }
    return { items, tokens, spans };
  }

  /**
   * The text each message adds to the chat: format(0..i+1) less format(0..i). Messages seen
   * before keep their text, so a turn calls the template for the new messages only (rendering
   * every prefix of a long history would be quadratic). The texts must add up to the start of
   * `full`; where they do not (a template that writes a message differently depending on the
   * others), every prefix is rendered again, and the list stops at the first message whose text
   * is not its own.
   */
  async #pieceTexts(items: readonly RenderItem[], full: string, format: (n: number, assistant: boolean) => Promise<string>): Promise<string[]> {
    const known = items.map((it, i) => {
      const c = this.#texts.get(keyOf(it));
      return c && c.signature === signature(it) && c.first === (i === 0) ? c.text : undefined;
    });
    const prefixes = new Map<number, string>([[0, ""]]);
    const prefix = async (n: number): Promise<string> => {
      let p = prefixes.get(n);
      if (p === undefined) {
        p = await format(n, false);
        prefixes.set(n, p);
      }
      return p;
    };
    // A new message's text, from a window of it and the message before it: what it adds to that
    // one alone. Two small template calls, whatever the history's length; the check against the
    // whole prompt below catches a template whose text for a message depends on more.
    // A new message's text, from a window of it and the message before it: what it adds to that
    // one alone. Two small template renders, whatever the history's length, sent to the sandbox
    // in slices (one message each, letting the event loop run between them); the check against
    // the whole prompt below catches a template whose text for a message depends on more. A
    // template may refuse a window (one that must start with a user message, say): that
    // message's text is then found from the whole prefixes.
    const unknown = items.flatMap((_, i) => (known[i] === undefined ? [i] : []));
    let consistent = true;
    for (let at = 0; at < unknown.length && consistent; at += WINDOW_SLICE) {
      if (at > 0) await yieldToLoop();
      const slice = unknown.slice(at, at + WINDOW_SLICE);
      const windows: ChatMessage[][] = [];
      for (const i of slice) {
        const item = items[i] as RenderItem;
        if (i > 0) windows.push([messageOf(items[i - 1] as RenderItem)], [messageOf(items[i - 1] as RenderItem), messageOf(item)]);
        else windows.push([messageOf(item)]);
      }
      const texts = await this.model.applyChatTemplates(windows, { ...this.format, addAssistant: false });
      let w = 0;
      for (const i of slice) {
        const before = i > 0 ? texts[w++] : "";
        const after = texts[w++];
        if (typeof before === "string" && typeof after === "string" && after.startsWith(before)) known[i] = after.slice(before.length);
        else {
          consistent = false;
          break;
        }
      }
    }
    let at = 0;
    for (const t of known) {
      if (!consistent || t === undefined || !full.startsWith(t, at)) {
        consistent = false;
        break;
      }
      at += t.length;
    }
    if (!consistent) return this.#allPrefixes(items, full, prefix);
    items.forEach((it, i) => this.#texts.set(keyOf(it), { signature: signature(it), first: i === 0, text: known[i] as string }));
    return known as string[];
  }

  /** Every prefix rendered: the texts of the leading messages whose text is their own. */
  async #allPrefixes(items: readonly RenderItem[], full: string, prefix: (n: number) => Promise<string>): Promise<string[]> {
    const texts: string[] = [];
    let before = "";
    for (let i = 1; i <= items.length; i++) {
      // A prefix the template refuses (one ending in a tool call, say) ends the list of known texts.
      const text = await prefix(i).catch(() => undefined);
      if (text === undefined || !text.startsWith(before)) break;
      texts.push(text.slice(before.length));
      before = text;
    }
    if (!full.startsWith(before)) return [];
    items.slice(0, texts.length).forEach((it, i) => this.#texts.set(keyOf(it), { signature: signature(it), first: i === 0, text: texts[i] as string }));
    return texts;
  }

  /**
   * The byte offset in `full` where each token of `raw` ends, mapped to the index after it; or
   * undefined when the tokens do not render back to `full` (a tokenizer that normalizes the
   * text). A leading space that SentencePiece tokenizers add is allowed and skipped. Pieces are
   * read in slices, letting the event loop run between them.
   */
  async #tokenEnds(raw: Int32Array, full: string): Promise<Map<number, number> | undefined> {
    const bytes = Buffer.from(full, "utf8");
    const lengths = new Int32Array(raw.length);
    const pieces: Buffer[] = [];
    for (let i = 0; i < raw.length; i++) {
      if (i > 0 && i % 2048 === 0) await yieldToLoop();
      const piece = this.model.tokenToPiece(raw[i] as number, { special: true });
      pieces.push(piece);
      lengths[i] = piece.length;
    }
    const rendered = Buffer.concat(pieces);
    const skip = rendered.length - bytes.length;
    if ((skip !== 0 && !(skip === 1 && rendered[0] === 0x20)) || !rendered.subarray(skip).equals(bytes)) return undefined;
    const ends = new Map<number, number>();
    let offset = -skip;
    for (let i = 0; i < raw.length; i++) {
      if (i > 0 && i % 16384 === 0) await yieldToLoop();
      offset += lengths[i] as number;
      if (offset > 0) ends.set(offset, i + 1);
    }
    return ends;
  }

  #tokenize(text: string): Promise<Int32Array> {
    return this.model.tokenizeRaw(text, { addSpecial: false, parseSpecial: true });
  }
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

