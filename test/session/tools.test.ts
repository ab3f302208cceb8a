/**
 * Tool calls in sessions, on four template families (Qwen's Hermes-style <tool_call>, Llama
 * 3.1's JSON, Mistral's [TOOL_CALLS], Qwen3-Coder's <function=...><parameter=...>). Random
 * weights never call a tool on their own, so the first call is forced with the family's grammar
 * (toolChoice); what is tested is the mechanism: the call parses, its arguments validate, the
 * handler runs, its result goes back as a tool message, the loop ends with an answer, and the
 * cache is reused across the loop.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv } from "ajv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, loadModel, type MemoryEvent, type Model, type SessionTool } from "../../lib/index.js";
import { toolCallFormat, type ToolCallFormat } from "../../lib/chat/tool-calls.js";
import { Toolbox } from "../../lib/session/tools.js";
import { archModel } from "../helpers/models.js";
import { THREADS } from "./helpers.js";

const TEMPLATES = join(import.meta.dirname, "..", "..", "vendor", "llama.cpp", "models", "templates");
const template = (name: string) => readFileSync(join(TEMPLATES, name), "utf8");

/** Arguments that a grammar bounds (enums), so a forced call always closes within maxTokens. */
const WEATHER = {
  type: "object",
  properties: {
    city: { type: "string", enum: ["Paris", "Rome", "Oslo"] },
    unit: { type: "string", enum: ["celsius", "fahrenheit"] },
  },
  required: ["city", "unit"],
  additionalProperties: false,
} as const;

const FAMILIES = [
  { family: "hermes (Qwen 2.5)", arch: "qwen2", template: "Qwen-Qwen2.5-7B-Instruct.jinja" },
  { family: "llama3 (Llama 3.1)", arch: "mistral-nemo", template: "meta-llama-Llama-3.1-8B-Instruct.jinja" },
  { family: "mistral (Mistral Nemo)", arch: "mistral-nemo", template: "mistralai-Mistral-Nemo-Instruct-2407.jinja" },
  { family: "qwen3-xml (Qwen3-Coder)", arch: "qwen2", template: "Qwen3-Coder.jinja" },
] as const;

const models = new Map<string, Model>();

beforeAll(async () => {
  for (const arch of new Set(FAMILIES.map((f) => f.arch))) models.set(arch, await loadModel(await archModel(arch)));
});

afterAll(async () => {
  for (const m of models.values()) await m.dispose();
});

describe.each(FAMILIES)("tool calls: $family", ({ arch, template: file }) => {
  it("a forced call parses, validates, runs the handler, goes back as a tool message, and the turn ends with an answer", async () => {
    const model = models.get(arch) as Model;
    const calls: unknown[] = [];
    const tools: Record<string, SessionTool> = {
      get_weather: {
        description: "The current weather in a city.",
        parameters: WEATHER,
        handler: (args) => {
          calls.push(args);
          return { temperature: 21, sky: "clear" };
        },
      },
    };
    const events: MemoryEvent[] = [];
    await using session = await createSession(model, {
      template: template(file),
      tools,
      context: { contextSize: 2048, ...THREADS },
      temperature: 0,
      onMemoryEvent: (e) => events.push(e),
    });
    const reply = await session.respond("What is the weather in Paris?", { toolChoice: "required", maxTokens: 96 });
    // One call, forced; its arguments are valid under the schema and reached the handler as parsed.
    expect(reply.toolCalls.length).toBeGreaterThanOrEqual(1);
    const first = reply.toolCalls[0];
    expect(first?.name).toBe("get_weather");
    expect(first?.error).toBe(false);
    const validate = new Ajv().compile(WEATHER);
    expect(validate(first?.arguments), JSON.stringify(validate.errors)).toBe(true);
    expect(calls[0]).toEqual(first?.arguments);
    expect(first?.result).toBe(JSON.stringify({ temperature: 21, sky: "clear" }));
    // The history holds the call, the result, and the answer after it.
    const history = session.history;
    const assistant = history.find((m) => m.toolCalls !== undefined);
    expect(assistant?.role).toBe("assistant");
    expect(assistant?.toolCalls?.[0]?.name).toBe("get_weather");
    const tool = history.find((m) => m.role === "tool");
    expect(tool?.content).toBe(first?.result);
    expect(tool?.toolCallId).toBe(assistant?.toolCalls?.[0]?.id);
    expect(history[history.length - 1]?.role).toBe("assistant");
    expect(history[history.length - 1]?.toolCalls).toBeUndefined();
    // The loop's second generation reused the cache of the first: only part of its prompt was evaluated.
    expect(reply.generation.evaluatedPromptTokens).toBeLessThan(reply.generation.promptTokens);
    // A call and its result are one turn with the user message: nothing split them.
    const stats = await session.stats();
    expect(stats.turns).toBe(1);
  });

  it('toolChoice { name } forces that tool, "none" offers none', async () => {
    const model = models.get(arch) as Model;
    const seen: string[] = [];
    const tool = (name: string): SessionTool => ({ parameters: WEATHER, handler: () => (seen.push(name), "ok") });
    await using session = await createSession(model, {
      template: template(file),
      tools: { get_weather: tool("get_weather"), get_forecast: tool("get_forecast") },
      context: { contextSize: 2048, ...THREADS },
      temperature: 0,
    });
    const reply = await session.respond("Forecast for Oslo?", { toolChoice: { name: "get_forecast" }, maxTokens: 96 });
    expect(reply.toolCalls[0]?.name).toBe("get_forecast");
    expect(seen[0]).toBe("get_forecast");
    const none = await session.respond("Thanks.", { toolChoice: "none", maxTokens: 8 });
    expect(none.toolCalls).toEqual([]);
  });
});

