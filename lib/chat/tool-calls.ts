/**
 * How model families write tool calls: which format a chat template uses, the grammar that forces
 * a reply to be one well-formed call, and the parser that splits a reply into text and calls.
 *
 * The formats, as the templates in llama.cpp's models/templates render an assistant's tool_calls:
 * - hermes (Qwen2.5/Qwen3/QwQ, Hermes 2 Pro/3, Granite 4, MiMo, Bielik, Reka):
 *   `<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>`, one block per call.
 * - llama3 (Llama 3.1/3.2/3.3): the reply is the object `{"name": "f", "parameters": {...}}`.
 * - mistral (Mistral-Nemo-Instruct-2407):
 *   `[TOOL_CALLS][{"name": "f", "arguments": {...}, "id": "abcdefghi"}]` (ids: 9 alphanumerics).
 * - mistral-args (Mistral-Small-3.2, Devstral, Ministral-3): `[TOOL_CALLS]f[ARGS]{...}` per call;
 *   Mistral-Small-3.2 writes `[TOOL_CALLS]f[CALL_ID]abcdefghi[ARGS]{...}`.
 * - qwen3-xml (Qwen3-Coder, Qwen3.5, NVIDIA Nemotron 3 Nano, StepFun Step-3.5-Flash):
 *   `<tool_call>\n<function=f>\n<parameter=k>\nvalue\n</parameter>\n...</function>\n</tool_call>`
 *   per call, one parameter block per argument: a string as it is, anything else as JSON (the
 *   templates write `tojson` for mappings and sequences, `string` for the rest), so the tools'
 *   schemas say which values are strings (`parse(text, tools)`).
 */
import { describeValue, invalidArgument } from "../errors.js";
import { literal as textLiteral, schemaRules, type JsonSchema } from "../grammar/json-schema.js";
import type { ChatTool } from "./template.js";

/** One call found in the model's text; `arguments` is the raw JSON text of the arguments as the model wrote it (may be invalid JSON). */
export interface ParsedToolCall {
  readonly name: string;
  readonly arguments: string;
  readonly id?: string;
}

/** A reply split into its text and its calls. */
export interface ParsedReply {
  readonly content: string;
  readonly calls: readonly ParsedToolCall[];
}

/** Which tool calls the model should make: any or none as it decides ("auto"), none, some call, or a call of the named tool. */
export type ToolChoice = "auto" | "none" | "required" | { readonly name: string };

/** Checks a `toolChoice` against the tools offered (`has` answers whether a name is one; undefined when none are offered). */
export function checkToolChoice(choice: ToolChoice | undefined, has: ((name: string) => boolean) | undefined): void {
  if (choice === undefined || choice === "auto" || choice === "none") return;
  if (!has) invalidArgument("toolChoice needs tools");
  if (choice === "required") return;
  if (choice === null || typeof choice !== "object" || typeof choice.name !== "string") invalidArgument('toolChoice must be "auto", "none", "required" or { name }');
  if (!has(choice.name)) invalidArgument(`toolChoice names "${choice.name}", which is not one of the tools`);
}

/** A call's arguments as parsed JSON when they parse, else the raw text (templates and tool messages show it as written). */
export function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** The tool-call formats llamem knows. */
export type ToolCallFormatName = "hermes" | "llama3" | "mistral" | "mistral-args" | "qwen3-xml";

/** One family's way of writing tool calls. */
export interface ToolCallFormat {
  readonly name: ToolCallFormatName;
  /** GBNF forcing the reply to be exactly one call (of tool `only`, if given) with arguments valid under that tool's parameters schema; uses schemaRules with a distinct prefix per tool (per parameter in qwen3-xml). The grammar may allow a leading/trailing newline as the family writes it. */
  grammar(tools: readonly ChatTool[], only?: string): string;
  /**
   * Splits a reply into content and calls. Never throws, whatever the text: text that is not a well-formed call stays in `content`; a call whose arguments are not valid JSON still comes back as a call with its raw arguments text (the session tells the model about the error).
   * `tools` (the tools offered) lets a format whose calls do not say their values' types read them by the schemas: qwen3-xml writes strings bare, so with the tools a string parameter stays a string and the rest is JSON; without them a value that parses as JSON is taken as JSON. The other formats ignore it.
   */
  parse(text: string, tools?: readonly ChatTool[]): ParsedReply;
  /** The text that opens a call, e.g. "<tool_call>". */
  readonly trigger: string;
}

const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The format a chat template writes tool calls in, from its Jinja source; undefined if none is
 * recognised. Decided from how the template renders an assistant's tool calls, most specific
 * first: several families share `<tool_call>` but put XML (`<function=...>`, `<arg_key>`,
 * `<invoke>`) or a list (`<tool_calls>[...]`) inside it instead of Hermes's JSON object.
 */
