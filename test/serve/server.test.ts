/**
 * `llamem serve` (startServer) through the clients apps use: the `openai` package and the AI
 * SDK's OpenAI-compatible provider, on loopback, with a Qwen 2.5 model (Hermes tool calls).
 * Random weights never call a tool or write JSON on their own, so calls are forced (tool_choice)
 * and JSON is constrained (response_format): what is tested is the mechanism end to end.
 */
import { request } from "node:http";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { Ajv } from "ajv";
import { generateObject, generateText, jsonSchema, streamText, tool } from "ai";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadModel, startServer, type Context, type LlamemServer, type Model } from "../../lib/index.js";
import { watchEvalBatch } from "../helpers/eval-batch.js";
import { archModel } from "../helpers/models.js";
import { ANSWER, TEMPLATE, WEATHER } from "./fixtures.js";

let model: Model;
let embedModel: Model;
let context: Context;
let embeddings: Context;
let server: LlamemServer;
let client: OpenAI;

beforeAll(async () => {
  model = await loadModel(await archModel("qwen2"));
  embedModel = await loadModel(await archModel("bert"));
  // Flash attention off: a repeated request evaluates only its last prompt token, alone, where the
  // first evaluated it in a batch, and with flash attention ggml's CPU kernels for the two round
  // differently (docs/models.md, "Exactness"); random weights turn that into other greedy text.
  context = await model.createContext({ contextSize: 4096, sequences: 2, threads: 1, flashAttention: "off" });
  embeddings = await embedModel.createContext({ embeddings: true, threads: 1 });
  server = await startServer(context, { port: 0, modelId: "tiny", template: TEMPLATE, embeddings, maxQueue: 2, maxBodyBytes: 1 << 20 });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
});

afterAll(async () => {
  await server?.close();
  await embeddings?.dispose();
  await context?.dispose();
  await embedModel?.dispose();
  await model?.dispose();
});

