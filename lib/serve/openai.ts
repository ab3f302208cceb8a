/**
 * OpenAI's HTTP API as `llamem serve` speaks it: request bodies checked and turned into llamem's
 * options, and llamem's results turned into OpenAI's response and chunk objects. Pure functions;
 * the server (server.ts) does the I/O.
 * @internal
 */
import { randomBytes } from "node:crypto";
import type { ChatCompletion, ChatCompletionOptions, ChatFinishReason } from "../chat/completion.js";
import type { ChatMessage, ChatTool, ChatToolCall } from "../chat/template.js";
import { parseArguments, type ToolChoice } from "../chat/tool-calls.js";
import type { GenerationResult, TokenLogprob } from "../generation.js";
import type { LogitBiasEntry, SamplingOptions } from "../options.js";

/** An HTTP error with OpenAI's error body. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = "invalid_request_error",
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A 400 naming the field. */
export function badRequest(param: string, message: string): never {
  throw new HttpError(400, message, "invalid_request_error", param);
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function num(body: Json, key: string, min: number, max: number): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) badRequest(key, `${key} must be a number in [${min}, ${max}]`);
  return v;
}

function int(body: Json, key: string, min: number, max: number): number | undefined {
  const v = num(body, key, min, max);
  if (v !== undefined && !Number.isInteger(v)) badRequest(key, `${key} must be an integer`);
  return v;
}

function bool(body: Json, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") badRequest(key, `${key} must be true or false`);
  return v;
}

/** What every generating request shares, checked. */
export interface GenerationRequest {
  readonly model: string;
  readonly stream: boolean;
  readonly includeUsage: boolean;
  readonly maxTokens: number | undefined;
  readonly stop: string[] | undefined;
  readonly sampling: SamplingOptions;
  readonly logprobs: number | undefined;
}

/** The limits the server applies to requests. */
export interface RequestLimits {
  /** Tokens one sequence holds: max_tokens may not exceed it. */
  readonly sequenceContextSize: number;
}

/** Checks the body's shared fields: model, stream, max_tokens, stop, the sampler, logit_bias, n. */
function generationRequest(body: Json, limits: RequestLimits, logprobs: number | undefined): GenerationRequest {
  const model = body["model"];
  if (typeof model !== "string" || model.length === 0) badRequest("model", "model must be the name of a served model (GET /v1/models lists them)");
  const stream = bool(body, "stream") ?? false;
  const so = body["stream_options"];
  if (so !== undefined && so !== null && !isObject(so)) badRequest("stream_options", "stream_options must be an object");
  const includeUsage = isObject(so) && so["include_usage"] === true;
  // One choice per request.
  int(body, "n", 1, 1);
  const cap = limits.sequenceContextSize;
  const maxTokens = int(body, "max_completion_tokens", 0, Number.MAX_SAFE_INTEGER) ?? int(body, "max_tokens", 0, Number.MAX_SAFE_INTEGER);
  if (maxTokens !== undefined && maxTokens > cap) {
    badRequest(body["max_completion_tokens"] !== undefined ? "max_completion_tokens" : "max_tokens", `max_tokens is ${maxTokens}, but a sequence of this server holds ${cap} tokens, prompt included`);
  }
  let stop: string[] | undefined;
  const s = body["stop"];
  if (typeof s === "string") stop = [s];
  else if (Array.isArray(s)) {
    if (s.length > 16 || !s.every((x) => typeof x === "string" && x.length > 0)) badRequest("stop", "stop must be a string or up to 16 non-empty strings");
    stop = s as string[];
  } else if (s !== undefined && s !== null) badRequest("stop", "stop must be a string or an array of strings");
  const sampling: SamplingOptions = {};
  const temperature = num(body, "temperature", 0, 2);
  if (temperature !== undefined) sampling.temperature = temperature;
  const topP = num(body, "top_p", 0, 1);
  if (topP !== undefined) sampling.topP = topP;
  const topK = int(body, "top_k", 0, 1 << 20);
  if (topK !== undefined) sampling.topK = topK;
  const minP = num(body, "min_p", 0, 1);
  if (minP !== undefined) sampling.minP = minP;
  const seed = int(body, "seed", 0, 0xffffffff);
  if (seed !== undefined) sampling.seed = seed;
  const presence = num(body, "presence_penalty", -2, 2);
  if (presence !== undefined) sampling.presencePenalty = presence;
  const frequency = num(body, "frequency_penalty", -2, 2);
  if (frequency !== undefined) sampling.frequencyPenalty = frequency;
  const repeat = num(body, "repeat_penalty", 0, 10);
  if (repeat !== undefined) sampling.repeatPenalty = repeat;
  const bias = body["logit_bias"];
  if (bias !== undefined && bias !== null) {
    if (!isObject(bias)) badRequest("logit_bias", "logit_bias must be an object of token id to bias");
    const entries: LogitBiasEntry[] = [];
    for (const [k, v] of Object.entries(bias)) {
      if (!/^\d+$/.test(k) || typeof v !== "number" || !Number.isFinite(v) || v < -100 || v > 100) badRequest("logit_bias", `logit_bias: "${k}" must be a token id with a bias in [-100, 100]`);
      entries.push({ token: Number(k), bias: v });
    }
    sampling.logitBias = entries;
  }
  return { model, stream, includeUsage, maxTokens, stop, sampling, logprobs };
}

