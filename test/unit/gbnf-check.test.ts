/**
 * The GBNF syntax check (lib/grammar/gbnf.ts): llama.cpp's own grammars and the JSON Schema
 * grammars pass, bad grammars fail with the place and the reason, and llama.cpp (through the
 * native sampler, not `complete()`, so that the check under test never answers for it) agrees on
 * every case: the check refuses nothing llama.cpp takes, and everything it refuses, llama.cpp does.
 */
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkGbnf } from "../../lib/grammar/gbnf.js";
import { jsonSchemaToGrammar, schemaRules, type JsonSchema } from "../../lib/grammar/json-schema.js";
import { loadModel, type Model } from "../../lib/index.js";
import { native } from "../../lib/internal/native.js";
import { nativeModel } from "../../lib/internal/handles.js";
import { errorOf } from "../helpers/errors.js";
import { tinyModel } from "../helpers/models.js";

const VENDOR = join(__dirname, "..", "..", "vendor", "llama.cpp");
const GRAMMARS = join(VENDOR, "grammars");
const PARSER_TESTS = join(VENDOR, "tests", "test-grammar-parser.cpp");

/** llama.cpp's grammar files, by name ([] without the vendored tree). */
const vendorFiles: [string, string][] = existsSync(GRAMMARS)
  ? readdirSync(GRAMMARS)
      .filter((f) => f.endsWith(".gbnf"))
      .sort()
      .map((f) => [f, readFileSync(join(GRAMMARS, f), "utf8")])
  : [];

