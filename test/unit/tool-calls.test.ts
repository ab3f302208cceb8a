/**
 * Tool-call formats (lib/chat/tool-calls.ts): which template writes which format, parsing
 * replies (what the real templates render for an assistant's tool_calls, and damaged replies),
 * and the grammars that force one call, checked with the test GBNF recognizer.
 */
import { errorOf } from "../helpers/errors.js";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import { checkTools, toolCallFormat, type ToolCallFormat, type ToolCallFormatName } from "../../lib/chat/tool-calls.js";
import type { ChatTool } from "../../lib/chat/template.js";
import { packageRoot } from "../../lib/system.js";
import { parseGbnf } from "../helpers/gbnf-match.js";

const TEMPLATES = join(packageRoot, "vendor", "llama.cpp", "models", "templates");
const source = (file: string) => readFileSync(join(TEMPLATES, file), "utf8");

function formatOf(file: string): ToolCallFormat {
  const format = toolCallFormat(source(file));
  if (format === undefined) throw new Error(`no format for ${file}`);
  return format;
}

/** The format each template's assistant tool_calls are written in (undefined: another format, or none). */
const EXPECTED: Readonly<Record<string, ToolCallFormatName | undefined>> = {
  "Apertus-8B-Instruct.jinja": undefined,
  "Apriel-1.6-15b-Thinker-fixed.jinja": undefined,
  "Bielik-11B-v3.0-Instruct.jinja": "hermes",
  "ByteDance-Seed-OSS.jinja": undefined,
  "Cohere2MoE.jinja": undefined,
  "CohereForAI-c4ai-command-r-plus-tool_use.jinja": undefined,
  "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja": undefined,
  "GLM-4.6.jinja": undefined, // <tool_call>name<arg_key>...
  "GLM-4.7-Flash.jinja": undefined,
  "GigaChat3-10B-A1.8B.jinja": undefined,
  "GigaChat3.1-10B-A1.8B.jinja": undefined,
  "HuggingFaceTB-SmolLM3-3B.jinja": undefined, // renders no tool calls
  "Kimi-K2-Instruct.jinja": undefined,
  "Kimi-K2-Thinking.jinja": undefined,
  "Kimi-K3.jinja": undefined,
  "LFM2-8B-A1B.jinja": undefined,
  "LFM2.5-8B-A1B.jinja": undefined,
  "LFM2.5-Instruct.jinja": undefined,
  "MiMo-VL.jinja": "hermes",
  "MiniMax-M1.jinja": undefined,
  "MiniMax-M2.jinja": undefined,
  "MiniMax-M3.jinja": undefined, // <tool_call> around <invoke>
  "Mistral-Small-3.2-24B-Instruct-2506.jinja": "mistral-args",
  "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja": "qwen3-xml",
  "NVIDIA-Nemotron-Nano-v2.jinja": undefined,
  "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja": "hermes",
  "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": "hermes",
  "Qwen-QwQ-32B.jinja": "hermes",
  "Qwen-Qwen2.5-7B-Instruct.jinja": "hermes",
  "Qwen-Qwen3-0.6B.jinja": "hermes",
  "Qwen3-Coder.jinja": "qwen3-xml",
  "Qwen3.5-4B.jinja": "qwen3-xml", // <tool_call> around <function=...><parameter=...>
  "Reka-Edge.jinja": "hermes",
  "Spark2.5.jinja": undefined,
  "StepFun3.5-Flash.jinja": "qwen3-xml",
  "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja": undefined,
  "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": undefined,
  "deepseek-ai-DeepSeek-V3.1.jinja": undefined,
  "deepseek-ai-DeepSeek-V3.2.jinja": undefined,
  "deepseek-ai-DeepSeek-V4-Flash-0731.jinja": undefined,
  "deepseek-ai-DeepSeek-V4.jinja": undefined,
  "fireworks-ai-llama-3-firefunction-v2.jinja": undefined, // Llama 3 headers, but functools[...]
  "google-gemma-2-2b-it.jinja": undefined,
  "google-gemma-4-31B-it-interleaved.jinja": undefined,
  "google-gemma-4-31B-it.jinja": undefined,
  "ibm-granite-granite-3.3-2B-Instruct.jinja": undefined,
  "ibm-granite-granite-4.0.jinja": "hermes",
  "ibm-granite-granite-4.1.jinja": "hermes",
  "inclusionai-ling-3.0-flash.jinja": undefined,
  "llama-cpp-deepseek-r1.jinja": undefined,
  "llama-cpp-rwkv-world.jinja": undefined,
  "meetkai-functionary-medium-v3.1.jinja": undefined, // Llama 3 headers, but <function=...>
  "meetkai-functionary-medium-v3.2.jinja": undefined,
  "meta-llama-Llama-3.1-8B-Instruct.jinja": "llama3",
  "meta-llama-Llama-3.2-3B-Instruct.jinja": "llama3",
  "meta-llama-Llama-3.3-70B-Instruct.jinja": "llama3",
  "microsoft-Phi-3.5-mini-instruct.jinja": undefined,
  "mistralai-Ministral-3-14B-Reasoning-2512.jinja": "mistral-args",
  "mistralai-Mistral-Nemo-Instruct-2407.jinja": "mistral",
  "moonshotai-Kimi-K2.jinja": undefined,
  "muse-glimmer.jinja": undefined,
  "openai-gpt-oss-120b.jinja": undefined,
  "openbmb-MiniCPM5-1B.jinja": undefined,
  "poolside-Laguna-S-2.1.jinja": undefined,
  "poolside-Laguna-XS-2.1.jinja": undefined,
  "poolside-Laguna-XS.2.jinja": undefined,
  "tencent-Hy3.jinja": undefined,
  "unsloth-Apriel-1.5.jinja": undefined, // <tool_calls>[...] list
  "unsloth-mistral-Devstral-Small-2507.jinja": "mistral-args",
  "upstage-Solar-Open-100B.jinja": undefined,
};

const TOOLS: readonly ChatTool[] = [
  {
    name: "get_weather",
    description: "Weather for a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", minLength: 1 }, days: { type: "integer", minimum: 1, maximum: 7 } },
      required: ["city"],
    },
  },
  { name: "ping", parameters: { type: "object", properties: {} } },
  { name: "set-mode_2", parameters: { type: "object", properties: { mode: { enum: ["fast", "slow"] } }, required: ["mode"], additionalProperties: false } },
];