/** A chat completions request, checked. */
export interface ChatRequest extends GenerationRequest {
  readonly messages: ChatMessage[];
  readonly options: Pick<ChatCompletionOptions, "tools" | "toolChoice" | "jsonSchema" | "grammar" | "thinking" | "templateVariables">;
}

/** The text of a message's content: a string, or text parts (other parts are refused). */
function contentText(content: unknown, where: string): string {
  if (typeof content === "string") return content;
  if (content === null || content === undefined) return "";
  if (!Array.isArray(content)) badRequest(where, `${where} must be a string or an array of content parts`);
  let out = "";
  for (const part of content) {
    if (!isObject(part) || part["type"] !== "text" || typeof part["text"] !== "string") {
      badRequest(where, `${where}: only text parts are supported (this model reads no images, audio or files)`);
    }
    out += part["text"] as string;
  }
  return out;
}

function chatMessages(raw: unknown): ChatMessage[] {
  if (!Array.isArray(raw) || raw.length === 0) badRequest("messages", "messages must be a non-empty array");
  const names = new Map<string, string>();
  return raw.map((m, i) => {
    const where = `messages[${i}]`;
    if (!isObject(m)) badRequest(where, `${where} must be an object`);
    const role = m["role"];
    const content = contentText(m["content"], `${where}.content`);
    if (role === "system" || role === "developer") return { role: "system", content };
    if (role === "user") return { role: "user", content };
    if (role === "assistant") {
      const calls = m["tool_calls"];
      const out: ChatMessage = { role: "assistant", content };
      const reasoning = m["reasoning_content"];
      if (typeof reasoning === "string") out.reasoning = reasoning;
      if (calls !== undefined && calls !== null) {
        if (!Array.isArray(calls)) badRequest(`${where}.tool_calls`, `${where}.tool_calls must be an array`);
        out.toolCalls = calls.map((c, j): ChatToolCall => {
          const f = isObject(c) ? c["function"] : undefined;
          if (!isObject(c) || !isObject(f) || typeof f["name"] !== "string" || typeof f["arguments"] !== "string") {
            badRequest(`${where}.tool_calls[${j}]`, `${where}.tool_calls[${j}] must be { id, type: "function", function: { name, arguments } }`);
          }
          const id = typeof c["id"] === "string" ? c["id"] : undefined;
          if (id !== undefined) names.set(id, f["name"] as string);
          return { ...(id === undefined ? {} : { id }), name: f["name"] as string, arguments: parseArguments(f["arguments"] as string) };
        });
      }
      return out;
    }
    if (role === "tool") {
      const id = m["tool_call_id"];
      if (typeof id !== "string") badRequest(`${where}.tool_call_id`, `${where}.tool_call_id must be the id of the call it answers`);
      const name = names.get(id);
      return { role: "tool", content, toolCallId: id, ...(name === undefined ? {} : { name }) };
    }
    badRequest(`${where}.role`, `${where}.role must be system, developer, user, assistant or tool`);
  });
}

