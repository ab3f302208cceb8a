/**
 * Stateless chat: one reply to a whole conversation the caller holds (OpenAI's chat completions,
 * the AI SDK's language model). The caller sends every message each time, including the tool
 * calls the model made and their results; the reply's tool calls come back to the caller to run.
 * A {@link ChatSession} is the stateful counterpart: it keeps the history, runs the tools itself
 * and applies a memory policy.
 *
 * The prompt is rendered with the model's chat template, and generation reuses whatever prefix
 * of it the sequence's KV cache already holds.
 */
import { randomBytes } from "node:crypto";
import { LlamemError, invalidArgument } from "../errors.js";
import type { GenerateOptions, GenerationResult } from "../generation.js";
import type { Model } from "../model.js";
import type { Sequence } from "../sequence.js";
import { ReasoningSplitter, opensThinking, thinkingTags } from "./reasoning.js";
import { withBos, type ChatMessage, type ChatTool } from "./template.js";
import { checkToolChoice, checkTools, toolCallFormat, type ToolCallFormat, type ToolChoice } from "./tool-calls.js";

/** Options of {@link chatCompletion}. */
export interface ChatCompletionOptions extends Omit<GenerateOptions, "parseSpecial" | "addSpecial"> {
  /** Tools the model may call; their calls come back in the result, unrun. */
  tools?: readonly ChatTool[];
  /** Which calls to make: "auto" (default), "none", "required" (some call), or `{ name }`. */
  toolChoice?: ToolChoice;
  /** `enable_thinking` for reasoning models (default: the template's own default). */
  thinking?: boolean;
  /** A Jinja template or a built-in format's name instead of the model's own. */
  template?: string;
  /** More variables for the template (chat_template_kwargs). */
  templateVariables?: Record<string, unknown>;
}

/** A call the model made; `arguments` is its JSON text as written (it may not be valid JSON). */
export interface ChatCompletionToolCall {
  readonly id: string;
  readonly name: string;
  readonly arguments: string;
}

/** Why a reply ended: OpenAI's finish reasons. */
export type ChatFinishReason = "stop" | "length" | "toolCalls";

/** The whole reply of {@link chatCompletion}. */
export interface ChatCompletion {
  /** The answer (without reasoning, and without the text of tool calls). */
  readonly text: string;
  /** The reasoning before it, if the model reasoned. */
  readonly reasoning: string | undefined;
  readonly toolCalls: readonly ChatCompletionToolCall[];
  readonly finishReason: ChatFinishReason;
  /** Prompt tokens, tokens reused from the cache, generated tokens, speeds. */
  readonly generation: GenerationResult;
}

/** One event of {@link chatCompletion}: pieces of the answer and of the reasoning, then the whole reply. */
export type ChatCompletionEvent =
  | { readonly type: "text"; readonly text: string }
  | { readonly type: "reasoning"; readonly text: string }
  | { readonly type: "done"; readonly completion: ChatCompletion };

/**
 * Generates the assistant's reply to `messages` on `sequence`, streaming its pieces. With tools
 * offered ("auto"), the answer comes in one piece at the end, since its text may turn out to be
 * a call; "required" or `{ name }` constrain the reply to one well-formed call by grammar, and
 * `jsonSchema` or `grammar` constrain the answer. ERR_CONTEXT_FULL when the prompt does not fit.
 */
export async function* chatCompletion(sequence: Sequence, messages: readonly ChatMessage[], options: ChatCompletionOptions = {}): AsyncGenerator<ChatCompletionEvent, void, void> {
  yield* runChat(sequence, await prepareChat(sequence.context.model, messages, options));
}

/** A conversation rendered for a reply, with how to read the reply. @internal */
export interface PreparedChat {
  /** The prompt's tokens. */
  readonly tokens: Int32Array;
  readonly generate: Omit<GenerateOptions, "parseSpecial" | "addSpecial">;
  readonly format: ToolCallFormat | undefined;
  /** The tools offered: their schemas tell the parser which arguments are text. */
  readonly tools: readonly ChatTool[] | undefined;
  readonly splitter: ReasoningSplitter | undefined;
}