/** The templates that write qwen3-xml. */
const QWEN3_XML_FILES = ["Qwen3-Coder.jinja", "Qwen3.5-4B.jinja", "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja", "StepFun3.5-Flash.jinja"];

/** A tool with parameters of every kind qwen3-xml writes differently: bare strings (also through a $ref), JSON for the rest. */
const RICH: ChatTool = {
  name: "edit",
  parameters: {
    type: "object",
    properties: {
      path: { type: "string" },
      code: { type: "string" },
      zip: { type: "string", maxLength: 5 },
      flag: { type: "string" },
      color: { $ref: "#/$defs/Color" },
      count: { type: "integer", minimum: 0 },
      ratio: { type: "number" },
      dry: { type: "boolean" },
      tags: { type: "array", items: { type: "string" }, maxItems: 3 },
      opts: { type: "object", properties: { depth: { type: "integer" }, mode: { $ref: "#/$defs/Color" } } },
      when: { type: "string", format: "date" },
    },
    required: ["path", "code"],
    $defs: { Color: { type: "string", enum: ["red", "green", "12"] } },
  },
};

const RICH_ARGS = {
  path: "src/a.ts",
  code: "if (a < b) {\n  <b>x</parameter></b>\n\n}\n",
  zip: "12345",
  flag: "true",
  color: "red",
  count: 3,
  ratio: 2.5,
  dry: false,
  tags: ["a", "b"],
  opts: { depth: 1, mode: "green" },
  when: "2024-02-29",
};

/** A reply's calls with their arguments parsed, for comparing. */
function calls(format: ToolCallFormat, text: string, tools?: readonly ChatTool[]): { name: string; args: unknown; id?: string }[] {
  return format.parse(text, tools).calls.map((c) => ({ name: c.name, args: JSON.parse(c.arguments) as unknown, ...(c.id === undefined ? {} : { id: c.id }) }));
}

// ---- what the real templates render ----------------------------------------------------------------

const RENDERED_CALLS = [
  { id: "call00001", type: "function", function: { name: "get_weather", arguments: { city: "Paris", days: 3 } } },
  { id: "call00002", type: "function", function: { name: "ping", arguments: {} } },
];

/** The assistant turn a template renders for `toolCalls`, without the end-of-turn marker. */
function renderedReply(file: string, toolCalls: readonly unknown[]): string {
  const template = new Template(source(file));
  const vars = { bos_token: "<s>", eos_token: "</s>", tools: [] };
  const user = { role: "user", content: "Weather in Paris?" };
  const prefix = template.render({ ...vars, messages: [user], add_generation_prompt: true });
  const full = template.render({ ...vars, messages: [user, { role: "assistant", content: "", tool_calls: toolCalls }], add_generation_prompt: false });
  const part = full.startsWith(prefix) ? full.slice(prefix.length) : full.slice(full.lastIndexOf("<|im_start|>assistant\n") + "<|im_start|>assistant\n".length);
  return part.replace(/(<\|im_end\|>|<\|eot_id\|>|<\|end_of_text\|>|<\/s>|<sep>|\s)+$/, "");
}

describe("toolCallFormat", () => {
  it("maps every template in llama.cpp's models/templates", () => {
    const files = readdirSync(TEMPLATES).filter((f) => f.endsWith(".jinja")).sort();
    expect(files.length).toBeGreaterThan(60);
    // A new template must be looked at and listed here.
    expect(files).toEqual(Object.keys(EXPECTED).sort());
    for (const file of files) expect(toolCallFormat(source(file))?.name, file).toBe(EXPECTED[file]);
  });

  it("gives each format its trigger", () => {
    expect(formatOf("Qwen-Qwen2.5-7B-Instruct.jinja").trigger).toBe("<tool_call>");
    expect(formatOf("meta-llama-Llama-3.1-8B-Instruct.jinja").trigger).toBe('{"name"');
    expect(formatOf("mistralai-Mistral-Nemo-Instruct-2407.jinja").trigger).toBe("[TOOL_CALLS]");
    expect(formatOf("unsloth-mistral-Devstral-Small-2507.jinja").trigger).toBe("[TOOL_CALLS]");
    expect(formatOf("Qwen3-Coder.jinja").trigger).toBe("<tool_call>");
  });

  it("tells qwen3-xml from the other <function=...> formats", () => {
    // Seed-OSS: <seed:tool_call>, values without newlines; functionary: <function=f>{json}</function>.
    expect(toolCallFormat(source("ByteDance-Seed-OSS.jinja"))).toBeUndefined();
    expect(toolCallFormat(source("meetkai-functionary-medium-v3.1.jinja"))).toBeUndefined();
    // The newlines as Jinja escapes or as themselves.
    expect(toolCallFormat("{{ '<tool_call>\\n<function=' + name + '>\\n<parameter=' + k + '>\\n' + v + '\\n</parameter>' }}")?.name).toBe("qwen3-xml");
    expect(toolCallFormat("<tool_call>\n<function={{ name }}>\n<parameter={{ k }}>\n{{ v }}\n</parameter>")?.name).toBe("qwen3-xml");
    expect(toolCallFormat("{{ '<tool_call><function=' ~ name ~ '>' }}<parameter={{ k }}>{{ v }}</parameter>")).toBeUndefined();
  });

  it("recognises the list form with a space, as Mistral-7B-Instruct-v0.3 writes it", () => {
    const v03 = toolCallFormat(`{{- "[TOOL_CALLS] [" }}{%- for tool_call in message.tool_calls %}{{ tool_call.function|tojson }}{% endfor %}{{ "]" }}`);
    expect(v03?.name).toBe("mistral");
    expect(v03?.parse('[TOOL_CALLS] [{"name": "f", "arguments": {}}]').calls).toEqual([{ name: "f", arguments: "{}" }]);
    expect(parseGbnf(v03?.grammar(TOOLS, "ping") ?? "").accepts('[TOOL_CALLS] [{"name": "ping", "arguments": {}, "id": "abcdefghi"}]')).toBe(true);
  });

  it("recognises nothing in text that is not a template", () => {
    expect(toolCallFormat("")).toBeUndefined();
    expect(toolCallFormat("{{ messages }}")).toBeUndefined();
    expect(toolCallFormat(42 as unknown as string)).toBeUndefined();
  });
});

