/**
 * An OpenAI-compatible HTTP server over a pool: `llamem serve`, or {@link startServer} in code.
 *
 * Requests without a conversation id are stateless: each takes a sequence of the pool for its
 * turn, the one whose cached tokens share the longest prefix with its prompt, and leaves its
 * cells there as a prompt cache. A conversation id (the `X-Conversation-Id` header or the body's
 * `user` field) maps to a session of the pool with a memory policy: the client sends only what
 * is new, the session keeps the history inside its budget, and idle sessions spill.
 *
 * Built on node:http rather than a framework: six routes, and what matters is direct control of
 * the response stream (backpressure, a client gone mid-stream) and of the body's size.
 */
import { timingSafeEqual } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { prepareChat, runChat, type ChatCompletion, type ChatCompletionEvent } from "../chat/completion.js";
import type { Context } from "../context.js";
import { LlamemError, invalidArgument } from "../errors.js";
import type { GenerationResult } from "../generation.js";
import { DEFAULTS } from "../options.js";
import { createPool, type PoolOptions, type SessionPool } from "../session/pool/pool.js";
import { Conversations, type ConversationOptions } from "./conversations.js";
import { renderMetrics, ServerCounters } from "./metrics.js";
import {
  HttpError,
  badRequest,
  chatLogprobs,
  chatRequest,
  completionLogprobs,
  completionRequest,
  embeddingRequest,
  finishReason,
  responseId,
  toolCallOf,
  usageOf,
  type ChatRequest,
  type GenerationRequest,
} from "./openai.js";

/** Options of {@link startServer}. */
export interface ServerOptions {
  /** Address to listen on (default 127.0.0.1). Any other needs `apiKey`. */
  host?: string;
  /** Port (default 8080; 0 picks a free one). */
  port?: number;
  /** Requests must carry `Authorization: Bearer <apiKey>` (all routes but /health). */
  apiKey?: string;
  /** Origin allowed by CORS ("*" for any); default none (no CORS headers). */
  cors?: string;
  /** The model's name in requests and /v1/models (default: "llamem"). */
  modelId?: string;
  /** Requests admitted beyond the context's sequences, waiting; more get 429 (default 64). */
  maxQueue?: number;
  /** Largest request body in bytes (default 4 MiB); larger is 413. */
  maxBodyBytes?: number;
  /** A chat template (Jinja source or a built-in name) instead of the model's own. */
  template?: string;
  /** An embedding context for /v1/embeddings (without it the route answers 404). */
  embeddings?: Context;
  /** Conversations: the memory policy of their sessions, how many are kept, how long an idle one lives, and a directory to save them in at shutdown and resume them from. */
  conversations?: ConversationOptions;
  /** Where idle conversations' caches spill (see {@link createPool}). */
  spill?: PoolOptions["spill"];
  /** How long {@link LlamemServer.close} waits for requests in flight before aborting them (default 10 s). */
  shutdownTimeoutMs?: number;
}

/** The routes, as /metrics counts them. */
type Endpoint = "chat" | "completions" | "embeddings" | "models" | "health" | "metrics" | "other";

