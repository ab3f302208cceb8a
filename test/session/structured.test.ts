/**
 * Structured output: a GBNF grammar or a JSON Schema on generate, on sessions and on pools, and
 * `llamem prompt --json-schema`. Random weights write random values, but under the grammar the
 * text must parse and validate (checked with ajv); a bad grammar or schema is
 * ERR_INVALID_ARGUMENT naming where, and leaves the sequence and session as they were.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Ajv } from "ajv";
import addFormats from "ajv-formats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool, createSession, loadModel, type Model } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";
import { THREADS } from "./helpers.js";

const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 12 },
    age: { type: "integer" },
    role: { enum: ["admin", "user", null] },
    tags: { type: "array", items: { type: "string", maxLength: 6 }, maxItems: 3 },
    address: {
      type: "object",
      properties: { city: { type: "string", maxLength: 10 }, zip: { type: "string", format: "date" } },
      required: ["city"],
      additionalProperties: false,
    },
  },
  required: ["name", "age", "role"],
  additionalProperties: false,
} as const;

let model: Model;
let path: string;
const ajv = new Ajv({ strict: true });
addFormats.default(ajv);
const validate = ajv.compile(PERSON);

/** Parses `text` and validates it under PERSON, saying why when it fails. */
function expectPerson(text: string, what: string): void {
  let value: unknown;
  expect(() => (value = JSON.parse(text)), `${what}: ${text}`).not.toThrow();
  expect(validate(value), `${what}: ${text}\n${JSON.stringify(validate.errors)}`).toBe(true);
}

beforeAll(async () => {
  path = await tinyModel("f16");
  model = await loadModel(path);
});

afterAll(async () => {
  await model.dispose();
});

describe("structured output", () => {
  it("generate with a JSON Schema writes JSON valid under it, for several seeds", async () => {
    await using ctx = await model.createContext({ contextSize: 1024, ...THREADS });
    for (const seed of [1, 2, 3, 4, 5]) {
      let text = "";
      for await (const piece of ctx.generate("Describe a person:", { jsonSchema: PERSON, maxTokens: 200, seed, temperature: 1 })) text += piece;
      expect(ctx.lastGeneration?.stopReason, `seed ${seed}: ${text}`).toBe("eog");
      expectPerson(text, `seed ${seed}`);
    }
  });

  it("generate with a GBNF grammar follows it", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const grammar = 'root ::= "answer: " ("yes" | "no") "."';
    for (const seed of [1, 2, 3]) {
      let text = "";
      for await (const piece of ctx.generate("Is it?", { grammar, maxTokens: 32, seed })) text += piece;
      expect(text).toMatch(/^answer: (yes|no)\.$/);
    }
  });

  it("a bad grammar or schema is ERR_INVALID_ARGUMENT naming where, and the sequence stays usable", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const run = async (options: object) => {
      for await (const _ of ctx.generate("Hi", { maxTokens: 4, ...options })) void _;
    };
    await expect(run({ grammar: "root ::= (" })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT", message: expect.stringMatching(/grammar/) });
    await expect(run({ grammar: 'main ::= "x"' })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(run({ grammar: "root ::= root \"x\"" })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(run({ jsonSchema: { type: "object", properties: { n: { type: "integer", multipleOf: 3 } } } })).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: expect.stringMatching(/\/properties\/n/),
    });
    await expect(run({ jsonSchema: { type: "nonsense" } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(run({ grammar: 'root ::= "x"', jsonSchema: { type: "string" } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    // Still usable, and unconstrained again.
    let text = "";
    for await (const piece of ctx.generate("Hi", { maxTokens: 4, seed: 1 })) text += piece;
    expect(ctx.lastGeneration?.generatedTokens).toBe(4);
  });

  it("a session prompt with a JSON Schema, then a free one; the schema applies to that prompt only", async () => {
    await using session = await createSession(model, { context: { contextSize: 2048, ...THREADS }, temperature: 0.9, seed: 7 });
    const reply = await session.prompt("Describe a person as JSON.", { jsonSchema: PERSON, maxTokens: 200 });
    expectPerson(reply, "session");
    expect(session.history[session.history.length - 1]?.content).toBe(reply);
    const free = await session.respond("Thanks.", { maxTokens: 6 });
    expect(free.generation.generatedTokens).toBe(6);
    await expect(session.prompt("x", { jsonSchema: { type: "object", not: {} } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    expect(session.history.length).toBe(4);
  });

  it("pool sessions each follow their own schema, batched together", async () => {
    await using ctx = await model.createContext({ contextSize: 2048, sequences: 3, ...THREADS });
    await using pool = createPool(ctx);
    const sessions = await Promise.all([0, 1, 2].map(() => pool.createSession({ temperature: 1 })));
    const numbers = { type: "array", items: { type: "integer", minimum: 0, maximum: 99 }, minItems: 2, maxItems: 4 };
    const [a, b, c] = await Promise.all([
      sessions[0]!.prompt("A person:", { jsonSchema: PERSON, maxTokens: 200, seed: 1 }),
      sessions[1]!.prompt("Numbers:", { jsonSchema: numbers, maxTokens: 64, seed: 2 }),
      sessions[2]!.prompt("Yes or no?", { grammar: 'root ::= "yes" | "no"', maxTokens: 8, seed: 3 }),
    ]);
    expectPerson(a as string, "pool person");
    const list = JSON.parse(b as string) as unknown;
    expect(new Ajv().compile(numbers)(list), b).toBe(true);
    expect(c).toMatch(/^(yes|no)$/);
  });
});

describe("llamem prompt --json-schema", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "llamem-schema-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const cli = join(import.meta.dirname, "..", "..", "dist", "lib", "cli", "index.js");
  const run = (args: string[]) => promisify(execFile)(process.execPath, [cli, ...args], { env: { ...process.env, NO_COLOR: "1" } });

  it("prints JSON valid under the schema file; a file that is not JSON is a usage error (exit 2)", async () => {
    const schema = join(dir, "person.json");
    writeFileSync(schema, JSON.stringify(PERSON));
    const { stdout } = await run(["prompt", "-m", path, "--json-schema", schema, "--max-tokens", "200", "--seed", "3", "--quiet", "-t", String(THREADS.threads), "A person:"]);
    expectPerson(stdout.trim(), "cli");
    const bad = join(dir, "bad.json");
    writeFileSync(bad, "{ not json");
    await expect(run(["prompt", "-m", path, "--json-schema", bad, "--quiet", "x"])).rejects.toMatchObject({ code: 2 });
  });
});