describe("parse: what the templates render", () => {
  const expected = [
    { name: "get_weather", args: { city: "Paris", days: 3 } },
    { name: "ping", args: {} },
  ];
  const multi = [
    "Qwen-Qwen2.5-7B-Instruct.jinja",
    "Qwen-Qwen3-0.6B.jinja",
    "Qwen-QwQ-32B.jinja",
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
    "ibm-granite-granite-4.0.jinja",
    "ibm-granite-granite-4.1.jinja",
    "MiMo-VL.jinja",
    "Bielik-11B-v3.0-Instruct.jinja",
    "Reka-Edge.jinja",
    "unsloth-mistral-Devstral-Small-2507.jinja",
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja",
  ];
  for (const file of multi) {
    it(file, () => {
      const format = formatOf(file);
      const reply = renderedReply(file, RENDERED_CALLS);
      expect(calls(format, reply)).toEqual(expected);
      // Qwen3 renders an empty think block before the calls; it stays content.
      expect(format.parse(reply).content.replace(/<think>\s*<\/think>/, "")).toBe("");
    });
  }

  it("Mistral-Nemo-Instruct-2407 (ids in the list)", () => {
    const format = formatOf("mistralai-Mistral-Nemo-Instruct-2407.jinja");
    const ids = RENDERED_CALLS.map((c, i) => ({ ...c, id: `abcdefgh${i}` }));
    const reply = renderedReply("mistralai-Mistral-Nemo-Instruct-2407.jinja", ids);
    expect(calls(format, reply)).toEqual(expected.map((e, i) => ({ ...e, id: `abcdefgh${i}` })));
    expect(format.parse(reply).content).toBe("");
  });

  it("Mistral-Small-3.2 ([CALL_ID])", () => {
    const format = formatOf("Mistral-Small-3.2-24B-Instruct-2506.jinja");
    const ids = RENDERED_CALLS.map((c, i) => ({ ...c, id: `abcdefgh${i}` }));
    const reply = renderedReply("Mistral-Small-3.2-24B-Instruct-2506.jinja", ids);
    expect(reply).toContain("[CALL_ID]");
    expect(calls(format, reply)).toEqual(expected.map((e, i) => ({ ...e, id: `abcdefgh${i}` })));
  });

  for (const file of QWEN3_XML_FILES) {
    it(`${file} (qwen3-xml)`, () => {
      const format = formatOf(file);
      const reply = renderedReply(file, RENDERED_CALLS);
      expect(reply).toContain("<parameter=city>\nParis\n</parameter>");
      // With the tools, each value is read by its schema; without, "3" is JSON and "Paris" is not.
      expect(calls(format, reply, TOOLS)).toEqual(expected);
      expect(calls(format, reply)).toEqual(expected);
      // What is left is the (empty) reasoning the templates render before the calls.
      expect(format.parse(reply, TOOLS).content.replace(/^(<think>)?\s*<\/think>/, "")).toBe("");
    });

    it(`${file} (qwen3-xml): every kind of value comes back as it was`, () => {
      const format = formatOf(file);
      const reply = renderedReply(file, [{ id: "call00001", type: "function", function: { name: "edit", arguments: RICH_ARGS } }]);
      expect(calls(format, reply, [RICH])).toEqual([{ name: "edit", args: RICH_ARGS }]);
      // Without the schemas, a string that is JSON is taken as JSON.
      expect(calls(format, reply)[0]?.args).toMatchObject({ zip: 12345, flag: true, code: RICH_ARGS.code, color: "red" });
    });
  }

  for (const file of ["meta-llama-Llama-3.1-8B-Instruct.jinja", "meta-llama-Llama-3.2-3B-Instruct.jinja", "meta-llama-Llama-3.3-70B-Instruct.jinja"]) {
    it(`${file} (one call per turn)`, () => {
      const format = formatOf(file);
      const reply = renderedReply(file, RENDERED_CALLS.slice(0, 1));
      expect(calls(format, reply)).toEqual(expected.slice(0, 1));
      expect(format.parse(reply).content).toBe("");
    });
  }
});

describe("parse: hermes", () => {
  const hermes = formatOf("Qwen-Qwen2.5-7B-Instruct.jinja");
  const call = (name: string, args: string) => `<tool_call>\n{"name": "${name}", "arguments": ${args}}\n</tool_call>`;

  it("one call, several calls, text around them", () => {
    expect(hermes.parse(call("ping", "{}"))).toEqual({ content: "", calls: [{ name: "ping", arguments: "{}" }] });
    const text = `Let me look.\n\n${call("get_weather", '{"city": "Oslo"}')}\n${call("ping", "{}")}\nDone.`;
    const reply = hermes.parse(text);
    expect(reply.content).toBe("Let me look.\nDone.");
    expect(reply.calls).toEqual([
      { name: "get_weather", arguments: '{"city": "Oslo"}' },
      { name: "ping", arguments: "{}" },
    ]);
  });

  it("keeps the arguments as written, even when they are not valid JSON", () => {
    expect(hermes.parse(call("f", '{"a": 1,}')).calls).toEqual([{ name: "f", arguments: '{"a": 1,}' }]);
    expect(hermes.parse(call("f", "{a: 'x'}")).calls).toEqual([{ name: "f", arguments: "{a: 'x'}" }]);
    // Brackets that do not even balance: the closing tag still marks the end.
    expect(hermes.parse(call("f", '{"x": [1}')).calls).toEqual([{ name: "f", arguments: '{"x": [1}' }]);
    expect(hermes.parse(call("f", '{"s": "}{\\"]"}')).calls).toEqual([{ name: "f", arguments: '{"s": "}{\\"]"}' }]);
  });

  it("unwraps arguments written as a JSON string, and defaults missing ones to {}", () => {
    expect(hermes.parse(call("f", '"{\\"a\\": 1}"')).calls).toEqual([{ name: "f", arguments: '{"a": 1}' }]);
    expect(hermes.parse('<tool_call>{"name": "f"}</tool_call>').calls).toEqual([{ name: "f", arguments: "{}" }]);
    expect(hermes.parse('<tool_call>{"name": "f", "parameters": {"a": 2}}</tool_call>').calls).toEqual([{ name: "f", arguments: '{"a": 2}' }]);
  });

  it("takes a complete call whose closing tag never came", () => {
    expect(hermes.parse('Sure.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n').calls).toEqual([{ name: "f", arguments: '{"a": 1}' }]);
  });

  it("leaves truncated calls and garbage in the content", () => {
    for (const text of [
      '<tool_call>\n{"name": "f", "argu',
      '<tool_call>\n{"name": "f", "arguments": {"a": 1',
      "<tool_call>not json</tool_call>",
      '<tool_call>{"arguments": {}}</tool_call>',
      '<tool_call>{"name": 5, "arguments": {}}</tool_call>',
      '<tool_call>{"name": "", "arguments": {}}</tool_call>',
      "<tool_call></tool_call>",
      "<tool_call>",
      "</tool_call>",
      "plain text with no call",
      "",
    ]) {
      expect(hermes.parse(text), text).toEqual({ content: text, calls: [] });
    }
    // A broken block beside a good one: the good one is a call, the broken one stays text.
    const mixed = hermes.parse(`<tool_call>oops</tool_call>\n${call("ping", "{}")}`);
    expect(mixed.calls).toEqual([{ name: "ping", arguments: "{}" }]);
    expect(mixed.content).toBe("<tool_call>oops</tool_call>");
  });
});

