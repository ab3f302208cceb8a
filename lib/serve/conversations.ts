/**
 * Conversations kept for stateless clients (the HTTP server, the AI SDK provider): an id maps to
 * a session of a pool with a memory policy. The client may send only the new messages, or the
 * whole history as OpenAI clients do; a hash of each message sent and received tells the two
 * apart. Least recently used conversations past the cap, and those idle too long, are dropped
 * (saved first when a directory is given, and resumed from it when their id comes back).
 * @internal
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ChatCompletionEvent } from "../chat/completion.js";
import type { ChatMessage } from "../chat/template.js";
import { LlamemError, invalidArgument } from "../errors.js";
import type { GenerationResult } from "../generation.js";
import { DEFAULTS } from "../options.js";
import type { MemoryOptions } from "../session/memory.js";
import type { SessionPool } from "../session/pool/pool.js";
import type { ChatSession, PromptOptions } from "../session/session.js";

/** How conversations are kept. */
export interface ConversationOptions {
  /** The memory policy of their sessions. */
  memory?: MemoryOptions;
  /** Conversations kept (default 1024); the least recently used idle one is dropped past it. */
  max?: number;
  /** How long an idle conversation is kept, in ms (default 1 hour). */
  idleMs?: number;
  /** A directory to save dropped conversations in, and to resume them from. */
  dir?: string;
  /** A chat template (Jinja source or a built-in name) instead of the model's own. */
  template?: string;
}

interface Conversation {
  readonly session: ChatSession;
  /** A hash of each message the client sent or received, in order. */
  sent: string[];
  lastUsed: number;
  busy: boolean;
  /** Its file name in the directory: a hash of the id, never the id itself. */
  readonly file: string;
}

function hashMessage(m: Pick<ChatMessage, "role" | "content">): string {
  return createHash("sha256").update(JSON.stringify([m.role, m.content])).digest("hex").slice(0, 32);
}

/** The conversations of one pool. */
export class Conversations {
  readonly #pool: SessionPool;
  readonly #o: ConversationOptions;
  readonly #byId = new Map<string, Conversation>();
  /** Conversations being created or resumed, so two first requests of one id share one session. */
  readonly #opening = new Map<string, Promise<Conversation>>();
  /** Summaries and evictions of dropped conversations, so the totals never go down. */
  readonly retired = { summaries: 0, turnsEvicted: 0 };

  constructor(pool: SessionPool, options: ConversationOptions = {}) {
    this.#pool = pool;
    this.#o = options;
  }

  get size(): number {
    return this.#byId.size;
  }

  /**
   * One turn of conversation `id`: the messages the session has not seen go to it (earlier ones
   * into its history, the last, a user message, as the prompt), and its reply streams back.
   * ERR_INVALID_ARGUMENT for messages a conversation cannot take; ERR_BUSY while it is in a turn.
   */
  async *turn(id: string, messages: readonly ChatMessage[], options: PromptOptions, consumer = true): AsyncGenerator<ChatCompletionEvent, void, void> {
    if (typeof id !== "string" || id.length === 0 || id.length > 256) invalidArgument("a conversation id must be a string of 1 to 256 characters");
    const conv = await this.#get(id, messages);
    if (conv.busy) throw new LlamemError("ERR_BUSY", `conversation "${id}" is in a turn; wait for it to end`);
    const hashes = messages.map(hashMessage);
    const resent = conv.sent.length > 0 && conv.sent.length <= hashes.length && conv.sent.every((h, i) => hashes[i] === h);
    const fresh = resent ? messages.slice(conv.sent.length) : messages;
    const last = fresh.at(-1);
    if (!last || last.role !== "user") invalidArgument("a conversation's request must end with a new user message");
    const session = conv.session;
    const earlier: { role: string; content: string }[] = [];
    for (const m of fresh.slice(0, -1)) {
      if (m.role === "system") {
        if (m.content !== (session.system ?? m.content)) invalidArgument("a conversation's system prompt is set by its first request");
        continue;
      }
      if ((m.role !== "user" && m.role !== "assistant") || m.toolCalls !== undefined) invalidArgument("a conversation takes user and assistant messages only (no tool calls)");
      earlier.push({ role: m.role, content: m.content });
    }
    conv.busy = true;
    try {
      if (earlier.length > 0) session.setHistory([...session.history, ...earlier]);
      let text = "";
      let reasoning: string | undefined;
      // A response sent whole collects the turn's steps (see Sequence.collect).
      for await (const e of consumer ? session.events(last.content, options) : session.collectEvents(last.content, options)) {
        if (e.type === "text") text += e.text;
        else if (e.type === "reasoning") reasoning = (reasoning ?? "") + e.text;
        else continue;
        yield e;
      }
      const generation = session.lastGeneration as GenerationResult;
      // What the client has now seen, in order: a client that resends it all is understood next time.
      conv.sent = [...(resent ? hashes : [...conv.sent, ...hashes]), hashMessage({ role: "assistant", content: text })];
      const finishReason = generation.stopReason === "maxTokens" || generation.stopReason === "contextFull" ? "length" : "stop";
      yield { type: "done", completion: { text, reasoning, toolCalls: [], finishReason, generation } };
    } finally {
      conv.busy = false;
      conv.lastUsed = Date.now();
    }
  }

