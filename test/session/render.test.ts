/**
 * The session renderer on long histories: a list of more than 512 messages is staged on the
 * template sandbox's thread in slices, new messages' texts come back from windows rendered
 * there, and token ends are walked without a buffer per token. Every render must give the same
 * tokens and spans as the renderer did before it was sliced (render-reference.ts), through the
 * same sequence of renders (each renderer with its own caches): fresh, with new messages, with a
 * message changed in place, short again, and without the assistant's header. Tokenizers: a
 * SentencePiece one (a leading space before the text), byte-level BPE ones; templates: the
 * models' own, Qwen3's with reasoning and tool calls, Llama 3.1's with its date, one that writes
 * a message differently when others follow (no message's text is its own), and a built-in
 * format (not Jinja: no staging).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamemError, loadModel, type Model } from "../../lib/index.js";
import { renderChat, StagedChat, templateContextOf } from "../../lib/chat/template.js";
import { renderTemplate } from "../../lib/chat/sandbox.js";
import { Renderer, itemOf, keyOf, type RenderFormat, type RenderItem, type Rendered } from "../../lib/session/render.js";
import { archModel, tinyModel } from "../helpers/models.js";
import { ReferenceRenderer } from "./render-reference.js";

const TEMPLATES = join(import.meta.dirname, "..", "..", "vendor", "llama.cpp", "models", "templates");
const template = (name: string) => readFileSync(join(TEMPLATES, name), "utf8");
const NOW = new Date(2026, 2, 14, 9, 0, 0);

/** Contents that stress the byte accounting: empty, spaces, newlines, multi-byte, astral and lone surrogates, special-token text. */
const SAMPLES = [
  "note",
  "",
  " leading space",
  "trailing space ",
  "line\nbreak\n",
  "tab\tseparated",
  "café crème brûlée",
  "中文字符和标点。",
  "emoji 🎉👍🏽 and a flag 🇫🇷",
  "combining e\u0301 and ñ",
  "a lone \ud800 surrogate and \udc00 another",
  "<|im_start|> looks special",
  "long ".repeat(60),
  "   ",
  "1234567890",
];