describe("parse: llama3", () => {
  const llama = formatOf("meta-llama-Llama-3.1-8B-Instruct.jinja");

  it("the reply object, with or without python_tag, after text, several separated by ;", () => {
    expect(llama.parse('{"name": "f", "parameters": {"a": 1}}')).toEqual({ content: "", calls: [{ name: "f", arguments: '{"a": 1}' }] });
    expect(llama.parse('<|python_tag|>{"name": "f", "parameters": {}}').calls).toEqual([{ name: "f", arguments: "{}" }]);
    expect(llama.parse('{"type": "function", "name": "f", "parameters": {"b": [1]}}').calls).toEqual([{ name: "f", arguments: '{"b": [1]}' }]);
    expect(llama.parse('{"name": "f", "arguments": {"c": null}}').calls).toEqual([{ name: "f", arguments: '{"c": null}' }]);
    const reply = llama.parse('I will check both.\n{"name": "f", "parameters": {}}; {"name": "g", "parameters": {"x": "}"}}\n');
    expect(reply.content).toBe("I will check both.");
    expect(reply.calls).toEqual([
      { name: "f", arguments: "{}" },
      { name: "g", arguments: '{"x": "}"}' },
    ]);
  });

  it("keeps invalid arguments as written", () => {
    expect(llama.parse('{"name": "f", "parameters": {a: 1,}}').calls).toEqual([{ name: "f", arguments: "{a: 1,}" }]);
  });

  it("leaves examples in prose, truncated calls and garbage in the content", () => {
    for (const text of [
      'Call it like {"name": "f", "parameters": {}} and then wait.',
      '{"name": "f", "parameters": {"a": 1}',
      '{"name": "f", "parameters": {"inner": {"name": "g", "parameters": {}}}',
      '{"name": "f" "parameters": {}}',
      '{"parameters": {}}',
      "{}",
      "Just text.",
      "",
    ]) {
      expect(llama.parse(text), text).toEqual({ content: text, calls: [] });
    }
  });
});

describe("parse: mistral (Nemo)", () => {
  const nemo = formatOf("mistralai-Mistral-Nemo-Instruct-2407.jinja");

  it("a list of calls with ids, text before it", () => {
    const reply = nemo.parse('Checking.[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}, "id": "abc123XYZ"}, {"name": "g", "arguments": {}}]');
    expect(reply.content).toBe("Checking.");
    expect(reply.calls).toEqual([
      { name: "f", arguments: '{"a": 1}', id: "abc123XYZ" },
      { name: "g", arguments: "{}" },
    ]);
    expect(nemo.parse('[TOOL_CALLS] {"name": "f", "arguments": {}}').calls).toEqual([{ name: "f", arguments: "{}" }]);
  });

  it("keeps invalid arguments as written", () => {
    expect(nemo.parse('[TOOL_CALLS][{"name": "f", "arguments": {"a": tru}, "id": "abcdefghi"}]').calls).toEqual([{ name: "f", arguments: '{"a": tru}', id: "abcdefghi" }]);
  });

  it("leaves truncated calls and garbage in the content", () => {
    for (const text of ["[TOOL_CALLS]", '[TOOL_CALLS][{"name": "f", "arguments": {"a"', '[TOOL_CALLS][{"name": "f", "arguments": {}}', "[TOOL_CALLS]hello", "[TOOL_CALLS][1, 2]", '[TOOL_CALLS][{"arguments": {}}]']) {
      expect(nemo.parse(text), text).toEqual({ content: text, calls: [] });
    }
  });
});

describe("parse: mistral-args", () => {
  const devstral = formatOf("unsloth-mistral-Devstral-Small-2507.jinja");

  it("calls one after another, with or without [CALL_ID], text before", () => {
    const reply = devstral.parse('On it.[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}[TOOL_CALLS]ping[CALL_ID]abcdefghi[ARGS]{}');
    expect(reply.content).toBe("On it.");
    expect(reply.calls).toEqual([
      { name: "get_weather", arguments: '{"city": "Rome"}' },
      { name: "ping", arguments: "{}", id: "abcdefghi" },
    ]);
  });

  it("keeps invalid arguments as written", () => {
    expect(devstral.parse('[TOOL_CALLS]f[ARGS]{"a": }').calls).toEqual([{ name: "f", arguments: '{"a": }' }]);
    expect(devstral.parse("[TOOL_CALLS]f[ARGS]city=Rome").calls).toEqual([{ name: "f", arguments: "city=Rome" }]);
    expect(devstral.parse('[TOOL_CALLS]f[ARGS]{"a": [}[TOOL_CALLS]g[ARGS]{}').calls).toEqual([
      { name: "f", arguments: '{"a": [}' },
      { name: "g", arguments: "{}" },
    ]);
    // A cut-off call followed by another: the first one's arguments end where the next begins.
    expect(devstral.parse('[TOOL_CALLS]f[ARGS]{"a": [1[TOOL_CALLS]g[ARGS]{}').calls).toEqual([
      { name: "f", arguments: '{"a": [1' },
      { name: "g", arguments: "{}" },
    ]);
  });

  it("leaves truncated calls and garbage in the content", () => {
    for (const text of ["[TOOL_CALLS]", "[TOOL_CALLS]get_wea", "[TOOL_CALLS]f[ARGS]", '[TOOL_CALLS]f[ARGS]{"a": 1', "[TOOL_CALLS]two words[ARGS]{}", "[ARGS]{}", "text"]) {
      expect(devstral.parse(text), text).toEqual({ content: text, calls: [] });
    }
    expect(devstral.parse('[TOOL_CALLS]f[ARGS]{"a": 1} and then some').content).toBe("and then some");
  });
});

