/**
 * llamem/ai-sdk in process, through the real `ai` package: generateText, streamText,
 * generateObject, a tool call the SDK runs, abort, embeddings, and a conversation kept by the
 * provider (providerOptions.llamem.conversation). Random weights: calls are forced and JSON is
 * constrained, so what is tested is the mechanism.
 */
import { Ajv } from "ajv";
import { embedMany, generateObject, generateText, jsonSchema, streamText, tool } from "ai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLlamem, type LlamemProvider } from "../../lib/ai-sdk.js";
import { loadModel, type Context, type Model } from "../../lib/index.js";
import { archModel } from "../helpers/models.js";
import { ANSWER, TEMPLATE, WEATHER } from "./fixtures.js";

let model: Model;
let embedModel: Model;
let context: Context;
let embeddings: Context;
let llamem: LlamemProvider;

beforeAll(async () => {
  model = await loadModel(await archModel("qwen2"));
  embedModel = await loadModel(await archModel("bert"));
  context = await model.createContext({ contextSize: 4096, sequences: 2, threads: 1 });
  embeddings = await embedModel.createContext({ embeddings: true, threads: 1 });
  llamem = createLlamem(context, { template: TEMPLATE, embeddings, conversations: { memory: { strategy: "slidingWindow", keepLastTurns: 2 } } });
});

afterAll(async () => {
  await llamem?.dispose();
  await embeddings?.dispose();
  await context?.dispose();
  await embedModel?.dispose();
  await model?.dispose();
});

describe("llamem/ai-sdk", () => {
  it("generateText and streamText give the same greedy text, with usage and the cached prompt counted", async () => {
    const a = await generateText({ model: llamem(), system: "Be brief.", prompt: "Hello", maxOutputTokens: 8, temperature: 0 });
    expect(a.usage.outputTokens).toBeGreaterThan(0);
    expect(a.finishReason).toBe("length");
    const s = streamText({ model: llamem(), system: "Be brief.", prompt: "Hello", maxOutputTokens: 8, temperature: 0 });
    let text = "";
    for await (const piece of s.textStream) text += piece;
    expect(text).toBe(a.text);
    const usage = await s.usage;
    expect(usage.inputTokenDetails.cacheReadTokens).toBe((usage.inputTokens ?? 0) - 1);
  });

  it("a forced tool call is run by the SDK, and generateObject returns a valid object", async () => {
    const seen: unknown[] = [];
    const t = await generateText({
      model: llamem(),
      prompt: "Weather in Oslo?",
      tools: { get_weather: tool({ description: "Weather in a city", inputSchema: jsonSchema(WEATHER), execute: async (args) => (seen.push(args), { temperature: 3 }) }) },
      toolChoice: { type: "tool", toolName: "get_weather" },
      maxOutputTokens: 160,
      temperature: 0,
    });
    expect(t.finishReason).toBe("tool-calls");
    expect(seen.length).toBe(1);
    expect(new Ajv().compile(WEATHER)(seen[0])).toBe(true);
    expect(t.toolResults[0]?.output).toEqual({ temperature: 3 });
    const o = await generateObject({ model: llamem(), schema: jsonSchema(ANSWER), prompt: "Answer", maxOutputTokens: 200, temperature: 0 });
    expect(new Ajv().compile(ANSWER)(o.object)).toBe(true);
  });

  it("abort stops the generation and frees the sequence", async () => {
    const ac = new AbortController();
    const s = streamText({ model: llamem(), prompt: "A long story", maxOutputTokens: 3000, abortSignal: ac.signal });
    let pieces = 0;
    try {
      for await (const _ of s.textStream) if (++pieces === 3) ac.abort();
    } catch {
      // the SDK may report the abort
    }
    for (let i = 0; i < 250 && llamem.pool.freeSequences() < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(llamem.pool.freeSequences()).toBe(2);
    const g = context.sequences.map((q) => q.lastGeneration).find((x) => x?.stopReason === "aborted");
    expect(g?.generatedTokens).toBeLessThan(1500);
  });

  it("a conversation keeps its history in a pooled session with the provider's memory policy", async () => {
    const opts = { llamem: { conversation: "c1" } };
    const first = await generateText({ model: llamem(), prompt: "My name is Ada.", maxOutputTokens: 4, temperature: 0, providerOptions: opts });
    const second = await generateText({ model: llamem(), prompt: "What is my name?", maxOutputTokens: 4, temperature: 0, providerOptions: opts });
    expect(second.usage.inputTokens).toBeGreaterThan((first.usage.inputTokens ?? 0) + (first.usage.outputTokens ?? 0));
    expect(second.usage.inputTokenDetails.cacheReadTokens).toBeGreaterThanOrEqual(first.usage.inputTokens ?? 0);
    // The session's sliding window (2 turns kept) bounds the prompt however long the talk.
    let last = second;
    for (let i = 0; i < 6; i++) last = await generateText({ model: llamem(), prompt: `Turn ${i}`, maxOutputTokens: 4, temperature: 0, providerOptions: opts });
    expect(last.usage.inputTokens).toBeLessThan((second.usage.inputTokens ?? 0) + 40);
    const stats = await llamem.pool.stats();
    expect(stats.turnsEvicted).toBeGreaterThan(0);
  });

  it("embedMany through the embedding model", async () => {
    const r = await embedMany({ model: llamem.embeddingModel(), values: ["a cat", "a dog"] });
    expect(r.embeddings.length).toBe(2);
    expect(r.embeddings[0]?.length).toBe(embedModel.info.embeddingSize);
    expect(r.usage.tokens).toBeGreaterThan(0);
  });
});
