/**
 * Chat templates as models define them: the Jinja source in `tokenizer.chat_template`, rendered
 * in the sandbox (sandbox.ts) with the variables Hugging Face's transformers passes (messages,
 * tools, add_generation_prompt, enable_thinking, the BOS/EOS strings), or one of llama.cpp's
 * built-in formats by name.
 */
import { invalidArgument } from "../errors.js";
import type { JsonSchema } from "../grammar/json-schema.js";
import type { LlamemError } from "../errors.js";
import type { Model } from "../model.js";
import { renderTemplate, renderTemplates, type SandboxLimits } from "./sandbox.js";

/** A tool call an assistant message made. */
export interface ChatToolCall {
  /** The call's id, if the model or the app gave one (tool messages answer it). */
  readonly id?: string;
  readonly name: string;
  /** The arguments: parsed JSON (an object, usually), or the raw text when they did not parse. */
  readonly arguments: unknown;
}

/** A message for a chat template. */
export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool" | (string & {});
  content: string;
  /** The assistant's reasoning ("thinking") before its answer; templates write it as `reasoning_content`. */
  reasoning?: string;
  /** The tool calls of an assistant message. */
  toolCalls?: readonly ChatToolCall[];
  /** For a tool message: the id of the call it answers. */
  toolCallId?: string;
  /** For a tool message: the tool's name. */
  name?: string;
}

/** A tool offered to the model, as the template describes it to the model. */
export interface ChatTool {
  readonly name: string;
  readonly description?: string;
  /** The arguments' JSON Schema (an object schema). */
  readonly parameters: JsonSchema;
}

/** Options of {@link Model.applyChatTemplate}. */
export interface ChatTemplateOptions {
  /** End with the assistant's header, so the model writes the reply (default true). */
  addAssistant?: boolean;
  /**
   * A Jinja template's source, or the name of one of llama.cpp's built-in formats ("chatml",
   * "llama3", "gemma", ...). Default: the model's own template (chatml if it has none).
   */
  template?: string;
  /** Tools to describe to the model (Jinja templates only). */
  tools?: readonly ChatTool[];
  /** `enable_thinking`: whether a reasoning model should think before answering (default: the template's own default). */
  thinking?: boolean;
  /** The date `strftime_now` gives (default now). */
  now?: Date;
  /** More variables for the template (chat_template_kwargs), e.g. `{ reasoning_effort: "low" }`. */
  variables?: Record<string, unknown>;
}

