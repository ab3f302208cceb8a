/**
 * Chat templates as models define them: the Jinja source in `tokenizer.chat_template`, rendered
 * in the sandbox (sandbox.ts) with the variables Hugging Face's transformers passes (messages,
 * tools, add_generation_prompt, enable_thinking, the BOS/EOS strings), or one of llama.cpp's
 * built-in formats by name.
 */
import { invalidArgument, LlamemError } from "../errors.js";
import type { JsonSchema } from "../grammar/json-schema.js";
import type { Model } from "../model.js";
import { dropStage, renderStaged, renderTemplate, renderTemplates, renderWindows, stageHeld, stageMessages, StageLost, type SandboxLimits, type Stage } from "./sandbox.js";

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
function templateMessage(m: Readonly<ChatMessage>): Record<string, unknown> {
  const out: Record<string, unknown> = { role: m.role, content: m.content };
  if (m.reasoning !== undefined) out["reasoning_content"] = m.reasoning;
  if (m.toolCalls !== undefined && m.toolCalls.length > 0) {
    out["tool_calls"] = m.toolCalls.map((c) => ({ ...(c.id === undefined ? {} : { id: c.id }), type: "function", function: { name: c.name, arguments: c.arguments } }));
  }
  if (m.toolCallId !== undefined) out["tool_call_id"] = m.toolCallId;
  if (m.name !== undefined) out["name"] = m.name;
  return out;
}

/**
 * Checks messages before they cross to the sandbox: the fields a template reads, of the right
 * types. `offset` is the index of the first one in the whole list (for a list checked in slices).
 */
export function checkMessages(messages: readonly Readonly<ChatMessage>[], where = "messages", offset = 0): void {
  if (!Array.isArray(messages)) invalidArgument(`${where} must be an array`);
  messages.forEach((m, j) => {
    const i = j + offset;
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

const contexts = new WeakMap<Model, TemplateContext>();

/** The BOS and EOS strings `model`'s templates write (`bos_token`, `eos_token`), as its applyChatTemplate passes them. */
export function templateContextOf(model: Model): TemplateContext {
  let c = contexts.get(model);
  if (!c) {
    const text = (id: number) => (id >= 0 ? model.tokenToPiece(id, { special: true }).toString("utf8") : "");
    c = { bosText: text(model.info.bos), eosText: text(model.info.eos) };
    contexts.set(model, c);
  }
  return c;
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

/** Messages per slice staged at a time: a slice is checked, converted and copied to the thread in well under a millisecond. */
const STAGE_SLICE = 512;

/**
 * Lets the event loop go round between slices (its timers and I/O run): two immediates, as one
 * set in an I/O callback runs in the same turn of the loop, before any timer.
 */
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));

/** Times a stage is sent again when the thread holding it stops (another render over its time stops it). */
const STAGE_TRIES = 3;

/**
 * A conversation staged on the sandbox's thread for a Jinja template: its messages are checked,
 * converted and copied there in slices, letting the event loop run between them (in one go,
 * that takes tens of milliseconds for 10,000 messages), then rendered whole or in windows
 * without crossing again. The texts and errors are those of {@link renderChat} and
 * {@link renderChats}. {@link drop} it when done (the thread holds the messages until then).
 */
export class StagedChat {
  #stage: Stage | undefined;

  private constructor(
    readonly source: string,
    readonly messages: readonly Readonly<ChatMessage>[],
    readonly ctx: TemplateContext,
    readonly options: ChatTemplateOptions,
  ) {}

  /** Stages `messages` (ERR_INVALID_ARGUMENT for a bad one, as applyChatTemplate). */
  static async create(source: string, messages: readonly Readonly<ChatMessage>[], ctx: TemplateContext, o: ChatTemplateOptions = {}): Promise<StagedChat> {
    if (!Array.isArray(messages)) invalidArgument("messages must be an array");
    const chat = new StagedChat(source, messages, ctx, o);
    await chat.#staged();
    return chat;
  }

  /** The stage on the running thread: sent the first time, and again when the thread holding it stopped. */
  async #staged(): Promise<Stage> {
    for (let attempt = 1; ; attempt++) {
      if (this.#stage && stageHeld(this.#stage)) return this.#stage;
      this.#stage = undefined;
      let stage: Stage | undefined;
      try {
        for (let at = 0; at === 0 || at < this.messages.length; at += STAGE_SLICE) {
          if (at > 0) await yieldToLoop();
          const slice = this.messages.slice(at, at + STAGE_SLICE);
          checkMessages(slice, "messages", at);
          stage = stageMessages(stage, slice.map(templateMessage));
        }
        this.#stage = stage as Stage;
        return this.#stage;
      } catch (err) {
        if (!(err instanceof StageLost)) {
          if (stage) dropStage(stage);
          throw err;
        }
        if (attempt >= STAGE_TRIES) throw new LlamemError("ERR_TEMPLATE", `chat template: ${err.message}`, { cause: err });
      }
    }
  }

  /** Runs `send` with the stage, staging again if the thread stopped before it was sent. */
  async #withStage<T>(send: (stage: Stage) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await send(await this.#staged());
      } catch (err) {
        if (!(err instanceof StageLost)) throw err;
        if (attempt >= STAGE_TRIES) throw new LlamemError("ERR_TEMPLATE", `chat template: ${err.message}`, { cause: err });
      }
    }
  }

  /** The whole conversation, as renderChat renders it (the assistant's header when `addAssistant`). */
  render(addAssistant: boolean): Promise<string> {
    const o: ChatTemplateOptions = { ...this.options, addAssistant };
    return this.#withStage((stage) => renderStaged(this.source, templateVariables(undefined, this.ctx, o), stage, o.now ?? new Date()));
  }

  /**
   * For each index i, the text message i adds to message i-1 rendered alone, without the
   * assistant's header: the render of messages i-1 and i less that of message i-1 (for i = 0,
   * the render of message 0), as renderChats renders those lists. An ERR_TEMPLATE error where
   * a render fails or the longer does not begin with the shorter.
   */
  pieces(indices: readonly number[]): Promise<(string | LlamemError)[]> {
    const o: ChatTemplateOptions = { ...this.options, addAssistant: false };
    return this.#withStage((stage) => renderWindows(this.source, templateVariables(undefined, this.ctx, o), stage, indices, o.now ?? new Date()));
  }

  /** Lets the thread forget the messages. */
  drop(): void {
    if (this.#stage) dropStage(this.#stage);
    this.#stage = undefined;
  }
}

/** What {@link renderChat} renders, for a long list: staged in slices ({@link StagedChat}), then rendered. */
export async function renderChatInSlices(source: string, messages: readonly Readonly<ChatMessage>[], ctx: TemplateContext, o: ChatTemplateOptions = {}): Promise<string> {
  const chat = await StagedChat.create(source, messages, ctx, o);
  try {
    return await chat.render(o.addAssistant ?? true);
  } finally {
    chat.drop();
  }
}

/** The variables transformers passes a chat template (without `messages` when they are staged). */
function templateVariables(messages: readonly ChatMessage[] | undefined, ctx: TemplateContext, o: ChatTemplateOptions): Record<string, unknown> {
  const variables: Record<string, unknown> = {
    ...(o.variables ?? {}),
    ...(messages === undefined ? {} : { messages: messages.map(templateMessage) }),
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