function sameKey(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

/**
 * Starts an OpenAI-compatible server on `context` (create it with `sequences: N` for N requests
 * at once). The server creates a pool on the context and owns it; the context and its model
 * stay the caller's. Resolves once it listens.
 */
export async function startServer(context: Context, options: ServerOptions = {}): Promise<LlamemServer> {
  const server = new LlamemServer(context, options);
  await server.listen();
  return server;
}

/** A running server. Create it with {@link startServer}. */
export class LlamemServer {
  readonly context: Context;
  readonly pool: SessionPool;
  readonly #o: Required<Pick<ServerOptions, "host" | "port" | "modelId" | "maxQueue" | "maxBodyBytes" | "shutdownTimeoutMs">> & ServerOptions;
  readonly #http: Server;
  readonly #counters = new ServerCounters();
  readonly #conversations: Conversations;
  readonly #inFlight = new Set<AbortController>();
  #closing: Promise<void> | undefined;
  #sweep: NodeJS.Timeout | undefined;

  /** @internal Use {@link startServer}. */
  constructor(context: Context, options: ServerOptions) {
    if (options === null || typeof options !== "object") invalidArgument("startServer(context, options): options must be an object");
    const d = DEFAULTS.serve;
    const host = options.host ?? d.host;
    if (typeof host !== "string" || host.length === 0) invalidArgument("host must be an address");
    if (options.apiKey !== undefined && (typeof options.apiKey !== "string" || options.apiKey.length < 8)) invalidArgument("apiKey must be a string of at least 8 characters");
    if (!LOOPBACK.has(host) && options.apiKey === undefined) invalidArgument(`listening on ${host}, beyond this machine, needs an apiKey (clients send it as a Bearer token)`);
    const port = options.port ?? d.port;
    if (!Number.isInteger(port) || port < 0 || port > 65535) invalidArgument("port must be an integer in [0, 65535]");
    const maxQueue = options.maxQueue ?? d.maxQueue;
    if (!Number.isInteger(maxQueue) || maxQueue < 0) invalidArgument("maxQueue must be a non-negative integer");
    const maxBodyBytes = options.maxBodyBytes ?? d.maxBodyBytes;
    if (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 1) invalidArgument("maxBodyBytes must be a positive integer");
    const shutdownTimeoutMs = options.shutdownTimeoutMs ?? d.shutdownTimeoutMs;
    if (!Number.isFinite(shutdownTimeoutMs) || shutdownTimeoutMs < 0) invalidArgument("shutdownTimeoutMs must be a non-negative number");
    if (options.embeddings !== undefined && !options.embeddings.info.embeddings) invalidArgument("embeddings must be a context created with embeddings: true");
    if (context.info.embeddings) invalidArgument("the server's context must generate (embeddings: false); pass an embedding context as options.embeddings");
    this.context = context;
    this.#o = { ...options, host, port, maxQueue, maxBodyBytes, shutdownTimeoutMs, modelId: options.modelId ?? "llamem" };
    this.pool = createPool(context, { ...(options.spill === undefined ? {} : { spill: options.spill }) });
    this.#conversations = new Conversations(this.pool, { ...options.conversations, ...(options.template === undefined ? {} : { template: options.template }) });
    this.#http = createServer((req, res) => void this.#handle(req, res));
  }

  /** @internal */
  async listen(): Promise<void> {
    this.#http.listen(this.#o.port, this.#o.host);
    await once(this.#http, "listening");
    const idle = this.#o.conversations?.idleMs ?? DEFAULTS.serve.conversationIdleMs;
    this.#sweep = setInterval(() => void this.#conversations.dropIdle(), Math.min(idle, 60_000));
    this.#sweep.unref();
  }

  /** The address it listens on, e.g. http://127.0.0.1:8080. */
  get url(): string {
    const a = this.#http.address() as AddressInfo;
    const host = a.family === "IPv6" ? `[${a.address}]` : a.address;
    return `http://${host}:${a.port}`;
  }

  /** The text of GET /metrics. */
  async metrics(): Promise<string> {
    const pool = await this.pool.stats();
    return renderMetrics({
      context: this.context,
      embeddings: this.#o.embeddings,
      pool: { ...pool, summaries: pool.summaries + this.#conversations.retired.summaries, turnsEvicted: pool.turnsEvicted + this.#conversations.retired.turnsEvicted },
      counters: this.#counters,
      inFlight: this.#inFlight.size,
      queued: Math.max(0, this.#inFlight.size - this.context.info.sequences),
      conversations: this.#conversations.size,
    });
  }

  /**
   * Stops listening, lets requests in flight finish (aborting them after the shutdown timeout),
   * saves conversations to the conversations directory if one was given, and disposes the pool.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(): Promise<void> {
    clearInterval(this.#sweep);
    const closed = new Promise<void>((resolve) => this.#http.close(() => resolve()));
    this.#http.closeIdleConnections();
    const deadline = Date.now() + this.#o.shutdownTimeoutMs;
    while (this.#inFlight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const abort of this.#inFlight) abort.abort();
    while (this.#inFlight.size > 0) await new Promise((r) => setTimeout(r, 10));
    this.#http.closeAllConnections();
    await closed;
    await this.#conversations.close();
    await this.pool.dispose();
  }

  // ---- requests ---------------------------------------------------------------------------------

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const path = url.pathname.replace(/\/+$/, "") || "/";
    const endpoint: Endpoint =
      path === "/v1/chat/completions" ? "chat"
      : path === "/v1/completions" ? "completions"
      : path === "/v1/embeddings" ? "embeddings"
      : path === "/v1/models" ? "models"
      : path === "/health" ? "health"
      : path === "/metrics" ? "metrics"
      : "other";
    res.on("finish", () => this.#counters.request(endpoint, res.statusCode));
    this.#corsHeaders(res);
    try {
      if (req.method === "OPTIONS" && this.#o.cors !== undefined) {
        res.writeHead(204).end();
        return;
      }
      if (endpoint === "health") {
        if (req.method !== "GET") throw new HttpError(405, "use GET", "invalid_request_error");
        this.#json(res, 200, { status: this.#closing ? "shutting_down" : "ok" });
        return;
      }
      this.#authorize(req);
      if (endpoint === "models") {
        if (req.method !== "GET") throw new HttpError(405, "use GET", "invalid_request_error");
        this.#json(res, 200, { object: "list", data: [{ id: this.#o.modelId, object: "model", created: 0, owned_by: "llamem" }] });
        return;
      }
      if (endpoint === "metrics") {
        if (req.method !== "GET") throw new HttpError(405, "use GET", "invalid_request_error");
        const text = await this.metrics();
        res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(text);
        return;
      }
      if (endpoint === "other") throw new HttpError(404, `no route ${req.method} ${path}`, "invalid_request_error", null, "not_found");
      if (req.method !== "POST") throw new HttpError(405, `use POST for ${path}`, "invalid_request_error");
      if (this.#closing) throw new HttpError(503, "the server is shutting down", "server_error");
      const body = await this.#readBody(req);
      if (endpoint === "embeddings") await this.#embeddings(body, res);
      else await this.#admitted(res, (signal) => (endpoint === "chat" ? this.#chat(body, res, signal) : this.#completions(body, res, signal)));
    } catch (err) {
      this.#fail(res, err);
    }
  }

  #corsHeaders(res: ServerResponse): void {
    const origin = this.#o.cors;
    if (origin === undefined) return;
    res.setHeader("access-control-allow-origin", origin);
    res.setHeader("access-control-allow-methods", "GET, POST, OPTIONS");
    res.setHeader("access-control-allow-headers", "authorization, content-type, x-conversation-id");
  }

  #authorize(req: IncomingMessage): void {
    const key = this.#o.apiKey;
    if (key === undefined) return;
    const auth = req.headers.authorization ?? "";
    const m = /^Bearer\s+(.+)$/i.exec(auth);
    if (!m || !sameKey((m[1] as string).trim(), key)) throw new HttpError(401, "a valid API key is required (Authorization: Bearer <key>)", "invalid_request_error", null, "invalid_api_key");
  }

  /** Reads and parses the JSON body, refusing more than maxBodyBytes (413) and bad JSON (400). */
  async #readBody(req: IncomingMessage): Promise<unknown> {
    const max = this.#o.maxBodyBytes;
    const declared = Number(req.headers["content-length"] ?? NaN);
    const tooLarge = () => new HttpError(413, `the body is larger than ${max} bytes`, "invalid_request_error", null, "request_too_large", { connection: "close" });
    if (Number.isFinite(declared) && declared > max) throw tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > max) throw tooLarge();
      chunks.push(chunk as Buffer);
    }
    try {
      return JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch (err) {
      throw new HttpError(400, `the body is not valid JSON: ${(err as Error).message}`, "invalid_request_error", null, "invalid_json");
    }
  }

  /** Admits a generating request (429 past the queue), aborting it if the client goes away. */
  async #admitted(res: ServerResponse, run: (signal: AbortSignal) => Promise<void>): Promise<void> {
    if (this.#inFlight.size >= this.context.info.sequences + this.#o.maxQueue) {
      this.#counters.rejected++;
      const retry = String(DEFAULTS.serve.retryAfterSeconds);
      throw new HttpError(429, "the server is at capacity; retry later", "rate_limit_error", null, "queue_full", { "retry-after": retry });
    }
    const abort = new AbortController();
    this.#inFlight.add(abort);
    // A client gone before the end frees its sequence at once.
    const gone = () => {
      if (!res.writableFinished) abort.abort();
    };
    res.on("close", gone);
    try {
      await run(abort.signal);
    } finally {
      res.off("close", gone);
      this.#inFlight.delete(abort);
    }
  }

  #checkModel(r: { model: string }): void {
    if (r.model !== this.#o.modelId) throw new HttpError(404, `the model "${r.model}" does not exist; this server serves "${this.#o.modelId}"`, "invalid_request_error", "model", "model_not_found");
  }

  #limits() {
    return { sequenceContextSize: this.context.info.sequenceContextSize };
  }

  #generateOptions(r: GenerationRequest, signal: AbortSignal) {
    return {
      ...r.sampling,
      ...(r.maxTokens === undefined ? {} : { maxTokens: r.maxTokens }),
      ...(r.stop === undefined ? {} : { stop: r.stop }),
      ...(r.logprobs === undefined ? {} : { logprobs: r.logprobs }),
      signal,
    };
  }

  async #chat(body: unknown, res: ServerResponse, signal: AbortSignal): Promise<void> {
    const r = chatRequest(body, this.#limits());
    this.#checkModel(r);
    if (r.logprobs !== undefined && r.stream) badRequest("logprobs", "logprobs are returned without stream only");
    const id = responseId("chatcmpl");
    const created = Math.floor(Date.now() / 1000);
    const conversation = conversationId(res.req as IncomingMessage, body);
    const events = conversation === undefined ? this.#statelessChat(r, signal) : this.#conversationChat(conversation, r, signal);
    const chunk = (delta: Record<string, unknown>, finish: string | null, extra: Record<string, unknown> = {}) => ({
      id,
      object: "chat.completion.chunk",
      created,
      model: this.#o.modelId,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      ...extra,
    });
    if (!r.stream) {
      let done: ChatCompletion | undefined;
      for await (const e of events) if (e.type === "done") done = e.completion;
      const c = done as ChatCompletion;
      this.#record(c.generation);
      const message: Record<string, unknown> = { role: "assistant", content: c.toolCalls.length > 0 && c.text.length === 0 ? null : c.text };
      if (c.reasoning !== undefined) message["reasoning_content"] = c.reasoning;
      if (c.toolCalls.length > 0) message["tool_calls"] = c.toolCalls.map(toolCallOf);
      const pieceOf = (t: number) => this.context.model.tokenToPiece(t, { special: true });
      this.#json(res, 200, {
        id,
        object: "chat.completion",
        created,
        model: this.#o.modelId,
        choices: [{ index: 0, message, logprobs: chatLogprobs(c.generation.logprobs, pieceOf), finish_reason: finishReason(c.finishReason) }],
        usage: usageOf(c.generation),
      });
      return;
    }
    const sse = await this.#openStream(res, events);
    if (!sse) return;
    await sse.send(chunk({ role: "assistant", content: "" }, null));
    for await (const e of sse.events) {
      if (e.type === "text") await sse.send(chunk({ content: e.text }, null));
      else if (e.type === "reasoning") await sse.send(chunk({ reasoning_content: e.text }, null));
      else {
        const c = e.completion;
        this.#record(c.generation);
        if (c.toolCalls.length > 0) await sse.send(chunk({ tool_calls: c.toolCalls.map((t, index) => ({ index, ...toolCallOf(t) })) }, null));
        await sse.send(chunk({}, finishReason(c.finishReason)));
        if (r.includeUsage) await sse.send({ id, object: "chat.completion.chunk", created, model: this.#o.modelId, choices: [], usage: usageOf(c.generation) });
      }
    }
    await sse.end();
  }

  /** A stateless chat turn: the sequence caching most of the prompt, for this turn only. */
  async *#statelessChat(r: ChatRequest, signal: AbortSignal): AsyncGenerator<ChatCompletionEvent, void, void> {
    const template = this.#o.template === undefined ? {} : { template: this.#o.template };
    const prepared = await prepareChat(this.context.model, r.messages, { ...r.options, ...template, ...this.#generateOptions(r, signal) });
    if (prepared.tokens.length >= this.context.info.sequenceContextSize) {
      throw new HttpError(400, `the prompt has ${prepared.tokens.length} tokens; a sequence of this server holds ${this.context.info.sequenceContextSize}`, "invalid_request_error", "messages", "context_length_exceeded");
    }
    const lease = await this.pool.lease(prepared.tokens, signal);
    try {
      yield* runChat(lease.sequence, prepared, r.stream);
    } finally {
      lease.release();
    }
  }

  /** A conversation's turn (tools are the client's to run, so a conversation has none). */
  #conversationChat(id: string, r: ChatRequest, signal: AbortSignal): AsyncGenerator<ChatCompletionEvent, void, void> {
    if (r.options.tools !== undefined || r.options.toolChoice !== undefined) {
      badRequest("tools", "tools are not supported in a conversation (X-Conversation-Id or user): send the whole conversation without an id, and the server reuses its cached prefix");
    }
    const o = r.options;
    return this.#conversations.turn(id, r.messages, {
      ...this.#generateOptions(r, signal),
      ...(o.jsonSchema === undefined ? {} : { jsonSchema: o.jsonSchema }),
      ...(o.grammar === undefined ? {} : { grammar: o.grammar }),
    }, r.stream);
  }

  async #completions(body: unknown, res: ServerResponse, signal: AbortSignal): Promise<void> {
    const r = completionRequest(body, this.#limits());
    this.#checkModel(r);
    if (r.logprobs !== undefined && r.stream) badRequest("logprobs", "logprobs are returned without stream only");
    const model = this.context.model;
    const tokens = await model.tokenizeRaw(r.prompt, { addSpecial: true, parseSpecial: true });
    const capacity = this.context.info.sequenceContextSize;
    if (tokens.length >= capacity) throw new HttpError(400, `the prompt has ${tokens.length} tokens; a sequence of this server holds ${capacity}`, "invalid_request_error", "prompt", "context_length_exceeded");
    const id = responseId("cmpl");
    const created = Math.floor(Date.now() / 1000);
    const lease = await this.pool.lease(tokens, signal);
    try {
      const seq = lease.sequence;
      // A response sent whole collects the steps (see Sequence.collect).
      const gen = r.stream ? seq.generate(tokens, this.#generateOptions(r, signal)) : seq.collect(tokens, this.#generateOptions(r, signal));
      const chunk = (text: string, finish: string | null) => ({ id, object: "text_completion", created, model: this.#o.modelId, choices: [{ index: 0, text, logprobs: null, finish_reason: finish }] });
      const finishOf = (g: GenerationResult) => (g.stopReason === "maxTokens" || g.stopReason === "contextFull" ? "length" : "stop");
      if (!r.stream) {
        for await (const _ of gen) {
          // collected into lastGeneration
        }
        const g = seq.lastGeneration as GenerationResult;
        this.#record(g);
        const pieceOf = (t: number) => model.tokenToPiece(t, { special: true });
        this.#json(res, 200, {
          id,
          object: "text_completion",
          created,
          model: this.#o.modelId,
          choices: [{ index: 0, text: (r.echo ? r.prompt : "") + g.text, logprobs: completionLogprobs(g.logprobs, pieceOf), finish_reason: finishOf(g) }],
          usage: usageOf(g),
        });
        return;
      }
      const sse = await this.#openStream(res, gen);
      if (!sse) return;
      if (r.echo) await sse.send(chunk(r.prompt, null));
      for await (const piece of sse.events) await sse.send(chunk(piece, null));
      const g = seq.lastGeneration as GenerationResult;
      this.#record(g);
      await sse.send(chunk("", finishOf(g)));
      if (r.includeUsage) await sse.send({ id, object: "text_completion", created, model: this.#o.modelId, choices: [], usage: usageOf(g) });
      await sse.end();
    } finally {
      lease.release();
    }
  }

  async #embeddings(body: unknown, res: ServerResponse): Promise<void> {
    const ctx = this.#o.embeddings;
    if (!ctx) throw new HttpError(404, "this server has no embedding model (start it with --embeddings)", "invalid_request_error", null, "not_found");
    const r = embeddingRequest(body, DEFAULTS.serve.maxEmbeddingInputs);
    this.#checkModel(r);
    let tokens = 0;
    for (const text of r.input) tokens += (await ctx.model.tokenizeRaw(text, { addSpecial: true })).length;
    const vectors = await ctx.embed(r.input, { truncate: true });
    this.#json(res, 200, {
      object: "list",
      model: this.#o.modelId,
      data: vectors.map((v, index) => ({ object: "embedding", index, embedding: r.base64 ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") : Array.from(v) })),
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    });
  }

  #record(g: GenerationResult): void {
    this.#counters.generated(g.promptTokens, g.promptTokens - g.evaluatedPromptTokens, g.generatedTokens);
  }

  /**
   * Starts an SSE response once the first event is ready (so an error before it is still a
   * plain HTTP error). Returns undefined when the events ended at once (nothing to stream).
   */
  async #openStream<T>(res: ServerResponse, events: AsyncGenerator<T, void, void>) {
    const first = await events.next();
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
    res.flushHeaders();
    const send = async (data: unknown) => {
      if (res.destroyed) throw new LlamemError("ERR_ABORTED", "the client went away");
      if (!res.write(`data: ${JSON.stringify(data)}\n\n`)) await Promise.race([once(res, "drain"), once(res, "close")]);
    };
    async function* rest(): AsyncGenerator<T, void, void> {
      if (!first.done) yield first.value;
      else return;
      yield* events;
    }
    return {
      events: rest(),
      send,
      end: async () => {
        if (res.destroyed) return;
        res.end("data: [DONE]\n\n");
      },
    };
  }

  #json(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) }).end(text);
  }

  /** Answers a failure: its HTTP error, or mid-stream an error event, or nothing when the client is gone. */
  #fail(res: ServerResponse, err: unknown): void {
    const e = httpErrorOf(err);
    if (res.destroyed) return;
    if (res.headersSent) {
      // Mid-stream: the status is sent; an error event ends the stream.
      res.end(`data: ${JSON.stringify(e.body())}\n\n`);
      return;
    }
    const text = JSON.stringify(e.body());
    res.writeHead(e.status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...e.headers }).end(text);
  }
}

