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
 */
import { describeValue, invalidArgument } from "../errors.js";
import { schemaRules } from "../grammar/json-schema.js";
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
export type ToolCallFormatName = "hermes" | "llama3" | "mistral" | "mistral-args";

/** One family's way of writing tool calls. */
export interface ToolCallFormat {
  readonly name: ToolCallFormatName;
  /** GBNF forcing the reply to be exactly one call (of tool `only`, if given) with arguments valid under that tool's parameters schema; uses schemaRules with a distinct prefix per tool. The grammar may allow a leading/trailing newline as the family writes it. */
  grammar(tools: readonly ChatTool[], only?: string): string;
  /** Splits a reply into content and calls. Never throws, whatever the text: text that is not a well-formed call stays in `content`; a call whose arguments are not valid JSON still comes back as a call with its raw arguments text (the session tells the model about the error). */
  parse(text: string): ParsedReply;
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

/**
 * For each tool the grammar may call: its parameters' rules (prefix t<index>) and top rule.
 * `only` narrows to one tool.
 */
function toolGrammars(tools: readonly ChatTool[], only: string | undefined): { name: string; root: string; rules: string[] }[] {
  checkTools(tools);
  if (tools.length === 0) invalidArgument("a tool-call grammar needs at least one tool");
  if (only !== undefined && !tools.some((t) => t.name === only)) invalidArgument(`there is no tool named ${describeValue(only)}`);
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
function safely(parse: (text: string) => ParsedReply): (text: string) => ParsedReply {
  return (text: string) => {
    const input = typeof text === "string" ? text : String(text);
    try {
      return parse(input);
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