export function toolCallFormat(templateSource: string): ToolCallFormat | undefined {
  if (typeof templateSource !== "string") return undefined;
  const src = templateSource;
  if (src.includes("[TOOL_CALLS]") && src.includes("[ARGS]")) return mistralArgs(src.includes("[CALL_ID]"));
  // Nemo writes "[TOOL_CALLS][", Mistral-7B-Instruct-v0.3 "[TOOL_CALLS] [".
  if (/\[TOOL_CALLS\] ?\[/.test(src)) return MISTRAL;
  // "<tool_call>\n<function=f>\n<parameter=k>\nvalue\n</parameter>" (the newline written as "\n"
  // in a Jinja string, or as itself). Seed-OSS's <seed:tool_call> and values without the
  // newlines are another format.
  if (/<tool_call>(?:\\n|\n)<function=/.test(src) && src.includes("<parameter=") && /(?:\\n|\n)<\/parameter>/.test(src)) return QWEN3_XML;
  if (
    src.includes("<tool_call>") &&
    /\\?"arguments\\?"/.test(src) &&
    !["<function=", "<arg_key>", "<invoke", "<tool_calls>", "<parameter="].some((marker) => src.includes(marker))
  ) {
    return HERMES;
  }
  if (src.includes("<|start_header_id|>") && /\\?"parameters\\?":/.test(src)) return LLAMA3;
  return undefined;
}

/** Checks tool definitions (names: [A-Za-z0-9_-]{1,64}, unique; parameters an object schema convertible by schemaRules) — ERR_INVALID_ARGUMENT naming the tool. */
export function checkTools(tools: readonly ChatTool[]): void {
  if (!Array.isArray(tools)) invalidArgument(`tools must be an array, got ${describeValue(tools)}`);
  const seen = new Set<string>();
  (tools as readonly unknown[]).forEach((tool, i) => {
    if (typeof tool !== "object" || tool === null || Array.isArray(tool)) invalidArgument(`tools[${i}] must be an object with name and parameters`);
    const { name, description, parameters } = tool as { name?: unknown; description?: unknown; parameters?: unknown };
    if (typeof name !== "string" || !TOOL_NAME.test(name)) {
      invalidArgument(`tools[${i}]: the name must be 1 to 64 letters, digits, "_" or "-", got ${describeValue(name)}`);
    }
    if (seen.has(name)) invalidArgument(`tool "${name}" is defined twice`);
    seen.add(name);
    if (description !== undefined && typeof description !== "string") invalidArgument(`tool "${name}": description must be a string`);
    checkParameters(name, parameters);
  });
}

function checkParameters(name: string, parameters: unknown): void {
  const where = `tool "${name}" parameters`;
  if (typeof parameters !== "object" || parameters === null || Array.isArray(parameters)) {
    invalidArgument(`${where} must be an object JSON Schema ({ "type": "object", ... }), got ${describeValue(parameters)}`);
  }
  const schema = parameters as { readonly [key: string]: unknown };
  const type = schema.type;
  const objectOnly = type === "object" || (Array.isArray(type) && type.length === 1 && type[0] === "object") || (type === undefined && schema.properties !== undefined);
  if (!objectOnly) invalidArgument(`${where} must be an object schema ("type": "object")`);
  // Converting is the only exact test of "convertible"; the grammar converts again when asked.
  schemaRules(schema, "t", { where });
}

// ---- grammars ----------------------------------------------------------------------------------

/** Whitespace of the call's wrapper (the arguments use their own, from schemaRules). */
const WS_RULE = `ws ::= ( " " | "\\n" [ \\t]{0,24} )?`;

/** A GBNF literal of plain ASCII text (tool names, markers): only " and \ need escapes. */
function lit(text: string): string {
  return `"${text.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** Checks the tools and `only` of a grammar request. */
function checkGrammarRequest(tools: readonly ChatTool[], only: string | undefined): void {
  checkTools(tools);
  if (tools.length === 0) invalidArgument("a tool-call grammar needs at least one tool");
  if (only !== undefined && !tools.some((t) => t.name === only)) invalidArgument(`there is no tool named ${describeValue(only)}`);
}

/**
 * For each tool the grammar may call: its parameters' rules (prefix t<index>) and top rule.
 * `only` narrows to one tool.
 */
function toolGrammars(tools: readonly ChatTool[], only: string | undefined): { name: string; root: string; rules: string[] }[] {
  checkGrammarRequest(tools, only);
  const out: { name: string; root: string; rules: string[] }[] = [];
  tools.forEach((tool, i) => {
    if (only !== undefined && tool.name !== only) return;
    out.push({ name: tool.name, ...schemaRules(tool.parameters, `t${i}`, { where: `tool "${tool.name}" parameters` }) });
  });
  return out;
}

/**
 * A JSON call object `{"name": "<tool>", "<argsKey>": <args>}` (plus `extra`, written after the
 * arguments, inside the braces): name and arguments are chosen together, so each tool's
 * arguments follow its own schema.
 */
function jsonCallRules(tools: readonly ChatTool[], only: string | undefined, argsKey: string, extra = ""): string[] {
  const parts = toolGrammars(tools, only);
  const lines = [
    `call ::= "{" ws ${lit('"name"')} ws ":" ws ( ${parts.map((_, i) => `call-${i}`).join(" | ")} ) ${extra}"}"`,
    ...parts.map((p, i) => `call-${i} ::= ${lit(JSON.stringify(p.name))} ws "," ws ${lit(JSON.stringify(argsKey))} ws ":" ws ${p.root} ws`),
    WS_RULE,
  ];
  for (const p of parts) lines.push(...p.rules);
  return lines;
}

function grammarText(lines: readonly string[]): string {
  return `${lines.join("\n")}\n`;
}

// ---- parsing helpers: a tolerant scanner that finds where JSON values end ----------------------

/** Where a scan stopped: an index just past the value, or why it could not finish. */
type Scan = number | "truncated" | "invalid";

function skipSpace(text: string, i: number): number {
  while (i < text.length && /\s/.test(text[i] as string)) i++;
  return i;
}

function scanString(text: string, i: number): Scan {
  for (let p = i + 1; p < text.length; p++) {
    if (text[p] === "\\") p++;
    else if (text[p] === '"') return p + 1;
  }
  return "truncated";
}

/**
 * The end of the JSON-ish value at `i`: strings and brackets are matched, the rest is not checked
 * (so arguments that are not valid JSON still have an extent).
 */
function scanValue(text: string, i: number): Scan {
  const c = text[i];
  if (c === undefined) return "truncated";
  if (c === '"') return scanString(text, i);
  if (c === "{" || c === "[") {
    const stack: string[] = [];
    for (let p = i; p < text.length; p++) {
      const ch = text[p] as string;
      if (ch === '"') {
        const end = scanString(text, p);
        if (typeof end !== "number") return end;
        p = end - 1;
      } else if (ch === "{" || ch === "[") stack.push(ch === "{" ? "}" : "]");
      else if (ch === "}" || ch === "]") {
        if (stack.pop() !== ch) return "invalid";
        if (stack.length === 0) return p + 1;
      }
    }
    return "truncated";
  }
  let p = i;
  while (p < text.length && !/[\s,\]}]/.test(text[p] as string)) p++;
  return p === i ? "invalid" : p;
}

/** An object's members as raw text, by key (the first of repeated keys wins). */
interface Members {
  readonly fields: Map<string, string>;
  readonly end: number;
}

function scanObject(text: string, i: number): Members | "truncated" | "invalid" {
  const fields = new Map<string, string>();
  let p = skipSpace(text, i + 1);
  if (text[p] === "}") return { fields, end: p + 1 };
  for (;;) {
    if (p >= text.length) return "truncated";
    if (text[p] !== '"') return "invalid";
    const keyEnd = scanString(text, p);
    if (typeof keyEnd !== "number") return keyEnd;
    const key = parseJson(text.slice(p, keyEnd));
    if (typeof key !== "string") return "invalid";
    p = skipSpace(text, keyEnd);
    if (p >= text.length) return "truncated";
    if (text[p] !== ":") return "invalid";
    p = skipSpace(text, p + 1);
    const valueEnd = scanValue(text, p);
    if (typeof valueEnd !== "number") return valueEnd;
    if (!fields.has(key)) fields.set(key, text.slice(p, valueEnd));
    p = skipSpace(text, valueEnd);
    if (p >= text.length) return "truncated";
    if (text[p] === "}") return { fields, end: p + 1 };
    if (text[p] !== ",") return "invalid";
    p = skipSpace(text, p + 1);
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * Arguments as the model wrote them; a JSON string holding them (`"arguments": "{\"a\": 1}"`,
 * as OpenAI's API spells them) is unwrapped to its text.
 */
function argumentsText(raw: string | undefined): string {
  if (raw === undefined) return "{}";
  if (raw.startsWith('"')) {
    const inner = parseJson(raw);
    if (typeof inner === "string") return inner;
  }
  return raw;
}

/** A call from a JSON call object's members, if it names a function. */
function callOf(members: Members, argKeys: readonly string[]): ParsedToolCall | undefined {
  const rawName = members.fields.get("name");
  const name = rawName === undefined ? undefined : parseJson(rawName);
  if (typeof name !== "string" || name.length === 0) return undefined;
  const key = argKeys.find((k) => members.fields.has(k));
  const args = argumentsText(key === undefined ? undefined : members.fields.get(key));
  const rawId = members.fields.get("id");
  const id = rawId === undefined ? undefined : parseJson(rawId);
  return typeof id === "string" && id.length > 0 ? { name, arguments: args, id } : { name, arguments: args };
}

/** A span of the text that is a call. */
interface Span {
  readonly start: number;
  readonly end: number;
}

/** The reply: the text outside the calls (trimmed at each call), and the calls. */
function replyOf(text: string, spans: readonly Span[], calls: readonly ParsedToolCall[]): ParsedReply {
  if (calls.length === 0) return { content: text, calls: [] };
  const pieces: string[] = [];
  let at = 0;
  for (const span of spans) {
    pieces.push(text.slice(at, span.start));
    at = span.end;
  }
  pieces.push(text.slice(at));
  return { content: pieces.map((p) => p.trim()).filter((p) => p !== "").join("\n"), calls };
}

/** Runs a parser so that, whatever happens, the text comes back at least as content. */
function safely(parse: (text: string, tools: readonly ChatTool[] | undefined) => ParsedReply): (text: string, tools?: readonly ChatTool[]) => ParsedReply {
  return (text: string, tools?: readonly ChatTool[]) => {
    const input = typeof text === "string" ? text : String(text);
    try {
      return parse(input, Array.isArray(tools) ? tools : undefined);
    } catch {
      return { content: input, calls: [] };
    }
  };
}

// ---- hermes ------------------------------------------------------------------------------------

const HERMES_OPEN = "<tool_call>";
const HERMES_CLOSE = "</tool_call>";

/** The call inside one `<tool_call>` block, if it is one. */
function hermesCall(inner: string, closed: boolean): ParsedToolCall | undefined {
  const start = skipSpace(inner, 0);
  if (inner[start] !== "{") return undefined;
  const members = scanObject(inner, start);
  if (typeof members === "object" && inner.slice(members.end).trim() === "") return callOf(members, ["arguments", "parameters"]);
  if (!closed) return undefined;
  // Inside closed tags, a call whose arguments break even the bracket structure is still a
  // call: the arguments are whatever lies between "arguments": and the last brace.
  const m = /^\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"(?:arguments|parameters)"\s*:\s*([\s\S]*?)\s*\}\s*$/.exec(inner);
  const name = m ? parseJson(m[1] as string) : undefined;
  if (!m || typeof name !== "string" || name.length === 0) return undefined;
  return { name, arguments: m[2] as string };
}

function parseHermes(text: string): ParsedReply {
  const spans: Span[] = [];
  const calls: ParsedToolCall[] = [];
  let from = 0;
  for (;;) {
    const open = text.indexOf(HERMES_OPEN, from);
    if (open === -1) break;
    const bodyStart = open + HERMES_OPEN.length;
    const close = text.indexOf(HERMES_CLOSE, bodyStart);
    const nextOpen = text.indexOf(HERMES_OPEN, bodyStart);
    if (close !== -1 && (nextOpen === -1 || close < nextOpen)) {
      const call = hermesCall(text.slice(bodyStart, close), true);
      if (call) {
        spans.push({ start: open, end: close + HERMES_CLOSE.length });
        calls.push(call);
      }
      from = close + HERMES_CLOSE.length;
    } else {
      // No closing tag (generation stopped on it): a complete object with nothing after it
      // still counts; a cut-off one stays text.
      const end = nextOpen === -1 ? text.length : nextOpen;
      const call = hermesCall(text.slice(bodyStart, end), false);
      if (call) {
        spans.push({ start: open, end });
        calls.push(call);
      }
      from = bodyStart;
    }
  }
  return replyOf(text, spans, calls);
}

const HERMES: ToolCallFormat = Object.freeze({
  name: "hermes",
  trigger: HERMES_OPEN,
  grammar(tools: readonly ChatTool[], only?: string): string {
    // Qwen and Hermes write "<tool_call>\n{...}\n</tool_call>"; ws covers those newlines.
    return grammarText([`root ::= "\\n"? ${lit(HERMES_OPEN)} ws call ws ${lit(HERMES_CLOSE)}`, ...jsonCallRules(tools, only, "arguments")]);
  },
  parse: safely(parseHermes),
});

// ---- llama3 ------------------------------------------------------------------------------------

const PYTHON_TAG = "<|python_tag|>";

/**
 * Llama 3.x answers a call with the bare object, so calls are recognised only as the end of the
 * reply (one or more objects, `;`-separated as some replies have them): an example object in
 * the middle of prose stays prose.
 */
function parseLlama3(text: string): ParsedReply {
  for (const m of text.matchAll(/\{\s*(?:"type"\s*:\s*"function"\s*,\s*)?"name"\s*:/g)) {
    const start = m.index;
    const calls: ParsedToolCall[] = [];
    let p = start;
    let ok = false;
    for (;;) {
      const members = scanObject(text, p);
      // A cut-off object: whatever follows is inside it, so no later start can be a call.
      if (members === "truncated") return { content: text, calls: [] };
      if (members === "invalid") break;
      const call = callOf(members, ["parameters", "arguments"]);
      if (!call) break;
      calls.push(call);
      p = members.end;
      while (p < text.length && /[\s;]/.test(text[p] as string)) p++;
      if (text.startsWith(PYTHON_TAG, p)) p = skipSpace(text, p + PYTHON_TAG.length);
      if (p >= text.length) {
        ok = true;
        break;
      }
      if (text[p] !== "{") break;
    }
    if (ok) {
      let before = text.slice(0, start).trimEnd();
      if (before.endsWith(PYTHON_TAG)) before = before.slice(0, -PYTHON_TAG.length);
      return { content: before.trim(), calls };
    }
  }
  return { content: text, calls: [] };
}

const LLAMA3: ToolCallFormat = Object.freeze({
  name: "llama3",
  trigger: '{"name"',
  grammar(tools: readonly ChatTool[], only?: string): string {
    return grammarText([`root ::= call`, ...jsonCallRules(tools, only, "parameters")]);
  },
  parse: safely(parseLlama3),
});

// ---- mistral (Nemo) ----------------------------------------------------------------------------

const TOOL_CALLS = "[TOOL_CALLS]";

/** The calls of a `[TOOL_CALLS]` JSON list (or single object) at `i`, and where it ends. */
function mistralList(text: string, i: number): { calls: ParsedToolCall[]; end: number } | undefined {
  let p = skipSpace(text, i);
  const calls: ParsedToolCall[] = [];
  if (text[p] === "{") {
    const members = scanObject(text, p);
    const call = typeof members === "object" ? callOf(members, ["arguments", "parameters"]) : undefined;
    return call && typeof members === "object" ? { calls: [call], end: members.end } : undefined;
  }
  if (text[p] !== "[") return undefined;
  p = skipSpace(text, p + 1);
  for (;;) {
    if (text[p] !== "{") return undefined;
    const members = scanObject(text, p);
    if (typeof members !== "object") return undefined;
    const call = callOf(members, ["arguments", "parameters"]);
    if (!call) return undefined;
    calls.push(call);
    p = skipSpace(text, members.end);
    if (text[p] === "]") return { calls, end: p + 1 };
    if (text[p] !== ",") return undefined;
    p = skipSpace(text, p + 1);
  }
}

function parseMistral(text: string): ParsedReply {
  const spans: Span[] = [];
  const calls: ParsedToolCall[] = [];
  let from = 0;
  for (;;) {
    const at = text.indexOf(TOOL_CALLS, from);
    if (at === -1) break;
    const list = mistralList(text, at + TOOL_CALLS.length);
    if (list) {
      spans.push({ start: at, end: list.end });
      calls.push(...list.calls);
      from = list.end;
    } else from = at + TOOL_CALLS.length;
  }
  return replyOf(text, spans, calls);
}

const MISTRAL: ToolCallFormat = Object.freeze({
  name: "mistral",
  trigger: TOOL_CALLS,
  grammar(tools: readonly ChatTool[], only?: string): string {
    // The template insists on ids of 9 alphanumerics, after the arguments.
    const id = `"," ws ${lit('"id"')} ws ":" ws "\\"" [a-zA-Z0-9]{9} "\\"" ws `;
    return grammarText([`root ::= ${lit(TOOL_CALLS)} " "? "[" ws call ws "]"`, ...jsonCallRules(tools, only, "arguments", id)]);
  },
  parse: safely(parseMistral),
});

// ---- mistral-args (Small 3.2, Devstral, Ministral 3) --------------------------------------------

const ARGS = "[ARGS]";
const CALL_ID = "[CALL_ID]";

function parseMistralArgs(text: string): ParsedReply {
  const spans: Span[] = [];
  const calls: ParsedToolCall[] = [];
  let from = 0;
  for (;;) {
    const at = text.indexOf(TOOL_CALLS, from);
    if (at === -1) break;
    const headStart = at + TOOL_CALLS.length;
    from = headStart;
    const argsAt = text.indexOf(ARGS, headStart);
    const next = text.indexOf(TOOL_CALLS, headStart);
    if (argsAt === -1 || (next !== -1 && next < argsAt)) continue;
    const head = text.slice(headStart, argsAt);
    const idAt = head.indexOf(CALL_ID);
    const name = (idAt === -1 ? head : head.slice(0, idAt)).trim();
    const id = idAt === -1 ? undefined : head.slice(idAt + CALL_ID.length).trim();
    if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(name)) continue;
    const limit = next === -1 ? text.length : next;
    const region = text.slice(argsAt + ARGS.length, limit);
    const start = skipSpace(region, 0);
    if (start >= region.length) continue; // cut off right after [ARGS]
    let args: string;
    let end: number;
    const scanned = scanValue(region, start);
    if (typeof scanned === "number" && (region[start] === "{" || region[start] === "[" || region[start] === '"')) {
      args = region.slice(start, scanned);
      end = argsAt + ARGS.length + scanned;
    } else if (scanned === "truncated" && next === -1) {
      continue; // cut off inside the arguments
    } else {
      // Not JSON-shaped: the arguments run to the next call or the end; the session reports them.
      args = region.trim();
      end = limit;
    }
    spans.push({ start: at, end });
    calls.push(id ? { name, arguments: args, id } : { name, arguments: args });
    from = end;
  }
  return replyOf(text, spans, calls);
}

function mistralArgs(callId: boolean): ToolCallFormat {
  return Object.freeze({
    name: "mistral-args" as const,
    trigger: TOOL_CALLS,
    grammar(tools: readonly ChatTool[], only?: string): string {
      const parts = toolGrammars(tools, only);
      // Mistral-Small-3.2's template puts "[CALL_ID]<9 alphanumerics>" between name and [ARGS].
      const id = callId ? ` ( ${lit(CALL_ID)} [a-zA-Z0-9]{9} )?` : "";
      const lines = [`root ::= ${lit(TOOL_CALLS)} ( ${parts.map((p) => `${lit(p.name)}${id} ${lit(ARGS)} ${p.root}`).join(" | ")} )`];
      for (const p of parts) lines.push(...p.rules);
      return grammarText(lines);
    },
    parse: safely(parseMistralArgs),
  });
}

// ---- qwen3-xml (Qwen3-Coder, Qwen3.5, Nemotron 3 Nano, Step-3.5-Flash) -------------------------

const TOOL_CALL_OPEN = "<tool_call>";
const TOOL_CALL_CLOSE = "</tool_call>";
const FUNCTION_OPEN = "<function=";
const FUNCTION_CLOSE = "</function>";
const PARAMETER_OPEN = "<parameter=";
const PARAMETER_CLOSE = "</parameter>";
/** What ends a value as the templates write it: the value is followed by "\n</parameter>\n". */
const VALUE_END = `\n${PARAMETER_CLOSE}`;
const XML_NAME = /^[A-Za-z0-9_.:-]{1,128}$/;

type SchemaObject = { readonly [key: string]: unknown };

function isSchemaObject(value: unknown): value is SchemaObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Keywords that only annotate (as lib/grammar/json-schema.ts ignores them). */
const ANNOTATIONS = new Set(["title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly", "$defs", "definitions"]);

/** The keywords a parameter written as bare text may have besides annotations. */
const TEXT_KEYWORDS = new Set(["type", "enum", "const", "minLength", "maxLength"]);

/** The keywords of a tool's parameters schema this format can write (besides annotations). */
const PARAMETERS_KEYWORDS = new Set(["type", "properties", "required", "additionalProperties"]);

/** The target of a local `$ref` ("#/$defs/name") in `root`, or undefined. */
function refTarget(root: unknown, ref: string): unknown {
  if (!ref.startsWith("#")) return undefined;
  let pointer: string;
  try {
    pointer = decodeURIComponent(ref.slice(1));
  } catch {
    return undefined;
  }
  if (pointer === "") return root;
  if (!pointer.startsWith("/")) return undefined;
  let node: unknown = root;
  for (const raw of pointer.slice(1).split("/")) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (Array.isArray(node) && /^(0|[1-9][0-9]*)$/.test(key)) node = node[Number(key)];
    else if (isSchemaObject(node) && Object.hasOwn(node, key)) node = node[key];
    else return undefined;
  }
  return node;
}

/** A parameter's schema with a bare `$ref` (annotations beside it at most) or a one-item `allOf` followed. */
function followRefs(schema: unknown, root: unknown): unknown {
  for (let hops = 0; hops < 16 && isSchemaObject(schema); hops++) {
    const keys = Object.keys(schema).filter((k) => !ANNOTATIONS.has(k));
    if (keys.length === 1 && keys[0] === "$ref" && typeof schema.$ref === "string") schema = refTarget(root, schema.$ref);
    else if (keys.length === 1 && keys[0] === "allOf" && Array.isArray(schema.allOf) && schema.allOf.length === 1) schema = schema.allOf[0];
    else break;
  }
  return schema;
}

/**
 * The schema of a parameter written as bare text, as the templates write strings: a string type
 * with at most `enum`/`const` and length bounds (directly or through a `$ref`), else undefined
 * (the value is JSON: numbers, objects, strings with a `format`, mixed types...).
 */
function textSchema(schema: unknown, root: unknown): SchemaObject | undefined {
  const s = followRefs(schema, root);
  if (!isSchemaObject(s)) return undefined;
  if (Object.keys(s).some((k) => !TEXT_KEYWORDS.has(k) && !ANNOTATIONS.has(k))) return undefined;
  const type = s.type;
  if (type === "string" || (Array.isArray(type) && type.length === 1 && type[0] === "string")) return s;
  if (type !== undefined) return undefined;
  if (s.enum !== undefined || s.const !== undefined) {
    const values: unknown[] = [...(Array.isArray(s.enum) ? (s.enum as unknown[]) : []), ...(s.const === undefined ? [] : [s.const])];
    return values.length > 0 && values.every((v) => typeof v === "string") ? s : undefined;
  }
  return s.minLength !== undefined || s.maxLength !== undefined ? s : undefined;
}

/** Whether a schema may accept a string (for reading Python's True/False/None as JSON where it cannot). */
function mayBeString(schema: unknown, root: unknown, depth = 0): boolean {
  const s = followRefs(schema, root);
  if (!isSchemaObject(s) || depth > 16) return true;
  if (s.type !== undefined) return s.type === "string" || (Array.isArray(s.type) && s.type.includes("string"));
  if (s.enum !== undefined || s.const !== undefined) {
    return [...(Array.isArray(s.enum) ? (s.enum as unknown[]) : []), ...(s.const === undefined ? [] : [s.const])].some((v) => typeof v === "string");
  }
  const branches = s.anyOf ?? s.oneOf;
  if (Array.isArray(branches)) return branches.some((b) => mayBeString(b, root, depth + 1));
  return true;
}

/** Whether a value can be written bare: its block must not end before the value does. */
function writableText(value: string): boolean {
  return !`\n${value}`.includes(VALUE_END);
}

/** GBNF items in sequence, skipping empty ones. */
function gseq(...items: string[]): string {
  return items.filter((item) => item !== "").join(" ");
}

/** The rules of bare-text values, shared by every parameter of one grammar. */
class TextRules {
  readonly lines: string[] = [];
  private readonly made = new Set<string>();

  private define(name: string, body: string): string {
    if (!this.made.has(name)) {
      this.made.add(name);
      this.lines.push(`${name} ::= ${body}`);
    }
    return name;
  }

  /**
   * Any text whose block does not end early: each of its lines (the first comes after the
   * opening tag's newline too) must not start with "</parameter>".
   */
  text(): string {
    const line = (i: number): string => {
      const c = PARAMETER_CLOSE[i] as string;
      const other = `[^${c}\\n] [^\\n]*`;
      return i + 1 === PARAMETER_CLOSE.length ? `( ${other} )?` : `( ${other} | ${textLiteral(c)} ${line(i + 1)} )?`;
    };
    this.define("xml-line", line(0));
    return this.define("xml-text", `xml-line ( "\\n" xml-line )*`);
  }

  /**
   * Text of `min` to `max` characters (code points, as JSON Schema counts them; `max` undefined:
   * no bound). Counting and the whole "</parameter>" check do not mix in a small grammar, so the
   * counted characters keep a simpler rule: no line starts with "</". State s is a line's start,
   * l a line that has just begun with "<", f the rest of a line. Past `min` without a `max`, the
   * text goes on as {@link text}.
   */
  bounded(min: number, max: number | undefined): string {
    type State = "s" | "l" | "f";
    const base = `xml-text-${min}-${max ?? "n"}`;
    const name = (state: State, i: number) => `${base}-${state}${i}`;
    const end = max ?? min;
    const tail: Record<State, string> =
      max !== undefined
        ? { s: "", l: "", f: "" }
        : { s: this.text(), l: this.define("xml-rest-lt", `( [^/\\n] [^\\n]* )? ( "\\n" xml-line )*`), f: this.define("xml-rest", `[^\\n]* ( "\\n" xml-line )*`) };
    if (end === 0) return tail.s;
    if (this.made.has(name("s", 0))) return name("s", 0);
    for (let i = end - 1; i >= 0; i--) {
      const next = (state: State) => (i + 1 === end ? tail[state] : name(state, i + 1));
      const newline = gseq('"\\n"', next("s"));
      const bodies: Record<State, string> = {
        s: `${gseq("[^<\\n]", next("f"))} | ${gseq('"<"', next("l"))} | ${newline}`,
        l: `${gseq("[^/\\n]", next("f"))} | ${newline}`,
        f: `${gseq("[^\\n]", next("f"))} | ${newline}`,
      };
      for (const state of i === 0 ? (["s"] as const) : (["s", "l", "f"] as const)) {
        this.define(name(state, i), max !== undefined && i >= min ? `( ${bodies[state]} )?` : bodies[state]);
      }
    }
    return name("s", 0);
  }
}

/** The GBNF of a bare-text value under `s` (from {@link textSchema}), or undefined when none can be written. */
function textValueRule(s: SchemaObject, rules: TextRules): string | undefined {
  const min = typeof s.minLength === "number" ? s.minLength : 0;
  const max = typeof s.maxLength === "number" ? s.maxLength : undefined;
  if (s.enum !== undefined || s.const !== undefined) {
    let values: unknown[] = Array.isArray(s.enum) ? [...(s.enum as unknown[])] : [s.const];
    if (s.const !== undefined) values = values.filter((v) => v === s.const);
    const out: string[] = [];
    for (const v of values) {
      if (typeof v !== "string" || !writableText(v)) continue;
      const length = [...v].length;
      if (length < min || (max !== undefined && length > max)) continue;
      const literal = textLiteral(v);
      if (!out.includes(literal)) out.push(literal);
    }
    return out.length === 0 ? undefined : out.length === 1 ? (out[0] as string) : `( ${out.join(" | ")} )`;
  }
  if (max !== undefined && max < min) return undefined;
  return min === 0 && max === undefined ? rules.text() : rules.bounded(min, max);
}

/**
 * A parameter's schema for converting on its own: the parameters' `$defs`/`definitions` go with
 * it, so `#/$defs/...` still points where it did; a `$ref` anywhere else in the parameters
 * (`#`, `#/properties/...`) would point elsewhere, and is refused.
 */
function parameterSchema(schema: unknown, root: SchemaObject, where: string): unknown {
  const seen = new Set<unknown>();
  const stack: unknown[] = [schema];
  while (stack.length > 0) {
    const node = stack.pop();
    if (typeof node !== "object" || node === null || seen.has(node)) continue;
    seen.add(node);
    if (Array.isArray(node)) {
      stack.push(...(node as unknown[]));
      continue;
    }
    for (const [key, value] of Object.entries(node)) {
      if (key === "$ref" && typeof value === "string") {
        let pointer = value;
        try {
          pointer = decodeURIComponent(value);
        } catch {
          // schemaRules reports it
        }
        if (!/^#\/(\$defs|definitions)\//.test(pointer)) {
          invalidArgument(`${where}: "$ref" ${JSON.stringify(value)} is not supported in the qwen3-xml tool-call format (only "#/$defs/..." and "#/definitions/...")`);
        }
        stack.push(refTarget(root, value));
      } else if (key !== "$defs" && key !== "definitions") stack.push(value);
    }
  }
  if (!isSchemaObject(schema)) return schema;
  const out: Record<string, unknown> = { ...schema };
  for (const key of ["$defs", "definitions"]) {
    if (root[key] === undefined) delete out[key];
    else out[key] = root[key];
  }
  return out;
}

/** The parameter blocks of one tool's call, in the order of `properties` (then required names it does not declare). */
function xmlParameters(tool: ChatTool, index: number, text: TextRules, lines: string[]): string {
  const root = tool.parameters as SchemaObject;
  const where = `tool "${tool.name}" parameters`;
  for (const key of Object.keys(root)) {
    if (!PARAMETERS_KEYWORDS.has(key) && !ANNOTATIONS.has(key)) invalidArgument(`${where}: "${key}" at the top is not supported in the qwen3-xml tool-call format (it writes one block per property)`);
  }
  const properties = isSchemaObject(root.properties) ? root.properties : {};
  const required = new Set(Array.isArray(root.required) ? (root.required as unknown[]).filter((r): r is string => typeof r === "string") : []);
  const extra = root.additionalProperties;
  const entries: [string, unknown][] = Object.entries(properties);
  for (const key of required) if (!Object.hasOwn(properties, key)) entries.push([key, extra === undefined ? true : extra]);
  const items: string[] = [];
  entries.forEach(([key, schema], j) => {
    const must = required.has(key);
    const at = `tool "${tool.name}" parameter ${JSON.stringify(key)}`;
    let value: string | undefined;
    if (key === "" || /[<>\r\n]/.test(key)) value = undefined;
    else {
      const bare = textSchema(schema, root);
      if (bare !== undefined) value = textValueRule(bare, text);
      else if (schema !== false) {
        const converted = schemaRules(parameterSchema(schema, root, at) as JsonSchema, `t${index}p${j}`, { where: at });
        lines.push(...converted.rules);
        value = converted.root;
      }
    }
    if (value === undefined) {
      if (must) invalidArgument(`${at}: no value of it can be written in the qwen3-xml tool-call format`);
      return;
    }
    const item = gseq(textLiteral(`${PARAMETER_OPEN}${key}>\n`), value, textLiteral(`${VALUE_END}\n`));
    items.push(must ? item : `( ${item} )?`);
  });
  return items.join(" ");
}

/** One `<function=...>` block: its name, its parameters' raw values (the first of repeated names wins), and where it ends. */
interface XmlFunction {
  readonly name: string;
  readonly params: readonly (readonly [string, string])[];
  readonly end: number;
}

/**
 * The function block at `at` (which starts with "<function="). Strictly, a value ends at the
 * first "\n</parameter>", as the templates write it (a value may hold "</parameter>" after
 * anything but a newline); leniently, for replies that leave out the newlines, at the first
 * "</parameter>" followed by another parameter or the end of the function.
 */
function xmlFunction(text: string, at: number, lenient: boolean): XmlFunction | undefined {
  let p = at + FUNCTION_OPEN.length;
  const gt = text.indexOf(">", p);
  if (gt === -1) return undefined;
  const name = text.slice(p, gt);
  if (!XML_NAME.test(name)) return undefined;
  p = gt + 1;
  const params: [string, string][] = [];
  for (;;) {
    p = skipSpace(text, p);
    if (text.startsWith(FUNCTION_CLOSE, p)) return { name, params, end: p + FUNCTION_CLOSE.length };
    if (!text.startsWith(PARAMETER_OPEN, p)) return undefined;
    const keyStart = p + PARAMETER_OPEN.length;
    const keyEnd = text.indexOf(">", keyStart);
    if (keyEnd === -1) return undefined;
    const key = text.slice(keyStart, keyEnd);
    if (key === "" || /[\r\n<]/.test(key)) return undefined;
    const start = keyEnd + 1;
    let value: string;
    if (!lenient) {
      // ">\n", the value, "\n</parameter>"; an empty value written with one newline (">\n</parameter>") too.
      const close = text.indexOf(VALUE_END, start);
      if (close === -1) return undefined;
      value = text[start] === "\n" ? text.slice(Math.min(start + 1, close), close) : text.slice(start, close);
      p = close + VALUE_END.length;
    } else {
      let close = text.indexOf(PARAMETER_CLOSE, start);
      for (;;) {
        if (close === -1) return undefined;
        const after = skipSpace(text, close + PARAMETER_CLOSE.length);
        if ([PARAMETER_OPEN, FUNCTION_CLOSE, TOOL_CALL_CLOSE].some((tag) => text.startsWith(tag, after))) break;
        close = text.indexOf(PARAMETER_CLOSE, close + 1);
      }
      value = text.slice(start, close);
      if (value.startsWith("\n")) value = value.slice(1);
      if (value.endsWith("\n")) value = value.slice(0, -1);
      p = close + PARAMETER_CLOSE.length;
    }
    if (!params.some(([k]) => k === key)) params.push([key, value]);
  }
}

function isJsonText(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

const PYTHON_LITERALS: Readonly<Record<string, string>> = { True: "true", False: "false", None: "null" };

/**
 * A parameter's value as JSON text. A parameter whose schema is a string (see
 * {@link textSchema}) is the text as written; any other is its JSON when the text parses (Python's
 * True/False/None too, where the schema takes no string), else the text as a string. Without a
 * schema (no tools, an unknown tool or parameter), text that parses as JSON is JSON.
 */
function xmlValue(text: string, schema: unknown, root: unknown): string {
  if (schema !== undefined && textSchema(schema, root) !== undefined) return JSON.stringify(text);
  const trimmed = text.trim();
  if (trimmed !== "" && isJsonText(trimmed)) return trimmed;
  const python = PYTHON_LITERALS[trimmed];
  if (python !== undefined && Object.hasOwn(PYTHON_LITERALS, trimmed) && schema !== undefined && !mayBeString(schema, root)) return python;
  return JSON.stringify(text);
}

/** A call's arguments as a JSON object's text, each value read by its schema in `tool` when there is one. */
function xmlArguments(fn: XmlFunction, tools: readonly ChatTool[] | undefined): string {
  const tool = tools?.find((t) => isSchemaObject(t) && t.name === fn.name);
  const root = tool && isSchemaObject(tool.parameters) ? tool.parameters : undefined;
  const properties = root && isSchemaObject(root.properties) ? root.properties : undefined;
  const extra = root && isSchemaObject(root.additionalProperties) ? root.additionalProperties : undefined;
  const members = fn.params.map(([key, value]) => {
    const schema = properties && Object.hasOwn(properties, key) ? properties[key] : extra;
    return `${JSON.stringify(key)}: ${xmlValue(value, schema, root)}`;
  });
  return `{${members.join(", ")}}`;
}

/**
 * The calls: `<tool_call>` blocks around one function each, and bare `<function=...>` blocks
 * (Qwen3-Coder sometimes leaves out `<tool_call>`, as llama.cpp notes). A call needs its
 * `</function>`; its `</tool_call>` may be missing (generation stopped on it).
 */
function parseQwen3Xml(text: string, tools: readonly ChatTool[] | undefined): ParsedReply {
  const spans: Span[] = [];
  const calls: ParsedToolCall[] = [];
  let from = 0;
  // The next of each tag at or after `from` (Infinity: none), looked for again only once passed.
  const find = (tag: string) => {
    const at = text.indexOf(tag, from);
    return at === -1 ? Infinity : at;
  };
  let open = -1;
  let bare = -1;
  for (;;) {
    if (open < from) open = find(TOOL_CALL_OPEN);
    if (bare < from) bare = find(FUNCTION_OPEN);
    if (open === Infinity && bare === Infinity) break;
    const wrapped = open < bare;
    const start = wrapped ? open : bare;
    const fnAt = wrapped ? skipSpace(text, open + TOOL_CALL_OPEN.length) : bare;
    const fn = text.startsWith(FUNCTION_OPEN, fnAt) ? (xmlFunction(text, fnAt, false) ?? xmlFunction(text, fnAt, true)) : undefined;
    if (!fn) {
      from = start + (wrapped ? TOOL_CALL_OPEN.length : FUNCTION_OPEN.length);
      continue;
    }
    let end = fn.end;
    const close = skipSpace(text, end);
    if (wrapped && text.startsWith(TOOL_CALL_CLOSE, close)) end = close + TOOL_CALL_CLOSE.length;
    spans.push({ start, end });
    calls.push({ name: fn.name, arguments: xmlArguments(fn, tools) });
    from = end;
  }
  return replyOf(text, spans, calls);
}

const QWEN3_XML: ToolCallFormat = Object.freeze({
  name: "qwen3-xml",
  trigger: TOOL_CALL_OPEN,
  grammar(tools: readonly ChatTool[], only?: string): string {
    checkGrammarRequest(tools, only);
    const text = new TextRules();
    const callLines: string[] = [];
    const valueLines: string[] = [];
    tools.forEach((tool, i) => {
      if (only !== undefined && tool.name !== only) return;
      const params = xmlParameters(tool, i, text, valueLines);
      callLines.push(`call-${i} ::= ${gseq(textLiteral(`${FUNCTION_OPEN}${tool.name}>\n`), params)}`);
    });
    const calls = callLines.map((line) => line.slice(0, line.indexOf(" ")));
    const choice = calls.length === 1 ? (calls[0] as string) : `( ${calls.join(" | ")} )`;
    const root = `root ::= ${textLiteral(`${TOOL_CALL_OPEN}\n`)} ${choice} ${textLiteral(`${FUNCTION_CLOSE}\n${TOOL_CALL_CLOSE}`)}`;
    return grammarText([root, ...callLines, ...valueLines, ...text.lines]);
  },
  parse: safely(parseQwen3Xml),
});