describe("parse: qwen3-xml", () => {
  const xml = formatOf("Qwen3-Coder.jinja");
  const block = (name: string, params: Record<string, string>) =>
    `<tool_call>\n<function=${name}>\n${Object.entries(params).map(([k, v]) => `<parameter=${k}>\n${v}\n</parameter>\n`).join("")}</function>\n</tool_call>`;
  const args = (text: string, tools?: readonly ChatTool[]) => xml.parse(text, tools).calls.map((c) => JSON.parse(c.arguments) as unknown);

  it("one call, several calls, text around them", () => {
    expect(xml.parse(block("ping", {}))).toEqual({ content: "", calls: [{ name: "ping", arguments: "{}" }] });
    const text = `Let me look.\n\n${block("get_weather", { city: "Oslo" })}\n${block("ping", {})}\nDone.`;
    expect(xml.parse(text, TOOLS)).toEqual({
      content: "Let me look.\nDone.",
      calls: [
        { name: "get_weather", arguments: '{"city": "Oslo"}' },
        { name: "ping", arguments: "{}" },
      ],
    });
    // Step-3.5-Flash writes the blocks back to back.
    expect(xml.parse(`${block("ping", {})}${block("ping", {})}`).calls).toHaveLength(2);
  });

  it("reads values by the tool's schema: strings stay strings, the rest is JSON", () => {
    const text = block("get_weather", { city: "123", days: "3" });
    expect(args(text, TOOLS)).toEqual([{ city: "123", days: 3 }]);
    expect(args(text)).toEqual([{ city: 123, days: 3 }]);
    // Not JSON where JSON is due: the text, for the session to report against the schema.
    expect(args(block("get_weather", { city: "Oslo", days: "three" }), TOOLS)).toEqual([{ city: "Oslo", days: "three" }]);
    // A parameter the schema does not declare, or a tool it does not know: JSON if it parses.
    expect(args(block("get_weather", { city: "Oslo", extra: "[1]" }), TOOLS)).toEqual([{ city: "Oslo", extra: [1] }]);
    expect(args(block("nope", { a: "1", b: "x y" }), TOOLS)).toEqual([{ a: 1, b: "x y" }]);
    // Python's literals, as Python's Jinja writes booleans and None, where the schema takes no string.
    const flags: ChatTool[] = [{ name: "f", parameters: { type: "object", properties: { on: { type: "boolean" }, off: { type: ["boolean", "null"] }, s: { type: "string" }, any: {} } } }];
    expect(args(block("f", { on: "True", off: "None", s: "False", any: "True" }), flags)).toEqual([{ on: true, off: null, s: "False", any: "True" }]);
    // Whitespace around JSON is not part of it; around a string it is.
    expect(args(block("get_weather", { city: " Oslo ", days: " 2 " }), TOOLS)).toEqual([{ city: " Oslo ", days: 2 }]);
  });

  it("ends a value at the first newline and </parameter>, as the templates write it", () => {
    const code = "a</parameter>b\n</parameter";
    expect(args(block("f", { code, next: "1" }))).toEqual([{ code, next: 1 }]);
    // Empty values, with two newlines (as rendered) or one.
    expect(args("<tool_call>\n<function=f>\n<parameter=a>\n\n</parameter>\n<parameter=b>\n</parameter>\n</function>\n</tool_call>")).toEqual([{ a: "", b: "" }]);
    // The first of repeated parameters wins; any name is a JSON key, even __proto__.
    expect(xml.parse(block("f", { a: "1", __proto__x: "2" }).replace("__proto__x", "__proto__")).calls[0]?.arguments).toBe('{"a": 1, "__proto__": 2}');
    expect(args("<function=f>\n<parameter=a>\n1\n</parameter>\n<parameter=a>\n2\n</parameter>\n</function>")).toEqual([{ a: 1 }]);
  });

  it("takes replies that leave out newlines, <tool_call> or </tool_call>", () => {
    expect(args("<tool_call><function=f><parameter=a>1</parameter><parameter=b>x</parameter></function></tool_call>")).toEqual([{ a: 1, b: "x" }]);
    // Qwen3-Coder sometimes leaves out <tool_call>; generation may stop before </tool_call>.
    expect(xml.parse("Sure.\n<function=f>\n<parameter=a>\n1\n</parameter>\n</function>")).toEqual({ content: "Sure.", calls: [{ name: "f", arguments: '{"a": 1}' }] });
    expect(xml.parse("<tool_call>\n<function=f>\n</function>\n").calls).toEqual([{ name: "f", arguments: "{}" }]);
  });

  it("leaves truncated calls and garbage in the content", () => {
    for (const text of [
      "<tool_call>",
      "<tool_call>\n<function=f>",
      "<tool_call>\n<function=f>\n<parameter=a>\n1",
      "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n",
      "<tool_call>\n<function=f>\n<parameter=>\n1\n</parameter>\n</function>\n</tool_call>",
      "<tool_call>\n<function=two words>\n</function>\n</tool_call>",
      "<tool_call>\n<function=>\n</function>\n</tool_call>",
      "<tool_call>\n<function=f>\nstray text\n</function>\n</tool_call>",
      "<tool_call>hello</tool_call>",
      '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
      "</function></tool_call>",
      "plain text with no call",
      "",
    ]) {
      expect(xml.parse(text, TOOLS), text).toEqual({ content: text, calls: [] });
    }
    const mixed = xml.parse(`<tool_call>oops</tool_call>\n${block("ping", {})}`);
    expect(mixed.calls).toEqual([{ name: "ping", arguments: "{}" }]);
    expect(mixed.content).toBe("<tool_call>oops</tool_call>");
  });
});