/** A raw HTTP request, for what clients refuse to send. */
function raw(path: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers } }, (res) => {
      let text = "";
      res.on("data", (c: Buffer) => (text += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("openai client", () => {
  it("chat: a reply with usage, the same greedy text twice, and the second reuses the cached prompt", async () => {
    const ask = () => client.chat.completions.create({ model: "tiny", messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello there" }], max_tokens: 8, temperature: 0 });
    const a = await ask();
    const b = await ask();
    expect(a.object).toBe("chat.completion");
    expect(a.choices[0]?.message.role).toBe("assistant");
    expect(typeof a.choices[0]?.message.content).toBe("string");
    expect(a.usage?.completion_tokens).toBeGreaterThan(0);
    expect(b.choices[0]?.message.content).toBe(a.choices[0]?.message.content);
    // All but the last prompt token came from the cache.
    expect(b.usage?.prompt_tokens_details?.cached_tokens).toBe((b.usage?.prompt_tokens ?? 0) - 1);
  });

  it("streaming: the chunks add up to the non-streamed reply, then a finish reason and usage", async () => {
    const messages = [{ role: "user" as const, content: "Tell me a story" }];
    const whole = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 10, temperature: 0 });
    const stream = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let finish: string | null | undefined;
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    expect(text).toBe(whole.choices[0]?.message.content);
    expect(finish).toBe(whole.choices[0]?.finish_reason);
    expect(usage?.completion_tokens).toBe(whole.usage?.completion_tokens);
  });

  it("tools: a forced call comes back as tool_calls with valid arguments, and the tool result continues the chat", async () => {
    const tools = [{ type: "function" as const, function: { name: "get_weather", description: "Weather in a city", parameters: WEATHER } }];
    const first = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "Weather in Paris?" }],
      tools,
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: 160,
      temperature: 0,
    });
    const choice = first.choices[0];
    expect(choice?.finish_reason).toBe("tool_calls");
    const call = choice?.message.tool_calls?.[0];
    expect(call?.type).toBe("function");
    if (call?.type !== "function") throw new Error("no function call");
    expect(call.function.name).toBe("get_weather");
    expect(new Ajv().compile(WEATHER)(JSON.parse(call.function.arguments))).toBe(true);
    expect(call.id.length).toBeGreaterThan(0);
    const second = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "Weather in Paris?" }, choice?.message as OpenAI.ChatCompletionMessageParam, { role: "tool", tool_call_id: call.id, content: '{"temperature":21}' }],
      tools,
      tool_choice: "none",
      max_tokens: 6,
      temperature: 0,
    });
    expect(second.choices[0]?.finish_reason).not.toBe("tool_calls");
    expect(second.usage?.prompt_tokens).toBeGreaterThan(first.usage?.prompt_tokens ?? 0);
  });

  it("response_format json_schema: the reply parses and validates", async () => {
    const r = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "Answer in JSON" }],
      response_format: { type: "json_schema", json_schema: { name: "answer", schema: ANSWER } },
      max_tokens: 200,
      temperature: 0,
    });
    const value: unknown = JSON.parse(r.choices[0]?.message.content ?? "");
    expect(new Ajv().compile(ANSWER)(value)).toBe(true);
  });

  it("logprobs: one entry per generated token, the chosen one among the top when greedy", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3 });
    const lp = r.choices[0]?.logprobs?.content ?? [];
    expect(lp.length).toBe(r.usage?.completion_tokens);
    for (const e of lp) {
      expect(e.top_logprobs.length).toBe(3);
      expect(e.logprob).toBeCloseTo(e.top_logprobs[0]?.logprob ?? NaN, 5);
    }
  });

  it("a response sent whole collects a loop's steps; a streamed one takes them as they come (chat, a conversation, completions)", async () => {
    let flags: boolean[] = [];
    const unwatch = watchEvalBatch(context, (_, loop) => loop && flags.push(loop.stream));
    const taken = async (work: () => Promise<unknown>) => {
      flags = [];
      await work();
      expect(flags.length).toBeGreaterThan(0);
      return flags;
    };
    const drain = async (stream: AsyncIterable<unknown>) => {
      for await (const _ of stream) {
        // consumed as it comes
      }
    };
    try {
      const messages = [{ role: "user" as const, content: "Tell me about rivers" }];
      const o = { model: "tiny", messages, max_tokens: 24, temperature: 0 };
      const conv = { headers: { "x-conversation-id": "conv-steps" } };
      const runs = {
        chatWhole: () => client.chat.completions.create(o),
        chatStreamed: async () => drain(await client.chat.completions.create({ ...o, stream: true })),
        conversationWhole: () => client.chat.completions.create(o, conv),
        conversationStreamed: async () => drain(await client.chat.completions.create({ ...o, messages: [{ role: "user", content: "And lakes?" }], stream: true }, conv)),
        completionWhole: () => client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 24, temperature: 0 }),
        completionStreamed: async () => drain(await client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 24, temperature: 0, stream: true })),
      };
      for (const [name, run] of Object.entries(runs)) {
        const seen = await taken(run);
        expect({ name, streamed: [...new Set(seen)] }).toEqual({ name, streamed: [name.endsWith("Streamed")] });
      }
    } finally {
      unwatch();
    }
  });

  it("completions and embeddings", async () => {
    const c = await client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 5, temperature: 0 });
    expect(c.object).toBe("text_completion");
    expect(c.usage?.completion_tokens).toBeGreaterThan(0);
    const e = await client.embeddings.create({ model: "tiny", input: ["a cat", "a dog", "a car"] });
    expect(e.data.length).toBe(3);
    const v = e.data[0]?.embedding ?? [];
    expect(v.length).toBe(embedModel.info.embeddingSize);
    // Unit length, as the server normalizes.
    expect(Math.hypot(...v)).toBeCloseTo(1, 3);
    const b64 = await client.embeddings.create({ model: "tiny", input: "a cat", encoding_format: "base64" });
    // The client hands base64 back as the server wrote it: little-endian float32s.
    const bytes = Buffer.from(b64.data[0]?.embedding as unknown as string, "base64");
    expect([...new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4)]).toEqual(v.map((x) => Math.fround(x)));
  });

  it("a conversation id keeps the history on the server: the client sends only the new message", async () => {
    const headers = { "x-conversation-id": "conv-1" };
    const a = await client.chat.completions.create({ model: "tiny", messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "My name is Ada." }], max_tokens: 4, temperature: 0 }, { headers });
    const b = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "What is my name?" }], max_tokens: 4, temperature: 0 }, { headers });
    // The second prompt holds the first turn: more tokens than the message alone, almost all cached.
    expect(b.usage?.prompt_tokens).toBeGreaterThan((a.usage?.prompt_tokens ?? 0) + (a.usage?.completion_tokens ?? 0));
    expect(b.usage?.prompt_tokens_details?.cached_tokens).toBeGreaterThanOrEqual(a.usage?.prompt_tokens ?? 0);
    // Resending the whole history is understood too: the same prompt as sending only the new message.
    const whole = await client.chat.completions.create(
      {
        model: "tiny",
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "My name is Ada." },
          { role: "assistant", content: a.choices[0]?.message.content ?? "" },
          { role: "user", content: "What is my name?" },
          { role: "assistant", content: b.choices[0]?.message.content ?? "" },
          { role: "user", content: "And again?" },
        ],
        max_tokens: 4,
        temperature: 0,
      },
      { headers },
    );
    const only = (b.usage?.prompt_tokens ?? 0) + (b.usage?.completion_tokens ?? 0);
    expect(whole.usage?.prompt_tokens).toBeGreaterThan(only);
    expect(whole.usage?.prompt_tokens).toBeLessThan(only + 24);
  });
});