/** The conversation id of a request: the X-Conversation-Id header, else the body's `user`. */
function conversationId(req: IncomingMessage, body: unknown): string | undefined {
  const header = req.headers["x-conversation-id"];
  const id = typeof header === "string" ? header : (body as { user?: unknown }).user;
  if (id === undefined || id === null || id === "") return undefined;
  if (typeof id !== "string" || id.length > 256) badRequest("user", "a conversation id must be a string of at most 256 characters");
  return id;
}

/** Maps llamem's errors to HTTP: bad arguments 400, a full context 400, an abort 499, the rest 500. */
function httpErrorOf(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof LlamemError) {
    switch (err.code) {
      case "ERR_INVALID_ARGUMENT":
      case "ERR_TEMPLATE":
        return new HttpError(400, err.message, "invalid_request_error", null, err.code);
      case "ERR_CONTEXT_FULL":
        return new HttpError(400, err.message, "invalid_request_error", null, "context_length_exceeded");
      case "ERR_ABORTED":
        return new HttpError(499, err.message, "invalid_request_error", null, "aborted");
      case "ERR_BUSY":
        return new HttpError(409, err.message, "invalid_request_error", null, "busy");
      case "ERR_DISPOSED":
        return new HttpError(503, err.message, "server_error", null, "shutting_down");
      default:
        return new HttpError(500, err.message, "server_error", null, err.code);
    }
  }
  return new HttpError(500, err instanceof Error ? err.message : String(err), "server_error");
}