/** @internal Checks the options and renders the prompt (before a sequence is chosen: its tokens pick the one with the most cached). */
export async function prepareChat(model: Model, messages: readonly ChatMessage[], options: ChatCompletionOptions = {}): Promise<PreparedChat> {
  if (options === null || typeof options !== "object") invalidArgument("chatCompletion(sequence, messages, options): options must be an object");
  const { tools, toolChoice, thinking, template, templateVariables, ...generate } = options;
  const source = template ?? model.info.chatTemplate;
  const offered = tools !== undefined && tools.length > 0 ? tools : undefined;
  if (offered) checkTools(offered);
  checkToolChoice(toolChoice, offered && ((name) => offered.some((t) => t.name === name)));
  const format = offered && toolChoice !== "none" ? toolCallFormat(source ?? "") : undefined;
  if (offered && toolChoice !== "none" && !format) {
    invalidArgument("tools: this chat template writes tool calls in a format llamem does not know (it knows Hermes/Qwen, Qwen3-Coder/Qwen3.5/Nemotron 3 Nano, Llama 3.x and Mistral)");
  }
  const forced = format !== undefined && (toolChoice === "required" || typeof toolChoice === "object");
  if (forced && (generate.grammar !== undefined || generate.jsonSchema !== undefined)) {
    invalidArgument("grammar and jsonSchema cannot be combined with a toolChoice that forces a call");
  }
  const text = await model.applyChatTemplate([...messages], {
    addAssistant: true,
    ...(template === undefined ? {} : { template }),
    ...(offered ? { tools: offered } : {}),
    ...(thinking === undefined ? {} : { thinking }),
    ...(templateVariables === undefined ? {} : { variables: templateVariables }),
  });
  const tokens = withBos(model, await model.tokenizeRaw(text, { addSpecial: false, parseSpecial: true }));
  const tags = thinkingTags(source);
  const splitter = tags && !forced ? new ReasoningSplitter(tags, opensThinking(text, tags)) : undefined;
  const grammar = forced ? format.grammar(offered ?? [], typeof toolChoice === "object" ? toolChoice.name : undefined) : undefined;
  return { tokens, generate: grammar === undefined ? generate : { ...generate, grammar }, format, tools: offered, splitter };
}

/**
 * @internal Generates the reply of a prepared chat on `sequence`; `consumer`: whether the caller
 * takes the pieces as they come (a streamed response) or collects them (see Sequence.collect).
 */
export async function* runChat(sequence: Sequence, chat: PreparedChat, consumer = true): AsyncGenerator<ChatCompletionEvent, void, void> {
  const { format, splitter } = chat;
  const holdText = format !== undefined;
  const pieces = consumer ? sequence.generate(chat.tokens, chat.generate) : sequence.collect(chat.tokens, chat.generate);
  for await (const piece of pieces) {
    const part = splitter ? splitter.push(piece) : { reasoning: "", content: piece };
    if (part.reasoning) yield { type: "reasoning", text: part.reasoning };
    if (part.content && !holdText) yield { type: "text", text: part.content };
  }
  const tail = splitter?.end();
  if (tail?.reasoning) yield { type: "reasoning", text: tail.reasoning };
  if (tail?.content && !holdText) yield { type: "text", text: tail.content };
  const generation = sequence.lastGeneration as GenerationResult;
  const answer = splitter ? splitter.content : generation.text;
  const parsed = format ? format.parse(answer, chat.tools) : { content: answer, calls: [] };
  const toolCalls = parsed.calls.map((c) => ({ id: c.id ?? newCallId(), name: c.name, arguments: c.arguments }));
  if (holdText && parsed.content.length > 0) yield { type: "text", text: parsed.content };
  const reasoning = splitter && splitter.reasoning.length > 0 ? splitter.reasoning : undefined;
  const finishReason: ChatFinishReason =
    toolCalls.length > 0 ? "toolCalls" : generation.stopReason === "maxTokens" || generation.stopReason === "contextFull" ? "length" : "stop";
  yield { type: "done", completion: { text: parsed.content, reasoning, toolCalls, finishReason, generation } };
}

/** The whole reply of {@link chatCompletion} at once. */
export async function completeChat(sequence: Sequence, messages: readonly ChatMessage[], options: ChatCompletionOptions = {}): Promise<ChatCompletion> {
  for await (const e of chatCompletion(sequence, messages, options)) if (e.type === "done") return e.completion;
  throw new LlamemError("ERR_INTERNAL", "the chat completion ended without a reply");
}

/** An id for a call the model gave none, unique enough for clients that key results by it. */
function newCallId(): string {
  return `call_${randomBytes(12).toString("hex")}`;
}
