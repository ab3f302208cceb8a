/**
 * `llamem/ai-sdk`: llamem as a provider of the Vercel AI SDK (`ai`), in process. It implements
 * the language model (specification v4) and the embedding model of `@ai-sdk/provider`:
 * `generateText`, `streamText`, structured output with a JSON schema, tools (the SDK runs them),
 * abort, and usage. Each call takes the pool's sequence that caches most of its prompt; with
 * `providerOptions.llamem.conversation`, calls of one conversation go to one session with the
 * provider's memory policy, and only new messages need sending.
 *
 * @example
 * ```ts
 * import { generateText } from "ai";
 * import { loadModel } from "llamem";
 * import { createLlamem } from "llamem/ai-sdk";
 * const model = await loadModel("model.gguf");
 * const ctx = await model.createContext({ sequences: 4 });
 * const llamem = createLlamem(ctx);
 * const { text } = await generateText({ model: llamem(), prompt: "Hello" });
 * ```
 * @packageDocumentation
 */
import type {
  EmbeddingModelV4,
  EmbeddingModelV4CallOptions,
  EmbeddingModelV4Result,
  LanguageModelV4,
  LanguageModelV4CallOptions,
  LanguageModelV4Content,
  LanguageModelV4FinishReason,
  LanguageModelV4GenerateResult,
  LanguageModelV4Prompt,
  LanguageModelV4StreamPart,
  LanguageModelV4StreamResult,
  LanguageModelV4Usage,
  SharedV4Warning,
} from "@ai-sdk/provider";
import { prepareChat, runChat, type ChatCompletion, type ChatCompletionEvent, type ChatCompletionOptions } from "./chat/completion.js";
import type { ChatMessage, ChatTool, ChatToolCall } from "./chat/template.js";
import { parseArguments, type ToolChoice } from "./chat/tool-calls.js";
import type { Context } from "./context.js";
import { LlamemError, invalidArgument } from "./errors.js";
import type { GenerationResult } from "./generation.js";
import type { JsonSchema } from "./grammar/json-schema.js";
import { Conversations, type ConversationOptions } from "./serve/conversations.js";
import { DEFAULTS } from "./options.js";
import { createPool, type PoolOptions, type SessionPool } from "./session/pool/pool.js";

/** Options of {@link createLlamem}. */
export interface LlamemProviderSettings {
  /** The model's name in the SDK's results (default "llamem"). */
  modelId?: string;
  /** An embedding context (`createContext({ embeddings: true })`) for `llamem.embeddingModel()`. */
  embeddings?: Context;
  /** How conversations are kept (`providerOptions.llamem.conversation`): memory policy, cap, idle time. */
  conversations?: ConversationOptions;
  /** Where idle conversations' caches spill. */
  spill?: PoolOptions["spill"];
  /** A chat template (Jinja source or a built-in name) instead of the model's own. */
  template?: string;
}

/** `providerOptions.llamem` of a call. */
export interface LlamemCallOptions {
  /** A conversation id: the call continues that conversation's session (send only new messages, or all). */
  conversation?: string;
  /** llamem's sampler options beyond the SDK's (min-p, repeat penalty, DRY, XTC...). */
  minP?: number;
  repeatPenalty?: number;
  /** `enable_thinking` for reasoning models. */
  thinking?: boolean;
}

/** The provider: call it (or `languageModel()`) for the language model. */
export interface LlamemProvider {
  (): LanguageModelV4;
  languageModel(): LanguageModelV4;
  /** The embedding model; needs `embeddings` in the settings. */
  embeddingModel(): EmbeddingModelV4;
  /** The pool the calls run on (its stats show KV use, residency and spills). */
  readonly pool: SessionPool;
  /** Disposes the pool and forgets the conversations; the contexts stay the caller's. */
  dispose(): Promise<void>;
}

/**
 * A provider on `context` (create it with `sequences: N` for N calls at once). The provider owns
 * a pool on the context; the context and model stay the caller's.
 */
export function createLlamem(context: Context, settings: LlamemProviderSettings = {}): LlamemProvider {
  if (settings === null || typeof settings !== "object") invalidArgument("createLlamem(context, settings): settings must be an object");
  if (context.info.embeddings) invalidArgument("createLlamem needs a generating context; pass an embedding context as settings.embeddings");
  if (settings.embeddings !== undefined && !settings.embeddings.info.embeddings) invalidArgument("settings.embeddings must be a context created with embeddings: true");
  const pool = createPool(context, settings.spill === undefined ? {} : { spill: settings.spill });
  const template = settings.template === undefined ? {} : { template: settings.template };
  const conversations = new Conversations(pool, { ...settings.conversations, ...template });
  const modelId = settings.modelId ?? "llamem";
  const language = new LlamemLanguageModel(context, pool, conversations, modelId, settings.template);
  return Object.assign(() => language, {
    languageModel: () => language,
    embeddingModel: () => {
      if (!settings.embeddings) invalidArgument("embeddingModel() needs an embedding context: createLlamem(context, { embeddings })");
      return new LlamemEmbeddingModel(settings.embeddings, modelId);
    },
    pool,
    dispose: async () => {
      await conversations.close();
      await pool.dispose();
    },
  });
}