  /** Drops the conversations idle longer than the limit. */
  async dropIdle(now = Date.now()): Promise<void> {
    const idle = this.#o.idleMs ?? DEFAULTS.serve.conversationIdleMs;
    for (const conv of [...this.#byId.values()]) if (!conv.busy && now - conv.lastUsed > idle) await this.#drop(conv).catch(() => undefined);
  }

  /** Saves every conversation to the directory (if one was given) and forgets them all. */
  async close(): Promise<void> {
    const dir = this.#o.dir;
    if (dir) for (const conv of this.#byId.values()) await this.#save(conv, dir).catch(() => undefined);
    this.#byId.clear();
  }

  /** The conversation `id`: kept, resumed from the directory, or new (its system prompt from the messages). */
  async #get(id: string, messages: readonly ChatMessage[]): Promise<Conversation> {
    const known = this.#byId.get(id);
    if (known) return known;
    let opening = this.#opening.get(id);
    if (!opening) {
      opening = this.#open(id, messages).finally(() => this.#opening.delete(id));
      this.#opening.set(id, opening);
    }
    return opening;
  }

  async #open(id: string, messages: readonly ChatMessage[]): Promise<Conversation> {
    const file = createHash("sha256").update(id).digest("hex").slice(0, 40);
    const memory = { ...(this.#o.memory === undefined ? {} : { memory: this.#o.memory }), ...(this.#o.template === undefined ? {} : { template: this.#o.template }) };
    const dir = this.#o.dir;
    let conv: Conversation | undefined;
    if (dir !== undefined && existsSync(join(dir, `${file}.session`))) {
      const session = await this.#pool.loadSession(join(dir, `${file}.session`), memory);
      const sent = JSON.parse(await readFile(join(dir, `${file}.json`), "utf8").catch(() => "[]")) as unknown;
      conv = { session, sent: Array.isArray(sent) ? sent.filter((s): s is string => typeof s === "string") : [], lastUsed: Date.now(), busy: false, file };
    }
    if (!conv) {
      const first = messages[0];
      const system = first?.role === "system" ? first.content : undefined;
      const session = await this.#pool.createSession({ ...memory, ...(system === undefined ? {} : { system }) });
      conv = { session, sent: first && system !== undefined ? [hashMessage(first)] : [], lastUsed: Date.now(), busy: false, file };
    }
    this.#byId.set(id, conv);
    if (this.#byId.size > (this.#o.max ?? DEFAULTS.serve.maxConversations)) {
      const oldest = [...this.#byId.values()].filter((x) => !x.busy && x !== conv).sort((a, b) => a.lastUsed - b.lastUsed)[0];
      if (oldest) await this.#drop(oldest);
    }
    return conv;
  }

  async #drop(conv: Conversation): Promise<void> {
    for (const [k, v] of this.#byId) if (v === conv) this.#byId.delete(k);
    const s = await conv.session.stats();
    this.retired.summaries += s.summaries;
    this.retired.turnsEvicted += s.turnsEvicted;
    const dir = this.#o.dir;
    if (dir) await this.#save(conv, dir).catch(() => undefined);
    await conv.session.dispose();
  }

  /** Writes the session and its message hashes; each file is whole or absent. */
  async #save(conv: Conversation, dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
    await conv.session.save(join(dir, `${conv.file}.session`));
    const tmp = join(dir, `${conv.file}.json.tmp`);
    await writeFile(tmp, JSON.stringify(conv.sent));
    await rename(tmp, join(dir, `${conv.file}.json`));
  }
}