describe("parse never throws", () => {
  const formats = ["Qwen-Qwen2.5-7B-Instruct.jinja", "meta-llama-Llama-3.1-8B-Instruct.jinja", "mistralai-Mistral-Nemo-Instruct-2407.jinja", "unsloth-mistral-Devstral-Small-2507.jinja", "Qwen3-Coder.jinja"].map(formatOf);
  const pieces = ["<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<|python_tag|>", '{"name": "f", ', '"arguments": ', '"parameters": ', "{", "}", "[", "]", '"', "\\", ",", ":", "x", " ", "\n", ";", "😀", "\u0000", "<function=f>", "<function=", "<parameter=a>", "<parameter=", "</parameter>", "</function>", ">", "True"];

  it("on random mixes of the formats' pieces", () => {
    let s = 12345;
    const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
    for (let i = 0; i < 3000; i++) {
      let text = "";
      const n = Math.floor(rnd() * 24);
      for (let k = 0; k < n; k++) text += pieces[Math.floor(rnd() * pieces.length)] as string;
      for (const format of formats) {
        const reply = format.parse(text, i % 2 === 0 ? TOOLS : undefined);
        expect(typeof reply.content).toBe("string");
        for (const c of reply.calls) {
          expect(typeof c.name).toBe("string");
          expect(c.name.length).toBeGreaterThan(0);
          expect(typeof c.arguments).toBe("string");
        }
      }
    }
  });

  it("on things that are not strings", () => {
    for (const format of formats) {
      expect(format.parse(undefined as unknown as string)).toEqual({ content: "undefined", calls: [] });
      expect(format.parse(12 as unknown as string).calls).toEqual([]);
      // Tools that are not tools are as good as none.
      expect(format.parse("<function=f>\n</function>", "tools" as unknown as ChatTool[]).content).toEqual(expect.any(String));
      expect(format.parse("<function=f>\n</function>", [null, { name: 5 }] as unknown as ChatTool[]).content).toEqual(expect.any(String));
    }
  });
});

/** Arguments (JSON text) as qwen3-xml parameter blocks: strings bare, the rest as JSON; text that is no JSON object goes in as it is. */
function xmlParams(args: string): string {
  let value: unknown;
  try {
    value = JSON.parse(args);
  } catch {
    return `${args}\n`;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) return `${args}\n`;
  return Object.entries(value)
    .map(([k, v]) => `<parameter=${k}>\n${typeof v === "string" ? v : JSON.stringify(v)}\n</parameter>\n`)
    .join("");
}