/** The SDK's prompt as chat messages: text parts joined, tool calls and results kept, files refused. */
function chatMessages(prompt: LanguageModelV4Prompt): ChatMessage[] {
  const out: ChatMessage[] = [];
  for (const m of prompt) {
    if (m.role === "system") out.push({ role: "system", content: m.content });
    else if (m.role === "user") {
      let text = "";
      for (const p of m.content) {
        if (p.type !== "text") throw new LlamemError("ERR_UNSUPPORTED", "this provider reads text only (the prompt has a file part)");
        text += p.text;
      }
      out.push({ role: "user", content: text });
    } else if (m.role === "assistant") {
      let text = "";
      let reasoning: string | undefined;
      const calls: ChatToolCall[] = [];
      for (const p of m.content) {
        if (p.type === "text") text += p.text;
        else if (p.type === "reasoning") reasoning = (reasoning ?? "") + p.text;
        else if (p.type === "tool-call") calls.push({ id: p.toolCallId, name: p.toolName, arguments: typeof p.input === "string" ? parseArguments(p.input) : p.input });
      }
      out.push({ role: "assistant", content: text, ...(reasoning === undefined ? {} : { reasoning }), ...(calls.length === 0 ? {} : { toolCalls: calls }) });
    } else if (m.role === "tool") {
      for (const p of m.content) {
        if (p.type !== "tool-result") continue;
        const o = p.output;
        const content = o.type === "text" || o.type === "error-text" ? o.value : o.type === "json" || o.type === "error-json" ? JSON.stringify(o.value) : o.type === "execution-denied" ? `Execution denied${o.reason ? `: ${o.reason}` : ""}` : JSON.stringify(o);
        out.push({ role: "tool", content, toolCallId: p.toolCallId, name: p.toolName });
      }
    }
  }
  return out;
}

function usageOf(g: GenerationResult, reasoningTokens: number | undefined): LanguageModelV4Usage {
  const cached = g.promptTokens - g.evaluatedPromptTokens;
  return {
    inputTokens: { total: g.promptTokens, noCache: g.evaluatedPromptTokens, cacheRead: cached, cacheWrite: undefined },
    outputTokens: { total: g.generatedTokens, text: reasoningTokens === undefined ? g.generatedTokens : undefined, reasoning: reasoningTokens },
  };
}

function finishOf(c: ChatCompletion): LanguageModelV4FinishReason {
  const unified = c.finishReason === "toolCalls" ? "tool-calls" : c.finishReason;
  return { unified, raw: c.generation.stopReason };
}

/** The language model of {@link createLlamem}. */
class LlamemLanguageModel implements LanguageModelV4 {
  readonly specificationVersion = "v4";
  readonly provider = "llamem";
  readonly supportedUrls = {};

  constructor(
    readonly context: Context,
    readonly pool: SessionPool,
    readonly conversations: Conversations,
    readonly modelId: string,
    readonly template: string | undefined,
  ) {}