/** The grammars of llama.cpp's parser tests: verify_parsing ones parse, verify_failure ones do not. */
const parserTests: { ok: boolean; grammar: string }[] = existsSync(PARSER_TESTS)
  ? [...readFileSync(PARSER_TESTS, "utf8").matchAll(/verify_(parsing|failure)\(R"""\(([\s\S]*?)\)"""/g)].map((m) => ({ ok: m[1] === "parsing", grammar: m[2] as string }))
  : [];

const schemas: [string, JsonSchema][] = [
  ["object", { type: "object", properties: { name: { type: "string" }, age: { type: "integer", minimum: 0 } }, required: ["name"] }],
  ["array", { type: "array", items: { type: "number" }, minItems: 1, maxItems: 5 }],
  ["enum", { enum: ["red", "green", 3, null, { a: [1, "x\"y"] }] }],
  ["strings", { type: "object", properties: { d: { type: "string", format: "date-time" }, u: { type: "string", format: "uuid" }, s: { type: "string", minLength: 2, maxLength: 40 } } }],
  [
    "nested",
    {
      $defs: { node: { type: "object", properties: { v: { type: "boolean" }, kids: { type: "array", items: { $ref: "#/$defs/node" }, maxItems: 3 } } } },
      anyOf: [{ $ref: "#/$defs/node" }, { type: "array", prefixItems: [{ const: "tag" }, { type: ["string", "null"] }] }],
    },
  ],
  ["anything", true],
];
const schemaGrammars: [string, string][] = schemas.map(([name, s]) => [name, jsonSchemaToGrammar(s)]);
{
  // Embedded rules, as tool calls use them: prefixed names under a hand-written root.
  const { root, rules } = schemaRules(schemas[0]?.[1] as JsonSchema, "tool0");
  schemaGrammars.push(["embedded", [`root ::= "<call>" ${root} "</call>"`, ...rules].join("\n")]);
}

/** Grammars at the edges of the syntax that llama.cpp takes. */
const goodEdges: string[] = [
  'root ::= ""',
  "root ::=",
  "root ::= []",
  "root ::= [^]",
  'root ::= "a" x{0}', // the repetition drops the reference to x, so llama.cpp never misses x
  'root ::= x\nroot ::= "a"', // the first root and its reference to x are overwritten
  'root ::= "\\x41\\u00e9\\U0001F600\\t\\n\\r\\\\\\"\\[\\]\\-" "é😀" [\\]-] [a-] [-a] [^"\\\\\\x00-\\x1F]',
  'root ::= "a" # comment\n# a full-line comment\n\n  other ::= "b"   \n',
  'root ::= x\r\nx ::= "a" |\r\n  "b"\r\n',
  'root ::= (\n  "a"  # inside a group\n  | "b"\n  | ("c" "d")\n)',
  'root ::= "a" |\n  "b" |\n  "c"',
  'root ::= "a"{ 2 , 3 } "b"{0,0} "c"{1} "d"{2,} "e"{0,5000} .* x-1+ x-1?\nx-1 ::= [0-9]',
  'root ::= ("a"{50}){40}',
  "root ::= <[1]> !<[2]>*",
  'root ::= "two\nlines"',
];

/** Recursion that is not left recursion: something that cannot be empty comes first. */
const goodRecursion: string[] = [
  'root ::= "(" root ")" | ""',
  'root ::= list\nlist ::= item list | item\nitem ::= [a-z]',
  'root ::= ws "a" root | ""\nws ::= [ ]*',
  'root ::= (ws "a")* ws\nws ::= [ ]*', // what is repeated cannot be empty
  'root ::= ws ("," ws root)?\nws ::= [ ]?',
  'root ::= x{0} "a" root | "b"\nx ::= "x"', // x{0} is dropped, and "a" cannot be empty
];

/**
 * Bad grammars and the message the check gives (exactly). `llama`: why llama.cpp is not asked:
 * it never ends (counts 2^64 rules, until memory runs out), it reads a C string (up to the NUL),
 * or it misses the left recursion (it sees a rule can be empty only when an alternative is empty as
 * written) and recurses until it aborts the whole process (std::bad_alloc).
 */
const bad: { grammar: string; message: string; llama?: "hangs" | "truncates" | "crashes" }[] = [
  { grammar: 'root ::= value\n\nvalue "x"', message: 'line 3, column 7: expecting "::=" after rule name "value", found "\\""' },
  { grammar: 'root ::= value\nvalue : "x"', message: 'line 2, column 7: expecting "::=" after rule name "value", found ":"' },
  { grammar: 'root ::= "abc\n', message: 'line 1, column 10: literal is not closed by "\\""' },
  { grammar: 'root ::= "é" [a-z\n', message: 'line 1, column 14: character class is not closed by "]"' },
  { grammar: 'root ::= [a-', message: 'line 1, column 10: character class is not closed by "]"' },
  { grammar: 'root ::= "a\\q"', message: 'line 1, column 12: unknown escape "\\q" (use \\x, \\u, \\U, \\t, \\n, \\r, \\\\, \\", \\[, \\], \\-)' },
  { grammar: 'root ::= "\\x4"', message: 'line 1, column 11: expecting 2 hex digits after "\\x"' },
  { grammar: 'root ::= [\\u12G4]', message: 'line 1, column 11: expecting 4 hex digits after "\\u"' },
  { grammar: 'root ::= ("a" | "b"\n', message: 'line 2, column 1: expecting ")" to close the group at line 1, column 10, found the end of the grammar' },
  { grammar: 'root ::= "a" item\nitems ::= "b"', message: 'rule "root" references undefined rule "item" (line 1, column 14)' },
  { grammar: 'root ::= ("a" | x-y*)\n', message: 'rule "root" references undefined rule "x-y" (line 1, column 17)' },
  { grammar: 'root ::= x\nroot ::= "a"\ny ::= "b"', message: 'rule "root" references undefined rule "x" (line 1, column 10)' },
  { grammar: 'start ::= "a"', message: 'no rule "root"' },
  { grammar: "# nothing but a comment\n", message: "no rules (the grammar has only blanks and comments)" },
  { grammar: 'root ::= "a" )', message: 'line 1, column 14: expecting a new line after rule "root", found ")"' },
  { grammar: "root ::= my_rule\nmy_rule ::= \"a\"", message: 'line 1, column 12: expecting a new line after rule "root", found "_" (rule names are letters, digits and "-")' },
  { grammar: 'root ::= "a"\n  "b"', message: 'line 2, column 3: expecting a rule name (letters, digits, -), found "\\""' },
  { grammar: 'root ::= "a"\n| "b"', message: 'line 2, column 1: expecting a rule name (letters, digits, -), found "|"' },
  { grammar: '::= "a"', message: 'line 1, column 1: expecting a rule name (letters, digits, -), found ":"' },
  { grammar: 'root ::= "a"\n  ::= "b"', message: 'line 2, column 3: expecting a rule name (letters, digits, -), found ":"' },
  { grammar: 'root ::= *"a"', message: 'line 1, column 10: expecting something before "*" to repeat' },
  { grammar: 'root ::= ""+', message: 'line 1, column 12: expecting something before "+" to repeat' },
  { grammar: 'root ::= "a"{0}?', message: 'line 1, column 16: expecting something before "?" to repeat' },
  { grammar: 'root ::= "a"{,3}', message: 'line 1, column 14: expecting a number after "{", found ","' },
  { grammar: 'root ::= "a"{2;}', message: 'line 1, column 15: expecting "," or "}", found ";"' },
  { grammar: 'root ::= "a"{2,3', message: 'line 1, column 17: expecting "}", found the end of the grammar' },
  { grammar: 'root ::= "a"{2,1}', message: "line 1, column 13: the maximum 1 is less than the minimum 2", llama: "hangs" },
  { grammar: 'root ::= "a"{3,0}', message: "line 1, column 13: the maximum 0 is less than the minimum 3", llama: "hangs" },
  { grammar: 'root ::= "a"{2001}', message: "line 1, column 13: more than 2000 repetitions" },
  { grammar: 'root ::= "a"{99999999999999999999}', message: "line 1, column 14: number too large" },
  { grammar: 'root ::= ("a"{0,50}){50}', message: "line 1, column 21: this repetition makes more than 2000 copies of rules; repeat less or simplify what is repeated" },
  { grammar: "root ::= !x", message: 'line 1, column 11: expecting "<" (a token) after "!", found "x"' },
  { grammar: "root ::= <[12>", message: 'line 1, column 14: expecting "]" after the token id, found ">"' },
  { grammar: "root ::= <abc", message: 'line 1, column 10: token is not closed by ">"' },
  // llama.cpp would parse `root ::= "a"` and drop the rest.
  { grammar: 'root ::= "a"\n\u0000x ::= ', message: "line 2, column 1: a NUL character (llama.cpp would ignore the rest of the grammar)", llama: "truncates" },
  // llama.cpp would see "" and apply no grammar at all.
  { grammar: '\u0000root ::= "a"', message: "line 1, column 1: a NUL character (llama.cpp would ignore the rest of the grammar)", llama: "truncates" },
  // Left recursion that llama.cpp detects (refused here with the same rule), then the kind it misses.
  { grammar: 'root ::= root "x" | "y"', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 10); llama.cpp cannot use such a grammar' },
  { grammar: 'root ::= a\na ::= b "x" | "y"\nb ::= a "z"', message: 'rule "a" is left-recursive: it can reach itself before matching anything (a → b → a at line 3, column 7); llama.cpp cannot use such a grammar' },
  { grammar: 'root ::= "("? root "x" | "y"', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 15); llama.cpp cannot use such a grammar' },
  { grammar: 'root ::= "("{0,3} root "x" | "y"', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 19); llama.cpp cannot use such a grammar' },
  { grammar: 'root ::= "" root "x" | "y"', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 13); llama.cpp cannot use such a grammar' },
  { grammar: 'root ::= (| "(") root "x" | "y"', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 18); llama.cpp cannot use such a grammar' },
  { grammar: 'root ::= ( ws | "" ) root "x" | "y"\nws ::= [ ]*', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 22); llama.cpp cannot use such a grammar' },
  { grammar: 'root ::= a\na ::= b "x"\nb ::= c? a | "y"\nc ::= "c"', message: 'rule "a" is left-recursive: it can reach itself before matching anything (a → b → a at line 3, column 10); llama.cpp cannot use such a grammar' },
  { grammar: 'root ::= ("")* "x"', message: 'rule "root" is left-recursive: it can reach itself before matching anything (the repetition at line 1, column 14 repeats what can be empty); llama.cpp cannot use such a grammar' },
  { grammar: 'root ::= ws root "x" | "y"\nws ::= [ ]*', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 13); llama.cpp cannot use such a grammar', llama: "crashes" },
  { grammar: 'root ::= ws root "x" | "y"\nws ::= [ ]?', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 13); llama.cpp cannot use such a grammar', llama: "crashes" },
  { grammar: 'root ::= ws root "x" | "y"\nws ::= [ ]{0,3}', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 13); llama.cpp cannot use such a grammar', llama: "crashes" },
  { grammar: 'root ::= ws root "x" | "y"\nws ::= e\ne ::= ""', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 13); llama.cpp cannot use such a grammar', llama: "crashes" },
  { grammar: 'root ::= ws root "x" | "y"\nws ::= e\ne ::= " " |', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 13); llama.cpp cannot use such a grammar', llama: "crashes" },
  { grammar: 'root ::= ([ ]?) root "x" | "y"', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 17); llama.cpp cannot use such a grammar', llama: "crashes" },
  { grammar: 'root ::= a b root "x" | "y"\na ::= [ ]*\nb ::= a "b"?', message: 'rule "root" is left-recursive: it can reach itself before matching anything (root → root at line 1, column 14); llama.cpp cannot use such a grammar', llama: "crashes" },
  { grammar: 'root ::= a\na ::= b "x" | "y"\nb ::= ws a\nws ::= [ ]*', message: 'rule "a" is left-recursive: it can reach itself before matching anything (a → b → a at line 3, column 10); llama.cpp cannot use such a grammar', llama: "crashes" },
  { grammar: 'root ::= ws* "x"\nws ::= [ ]*', message: 'rule "root" is left-recursive: it can reach itself before matching anything (the repetition at line 1, column 12 repeats what can be empty); llama.cpp cannot use such a grammar', llama: "crashes" },
  { grammar: 'root ::= "x" (ws)+\nws ::= [ ]?', message: 'rule "root" is left-recursive: it can reach itself before matching anything (the repetition at line 1, column 18 repeats what can be empty); llama.cpp cannot use such a grammar', llama: "crashes" },
];

const check = (grammar: string, root = "root", where = "grammar") => checkGbnf(grammar, root, where);

describe("checkGbnf accepts", () => {
  it.skipIf(vendorFiles.length === 0)("llama.cpp's grammar files (vendor/llama.cpp/grammars; skipped when absent)", () => {
    expect(vendorFiles.length).toBeGreaterThan(0);
    for (const [name, text] of vendorFiles) expect(() => check(text, "root", name), name).not.toThrow();
  });

  it("the grammars of JSON schemas", () => {
    for (const [name, text] of schemaGrammars) expect(() => check(text, "root", name), name).not.toThrow();
  });

  it("the edges of the syntax", () => {
    for (const g of goodEdges) expect(() => check(g), JSON.stringify(g)).not.toThrow();
  });

  it("recursion that is not left recursion", () => {
    for (const g of goodRecursion) expect(() => check(g), JSON.stringify(g)).not.toThrow();
  });

  it.skipIf(parserTests.length === 0)("what llama.cpp's parser tests parse, and refuses what they refuse", () => {
    for (const t of parserTests) {
      if (t.ok) expect(() => check(t.grammar), t.grammar).not.toThrow();
      else errorOf(() => check(t.grammar));
    }
  });

  it("another root rule", () => {
    expect(() => check('foobar ::= "x"', "foobar")).not.toThrow();
    expect(errorOf(() => check('foobar ::= "x"'))).toBe('grammar: no rule "root"');
  });
});

describe("checkGbnf refuses", () => {
  it.each(bad)("$grammar", ({ grammar, message }) => {
    expect(errorOf(() => check(grammar))).toBe(`grammar: ${message}`);
  });

  it("left recursion in a long chain of rules, without overflowing the stack", () => {
    const chain = Array.from({ length: 20000 }, (_, i) => `a${i} ::= a${i + 1}`).join("\n");
    expect(errorOf(() => check(`root ::= a0\n${chain}\na20000 ::= [ ]* root "x" | "y"`))).toBe(`grammar: rule "root" is left-recursive: it can reach itself before matching anything (root → a0 → a1 → a2 → … → a19998 → a19999 → a20000 → root at line 20002, column 17); llama.cpp cannot use such a grammar`);
  });

  it("with the given prefix", () => {
    expect(errorOf(() => check('root ::= "a', "root", "tools[0].grammar"))).toBe('tools[0].grammar: line 1, column 10: literal is not closed by "\\""');
  });
});

describe("llama.cpp agrees", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(await tinyModel("f16"));
  });
  afterAll(async () => {
    await model?.dispose();
  });

  /** Whether llama.cpp builds a grammar sampler from `grammar` (it answers ERR_INVALID_ARGUMENT when not). */
  function accepts(grammar: string, root = "root"): boolean {
    try {
      new (native().Sampler)(nativeModel(model), { stages: [{ type: "grammar", grammar, root }, { type: "greedy" }], backend: false }).dispose();
      return true;
    } catch (err) {
      expect((err as { code?: unknown }).code, grammar).toBe("ERR_INVALID_ARGUMENT");
      return false;
    }
  }

  it("on every grammar the check accepts", () => {
    const good = [...vendorFiles.map(([, t]) => t), ...schemaGrammars.map(([, t]) => t), ...goodEdges, ...goodRecursion, ...parserTests.filter((t) => t.ok).map((t) => t.grammar)];
    for (const g of good) expect(accepts(g), g).toBe(true);
    expect(accepts('foobar ::= "x"', "foobar")).toBe(true);
  });

  it("on every grammar the check refuses (but those it cannot be asked about)", () => {
    const refused = [...bad.filter((b) => b.llama === undefined).map((b) => b.grammar), ...parserTests.filter((t) => !t.ok).map((t) => t.grammar)];
    for (const g of refused) expect(accepts(g), g).toBe(false);
  });

  it("takes a grammar with a NUL, reading only what comes before it (so the check refuses it)", () => {
    for (const b of bad.filter((b) => b.llama === "truncates")) expect(accepts(b.grammar), b.grammar).toBe(true);
  });
});