function chatTools(raw: unknown): ChatTool[] | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!Array.isArray(raw)) badRequest("tools", "tools must be an array");
  return raw.map((t, i) => {
    const f = isObject(t) ? t["function"] : undefined;
    if (!isObject(t) || t["type"] !== "function" || !isObject(f) || typeof f["name"] !== "string") {
      badRequest(`tools[${i}]`, `tools[${i}] must be { type: "function", function: { name, description?, parameters? } }`);
    }
    const parameters = f["parameters"] ?? { type: "object", properties: {} };
    const description = f["description"];
    return { name: f["name"] as string, ...(typeof description === "string" ? { description } : {}), parameters: parameters as ChatTool["parameters"] };
  });
}

function toolChoice(raw: unknown): ToolChoice | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (raw === "auto" || raw === "none" || raw === "required") return raw;
  if (isObject(raw) && isObject(raw["function"]) && typeof raw["function"]["name"] === "string") return { name: raw["function"]["name"] };
  badRequest("tool_choice", 'tool_choice must be "auto", "none", "required" or { type: "function", function: { name } }');
}

/** Checks a POST /v1/chat/completions body. */
export function chatRequest(body: unknown, limits: RequestLimits): ChatRequest {
  if (!isObject(body)) badRequest("body", "the body must be a JSON object");
  const lp = bool(body, "logprobs");
  const top = int(body, "top_logprobs", 0, 20);
  const base = generationRequest(body, limits, lp ? (top ?? 0) : undefined);
  const messages = chatMessages(body["messages"]);
  const tools = chatTools(body["tools"]);
  const choice = toolChoice(body["tool_choice"]);
  const options: ChatRequest["options"] = {};
  if (tools && tools.length > 0) options.tools = tools;
  if (choice !== undefined) options.toolChoice = choice;
  const rf = body["response_format"];
  if (rf !== undefined && rf !== null) {
    if (!isObject(rf)) badRequest("response_format", "response_format must be an object");
    if (rf["type"] === "json_object") options.jsonSchema = { type: "object" };
    else if (rf["type"] === "json_schema") {
      const js = rf["json_schema"];
      if (!isObject(js) || !isObject(js["schema"])) badRequest("response_format.json_schema", "response_format.json_schema must be { name, schema }");
      options.jsonSchema = js["schema"] as ChatCompletionOptions["jsonSchema"];
    } else if (rf["type"] !== "text") badRequest("response_format.type", 'response_format.type must be "text", "json_object" or "json_schema"');
  }
  const grammar = body["grammar"];
  if (grammar !== undefined && grammar !== null) {
    if (typeof grammar !== "string") badRequest("grammar", "grammar must be a GBNF string");
    options.grammar = grammar;
  }
  const kwargs = body["chat_template_kwargs"];
  if (kwargs !== undefined && kwargs !== null) {
    if (!isObject(kwargs)) badRequest("chat_template_kwargs", "chat_template_kwargs must be an object");
    const { enable_thinking: thinking, ...rest } = kwargs;
    if (thinking !== undefined) {
      if (typeof thinking !== "boolean") badRequest("chat_template_kwargs.enable_thinking", "enable_thinking must be true or false");
      options.thinking = thinking;
    }
    if (Object.keys(rest).length > 0) options.templateVariables = rest;
  }
  const effort = body["reasoning_effort"];
  if (effort === "none") options.thinking = false;
  return { ...base, messages, options };
}

/** A completions request, checked. */
export interface CompletionRequest extends GenerationRequest {
  readonly prompt: string;
  readonly echo: boolean;
}