describe("AI SDK over the server (@ai-sdk/openai-compatible)", () => {
  const provider = () => createOpenAICompatible({ name: "llamem", baseURL: `${server.url}/v1`, supportsStructuredOutputs: true });

  it("generateText, streamText, a tool call the SDK runs, and generateObject", async () => {
    const m = provider().chatModel("tiny");
    const g = await generateText({ model: m, prompt: "Hello", maxOutputTokens: 6, temperature: 0 });
    expect(g.usage.outputTokens).toBeGreaterThan(0);
    const s = streamText({ model: m, prompt: "Hello", maxOutputTokens: 6, temperature: 0 });
    let streamed = "";
    for await (const piece of s.textStream) streamed += piece;
    expect(streamed).toBe(g.text);
    const seen: unknown[] = [];
    const t = await generateText({
      model: m,
      prompt: "Weather in Rome?",
      tools: { get_weather: tool({ description: "Weather in a city", inputSchema: jsonSchema(WEATHER), execute: async (args) => (seen.push(args), { temperature: 20 }) }) },
      toolChoice: { type: "tool", toolName: "get_weather" },
      maxOutputTokens: 160,
      temperature: 0,
    });
    expect(seen.length).toBe(1);
    expect(new Ajv().compile(WEATHER)(seen[0])).toBe(true);
    expect(t.toolResults[0]?.output).toEqual({ temperature: 20 });
    const o = await generateObject({ model: m, schema: jsonSchema(ANSWER), prompt: "Answer", maxOutputTokens: 200, temperature: 0 });
    expect(new Ajv().compile(ANSWER)(o.object)).toBe(true);
  });
});

describe("faults: each gets its HTTP error and the server keeps serving", () => {
  it("malformed JSON, a body over the limit, an unknown model, max_tokens of 10^9, a bad key, an unknown route", async () => {
    const bad = await raw("/v1/chat/completions", "{not json");
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).error.code).toBe("invalid_json");
    const big = await raw("/v1/chat/completions", Buffer.alloc(10 * 1000 * 1000, 0x20));
    expect(big.status).toBe(413);
    const unknown = await raw("/v1/chat/completions", JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }));
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body).error.code).toBe("model_not_found");
    const huge = await raw("/v1/chat/completions", JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 1e9 }));
    expect(huge.status).toBe(400);
    expect(JSON.parse(huge.body).error.param).toBe("max_tokens");
    const noRoute = await raw("/v1/nothing", "{}");
    expect(noRoute.status).toBe(404);
    const ok = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "still there?" }], max_tokens: 2 });
    expect(ok.choices.length).toBe(1);
  });

  it("a client gone mid-stream frees its sequence at once; past the queue, 429 with Retry-After", async () => {
    // An idle conversation of an earlier test may hold a sequence; what counts is getting back to this.
    const free = server.pool.freeSequences();
    const ac = new AbortController();
    const stream = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "long story" }], max_tokens: 2000, stream: true }, { signal: ac.signal });
    let pieces = 0;
    try {
      for await (const _ of stream) if (++pieces === 3) ac.abort();
    } catch {
      // the client reports the abort, or ends the stream quietly
    }
    // Both sequences free again, and the one that streamed stopped early: aborted, far from 2000 tokens.
    for (let i = 0; i < 250 && server.pool.freeSequences() < free; i++) await new Promise((r) => setTimeout(r, 20));
    expect(server.pool.freeSequences()).toBe(free);
    const aborted = context.sequences.map((s) => s.lastGeneration).find((g) => g?.stopReason === "aborted");
    expect(aborted?.generatedTokens).toBeLessThan(1000);
    // 2 sequences + a queue of 2: a burst of 8 long requests gets some 429s; the rest complete.
    const burst = await Promise.all(
      Array.from({ length: 8 }, () => raw("/v1/chat/completions", JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "go" }], max_tokens: 16 }))),
    );
    const refused = burst.filter((r) => r.status === 429);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused[0]?.headers["retry-after"]).toBe("1");
    expect(burst.filter((r) => r.status === 200).length).toBe(8 - refused.length);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/^llamem_rejected_total [1-9]/m);
    expect(metrics).toMatch(/^llamem_memory_bytes\{device="CPU",kind="kv",context="generation"\} [1-9]/m);
    expect(metrics).toMatch(/^llamem_requests_in_flight 0$/m);
  });
});

describe("security", () => {
  it("another address needs an API key; with one, requests without it get 401", async () => {
    await expect(startServer(context, { host: "0.0.0.0", port: 0 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    const second = await model.createContext({ contextSize: 512, threads: 1 });
    const locked = await startServer(second, { port: 0, apiKey: "secret-key-1", template: TEMPLATE });
    try {
      const no = await fetch(`${locked.url}/v1/models`);
      expect(no.status).toBe(401);
      const yes = await fetch(`${locked.url}/v1/models`, { headers: { authorization: "Bearer secret-key-1" } });
      expect(yes.status).toBe(200);
      const health = await fetch(`${locked.url}/health`);
      expect(health.status).toBe(200);
      // No CORS headers unless asked for.
      expect(yes.headers.get("access-control-allow-origin")).toBeNull();
    } finally {
      await locked.close();
      await second.dispose();
    }
  });
});
