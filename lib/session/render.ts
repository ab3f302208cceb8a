/**
 * Formats chat messages with the model's chat template and tokenizes them, keeping the token
 * span of every message so the session knows which KV cells hold which message.
 * @internal
 */
import type { ChatMessage, ChatTemplateOptions, Model } from "../model.js";
import { checkTemplateOptions, isJinja, renderChatInSlices, StagedChat, templateContextOf, withBos } from "../chat/template.js";
import { startSandbox } from "../chat/sandbox.js";
import type { LlamemError } from "../errors.js";

/**
 * A message to render. A render tracks it by its identity ({@link keyOf}): the item itself (a
 * history entry renders as it is), or `key` for an item built for one render (the system,
 * summary or recalled message; an entry rendered without its reasoning).
 */
export interface RenderItem extends Readonly<ChatMessage> {
  readonly key?: object;
}

/** The identity a render tracks `item` by, the same across renders. */
export function keyOf(item: RenderItem): object {
  return item.key ?? item;
}

/** How a session's messages are formatted: the template, and what it is told besides the messages. */
export type RenderFormat = Pick<ChatTemplateOptions, "template" | "tools" | "thinking" | "variables" | "now">;

/** The message a template sees of an item (without the session's key). */
export function messageOf(m: Readonly<ChatMessage>): ChatMessage {
  const out: ChatMessage = { role: m.role, content: m.content };
  if (m.reasoning !== undefined) out.reasoning = m.reasoning;
  if (m.toolCalls !== undefined) out.toolCalls = m.toolCalls;
  if (m.toolCallId !== undefined) out.toolCallId = m.toolCallId;
  if (m.name !== undefined) out.name = m.name;
  return out;
}

/**
 * The item of message `m`, with its reasoning only when `withReasoning`: `m` itself where it has
 * none to leave out (a session renders every message of its history on every render, and an
 * object per message made a 10,000-message history's first render copy them all in a scavenge),
 * else a copy keyed by `m`, without it.
 */
export function itemOf(m: Readonly<ChatMessage>, withReasoning: boolean): RenderItem {
  if (withReasoning || m.reasoning === undefined) return m;
  const it: ChatMessage & { key: object } = { key: m, role: m.role, content: m.content };
  if (m.toolCalls !== undefined) it.toolCalls = m.toolCalls;
  if (m.toolCallId !== undefined) it.toolCallId = m.toolCallId;
  if (m.name !== undefined) it.name = m.name;
  return it;
}

/**
 * A message's fields as a render last read them: every field the template reads. Strings (and
 * other primitives) are compared as they are; objects (tool calls, an odd name) by their JSON,
 * as they may change in place. Comparing fields spares a JSON.stringify of every message of a
 * long history on every render.
 */
interface Fields {
  role: unknown;
  content: unknown;
  reasoning: unknown;
  toolCalls: unknown;
  toolCallId: unknown;
  name: unknown;
}

const field = (v: unknown): unknown => (v !== null && typeof v === "object" ? JSON.stringify(v) : v);

function sameFields(s: Fields, m: Readonly<ChatMessage>): boolean {
  return (
    s.role === m.role &&
    s.content === m.content &&
    s.reasoning === field(m.reasoning) &&
    s.toolCalls === field(m.toolCalls) &&
    s.toolCallId === field(m.toolCallId) &&
    s.name === field(m.name)
  );
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

/**
 * What renders keep of a message, so a render calls the template and tokenizes for new messages
 * only: the text it adds to the rendered chat (with the fields and the place it was rendered
 * from), and the tokens of that text. One record per message, in one weak map, its tokens a
 * range of one buffer that holds the new pieces of the render that found them: a long history's
 * records are one small object each for the collector to copy, and the tokens none.
 */
interface Cached extends Fields {
  /** The text the message adds (undefined until one is known), and whether it was the first message. */
  text: string | undefined;
  textFirst: boolean;
  /** The tokens of the text `pieceText` (undefined until known), as the first message or not: `length` tokens of `buffer` from `start`. */
  pieceText: string | undefined;
  pieceFirst: boolean;
  buffer: Int32Array;
  start: number;
  length: number;
}

const NO_TOKENS = new Int32Array(0);

/**
 * Messages whose windows go to the template sandbox in one message: built and copied here in
 * about a millisecond, or (for a staged list, where only their indices cross) rendered there
 * well within the sandbox's time limit.
 */
const WINDOW_SLICE = 128;
const STAGED_WINDOW_SLICE = 256;

/**
 * Longer lists are formatted by sending their messages to the template sandbox in slices
 * (model.applyChatTemplate converts and copies the whole list in one go: tens of milliseconds
 * for 10,000 messages).
 */
const ONE_CALL = 512;

/** The longest stretch of a render's own loops before the event loop gets a turn. */
const SLICE_MS = 2;

/**
 * Lets the event loop go round (its timers and I/O run) before going on: one stretch of work on
 * a long history takes milliseconds. Two immediates: one set in an I/O callback (a worker's
 * answer, a tokenization done) runs in the same turn of the loop, before any timer; the second
 * runs in the next turn.
 */
export function yieldToLoop(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));
}

