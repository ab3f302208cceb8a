/**
 * Reasoning apart from the answer: `respond().reasoning`, "reasoning" events, the answer alone in
 * `prompt()`, and the reasoning left out of later prompts (reported as a "rewrite" memory event
 * with the tokens it saves) unless `keepReasoning`. Random weights do not reason, so a grammar
 * makes the model write reasoning in the family's tags; what is tested is the mechanism.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, loadModel, type MemoryEvent, type Model, type TurnEvent } from "../../lib/index.js";
import { archModel } from "../helpers/models.js";
import { THREADS } from "./helpers.js";

const QWEN35 = readFileSync(join(import.meta.dirname, "..", "..", "vendor", "llama.cpp", "models", "templates", "Qwen3.5-4B.jinja"), "utf8");

/** Writes past replies' reasoning back when given (`reasoning_content`), as some families' templates do. */
const KEEPS_REASONING =
  "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

let model: Model;

beforeAll(async () => {
  model = await loadModel(await archModel("qwen3moe"));
});

afterAll(async () => {
  await model.dispose();
});

describe("reasoning", () => {
  it("a template that opens <think> for the model: reasoning and answer come apart, in events and in the reply", async () => {
    const memory: MemoryEvent[] = [];
    await using session = await createSession(model, { template: QWEN35, context: { contextSize: 2048, ...THREADS }, temperature: 1, seed: 3, onMemoryEvent: (e) => memory.push(e) });
    // The prompt ends with "<think>\n": the model's text is reasoning up to "</think>".
    const grammar = 'root ::= [a-z]{3,8} " " [a-z]{3,8} "\\n</think>\\n\\n" [a-z]{2,8} " " [a-z]{2,8}';
    const events: TurnEvent[] = [];
    for await (const e of session.events("What is 2+2?", { grammar, maxTokens: 64 })) events.push(e);
    const reasoning = events.filter((e) => e.type === "reasoning").map((e) => (e as { text: string }).text).join("");
    const answer = events.filter((e) => e.type === "text").map((e) => (e as { text: string }).text).join("");
    expect(reasoning).toMatch(/^[a-z]{3,8} [a-z]{3,8}\n$/);
    expect(answer).toMatch(/^[a-z]{2,8} [a-z]{2,8}$/);
    // Every reasoning piece came before the first piece of the answer.
    const firstText = events.findIndex((e) => e.type === "text");
    expect(events.slice(firstText).some((e) => e.type === "reasoning")).toBe(false);
    const last = session.history[session.history.length - 1];
    expect(last).toMatchObject({ role: "assistant", content: answer, reasoning });

    // The next prompt leaves that reasoning out: the cache is kept up to the first changed token.
    memory.length = 0;
    const next = await session.respond("And 3+3?", { grammar, maxTokens: 64 });
    const rewrite = memory.find((e) => e.kind === "rewrite");
    expect(rewrite, JSON.stringify(memory)).toBeDefined();
    expect(rewrite?.reasoningTokens).toBeGreaterThan(0);
    expect(rewrite?.firstChangedToken).toBeGreaterThan(0);
    expect(rewrite?.firstChangedToken).toBeLessThan(rewrite?.tokensBefore ?? 0);
    expect(next.generation.evaluatedPromptTokens).toBeLessThan(next.generation.promptTokens);
    expect(next.reasoning).toMatch(/^[a-z]{3,8} [a-z]{3,8}\n$/);
    // prompt() gives the answer alone.
    const plain = await session.prompt("Once more?", { grammar, maxTokens: 64 });
    expect(plain).toMatch(/^[a-z]{2,8} [a-z]{2,8}$/);
  });

  it("keepReasoning keeps it in the prompt: no reasoning saving is reported, and the cache stays valid", async () => {
    const grammar = 'root ::= "<think>" [a-z]{3,8} "</think>" [a-z]{2,8}';
    for (const keepReasoning of [false, true]) {
      const memory: MemoryEvent[] = [];
      await using session = await createSession(model, {
        template: KEEPS_REASONING,
        keepReasoning,
        context: { contextSize: 1024, ...THREADS },
        temperature: 1,
        seed: 5,
        onMemoryEvent: (e) => memory.push(e),
      });
      const first = await session.respond("Hi", { grammar, maxTokens: 32 });
      expect(first.reasoning).toMatch(/^[a-z]{3,8}$/);
      expect(first.text).toMatch(/^[a-z]{2,8}$/);
      const second = await session.respond("Again", { grammar, maxTokens: 32 });
      const saved = memory.filter((e) => e.kind === "rewrite" && (e.reasoningTokens ?? 0) > 0);
      if (keepReasoning) {
        expect(saved, JSON.stringify(memory)).toEqual([]);
      } else {
        expect(saved.length, JSON.stringify(memory)).toBe(1);
      }
      expect(second.generation.evaluatedPromptTokens).toBeLessThan(second.generation.promptTokens);
    }
  });

  it("thinking: false reaches the template as enable_thinking", async () => {
    await using session = await createSession(model, { template: QWEN35, thinking: false, context: { contextSize: 1024, ...THREADS } });
    const text = await model.applyChatTemplate([{ role: "user", content: "Hi" }], { template: QWEN35, thinking: false });
    expect(text.endsWith("<think>\n\n</think>\n\n")).toBe(true);
    // The closed think block means the reply is all answer.
    const reply = await session.respond("Hi", { grammar: 'root ::= [a-z]{2,6}', maxTokens: 16, temperature: 0 });
    expect(reply.reasoning).toBeUndefined();
    expect(reply.text).toMatch(/^[a-z]{2,6}$/);
  });
});