describe("grammar", () => {
  const ajv = new Ajv2020({ strict: false });
  const schemaOf = (name: string) => (TOOLS.find((t) => t.name === name) as ChatTool).parameters as object;

  /** A well-formed call, and calls with bad arguments or a bad name, as each family writes them. */
  const write: Record<ToolCallFormatName, (name: string, args: string) => string> = {
    hermes: (name, args) => `<tool_call>\n{"name": "${name}", "arguments": ${args}}\n</tool_call>`,
    llama3: (name, args) => `{"name": "${name}", "parameters": ${args}}`,
    mistral: (name, args) => `[TOOL_CALLS][{"name": "${name}", "arguments": ${args}, "id": "a1B2c3D4e"}]`,
    "mistral-args": (name, args) => `[TOOL_CALLS]${name}[ARGS]${args}`,
    "qwen3-xml": (name, args) => `<tool_call>\n<function=${name}>\n${xmlParams(args)}</function>\n</tool_call>`,
  };
  const files: Record<ToolCallFormatName, string> = {
    hermes: "Qwen-Qwen3-0.6B.jinja",
    llama3: "meta-llama-Llama-3.3-70B-Instruct.jinja",
    mistral: "mistralai-Mistral-Nemo-Instruct-2407.jinja",
    "mistral-args": "mistralai-Ministral-3-14B-Reasoning-2512.jinja",
    "qwen3-xml": "Qwen3-Coder.jinja",
  };
  /** Bad arguments a format writes exactly as good ones: qwen3-xml writes the string "3" and the number 3 alike. */
  const alike: Partial<Record<ToolCallFormatName, readonly string[]>> = { "qwen3-xml": ['{"city": "Paris", "days": "3"}'] };
  const good: [string, string][] = [
    ["get_weather", '{"city": "Paris"}'],
    ["get_weather", '{"city": "Paris", "days": 7}'],
    ["get_weather", '{\n  "city": "Zürich 😀",\n  "days": 1\n}'],
    ["ping", "{}"],
    ["set-mode_2", '{"mode": "slow"}'],
  ];
  const bad: [string, string][] = [
    ["get_weather", "{}"], // missing required
    ["get_weather", '{"city": ""}'], // minLength
    ["get_weather", '{"city": "Paris", "days": 8}'], // maximum
    ["get_weather", '{"city": "Paris", "days": "3"}'], // type
    ["get_weather", '{"city": "Paris", "when": "now"}'], // extra property
    ["get_weather", '{"city": "Paris",}'], // not JSON
    ["ping", '{"x": 1}'],
    ["set-mode_2", '{"mode": "medium"}'], // enum
    ["get_time", "{}"], // no such tool
    ["ping", "[]"],
  ];

  for (const name of Object.keys(write) as ToolCallFormatName[]) {
    describe(name, () => {
      const format = formatOf(files[name]);
      const g = parseGbnf(format.grammar(TOOLS));

      it("accepts well-formed calls and rejects bad arguments and unknown tools", () => {
        expect(format.name).toBe(name);
        for (const [tool, args] of good) expect(g.accepts(write[name](tool, args)), `${tool} ${args}`).toBe(true);
        for (const [tool, args] of bad) {
          if (!alike[name]?.includes(args)) expect(g.accepts(write[name](tool, args)), `${tool} ${args}`).toBe(false);
        }
        expect(g.accepts(`${write[name]("ping", "{}")}${write[name]("ping", "{}")}`)).toBe(false); // exactly one call
        expect(g.accepts(`Sure! ${write[name]("ping", "{}")}`)).toBe(false);
      });

      it("accepts the call as the template renders it", () => {
        const ids = RENDERED_CALLS.slice(0, 1).map((c) => ({ ...c, id: "abcdefghi" }));
        const reply = renderedReply(files[name], ids).replace(/^<think>\s*<\/think>\s*/, "");
        expect(g.accepts(reply), reply).toBe(true);
      });

      it("with only, forces that tool", () => {
        const only = parseGbnf(format.grammar(TOOLS, "ping"));
        expect(only.accepts(write[name]("ping", "{}"))).toBe(true);
        expect(only.accepts(write[name]("get_weather", '{"city": "Paris"}'))).toBe(false);
        expect(only.accepts(write[name]("set-mode_2", '{"mode": "fast"}'))).toBe(false);
      });

      it("every call it allows parses back into a valid call", () => {
        let s = 99;
        const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
        for (let i = 0; i < 80; i++) {
          const text = g.sample(rnd, { depth: 10 });
          const reply = format.parse(text, TOOLS);
          expect(reply.calls, text).toHaveLength(1);
          const call = reply.calls[0] as { name: string; arguments: string };
          expect(TOOLS.map((t) => t.name)).toContain(call.name);
          expect(ajv.validate(schemaOf(call.name), JSON.parse(call.arguments)), text).toBe(true);
          expect(reply.content).toBe("");
        }
      });
    });
  }

  it("hermes allows a newline before the call, as Bielik writes it", () => {
    const g = parseGbnf(formatOf("Bielik-11B-v3.0-Instruct.jinja").grammar(TOOLS));
    expect(g.accepts(`\n${write.hermes("ping", "{}")}`)).toBe(true);
    expect(g.accepts(`<tool_call>{"name": "ping", "arguments": {}}</tool_call>`)).toBe(true);
  });

  it("mistral wants the 9-character id", () => {
    const g = parseGbnf(formatOf("mistralai-Mistral-Nemo-Instruct-2407.jinja").grammar(TOOLS));
    expect(g.accepts('[TOOL_CALLS][{"name": "ping", "arguments": {}}]')).toBe(false);
    expect(g.accepts('[TOOL_CALLS][{"name": "ping", "arguments": {}, "id": "abc"}]')).toBe(false);
  });

  it("mistral-args takes [CALL_ID] only where the template writes it", () => {
    const withId = "[TOOL_CALLS]ping[CALL_ID]abcdefghi[ARGS]{}";
    expect(parseGbnf(formatOf("Mistral-Small-3.2-24B-Instruct-2506.jinja").grammar(TOOLS)).accepts(withId)).toBe(true);
    expect(parseGbnf(formatOf("Mistral-Small-3.2-24B-Instruct-2506.jinja").grammar(TOOLS)).accepts("[TOOL_CALLS]ping[ARGS]{}")).toBe(true);
    expect(parseGbnf(formatOf("unsloth-mistral-Devstral-Small-2507.jinja").grammar(TOOLS)).accepts(withId)).toBe(false);
  });

  describe("qwen3-xml", () => {
    const xml = formatOf("Qwen3.5-4B.jinja");
    const call = (name: string, params: readonly (readonly [string, string])[]) =>
      `<tool_call>\n<function=${name}>\n${params.map(([k, v]) => `<parameter=${k}>\n${v}\n</parameter>\n`).join("")}</function>\n</tool_call>`;
    const one = (schema: object, required = true) => parseGbnf(xml.grammar([{ name: "f", parameters: { type: "object", properties: { v: schema }, ...(required ? { required: ["v"] } : {}) } }]));

    it("writes strings bare: any text whose block does not end early", () => {
      const g = one({ type: "string" });
      for (const v of ["", "x", "two\nlines", "a</parameter>b", "<b>\n</b>", "\n\nx\n", "</parameteR>", "</parameter", "😀 中"]) expect(g.accepts(call("f", [["v", v]])), JSON.stringify(v)).toBe(true);
      for (const v of ["a\n</parameter>b", "</parameter>", "</parameter>x"]) expect(g.accepts(call("f", [["v", v]])), JSON.stringify(v)).toBe(false);
      expect(g.accepts(call("f", []))).toBe(false); // required
      expect(one({ type: "string" }, false).accepts(call("f", []))).toBe(true);
    });

    it("counts a bounded string's characters", () => {
      const g = one({ type: "string", minLength: 2, maxLength: 5 });
      for (const v of ["ab", "abcde", "a\nb", "😀😀", "a<b", "<b>", "a\n<b", "<</", "\n\n"]) expect(g.accepts(call("f", [["v", v]])), JSON.stringify(v)).toBe(true);
      for (const v of ["a", "abcdef", "", "😀"]) expect(g.accepts(call("f", [["v", v]])), JSON.stringify(v)).toBe(false);
      // Within the count, a line does not start with "</" (a simpler rule than the "</parameter>" one).
      expect(g.accepts(call("f", [["v", "a\n</b"]]))).toBe(false);
      expect(g.accepts(call("f", [["v", "</b>"]]))).toBe(false);
      const min = one({ type: "string", minLength: 2 });
      for (const v of ["ab\n<b>\nx", "<b", "<b\n</b>", "ab</parameter>"]) expect(min.accepts(call("f", [["v", v]])), JSON.stringify(v)).toBe(true);
      expect(min.accepts(call("f", [["v", "ab\n</parameter>"]]))).toBe(false);
      expect(min.accepts(call("f", [["v", "a"]]))).toBe(false);
      expect(one({ type: "string", maxLength: 0 }).accepts(call("f", [["v", ""]]))).toBe(true);
    });

    it("writes enums bare, also through $defs", () => {
      const g = parseGbnf(xml.grammar([RICH], "edit"));
      const base: [string, string][] = [["path", "p"], ["code", "c"]];
      expect(g.accepts(call("edit", [...base, ["color", "green"]]))).toBe(true);
      expect(g.accepts(call("edit", [...base, ["color", "12"]]))).toBe(true);
      expect(g.accepts(call("edit", [...base, ["color", '"green"']]))).toBe(false);
      expect(g.accepts(call("edit", [...base, ["color", "blue"]]))).toBe(false);
      expect(one({ enum: ["a", "b\nc"] }).accepts(call("f", [["v", "b\nc"]]))).toBe(true);
    });

    it("writes other values as JSON valid under their schema, strings with a format quoted", () => {
      const g = parseGbnf(xml.grammar([RICH], "edit"));
      const base: [string, string][] = [["path", "p"], ["code", "c"]];
      for (const extra of [["count", "0"], ["ratio", "-1.5e3"], ["dry", "true"], ["tags", '["a", "b"]'], ["opts", '{"depth": 2, "mode": "red"}'], ["when", '"2024-02-29"']] as const) {
        expect(g.accepts(call("edit", [...base, extra])), extra.join(" ")).toBe(true);
      }
      for (const extra of [["count", "-1"], ["count", "1.5"], ["dry", "True"], ["tags", '["a", "b", "c", "d"]'], ["tags", "[1]"], ["opts", '{"mode": "blue"}'], ["when", "2024-02-29"], ["when", '"2023-02-29"']] as const) {
        expect(g.accepts(call("edit", [...base, extra])), extra.join(" ")).toBe(false);
      }
      // Properties in their declared order, optional ones left out at will.
      expect(g.accepts(call("edit", [["path", "p"], ["code", "c"], ["count", "1"], ["dry", "false"]]))).toBe(true);
      expect(g.accepts(call("edit", [["code", "c"], ["path", "p"]]))).toBe(false);
      expect(g.accepts(call("edit", [["path", "p"]]))).toBe(false);
    });

    it("every call of the rich tool it allows parses back into valid arguments", () => {
      const ajv = new Ajv2020({ strict: false, formats: { date: /^\d{4}-\d{2}-\d{2}$/ } });
      const g = parseGbnf(xml.grammar([RICH, ...TOOLS]));
      let s = 7;
      const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
      for (let i = 0; i < 200; i++) {
        const text = g.sample(rnd, { depth: 40 });
        const reply = xml.parse(text, [RICH, ...TOOLS]);
        expect(reply.calls, text).toHaveLength(1);
        const c = reply.calls[0] as { name: string; arguments: string };
        const tool = [RICH, ...TOOLS].find((t) => t.name === c.name) as ChatTool;
        expect(ajv.validate(tool.parameters as object, JSON.parse(c.arguments)), `${text}\n${JSON.stringify(ajv.errors)}`).toBe(true);
        expect(reply.content).toBe("");
      }
    });

    it("accepts what the template renders for the rich tool", () => {
      const reply = renderedReply("Qwen3-Coder.jinja", [{ id: "call00001", type: "function", function: { name: "edit", arguments: { ...RICH_ARGS, when: '"2024-02-29"' } } }]);
      // Rendered in the declared order; the date quoted as the grammar writes it.
      expect(parseGbnf(xml.grammar([RICH])).accepts(reply), reply).toBe(true);
    });

    it("a required name it does not declare takes any JSON value; one it cannot write is refused", () => {
      const g = parseGbnf(xml.grammar([{ name: "f", parameters: { type: "object", properties: {}, required: ["x"] } }]));
      expect(g.accepts(call("f", [["x", '{"a": [1, null]}']]))).toBe(true);
      expect(g.accepts(call("f", [["x", "bare"]]))).toBe(false);
      expect(errorOf(() => xml.grammar([{ name: "f", parameters: { type: "object", properties: { "a>b": { type: "string" } }, required: ["a>b"] } }]))).toBe(
        'tool "f" parameter "a>b": no value of it can be written in the qwen3-xml tool-call format',
      );
      // An optional one is left out.
      expect(parseGbnf(xml.grammar([{ name: "f", parameters: { type: "object", properties: { "a>b": { type: "string" } } } }])).accepts(call("f", []))).toBe(true);
    });

    it("refuses parameters it cannot write one block per property", () => {
      expect(errorOf(() => xml.grammar([{ name: "f", parameters: { type: "object", anyOf: [{ properties: { a: { type: "string" } } }] } }]))).toBe(
        'tool "f" parameters: "anyOf" at the top is not supported in the qwen3-xml tool-call format (it writes one block per property)',
      );
      const tree = { type: "object", properties: { kids: { type: "array", items: { $ref: "#" } } } };
      expect(errorOf(() => xml.grammar([{ name: "f", parameters: tree }]))).toBe(
        'tool "f" parameter "kids": "$ref" "#" is not supported in the qwen3-xml tool-call format (only "#/$defs/..." and "#/definitions/...")',
      );
      expect(errorOf(() => xml.grammar([]))).toBe("a tool-call grammar needs at least one tool");
      expect(errorOf(() => xml.grammar(TOOLS, "nope"))).toBe('there is no tool named "nope"');
    });
  });

  it("gives each tool's rules their own prefix", () => {
    const text = formatOf("Qwen-Qwen2.5-7B-Instruct.jinja").grammar(TOOLS);
    expect(text).toMatch(/^t0-root ::= /m);
    expect(text).toMatch(/^t1-root ::= /m);
    expect(text).toMatch(/^t2-root ::= /m);
    expect(text.startsWith("root ::= ")).toBe(true);
  });

  it("refuses bad requests", () => {
    const hermes = formatOf("Qwen-Qwen2.5-7B-Instruct.jinja");
    expect(errorOf(() => hermes.grammar([]))).toBe("a tool-call grammar needs at least one tool");
    expect(errorOf(() => hermes.grammar(TOOLS, "nope"))).toBe('there is no tool named "nope"');
    expect(errorOf(() => hermes.grammar([{ name: "x", parameters: { type: "object", properties: { a: { not: {} } } } }]))).toBe(
      'tool "x" parameters at /properties/a: "not" is not supported',
    );
  });
});