/** Cuts a long synchronous loop into stretches of about SLICE_MS, with the event loop run between them. */
class Slicer {
  #start = performance.now();

  /** Whether the current stretch has run its time (cheap enough to ask every few hundred iterations). */
  due(): boolean {
    return performance.now() - this.#start >= SLICE_MS;
  }

  async pause(): Promise<void> {
    await yieldToLoop();
    this.#start = performance.now();
  }
}

/**
 * The bytes of each token's text (special tokens rendered), read from the addon once per token
 * and model into one pool: reading every token of a long prompt allocated a Buffer each (a
 * 10,000-message prompt made the collector run for tens of milliseconds).
 */
class PieceTable {
  #pool = new Uint8Array(1 << 14);
  #used = 0;
  /** Start of each token's piece in the pool by id (-1: not read yet), and its length. */
  readonly #start: Int32Array;
  readonly #length: Int32Array;
  /** Ids outside the vocabulary (the addon decides what they read as): start and length. */
  readonly #other = new Map<number, readonly [number, number]>();

  constructor(readonly model: Model) {
    const n = model.info.vocabSize;
    this.#start = new Int32Array(n).fill(-1);
    this.#length = new Int32Array(n);
  }

  /** The pool; read it after the pieces needed are loaded (loading may move it). */
  get pool(): Uint8Array {
    return this.#pool;
  }

