/**
 * Model.applyChatTemplate with real templates on real models: the Jinja template a model ships
 * (Gemma 4's, which llama.cpp's built-in formats refused), one given as source (Llama 3.1, with
 * its date header and the vocabulary's BOS), the built-in formats by name, messages with
 * reasoning and tool calls, and ERR_TEMPLATE for a template that refuses the conversation.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, loadModel, type MemoryEvent, type Model } from "../../lib/index.js";
import { archModel } from "../helpers/models.js";
import { THREADS } from "./helpers.js";

const TEMPLATES = join(import.meta.dirname, "..", "..", "vendor", "llama.cpp", "models", "templates");
const template = (name: string) => readFileSync(join(TEMPLATES, name), "utf8");
const NOW = new Date(2026, 2, 14, 9, 0, 0);

let llama: Model;
let gemma: Model;

beforeAll(async () => {
  // Mistral-Nemo's synthetic model carries Llama 3's vocabulary (llama-bpe).
  llama = await loadModel(await archModel("mistral-nemo"));
  gemma = await loadModel(await archModel("gemma3"));
});

afterAll(async () => {
  await llama.dispose();
  await gemma.dispose();
});

describe("chat templates", () => {
  it("Llama 3.1's template, as source: its BOS from the vocabulary, the date header, tools", async () => {
    const text = await llama.applyChatTemplate(
      [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hi" },
      ],
      { template: template("meta-llama-Llama-3.1-8B-Instruct.jinja"), now: NOW },
    );
    expect(text.startsWith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")).toBe(true);
    expect(text).toContain("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024");
    expect(text.endsWith("<|start_header_id|>assistant<|end_header_id|>\n\n")).toBe(true);
    const withTools = await llama.applyChatTemplate([{ role: "user", content: "Weather?" }], {
      template: template("meta-llama-Llama-3.1-8B-Instruct.jinja"),
      tools: [{ name: "get_weather", description: "The weather.", parameters: { type: "object", properties: { city: { type: "string" } } } }],
    });
    expect(withTools).toContain('"name": "get_weather"');
  });

  it("Llama 3.2's template writes today's date from `now`", async () => {
    const text = await llama.applyChatTemplate([{ role: "user", content: "Hi" }], { template: template("meta-llama-Llama-3.2-3B-Instruct.jinja"), now: NOW });
    expect(text).toContain("Today Date: 14 Mar 2026");
  });

  it("a Gemma 4 model's own template renders, and a session runs on it", async () => {
    expect(gemma.info.chatTemplate).toContain("<|turn>");
    const text = await gemma.applyChatTemplate([{ role: "user", content: "Hi" }]);
    expect(text).toContain("Hi");
    await using session = await createSession(gemma, { context: { contextSize: 512, ...THREADS }, temperature: 0 });
    const reply = await session.respond("Hello there", { maxTokens: 8 });
    expect(reply.generation.generatedTokens).toBeGreaterThan(0);
    const again = await session.respond("And again", { maxTokens: 8 });
    // The second prompt reused the first turn's cells.
    expect(again.generation.evaluatedPromptTokens).toBeLessThan(again.generation.promptTokens);
  });

  it("messages with reasoning and tool calls reach the template in transformers' shape", async () => {
    const source =
      "{% for m in messages %}{{ m.role }}|{{ m.content }}|{{ m.reasoning_content }}|" +
      "{% for c in m.tool_calls or [] %}{{ c.id }}:{{ c.type }}:{{ c.function.name }}:{{ c.function.arguments | tojson }}{% endfor %}|{{ m.tool_call_id }}|{{ m.name }}\n{% endfor %}";
    const text = await llama.applyChatTemplate(
      [
        { role: "user", content: "q" },
        { role: "assistant", content: "", reasoning: "think", toolCalls: [{ id: "c1", name: "f", arguments: { a: 1 } }] },
        { role: "tool", content: "42", toolCallId: "c1", name: "f" },
      ],
      { template: source, addAssistant: false },
    );
    expect(text).toBe('user|q||||\nassistant||think|c1:function:f:{"a": 1}||\ntool|42|||c1|f\n');
  });

  it("built-in formats by name still work; tools need a Jinja template", async () => {
    const chatml = await llama.applyChatTemplate([{ role: "user", content: "Hi" }], { template: "chatml" });
    expect(chatml).toBe("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    await expect(llama.applyChatTemplate([{ role: "user", content: "Hi" }], { template: "chatml", tools: [{ name: "f", parameters: {} }] })).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
    });
  });

  it("a template that refuses the conversation is ERR_TEMPLATE with its message", async () => {
    await expect(
      llama.applyChatTemplate(
        [
          { role: "system", content: "x" },
          { role: "user", content: "Hi" },
        ],
        { template: template("google-gemma-2-2b-it.jinja") },
      ),
    ).rejects.toMatchObject({ code: "ERR_TEMPLATE", message: expect.stringMatching(/System role not supported/) });
    await expect(llama.applyChatTemplate([{ role: "user", content: 3 as unknown as string }], { template: "{{ 1 }}" })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });

  it("a template that rewrites earlier turns: the cache is kept up to the first changed token, and a rewrite event says so", async () => {
    // Writes the number of messages before them: every new turn changes the first line.
    const source =
      "count {{ messages | length }}\n{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}" +
      "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
    const events: MemoryEvent[] = [];
    await using session = await createSession(llama, { template: source, context: { contextSize: 1024, ...THREADS }, temperature: 0, onMemoryEvent: (e) => events.push(e) });
    await session.prompt("One two three four five six seven eight.", { maxTokens: 6 });
    expect(events).toEqual([]);
    const second = await session.respond("Nine ten.", { maxTokens: 6 });
    const rewrite = events.find((e) => e.kind === "rewrite");
    expect(rewrite, JSON.stringify(events)).toBeDefined();
    // "count 2" became "count 4": the change is in the first tokens, so little is kept.
    expect(rewrite?.firstChangedToken).toBeLessThan(4);
    expect(rewrite?.reevaluatedTokens).toBeGreaterThan(10);
    expect(rewrite?.reasoningTokens).toBeUndefined();
    expect(second.generation.evaluatedPromptTokens).toBe(second.generation.promptTokens - (rewrite?.firstChangedToken ?? 0));
  });

  it("a prefix-stable template (Qwen 2.5): a turn evaluates only what is new, and no rewrite is reported", async () => {
    const events: MemoryEvent[] = [];
    const qwen = template("Qwen-Qwen2.5-7B-Instruct.jinja");
    await using session = await createSession(llama, { template: qwen, context: { contextSize: 1024, ...THREADS }, temperature: 0, onMemoryEvent: (e) => events.push(e) });
    await session.prompt("Hello.", { maxTokens: 6 });
    const before = session.sequence?.tokens.length ?? 0;
    const second = await session.respond("Again.", { maxTokens: 6 });
    expect(events.filter((e) => e.kind === "rewrite")).toEqual([]);
    // Everything up to the last reply's end was reused (its last token, never evaluated, and the new message are evaluated).
    expect(second.generation.promptTokens - second.generation.evaluatedPromptTokens).toBeGreaterThanOrEqual(before - 1);
  });
});