describe("tool calls: qwen3-xml in llama.cpp", () => {
  it("the grammar of every kind of parameter (bare text, bounded text, enums through $defs, JSON) loads and writes a call", async () => {
    const model = models.get("qwen2") as Model;
    const file = template("Qwen3-Coder.jinja");
    const parameters = {
      type: "object",
      properties: {
        color: { $ref: "#/$defs/Color" },
        code: { type: "string" },
        zip: { type: "string", minLength: 1, maxLength: 5 },
        count: { type: "integer", minimum: 0, maximum: 9 },
        tags: { type: "array", items: { $ref: "#/$defs/Color" }, maxItems: 2 },
        when: { type: "string", format: "date" },
      },
      required: ["color", "code"],
      $defs: { Color: { type: "string", enum: ["red", "green"] } },
    };
    const grammar = (toolCallFormat(file) as ToolCallFormat).grammar([{ name: "edit", parameters }]);
    await using session = await createSession(model, { template: file, context: { contextSize: 1024, ...THREADS }, temperature: 0 });
    const reply = await session.respond("Edit it.", { grammar, maxTokens: 128 });
    // Random weights may go on writing the free text: the call's start is what is certain.
    expect(reply.text).toMatch(/^<tool_call>\n<function=edit>\n<parameter=color>\n(red|green)\n<\/parameter>\n<parameter=code>\n/);
  });
});

describe("tool calls: what goes wrong", () => {
  it("bad arguments and failing handlers are messages for the model, not exceptions for the app", async () => {
    const box = new Toolbox({
      get_weather: { parameters: WEATHER, handler: () => "sunny" },
      broken: { parameters: { type: "object" }, handler: () => { throw new Error("the service is down"); } },
    });
    const signal = new AbortController().signal;
    const notJson = await box.run({ name: "get_weather", arguments: "{city: Paris" }, signal);
    expect(notJson).toMatchObject({ error: true });
    expect(notJson.result).toMatch(/not valid JSON/);
    const invalid = await box.run({ name: "get_weather", arguments: '{"city": "Lyon", "unit": "kelvin"}' }, signal);
    expect(invalid.error).toBe(true);
    expect(invalid.result).toMatch(/do not match the tool's parameters/);
    expect(invalid.result).toMatch(/\/city/);
    const unknown = await box.run({ name: "get_time", arguments: "{}" }, signal);
    expect(unknown.result).toMatch(/no tool named "get_time"/);
    const failed = await box.run({ name: "broken", arguments: "{}" }, signal);
    expect(failed).toMatchObject({ error: true, result: "Error: the tool failed: the service is down" });
    const ok = await box.run({ name: "get_weather", arguments: '{"city": "Rome", "unit": "celsius"}' }, signal);
    expect(ok).toMatchObject({ error: false, result: "sunny", arguments: { city: "Rome", unit: "celsius" } });
  });

  it("bad tool definitions and choices are ERR_INVALID_ARGUMENT before anything runs", async () => {
    const model = models.get("qwen2") as Model;
    const base = { template: template("Qwen-Qwen2.5-7B-Instruct.jinja"), context: { contextSize: 512, ...THREADS } };
    await expect(createSession(model, { ...base, tools: { get_weather: { parameters: WEATHER } as unknown as SessionTool } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(createSession(model, { ...base, tools: { "bad name!": { parameters: WEATHER, handler: () => 1 } } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(createSession(model, { ...base, tools: { t: { parameters: { type: "nonsense" }, handler: () => 1 } } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    // ChatML (no tool-call format) cannot take tools.
    await expect(createSession(model, { ...base, template: "chatml", tools: { t: { parameters: WEATHER, handler: () => 1 } } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await using session = await createSession(model, { ...base, tools: { t: { parameters: WEATHER, handler: () => 1 } } });
    await expect(session.prompt("hi", { toolChoice: { name: "other" } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(session.prompt("hi", { toolChoice: "required", jsonSchema: { type: "object" } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    // Nothing was left behind by the refused prompts.
    expect(session.history).toEqual([]);
  });

  it("pinToolCalls keeps the turns with calls out of the memory policy's reach", async () => {
    const model = models.get("qwen2") as Model;
    for (const pinToolCalls of [true, false]) {
      await using session = await createSession(model, {
        template: template("Qwen-Qwen2.5-7B-Instruct.jinja"),
        tools: { get_weather: { parameters: WEATHER, handler: () => "sunny" } },
        pinToolCalls,
        memory: { strategy: "slidingWindow", keepLastTurns: 1 },
        context: { contextSize: 2048, ...THREADS },
        temperature: 0,
      });
      await session.respond("Weather in Rome?", { toolChoice: "required", maxTokens: 96 });
      for (const text of ["One.", "Two.", "Three."]) await session.prompt(text, { maxTokens: 4, toolChoice: "none" });
      // The window keeps one turn besides the new one; the pinned turn with the call stays too.
      expect(session.history.some((m) => m.content === "One."), `pinToolCalls ${pinToolCalls}`).toBe(false);
      const kept = session.history.some((m) => m.toolCalls !== undefined) && session.history.some((m) => m.role === "tool");
      expect(kept, `pinToolCalls ${pinToolCalls}`).toBe(pinToolCalls);
    }
  });
});