  /** Reads token `id`'s piece into the pool if it is not there; returns its length. */
  load(id: number): number {
    const inVocab = id >= 0 && id < this.#start.length;
    if (inVocab ? this.#start[id] !== -1 : this.#other.has(id)) return this.lengthOf(id);
    const piece = this.model.tokenToPiece(id, { special: true });
    if (this.#used + piece.length > this.#pool.length) {
      const grown = new Uint8Array(Math.max(this.#pool.length * 2, this.#used + piece.length));
      grown.set(this.#pool.subarray(0, this.#used));
      this.#pool = grown;
    }
    this.#pool.set(piece, this.#used);
    if (inVocab) {
      this.#start[id] = this.#used;
      this.#length[id] = piece.length;
    } else this.#other.set(id, [this.#used, piece.length]);
    this.#used += piece.length;
    return piece.length;
  }

  /** Where a loaded token's piece starts in the pool. */
  startOf(id: number): number {
    return id >= 0 && id < this.#start.length ? (this.#start[id] as number) : ((this.#other.get(id) as readonly [number, number])[0]);
  }

  lengthOf(id: number): number {
    return id >= 0 && id < this.#length.length ? (this.#length[id] as number) : ((this.#other.get(id) as readonly [number, number])[1]);
  }
}

/** Each model's pieces, shared by its sessions (a vocabulary's pieces never change). */
const pieceTables = new WeakMap<Model, PieceTable>();

function pieceTable(model: Model): PieceTable {
  let t = pieceTables.get(model);
  if (!t) {
    t = new PieceTable(model);
    pieceTables.set(model, t);
  }
  return t;
}

/**
 * Where the tokens of a prompt end, walked forward: for byte offsets that only grow, the index
 * after the last token whose text ends at the offset (0 where none does), offsets counted in the
 * prompt's text (after `skip` bytes the tokens render before it). The tokens' lengths come from
 * the piece table, loaded by the check that they render back to the text.
 */
class TokenWalk {
  /** Tokens walked past, and the offset where the last of them ends. */
  #next = 0;
  #end: number;

  constructor(
    readonly table: PieceTable,
    readonly raw: Int32Array,
    skip: number,
  ) {
    this.#end = -skip;
  }

  /**
   * The index after the last token ending at `offset` (0 for none; none ends at 0 or before),
   * or -1 when `steps` tokens were walked without getting there (call again).
   */
  endAt(offset: number, steps: number): number {
    if (offset <= 0) return 0;
    const { raw, table } = this;
    for (let n = 0; this.#next < raw.length; n++) {
      if (n === steps) return -1;
      const end = this.#end + table.lengthOf(raw[this.#next] as number);
      if (end > offset) break;
      this.#end = end;
      this.#next++;
    }
    return this.#end === offset ? this.#next : 0;
  }
}

/**
 * The UTF-8 bytes of a string, one at a time, as Buffer.from encodes it (a lone surrogate as
 * U+FFFD); -1 past the end.
 */
class Utf8Reader {
  #at = 0;
  /** Bytes of the current character still to give, most significant first. */
  #pending = 0;
  #left = 0;

  constructor(readonly text: string) {}

  next(): number {
    if (this.#left > 0) {
      this.#left--;
      return 0x80 | ((this.#pending >> (6 * this.#left)) & 0x3f);
    }
    const text = this.text;
    if (this.#at >= text.length) return -1;
    let c = text.charCodeAt(this.#at++);
    if (c < 0x80) return c;
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = c <= 0xdbff && this.#at < text.length ? text.charCodeAt(this.#at) : 0;
      if (d >= 0xdc00 && d <= 0xdfff) {
        this.#at++;
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
      } else c = 0xfffd;
    }
    this.#pending = c;
    if (c < 0x800) {
      this.#left = 1;
      return 0xc0 | (c >> 6);
    }
    if (c < 0x10000) {
      this.#left = 2;
      return 0xe0 | (c >> 12);
    }
    this.#left = 3;
    return 0xf0 | (c >> 18);
  }
}

/**
 * Storage for the tokens of the pieces' records: buffers of at least ARENA_CHUNK tokens, filled
 * in order, so a render allocates a new one rarely (each new buffer is external memory, and
 * while the collector marks because of external memory, as after a context is created, each
 * makes the JS thread mark for milliseconds). A buffer lives while a record uses it.
 */
class TokenArena {
  #buffer: Int32Array = NO_TOKENS;
  #used = 0;

  /** Room for `n` tokens: a buffer and where they go in it. */
  take(n: number): [Int32Array, number] {
    if (this.#used + n > this.#buffer.length) {
      this.#buffer = new Int32Array(Math.max(n, ARENA_CHUNK));
      this.#used = 0;
    }
    const at = this.#used;
    this.#used += n;
    return [this.#buffer, at];
  }
}

/** Tokens per arena buffer (256 KiB). */
const ARENA_CHUNK = 65_536;

export class Renderer {
  /** What renders keep of each message, by its key. */
  readonly #cache = new WeakMap<object, Cached>();
  /** Where the records' tokens are kept. */
  readonly #arena = new TokenArena();

  constructor(
    readonly model: Model,
    readonly format: RenderFormat,
  ) {}

  /**
   * Starts the template sandbox's thread when the format is a Jinja template, so that the first
   * render does not wait for it: that wait was the one gap over 10 ms in the first prompt after a
   * 10,000-message history.
   */
  async warm(): Promise<void> {
    if (this.#jinja(false)) await startSandbox();
  }

  /** Formats `messages` with the session's template. */
  apply(messages: ChatMessage[], addAssistant: boolean): Promise<string> {
    return this.model.applyChatTemplate(messages, { ...this.format, addAssistant });
  }

  /** The format's template source when it is Jinja (checking the options as applyChatTemplate does), else undefined. */
  #jinja(addAssistant: boolean): { source: string; options: ChatTemplateOptions } | undefined {
    const options: ChatTemplateOptions = { ...this.format, addAssistant };
    const source = options.template ?? this.model.info.chatTemplate;
    if (source === undefined || !isJinja(source)) return undefined;
    checkTemplateOptions(options, true);
    return { source, options };
  }

  /**
   * What {@link apply} gives for the messages of `items`; a long list for a Jinja template
   * crosses to the sandbox in slices, the event loop running between them.
   */
  async #format(items: readonly RenderItem[], addAssistant: boolean): Promise<string> {
    const jinja = items.length > ONE_CALL ? this.#jinja(addAssistant) : undefined;
    // The template reads only a message's fields (the items' keys are left behind).
    if (jinja) return renderChatInSlices(jinja.source, items, templateContextOf(this.model), jinja.options);
    return this.apply(items.map(messageOf), addAssistant);
  }

  /** Formats `items` (with the assistant header when `addAssistant`) and tokenizes them. */
  async render(items: readonly RenderItem[], addAssistant = true): Promise<Rendered> {
    // A long list for a Jinja template is staged on the sandbox's thread once, for the whole
    // prompt and the windows of its new messages.
    const jinja = items.length > ONE_CALL ? this.#jinja(addAssistant) : undefined;
    // The caller has just built the long list: staging starts on a later turn of the event loop.
    if (jinja) await yieldToLoop();
    const chat = jinja ? await StagedChat.create(jinja.source, items, templateContextOf(this.model), this.format) : undefined;
    let rendered: Rendered;
    try {
      rendered = await this.#render(items, addAssistant, chat);
    } finally {
      chat?.drop();
    }
    // And the caller plans over the long list next: that starts on a later turn too.
    if (jinja) await yieldToLoop();
    return rendered;
  }

  async #render(items: readonly RenderItem[], addAssistant: boolean, chat: StagedChat | undefined): Promise<Rendered> {
    const format = (n: number, assistant: boolean) =>
      chat && n === items.length ? chat.render(assistant) : this.#format(n === items.length ? items : items.slice(0, n), assistant);
    const full = await format(items.length, addAssistant);
    const raw = await this.#tokenize(full);
    const tokens = withBos(this.model, raw);
    const lead = tokens.length - raw.length;

    const slicer = new Slicer();
    const texts = await this.#pieceTexts(items, full, format, slicer, chat);
    const spans: (Span | undefined)[] = new Array<Span | undefined>(items.length).fill(undefined);
    // Messages whose tokens are new here (their index, and their tokens' place in `raw`): recorded
    // after the loop, in one buffer.
    const fresh: number[] = [];
    const freshAt: number[] = [];
    let pos = 0;
    let at = 0;
    let byteAt = 0;
    // Where the tokens end, walked alongside the texts (null until a new piece needs it; undefined
    // when the tokens do not render back to the text).
    let walk: TokenWalk | undefined | null = null;
    for (let i = 0; i < texts.length; i++) {
      if ((i & 63) === 0 && slicer.due()) await slicer.pause();
      const item = items[i] as RenderItem;
      const text = texts[i] as string;
      const first = i === 0;
      at += text.length;
      byteAt += Buffer.byteLength(text);
      const c = this.#cache.get(keyOf(item));
      let length: number;
      if (c && c.pieceText === text && c.pieceFirst === first && matchesAt(raw, pos, c.buffer, c.start, c.length)) length = c.length;
      else {
        // Where the prompt's tokens render back to its text, a piece's tokens are those up to the
        // token that ends where the piece's text ends (none ends there: a token merges across).
        if (walk === null) {
          const skip = await this.#rendersBack(raw, full, slicer);
          walk = skip === undefined ? undefined : new TokenWalk(pieceTable(this.model), raw, skip);
        }
        if (walk) {
          let end: number;
          while ((end = walk.endAt(byteAt, 4096)) < 0) if (slicer.due()) await slicer.pause();
          if (end === 0) break;
          length = Math.max(0, end - pos);
        } else {
          // Otherwise tokenizing the whole prefix gives the piece's tokens in context (slower).
          const prefix = await this.#tokenize(full.slice(0, at));
          if (!startsWith(prefix, raw, pos)) break;
          length = prefix.length - pos;
          // The piece's tokens are the prefix's from `pos`: in `raw` there too, or no span.
          if (!matchesAt(raw, pos, prefix, pos, length)) break;
        }
        fresh.push(i);
        freshAt.push(pos, length);
      }
      spans[i] = { start: lead + pos, end: lead + pos + length };
      pos += length;
    }
    await this.#keepPieces(items, texts, raw, fresh, freshAt, slicer);
    return { items, tokens, spans };
  }

  /**
   * Records the tokens of the `fresh` items' pieces (at `freshAt`: start and length in `raw`,
   * for each), copied into the renderer's token arena. Pieces that follow each other in `raw`
   * (all of them, the first time a history is seen) are copied in one go.
   */
  async #keepPieces(items: readonly RenderItem[], texts: readonly string[], raw: Int32Array, fresh: readonly number[], freshAt: readonly number[], slicer: Slicer): Promise<void> {
    for (let k = 0; k < fresh.length; ) {
      // The run of pieces from k that follow each other in `raw`.
      const from = freshAt[2 * k] as number;
      let to = from;
      let end = k;
      while (end < fresh.length && freshAt[2 * end] === to) to += freshAt[2 * end++ + 1] as number;
      const [buffer, at] = this.#arena.take(to - from);
      if (to > from) buffer.set(raw.subarray(from, to), at);
      for (; k < end; k++) {
        if ((k & 255) === 0 && slicer.due()) await slicer.pause();
        const i = fresh[k] as number;
        const c = this.#record(items[i] as RenderItem);
        c.pieceText = texts[i] as string;
        c.pieceFirst = i === 0;
        c.buffer = buffer;
        c.start = at + ((freshAt[2 * k] as number) - from);
        c.length = freshAt[2 * k + 1] as number;
      }
    }
  }

  /**
   * The text each message adds to the chat: format(0..i+1) less format(0..i). Messages seen
   * before keep their text, so a turn calls the template for the new messages only (rendering
   * every prefix of a long history would be quadratic). The texts must add up to the start of
   * `full`; where they do not (a template that writes a message differently depending on the
   * others), every prefix is rendered again, and the list stops at the first message whose text
   * is not its own.
   */
  async #pieceTexts(
    items: readonly RenderItem[],
    full: string,
    format: (n: number, assistant: boolean) => Promise<string>,
    slicer: Slicer,
    chat: StagedChat | undefined,
  ): Promise<string[]> {
    const known: (string | undefined)[] = new Array<string | undefined>(items.length).fill(undefined);
    const unknown: number[] = [];
    for (let i = 0; i < items.length; i++) {
      if ((i & 255) === 0 && slicer.due()) await slicer.pause();
      const it = items[i] as RenderItem;
      const c = this.#cache.get(keyOf(it));
      if (c && c.text !== undefined && c.textFirst === (i === 0) && sameFields(c, it)) known[i] = c.text;
      else unknown.push(i);
    }
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
    // one alone. Two small template renders, whatever the history's length, sent to the sandbox
    // in slices (letting the event loop run between them; the next slice is sent before the
    // last one's answer comes, so the sandbox's thread is kept busy); the check against the
    // whole prompt below catches a template whose text for a message depends on more. A
    // template may refuse a window (one that must start with a user message, say): that
    // message's text is then found from the whole prefixes.
    const slice = chat ? STAGED_WINDOW_SLICE : WINDOW_SLICE;
    const send = (at: number): Promise<(string | LlamemError | undefined)[]> => {
      const indices = unknown.slice(at, at + slice);
      const sent = chat ? chat.pieces(indices) : this.#pieces(items, indices);
      // A slice sent ahead and never awaited (the texts were already inconsistent) must not fail unhandled.
      sent.catch(() => undefined);
      return sent;
    };
    let consistent = true;
    let next = unknown.length > 0 ? send(0) : undefined;
    for (let at = 0; at < unknown.length && consistent; at += slice) {
      const current = next as Promise<(string | LlamemError | undefined)[]>;
      next = undefined;
      if (at + slice < unknown.length) {
        await yieldToLoop();
        next = send(at + slice);
      }
      const texts = await current;
      for (let k = at, w = 0; k < Math.min(at + slice, unknown.length); k++, w++) {
        const t = texts[w];
        if (typeof t === "string") known[unknown[k] as number] = t;
        else {
          consistent = false;
          break;
        }
      }
    }
    let at = 0;
    for (let i = 0; i < known.length && consistent; i++) {
      if ((i & 1023) === 0 && slicer.due()) await slicer.pause();
      const t = known[i];
      if (t === undefined || !full.startsWith(t, at)) consistent = false;
      else at += t.length;
    }
    if (!consistent) {
      // Wait out a slice sent ahead, so the renders below do not queue behind it.
      await next?.catch(() => undefined);
      return this.#allPrefixes(items, full, prefix);
    }
    for (let i = 0; i < items.length; i++) {
      if ((i & 255) === 0 && slicer.due()) await slicer.pause();
      this.#setText(items[i] as RenderItem, i === 0, known[i] as string);
    }
    return known as string[];
  }

  /**
   * For each index i, the text items[i] adds to items[i-1] rendered alone (the window of both
   * less the window of items[i-1]; for i = 0, the window of items[0]), from one batch of windows
   * sent to the template sandbox; undefined where a window fails or the longer window does not
   * begin with the shorter.
   */
  async #pieces(items: readonly RenderItem[], indices: readonly number[]): Promise<(string | undefined)[]> {
    const windows: ChatMessage[][] = [];
    for (const i of indices) {
      const item = items[i] as RenderItem;
      if (i > 0) windows.push([messageOf(items[i - 1] as RenderItem)], [messageOf(items[i - 1] as RenderItem), messageOf(item)]);
      else windows.push([messageOf(item)]);
    }
    const texts = await this.model.applyChatTemplates(windows, { ...this.format, addAssistant: false });
    let w = 0;
    return indices.map((i) => {
      const before = i > 0 ? texts[w++] : "";
      const after = texts[w++];
      return typeof before === "string" && typeof after === "string" && after.startsWith(before) ? after.slice(before.length) : undefined;
    });
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
    for (let i = 0; i < texts.length; i++) this.#setText(items[i] as RenderItem, i === 0, texts[i] as string);
    return texts;
  }

  /** The record of `item`'s message, a new one (knowing nothing yet) if it has none. */
  #record(item: RenderItem): Cached {
    const key = keyOf(item);
    let c = this.#cache.get(key);
    if (!c) {
      c = { role: undefined, content: undefined, reasoning: undefined, toolCalls: undefined, toolCallId: undefined, name: undefined, text: undefined, textFirst: false, pieceText: undefined, pieceFirst: false, buffer: NO_TOKENS, start: 0, length: 0 };
      this.#cache.set(key, c);
    }
    return c;
  }

  /** Records the text `item`'s message adds (as the first message or not), and the fields it was rendered from. */
  #setText(item: RenderItem, first: boolean, text: string): void {
    const c = this.#record(item);
    c.role = item.role;
    c.content = item.content;
    c.reasoning = field(item.reasoning);
    c.toolCalls = field(item.toolCalls);
    c.toolCallId = field(item.toolCallId);
    c.name = field(item.name);
    c.text = text;
    c.textFirst = first;
  }

  /**
   * Whether the tokens of `raw` render back to `full` (not so for a tokenizer that normalizes the
   * text): the bytes they render before `full`'s, 0 or 1 (a leading space that SentencePiece
   * tokenizers add), or undefined. The pieces come from the model's piece table and are compared
   * with `full`'s UTF-8 as it is encoded, in slices that let the event loop run between them: no
   * buffer per token, nor of the whole text (while the collector marks because of external
   * memory, as after a context is created, each new buffer makes the JS thread mark for
   * milliseconds).
   */
  async #rendersBack(raw: Int32Array, full: string, slicer: Slicer): Promise<number | undefined> {
    const table = pieceTable(this.model);
    let rendered = 0;
    for (let i = 0; i < raw.length; i++) {
      if ((i & 1023) === 0 && slicer.due()) await slicer.pause();
      rendered += table.load(raw[i] as number);
    }
    const skip = rendered - Buffer.byteLength(full, "utf8");
    if (skip !== 0 && skip !== 1) return undefined;
    const pool = table.pool;
    const text = new Utf8Reader(full);
    let r = 0;
    for (let i = 0; i < raw.length; i++) {
      if ((i & 1023) === 0 && slicer.due()) await slicer.pause();
      const id = raw[i] as number;
      const start = table.startOf(id);
      const length = table.lengthOf(id);
      for (let j = 0; j < length; j++, r++) {
        const b = pool[start + j] as number;
        // The skipped byte must be that space; every other is the text's next.
        if (r < skip ? b !== 0x20 : b !== text.next()) return undefined;
      }
    }
    return skip;
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

/** Whether the `length` tokens of `part` from `from` occur in `whole` at `pos`. */
function matchesAt(whole: Int32Array, pos: number, part: Int32Array, from: number, length: number): boolean {
  if (pos + length > whole.length) return false;
  for (let i = 0; i < length; i++) if (whole[pos + i] !== part[from + i]) return false;
  return true;
}

/** Length of the common prefix of two token lists, at most `max`. */
export function commonPrefix(a: ArrayLike<number>, b: ArrayLike<number>, max = Infinity): number {
  const n = Math.min(a.length, b.length, max);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