  /** The call's options as llamem's, with warnings for what llamem ignores. */
  #options(o: LanguageModelV4CallOptions): { options: ChatCompletionOptions; warnings: SharedV4Warning[]; conversation: string | undefined } {
    const warnings: SharedV4Warning[] = [];
    const own = (o.providerOptions?.["llamem"] ?? {}) as LlamemCallOptions;
    const options: ChatCompletionOptions = this.template === undefined ? {} : { template: this.template };
    if (o.maxOutputTokens !== undefined) options.maxTokens = o.maxOutputTokens;
    if (o.temperature !== undefined) options.temperature = o.temperature;
    if (o.topP !== undefined) options.topP = o.topP;
    if (o.topK !== undefined) options.topK = o.topK;
    if (o.presencePenalty !== undefined) options.presencePenalty = o.presencePenalty;
    if (o.frequencyPenalty !== undefined) options.frequencyPenalty = o.frequencyPenalty;
    if (o.seed !== undefined) options.seed = o.seed;
    if (o.stopSequences !== undefined && o.stopSequences.length > 0) options.stop = o.stopSequences;
    if (o.abortSignal !== undefined) options.signal = o.abortSignal;
    if (own.minP !== undefined) options.minP = own.minP;
    if (own.repeatPenalty !== undefined) options.repeatPenalty = own.repeatPenalty;
    if (own.thinking !== undefined) options.thinking = own.thinking;
    else if (o.reasoning === "none") options.thinking = false;
    if (o.responseFormat?.type === "json") options.jsonSchema = (o.responseFormat.schema ?? { type: "object" }) as JsonSchema;
    const tools: ChatTool[] = [];
    for (const t of o.tools ?? []) {
      if (t.type !== "function") {
        warnings.push({ type: "unsupported", feature: `provider tool ${t.name}` });
        continue;
      }
      tools.push({ name: t.name, ...(t.description === undefined ? {} : { description: t.description }), parameters: t.inputSchema as JsonSchema });
    }
    if (tools.length > 0) {
      options.tools = tools;
      const c = o.toolChoice;
      const choice: ToolChoice | undefined = c === undefined ? undefined : c.type === "tool" ? { name: c.toolName } : c.type;
      if (choice !== undefined) options.toolChoice = choice;
    }
    if (o.includeRawChunks) warnings.push({ type: "unsupported", feature: "includeRawChunks" });
    return { options, warnings, conversation: own.conversation };
  }

  /** The call's events: a conversation's session turn, or a stateless reply on the sequence caching most of the prompt. */
  async *#events(o: LanguageModelV4CallOptions, options: ChatCompletionOptions, conversation: string | undefined): AsyncGenerator<ChatCompletionEvent, void, void> {
    const messages = chatMessages(o.prompt);
    if (conversation !== undefined) {
      if (options.tools !== undefined) invalidArgument("tools are not supported in a conversation: leave out providerOptions.llamem.conversation to use tools");
      const { tools: _t, toolChoice: _c, thinking: _th, template: _te, templateVariables: _v, ...prompt } = options;
      yield* this.conversations.turn(conversation, messages, prompt);
      return;
    }
    const prepared = await prepareChat(this.context.model, messages, options);
    const lease = await this.pool.lease(prepared.tokens, options.signal);
    try {
      yield* runChat(lease.sequence, prepared);
    } finally {
      lease.release();
    }
  }

  async doGenerate(o: LanguageModelV4CallOptions): Promise<LanguageModelV4GenerateResult> {
    const { options, warnings, conversation } = this.#options(o);
    let done: ChatCompletion | undefined;
    for await (const e of this.#events(o, options, conversation)) if (e.type === "done") done = e.completion;
    const c = done as ChatCompletion;
    const content: LanguageModelV4Content[] = [];
    if (c.reasoning !== undefined) content.push({ type: "reasoning", text: c.reasoning });
    if (c.text.length > 0) content.push({ type: "text", text: c.text });
    for (const t of c.toolCalls) content.push({ type: "tool-call", toolCallId: t.id, toolName: t.name, input: t.arguments });
    return { content, finishReason: finishOf(c), usage: usageOf(c.generation, undefined), warnings, response: { modelId: this.modelId, timestamp: new Date() } };
  }

  async doStream(o: LanguageModelV4CallOptions): Promise<LanguageModelV4StreamResult> {
    const { options, warnings, conversation } = this.#options(o);
    const events = this.#events(o, options, conversation);
    let open: "text" | "reasoning" | undefined;
    let n = 0;
    const stream = new ReadableStream<LanguageModelV4StreamPart>({
      start(controller) {
        controller.enqueue({ type: "stream-start", warnings });
      },
      async pull(controller) {
        try {
          const next = await events.next();
          if (next.done) {
            controller.close();
            return;
          }
          const e = next.value;
          const close = () => {
            if (open === "text") controller.enqueue({ type: "text-end", id: String(n) });
            if (open === "reasoning") controller.enqueue({ type: "reasoning-end", id: String(n) });
            open = undefined;
          };
          if (e.type === "text" || e.type === "reasoning") {
            if (open !== e.type) {
              close();
              open = e.type;
              n++;
              controller.enqueue({ type: e.type === "text" ? "text-start" : "reasoning-start", id: String(n) });
            }
            controller.enqueue({ type: e.type === "text" ? "text-delta" : "reasoning-delta", id: String(n), delta: e.text });
            return;
          }
          close();
          const c = e.completion;
          for (const t of c.toolCalls) controller.enqueue({ type: "tool-call", toolCallId: t.id, toolName: t.name, input: t.arguments });
          controller.enqueue({ type: "finish", finishReason: finishOf(c), usage: usageOf(c.generation, undefined) });
        } catch (err) {
          controller.enqueue({ type: "error", error: err });
          controller.close();
        }
      },
      async cancel() {
        // The reader went away: ending the generator aborts the generation and frees the sequence.
        await events.return(undefined);
      },
    });
    return { stream };
  }
}

/** The embedding model of {@link createLlamem}. */
class LlamemEmbeddingModel implements EmbeddingModelV4 {
  readonly specificationVersion = "v4";
  readonly provider = "llamem";
  readonly maxEmbeddingsPerCall = DEFAULTS.serve.maxEmbeddingInputs;
  readonly supportsParallelCalls = false;

  constructor(
    readonly context: Context,
    readonly modelId: string,
  ) {}

  async doEmbed(o: EmbeddingModelV4CallOptions): Promise<EmbeddingModelV4Result> {
    let tokens = 0;
    for (const text of o.values) tokens += (await this.context.model.tokenizeRaw(text, { addSpecial: true })).length;
    const vectors = await this.context.embed(o.values, { truncate: true });
    return { embeddings: vectors.map((v) => Array.from(v)), usage: { tokens }, warnings: [] };
  }
}