/** One history message as a session keeps it (its own key); every few a system note, as apps insert. */
function message(i: number): { role: string; content: string } {
  const role = i % 23 === 22 ? "system" : i % 2 === 0 ? "user" : "assistant";
  return { role, content: `${SAMPLES[i % SAMPLES.length]}${i % 5 === 0 ? "" : ` #${i}`}` };
}

function history(n: number): RenderItem[] {
  return Array.from({ length: n }, (_, i) => itemOf(message(i), false));
}

function expectSame(got: Rendered, want: Rendered, what: string): void {
  expect(got.tokens.length, what).toBe(want.tokens.length);
  expect(Buffer.from(got.tokens.buffer, got.tokens.byteOffset, got.tokens.byteLength).equals(Buffer.from(want.tokens.buffer, want.tokens.byteOffset, want.tokens.byteLength)), `${what}: tokens`).toBe(true);
  expect(got.spans, `${what}: spans`).toEqual(want.spans);
  expect(got.items).toBe(want.items);
}

/** Renders the same sequence of lists with both renderers, comparing each result. */
async function compareSequence(model: Model, format: RenderFormat, base: RenderItem[]): Promise<Rendered> {
  const sliced = new Renderer(model, format);
  const reference = new ReferenceRenderer(model, format);
  const both = async (items: RenderItem[], addAssistant: boolean, what: string): Promise<Rendered> => {
    const got = await sliced.render(items, addAssistant);
    expectSame(got, await reference.render(items, addAssistant), what);
    return got;
  };
  const first = await both(base, true, "fresh");
  // A turn later: the cached messages and two new ones.
  const longer = [...base, itemOf({ role: "user", content: "and now? ünï" }, false), itemOf({ role: "assistant", content: "then 🎉" }, false)];
  await both(longer, true, "two new messages");
  // A message changed in place (the same key, other content), and the first one dropped.
  const changed = longer.slice(1);
  const k = Math.floor(changed.length / 2);
  changed[k] = { ...(changed[k] as RenderItem), key: keyOf(changed[k] as RenderItem), content: "changed in place" };
  await both(changed, true, "changed and shifted");
  await both(changed.slice(-40), true, "short again");
  await both(changed, false, "without the assistant's header");
  return first;
}

let tiny: Model;
let qwen: Model;
let gemma: Model;
let nemo: Model;
let bert: Model;

beforeAll(async () => {
  tiny = await loadModel(await tinyModel("f16"));
  qwen = await loadModel(await archModel("qwen3"));
  gemma = await loadModel(await archModel("gemma3"));
  nemo = await loadModel(await archModel("mistral-nemo"));
  bert = await loadModel(await archModel("bert"));
});

afterAll(async () => {
  await Promise.all([tiny, qwen, gemma, nemo, bert].map((m) => m?.dispose()));
});

describe("session renderer on long histories", () => {
  it("SentencePiece (the tiny model's chatml): the same tokens and spans as before", async () => {
    const first = await compareSequence(tiny, {}, history(700));
    // The spans were found (the template writes every message on its own).
    expect(first.spans.every((s) => s !== undefined)).toBe(true);
  });

  it("a byte-level BPE vocabulary with Qwen3's template: reasoning and tool calls", async () => {
    const items = history(600).map((it, i) =>
      it.role !== "assistant"
        ? it
        : i % 3 === 0
          ? { ...it, reasoning: `thinking ${i} 🤔` }
          : i % 3 === 1
            ? { ...it, toolCalls: [{ id: `call_${i}`, name: "lookup", arguments: { q: `x${i}`, n: i } }] }
            : it,
    );
    await compareSequence(qwen, { template: template("Qwen-Qwen3-0.6B.jinja") }, items);
  });

  it("Llama 3.1's template (a date, tools) on Llama 3's vocabulary", async () => {
    const tools = [{ name: "get_weather", description: "The weather.", parameters: { type: "object" as const, properties: { city: { type: "string" as const } } } }];
    await compareSequence(nemo, { template: template("meta-llama-Llama-3.1-8B-Instruct.jinja"), now: NOW, tools }, history(560));
  });

  it("Gemma's vocabulary and template", async () => {
    await compareSequence(gemma, {}, history(530));
  });

  it("a template that writes a message differently when others follow: every prefix, as before", async () => {
    const source = "{% for m in messages %}{% if loop.last %}[last]{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
    const first = await compareSequence(tiny, { template: source }, history(520));
    expect(first.spans.some((s) => s === undefined)).toBe(true);
  });

  it("a tokenizer whose tokens do not render back to the text (WordPiece lowercases): each piece from its prefix, as before", async () => {
    await compareSequence(bert, { template: "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}" }, history(60));
  });

  it("a built-in format (not Jinja) is not staged, and renders as before", async () => {
    await compareSequence(tiny, { template: "chatml" }, history(600));
  });
});

describe("staged conversations", () => {
  it("render as renderChat does, and give each new message's text as two windows do", async () => {
    const source = template("Qwen-Qwen3-0.6B.jinja");
    const messages = Array.from({ length: 1300 }, (_, i) => message(i));
    const ctx = templateContextOf(qwen);
    const chat = await StagedChat.create(source, messages, ctx, { now: NOW });
    try {
      expect(await chat.render(true)).toBe(await renderChat(source, messages, ctx, { now: NOW, addAssistant: true }));
      const indices = [0, 1, 2, 700, 1299];
      const pieces = await chat.pieces(indices);
      for (const [k, i] of indices.entries()) {
        const before = i > 0 ? await renderChat(source, [messages[i - 1] as (typeof messages)[number]], ctx, { now: NOW, addAssistant: false }) : "";
        const after = await renderChat(source, messages.slice(Math.max(0, i - 1), i + 1), ctx, { now: NOW, addAssistant: false });
        expect(pieces[k]).toBe(after.slice(before.length));
      }
    } finally {
      chat.drop();
    }
  });

  it("a window the template refuses is an ERR_TEMPLATE result, not a failure of the batch", async () => {
    const source = "{% if messages[0].role != 'user' %}{{ raise_exception('must start with a user message') }}{% endif %}{% for m in messages %}{{ m.content }};{% endfor %}";
    const messages = [
      { role: "user", content: "a" },
      { role: "assistant", content: "b" },
      { role: "user", content: "c" },
    ];
    const chat = await StagedChat.create(source, messages, templateContextOf(tiny));
    try {
      const [a, b, c] = await chat.pieces([0, 1, 2]);
      expect(a).toBe("a;");
      expect(b).toBe("b;");
      expect(c).toBeInstanceOf(LlamemError);
      expect((c as LlamemError).code).toBe("ERR_TEMPLATE");
    } finally {
      chat.drop();
    }
  });

  it("is staged again when the sandbox's thread was stopped meanwhile", async () => {
    const source = "{% for m in messages %}{{ m.content }}|{% endfor %}";
    const messages = Array.from({ length: 2000 }, (_, i) => message(i));
    const chat = await StagedChat.create(source, messages, templateContextOf(tiny));
    try {
      // A render over its time stops the thread, and the staged messages with it.
      await expect(renderTemplate("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", {}, new Date(), { timeoutMs: 300 })).rejects.toThrow(/took over 300 ms/);
      expect(await chat.render(false)).toBe(messages.map((m) => `${m.content}|`).join(""));
    } finally {
      chat.drop();
    }
  });

  it("checks every message, naming its index in the whole list", async () => {
    const messages: { role: string; content: unknown }[] = Array.from({ length: 1200 }, (_, i) => message(i));
    messages[1100] = { role: "user", content: 42 };
    await expect(StagedChat.create("{{ messages|length }}", messages as { role: string; content: string }[], templateContextOf(tiny))).rejects.toThrow(/messages\[1100\]\.content must be a string/);
  });
});

describe("render items", () => {
  it("a history entry is its own item, and its identity; an entry without its reasoning is a copy keyed by it", () => {
    const plain = { role: "user", content: "hi", timestamp: 1 };
    expect(itemOf(plain, false)).toBe(plain);
    expect(keyOf(itemOf(plain, false))).toBe(plain);
    const thought = { role: "assistant", content: "yes", reasoning: "because", timestamp: 2 };
    expect(itemOf(thought, true)).toBe(thought);
    const without = itemOf(thought, false);
    expect(without).not.toBe(thought);
    expect(without.reasoning).toBeUndefined();
    expect(without.content).toBe("yes");
    expect(keyOf(without)).toBe(thought);
    const built: RenderItem = { key: plain, role: "system", content: "note" };
    expect(keyOf(built)).toBe(plain);
  });
});