/** True when `template` is Jinja source rather than a built-in format's name. */
export function isJinja(template: string): boolean {
  return /\{[{%#]/.test(template);
}

/** A message as templates expect it (the OpenAI/transformers shape). */
function templateMessage(m: ChatMessage): Record<string, unknown> {
  const out: Record<string, unknown> = { role: m.role, content: m.content };
  if (m.reasoning !== undefined) out["reasoning_content"] = m.reasoning;
  if (m.toolCalls !== undefined && m.toolCalls.length > 0) {
    out["tool_calls"] = m.toolCalls.map((c) => ({ ...(c.id === undefined ? {} : { id: c.id }), type: "function", function: { name: c.name, arguments: c.arguments } }));
  }
  if (m.toolCallId !== undefined) out["tool_call_id"] = m.toolCallId;
  if (m.name !== undefined) out["name"] = m.name;
  return out;
}

/** Checks messages before they cross to the sandbox: the fields a template reads, of the right types. */
export function checkMessages(messages: readonly ChatMessage[], where = "messages"): void {
  if (!Array.isArray(messages)) invalidArgument(`${where} must be an array`);
  messages.forEach((m, i) => {
    if (m === null || typeof m !== "object") invalidArgument(`${where}[${i}] must be an object { role, content }`);
    if (typeof m.role !== "string" || m.role.length === 0) invalidArgument(`${where}[${i}].role must be a non-empty string`);
    if (typeof m.content !== "string") invalidArgument(`${where}[${i}].content must be a string`);
    if (m.reasoning !== undefined && typeof m.reasoning !== "string") invalidArgument(`${where}[${i}].reasoning must be a string`);
    if (m.toolCalls !== undefined && !Array.isArray(m.toolCalls)) invalidArgument(`${where}[${i}].toolCalls must be an array`);
    m.toolCalls?.forEach((c: ChatToolCall, j: number) => {
      if (c === null || typeof c !== "object" || typeof c.name !== "string") invalidArgument(`${where}[${i}].toolCalls[${j}] must be an object { name, arguments }`);
    });
  });
}

/** What the template needs besides the messages. */
export interface TemplateContext {
  readonly bosText: string;
  readonly eosText: string;
}

/**
 * Renders `messages` with the Jinja template `source` in the sandbox. Rejects with ERR_TEMPLATE
 * when the template fails (its own `raise_exception` included) or breaks a sandbox limit.
 */
export function renderChat(source: string, messages: readonly ChatMessage[], ctx: TemplateContext, o: ChatTemplateOptions = {}, limits?: SandboxLimits): Promise<string> {
  return renderTemplate(source, templateVariables(messages, ctx, o), o.now ?? new Date(), limits);
}

/** Renders several conversations in one trip to the sandbox: each one's text, or its ERR_TEMPLATE error. */
export function renderChats(source: string, conversations: readonly (readonly ChatMessage[])[], ctx: TemplateContext, o: ChatTemplateOptions = {}): Promise<(string | LlamemError)[]> {
  return renderTemplates(source, conversations.map((m) => templateVariables(m, ctx, o)), o.now ?? new Date());
}

/** The variables transformers passes a chat template. */
function templateVariables(messages: readonly ChatMessage[], ctx: TemplateContext, o: ChatTemplateOptions): Record<string, unknown> {
  const variables: Record<string, unknown> = {
    ...(o.variables ?? {}),
    messages: messages.map(templateMessage),
    add_generation_prompt: o.addAssistant ?? true,
    bos_token: ctx.bosText,
    eos_token: ctx.eosText,
  };
  if (o.tools !== undefined && o.tools.length > 0) {
    variables["tools"] = o.tools.map((t) => ({ type: "function", function: { name: t.name, ...(t.description === undefined ? {} : { description: t.description }), parameters: t.parameters } }));
  }
  if (o.thinking !== undefined) variables["enable_thinking"] = o.thinking;
  return variables;
}

/** Checks the options of applyChatTemplate; `jinja` tells whether the template is Jinja (built-in formats take no tools). */
export function checkTemplateOptions(o: ChatTemplateOptions, jinja: boolean): void {
  if (o.template !== undefined && typeof o.template !== "string") invalidArgument("template must be a string");
  if (o.addAssistant !== undefined && typeof o.addAssistant !== "boolean") invalidArgument("addAssistant must be a boolean");
  if (o.thinking !== undefined && typeof o.thinking !== "boolean") invalidArgument("thinking must be a boolean");
  if (o.now !== undefined && !(o.now instanceof Date && Number.isFinite(o.now.getTime()))) invalidArgument("now must be a valid Date");
  if (o.variables !== undefined && (o.variables === null || typeof o.variables !== "object" || Array.isArray(o.variables))) invalidArgument("variables must be an object");
  if (o.tools !== undefined && !Array.isArray(o.tools)) invalidArgument("tools must be an array");
  if (!jinja && ((o.tools?.length ?? 0) > 0 || o.thinking !== undefined || o.variables !== undefined)) {
    invalidArgument("tools, thinking and variables need a Jinja chat template; this one is a built-in format");
  }
}

/**
 * A rendered prompt's tokens with BOS first where the model wants it and the template did not
 * write it (templates that write BOS yield it when special-token text is parsed).
 */
export function withBos(model: Model, raw: Int32Array): Int32Array {
  const { bos, addBos } = model.info;
  if (!addBos || raw[0] === bos) return raw;
  const out = new Int32Array(raw.length + 1);
  out[0] = bos;
  out.set(raw, 1);
  return out;
}