describe("checkTools", () => {
  it("accepts good definitions", () => {
    expect(() => checkTools(TOOLS)).not.toThrow();
    expect(() => checkTools([])).not.toThrow();
    expect(() => checkTools([{ name: "a", parameters: { properties: { x: { type: "string" } } } }])).not.toThrow();
  });

  it("names the bad tool", () => {
    const p = { type: "object" };
    const cases: [unknown, string][] = [
      [[{ name: "", parameters: p }], 'tools[0]: the name must be 1 to 64 letters, digits, "_" or "-", got ""'],
      [[{ name: "a b", parameters: p }], 'tools[0]: the name must be 1 to 64 letters, digits, "_" or "-", got "a b"'],
      [[{ name: "x".repeat(65), parameters: p }], `tools[0]: the name must be 1 to 64 letters, digits, "_" or "-", got "${"x".repeat(65)}"`],
      [[{ name: "ok", parameters: p }, { name: 7, parameters: p }], 'tools[1]: the name must be 1 to 64 letters, digits, "_" or "-", got 7'],
      [[{ name: "dup", parameters: p }, { name: "dup", parameters: p }], 'tool "dup" is defined twice'],
      [[{ name: "d", description: 5, parameters: p }], 'tool "d": description must be a string'],
      [[{ name: "s", parameters: { type: "string" } }], 'tool "s" parameters must be an object schema ("type": "object")'],
      [[{ name: "b", parameters: true }], 'tool "b" parameters must be an object JSON Schema ({ "type": "object", ... }), got true'],
      [[{ name: "m" }], 'tool "m" parameters must be an object JSON Schema ({ "type": "object", ... }), got undefined'],
      [[{ name: "e", parameters: {} }], 'tool "e" parameters must be an object schema ("type": "object")'],
      [[{ name: "r", parameters: { type: "object", properties: { q: { type: "string", pattern: "^a" } } } }], 'tool "r" parameters at /properties/q: "pattern" is not supported'],
      [[null], "tools[0] must be an object with name and parameters"],
      ["tools", 'tools must be an array, got "tools"'],
    ];
    for (const [tools, message] of cases) expect(errorOf(() => checkTools(tools as ChatTool[]))).toBe(message);
  });
});