/** Checks a POST /v1/completions body. */
export function completionRequest(body: unknown, limits: RequestLimits): CompletionRequest {
  if (!isObject(body)) badRequest("body", "the body must be a JSON object");
  const lp = int(body, "logprobs", 0, 5);
  const base = generationRequest(body, limits, lp);
  let prompt = body["prompt"];
  if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === "string") prompt = prompt[0];
  if (typeof prompt !== "string" || prompt.length === 0) badRequest("prompt", "prompt must be a non-empty string (one prompt per request)");
  return { ...base, prompt, echo: bool(body, "echo") ?? false };
}

/** An embeddings request, checked. */
export interface EmbeddingRequest {
  readonly model: string;
  readonly input: string[];
  readonly base64: boolean;
}

/** Checks a POST /v1/embeddings body. */
export function embeddingRequest(body: unknown, maxInputs: number): EmbeddingRequest {
  if (!isObject(body)) badRequest("body", "the body must be a JSON object");
  const model = body["model"];
  if (typeof model !== "string" || model.length === 0) badRequest("model", "model must be the name of a served model");
  const raw = body["input"];
  const input = typeof raw === "string" ? [raw] : raw;
  if (!Array.isArray(input) || input.length === 0 || !input.every((x) => typeof x === "string")) badRequest("input", "input must be a string or a non-empty array of strings");
  if (input.length > maxInputs) badRequest("input", `input holds ${input.length} texts; at most ${maxInputs} per request`);
  const format = body["encoding_format"];
  if (format !== undefined && format !== null && format !== "float" && format !== "base64") badRequest("encoding_format", 'encoding_format must be "float" or "base64"');
  return { model, input: input as string[], base64: format === "base64" };
}

// ---- responses ---------------------------------------------------------------------------------

/** A response id of OpenAI's shape. */
export function responseId(prefix: string): string {
  return `${prefix}-${randomBytes(12).toString("hex")}`;
}

/** OpenAI's finish_reason. */
export function finishReason(reason: ChatFinishReason): "stop" | "length" | "tool_calls" {
  return reason === "toolCalls" ? "tool_calls" : reason;
}

/** OpenAI's usage object. */
export function usageOf(g: GenerationResult): { prompt_tokens: number; completion_tokens: number; total_tokens: number; prompt_tokens_details: { cached_tokens: number } } {
  return {
    prompt_tokens: g.promptTokens,
    completion_tokens: g.generatedTokens,
    total_tokens: g.promptTokens + g.generatedTokens,
    prompt_tokens_details: { cached_tokens: g.promptTokens - g.evaluatedPromptTokens },
  };
}

/** A tool call in OpenAI's shape. */
export function toolCallOf(c: ChatCompletion["toolCalls"][number]): { id: string; type: "function"; function: { name: string; arguments: string } } {
  return { id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } };
}

/** The text of a token, for logprobs. */
export type PieceOf = (token: number) => Buffer;

/** Chat logprobs in OpenAI's shape. */
export function chatLogprobs(entries: readonly TokenLogprob[] | undefined, pieceOf: PieceOf): { content: unknown[] } | null {
  if (!entries) return null;
  const one = (token: number, logprob: number) => {
    const bytes = pieceOf(token);
    return { token: bytes.toString("utf8"), logprob, bytes: [...bytes] };
  };
  return { content: entries.map((e) => ({ ...one(e.token, e.logprob), top_logprobs: e.top.map((t) => one(t.token, t.logprob)) })) };
}

/** Completions logprobs in OpenAI's legacy shape. */
export function completionLogprobs(entries: readonly TokenLogprob[] | undefined, pieceOf: PieceOf): unknown {
  if (!entries) return null;
  const text = (t: number) => pieceOf(t).toString("utf8");
  let offset = 0;
  const textOffset: number[] = [];
  for (const e of entries) {
    textOffset.push(offset);
    offset += text(e.token).length;
  }
  return {
    tokens: entries.map((e) => text(e.token)),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top.map((t) => [text(t.token), t.logprob]))),
    text_offset: textOffset,
  };
}
