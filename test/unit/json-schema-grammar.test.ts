/**
 * JSON Schema to GBNF (lib/grammar/json-schema.ts), checked without the native addon: the test
 * GBNF recognizer (test/helpers/gbnf-match.ts) decides whether a text is in a grammar's language,
 * and Ajv (draft 2020-12) says whether the text's value is valid, so each case checks the test
 * data as well as the grammar. Random sentences drawn from each grammar must all parse and validate.
 */
import { errorOf } from "../helpers/errors.js";
import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import { jsonSchemaToGrammar, schemaRules, type JsonSchema } from "../../lib/grammar/json-schema.js";
import { parseGbnf, type Gbnf } from "../helpers/gbnf-match.js";

// ---- a validator to check the test data against -------------------------------------------------

const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const leap = (y: number) => y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
function isDate(s: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (mo < 1 || mo > 12 || d < 1) return false;
  return d <= (mo === 2 && leap(y) ? 29 : (DAYS[mo - 1] as number));
}
function isTime(s: string): boolean {
  const m = /^(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-](\d{2}):(\d{2}))$/i.exec(s);
  if (!m) return false;
  const ok = Number(m[1]) < 24 && Number(m[2]) < 60 && Number(m[3]) < 60;
  return ok && (m[6] === undefined || (Number(m[6]) < 24 && Number(m[7]) < 60));
}
const ajv = new Ajv2020({ strict: false });
ajv.addFormat("date", isDate);
ajv.addFormat("time", isTime);
ajv.addFormat("date-time", (s: string) => {
  const [d, t, ...rest] = s.split(/[Tt]/);
  return rest.length === 0 && d !== undefined && t !== undefined && isDate(d) && isTime(t);
});
ajv.addFormat("uuid", /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
const valid = (schema: JsonSchema, value: unknown) => ajv.validate(schema as object, value) as boolean;

/** A seeded random source, so failures reproduce. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function grammarOf(schema: JsonSchema): Gbnf {
  return parseGbnf(jsonSchemaToGrammar(schema));
}


// ---- cases: valid values are accepted (compact and indented), invalid ones rejected ---------------

interface Case {
  readonly name: string;
  readonly schema: JsonSchema;
  /** Values valid under the schema: the grammar accepts them as JSON.stringify writes them. */
  readonly valid: readonly unknown[];
  /** Values invalid under the schema: the grammar rejects them, however written. */
  readonly invalid: readonly unknown[];
  /** Texts the grammar accepts as they are (other spellings of valid values). */
  readonly validText?: readonly string[];
  /** Texts the grammar rejects (invalid JSON, or valid JSON of an invalid value). */
  readonly invalidText?: readonly string[];
  /** Whether indented spellings are accepted too (not for enum/const objects, written compact). */
  readonly indented?: boolean;
}

const person = {
  type: "object",
  properties: { name: { type: "string" }, age: { type: "integer" }, admin: { type: "boolean" } },
  required: ["name", "admin"],
};

const CASES: readonly Case[] = [
  {
    name: "string",
    schema: { type: "string" },
    valid: ["", "abc", 'quote" back\\slash', "line\nbreak\ttab", "ünï 中 😀", "\u0001\u001f", "\u2028"],
    invalid: [1, null, true, ["a"], { a: "b" }],
    validText: ['"\\u00e9\\uD7FF\\ue000\\/"', '"\\b\\f\\n\\r\\t"'],
    invalidText: ['"open', '"bad \\x41"', '"raw\ttab"', '"raw\nnewline"', "'single'", '"\\u12"'],
  },
  {
    name: "string lengths (in code points)",
    schema: { type: "string", minLength: 2, maxLength: 3 },
    valid: ["ab", "abc", "😀😀", "é\n", "a😀c"],
    invalid: ["a", "abcd", "😀", "", "😀😀😀😀"],
    validText: ['"\\u00e9\\u00e9"', '"\\"\\\\"'],
    invalidText: ['"\\n"', '"\\u0041\\u0042\\u0043\\u0044"'],
  },
  {
    name: "integer",
    schema: { type: "integer" },
    valid: [0, -1, 7, 123456789, -9007199254740991],
    invalid: [1.5, "1", null, [1]],
    invalidText: ["01", "-", "+1", "1.", "0x10", "--1", "1 2"],
  },
  {
    name: "number",
    schema: { type: "number" },
    valid: [0, -0.5, 3.14, 1e10, 2.5e-7, -123],
    invalid: ["1", null, true],
    validText: ["1E+2", "-0.0e-5", "0.000", "-0"],
    invalidText: [".5", "1.", "+1", "NaN", "Infinity", "01", "1e", "1e+", "- 1"],
  },
  { name: "boolean", schema: { type: "boolean" }, valid: [true, false], invalid: [0, "true", null], invalidText: ["True", "tru"] },
  { name: "null", schema: { type: "null" }, valid: [null], invalid: [0, "null", false], invalidText: ["nul", "None"] },
  { name: "type list", schema: { type: ["string", "null"] }, valid: ["x", null], invalid: [1, {}, [], false] },
  {
    name: "object: required, optional, no extras",
    schema: { ...person, additionalProperties: false },
    valid: [{ name: "a", admin: true }, { name: "a", age: 3, admin: false }],
    invalid: [{}, { name: "a" }, { admin: true }, { name: "a", admin: true, extra: 1 }, { name: 1, admin: true }, { name: "a", age: 1.5, admin: true }, []],
    validText: ['{ "name" : "x" ,\n  "admin" : true }', '{\n\t"name": "x",\n\t"admin": false\n}'],
    invalidText: ['{"name":"a","admin":true,}', '{"name":"a" "admin":true}', '{"name":"a","admin":true'],
  },
  {
    name: "object: all optional",
    schema: { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" }, c: { type: "integer" } }, additionalProperties: false },
    valid: [{}, { a: 1 }, { b: 2 }, { c: 3 }, { a: 1, c: 3 }, { a: 1, b: 2, c: 3 }],
    invalid: [{ d: 1 }, { a: "1" }],
    invalidText: ["{,}", '{"a":1,}', '{,"a":1}', '{"a":1 "b":2}'],
  },
  {
    name: "object: additionalProperties schema",
    schema: { type: "object", properties: { id: { type: "integer" } }, required: ["id"], additionalProperties: { type: "string" } },
    valid: [{ id: 1 }, { id: 1, x: "a", y: "b" }, { id: 1, "": "" }, { id: 2, i: "s", idx: "t", Id: "u" }],
    invalid: [{ id: 1, x: 1 }, { x: "a" }, { id: "1" }],
    invalidText: ['{"id":1,"id":"x"}', '{"id":1,"x":"a","id":"b"}'],
  },
  {
    name: "object: additionalProperties true beside awkward keys",
    schema: {
      type: "object",
      properties: { a: { type: "string" }, 'a"b': { type: "integer" }, ü: { type: "null" }, "a\\": { type: "boolean" } },
      additionalProperties: true,
    },
    valid: [{}, { a: "s" }, { a: "s", ab: 1, 'a"': 2, '"': 3, ü2: 4, 'a\\"b': 5, "": [null] }, { 'a"b': 1, "a\\": true }],
    invalid: [{ a: 1 }, { 'a"b': "x" }, { ü: 1 }, { "a\\": null }],
    invalidText: ['{"a":"s","a":1}', '{"ü":null,"ü":1}'],
  },
  {
    name: "object: required beyond properties",
    schema: { type: "object", properties: { a: { type: "string" } }, required: ["a", "b"] },
    valid: [{ a: "x", b: 1 }, { a: "x", b: { deep: [true] } }],
    invalid: [{ a: "x" }, { b: 1 }],
  },
  {
    name: "object: property order as declared, optional ones in between",
    schema: {
      type: "object",
      properties: { p1: { type: "integer" }, p2: { type: "integer" }, p3: { type: "integer" }, p4: { type: "integer" } },
      required: ["p2", "p4"],
      additionalProperties: false,
    },
    valid: [{ p2: 1, p4: 1 }, { p1: 1, p2: 1, p4: 1 }, { p2: 1, p3: 1, p4: 1 }, { p1: 1, p2: 1, p3: 1, p4: 1 }],
    invalid: [{ p1: 1, p2: 1 }, { p2: 1, p3: 1 }, { p4: 1 }],
  },
  {
    name: "array: items, minItems, maxItems",
    schema: { type: "array", items: { type: "integer" }, minItems: 1, maxItems: 3 },
    valid: [[1], [1, 2], [1, 2, 3]],
    invalid: [[], [1, 2, 3, 4], ["a"], [1, null], {}],
    invalidText: ["[1,]", "[,1]", "[1 2]", "[1"],
  },
  {
    name: "array: any items",
    schema: { type: "array" },
    valid: [[], [1, "a", null, [true], { k: {} }]],
    invalid: [{}, "[]"],
  },
  {
    name: "array: prefixItems, then no more",
    schema: { type: "array", prefixItems: [{ type: "boolean" }, { type: "string" }], items: false },
    valid: [[], [true], [true, "x"]],
    invalid: [[true, "x", 1], ["x"], [true, 1]],
  },
  {
    name: "array: prefixItems, minItems, rest",
    schema: { type: "array", prefixItems: [{ type: "boolean" }, { type: "string" }], items: { type: "integer" }, minItems: 2, maxItems: 4 },
    valid: [[true, "x"], [false, "", 1], [true, "y", 1, 2]],
    invalid: [[true], [true, "x", 1, 2, 3], [true, "x", "y"]],
  },
  {
    name: "array: nested objects",
    schema: { type: "array", items: { type: "object", properties: { k: { type: "array", items: { type: "string" } } }, required: ["k"] } },
    valid: [[], [{ k: [] }, { k: ["a", "b"] }]],
    invalid: [[{}], [{ k: [1] }]],
  },
  {
    name: "enum of mixed values",
    schema: { enum: ["a", 1, null, true, 2.5, { x: [1, 2] }, [1, "b"], 'q"uote'] },
    valid: ["a", 1, null, true, 2.5, { x: [1, 2] }, [1, "b"], 'q"uote'],
    invalid: ["b", 2, false, { x: [1] }, [1], "A"],
    indented: false,
  },
  { name: "const", schema: { const: "fixed" }, valid: ["fixed"], invalid: ["Fixed", "fixed ", null] },
  { name: "const object", schema: { const: { a: [1, { b: null }] } }, valid: [{ a: [1, { b: null }] }], invalid: [{ a: [1, {}] }, {}], indented: false },
  { name: "enum filtered by type", schema: { type: "string", enum: ["a", 1, "b", null] }, valid: ["a", "b"], invalid: [1, null, "c"] },
  { name: "enum and const together", schema: { enum: ["a", "b"], const: "b" }, valid: ["b"], invalid: ["a"] },
  {
    name: "enum filtered by lengths and bounds",
    schema: { enum: ["a", "bb", "😀😀", 1, 5, 10, 2.5, null], minLength: 2, minimum: 2, exclusiveMaximum: 10 },
    valid: ["bb", "😀😀", 5, 2.5, null],
    invalid: ["a", 1, 10],
  },
  { name: "enum beside keywords for other types", schema: { enum: ["x", 1], properties: { a: {} }, items: false }, valid: ["x", 1], invalid: ["y", 2] },
  { name: "enum merged with a string schema (allOf)", schema: { allOf: [{ type: "string", maxLength: 2 }, { enum: ["a", "abc", 7] }] }, valid: ["a"], invalid: ["abc", 7] },
  {
    name: "format date (month lengths, leap years)",
    schema: { type: "string", format: "date" },
    valid: ["2024-02-29", "2000-02-29", "1600-02-29", "0004-02-29", "1999-12-31", "2023-04-30", "2023-01-31", "0000-01-01"],
    invalid: ["2023-02-29", "1900-02-29", "2100-02-29", "2023-04-31", "2023-13-01", "2023-00-10", "2023-01-00", "2023-1-01", "2023-01-32", "20230101", 20230101],
  },
  {
    name: "format time",
    schema: { type: "string", format: "time" },
    valid: ["23:59:59Z", "00:00:00.123+05:30", "12:30:00-08:00", "07:08:09.123456789Z"],
    invalid: ["24:00:00Z", "12:60:00Z", "12:00:60Z", "12:00Z", "12:00:00+24:00", "1:00:00Z"],
  },
  {
    name: "format date-time",
    schema: { type: "string", format: "date-time" },
    valid: ["2024-02-29T12:00:00Z", "1999-12-31T23:59:59.5+01:00"],
    invalid: ["2024-02-30T12:00:00Z", "2024-02-29X12:00:00Z", "2024-02-29T12:00Z", "2024-02-29"],
  },
  {
    name: "format uuid",
    schema: { type: "string", format: "uuid" },
    valid: ["123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000"],
    invalid: ["123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400g", "123e4567-e89b-12d3-a456-4266141740001"],
  },
  {
    name: "anyOf",
    schema: { anyOf: [{ type: "string", maxLength: 2 }, { type: "integer", minimum: 10 }] },
    valid: ["", "ab", 10, 99999],
    invalid: ["abc", 9, null, 10.5],
  },
  {
    name: "oneOf of tagged objects",
    schema: {
      oneOf: [
        { type: "object", properties: { kind: { const: "a" }, x: { type: "integer" } }, required: ["kind", "x"], additionalProperties: false },
        { type: "object", properties: { kind: { const: "b" }, y: { type: "string" } }, required: ["kind", "y"], additionalProperties: false },
      ],
    },
    valid: [{ kind: "a", x: 1 }, { kind: "b", y: "s" }],
    invalid: [{ kind: "a", y: "s" }, { kind: "c", x: 1 }, { kind: "b", x: 1 }],
  },
  {
    name: "anyOf beside other keywords (distributed)",
    schema: {
      type: "object",
      properties: { a: { type: "integer" }, b: { type: "integer" } },
      anyOf: [{ required: ["a"] }, { required: ["b"] }],
      additionalProperties: false,
    },
    valid: [{ a: 1 }, { b: 2 }, { a: 1, b: 2 }],
    invalid: [{}, { a: "x" }, { c: 1 }],
  },
  {
    name: "allOf of objects",
    schema: {
      allOf: [
        { type: "object", properties: { a: { type: "string" } }, required: ["a"] },
        { properties: { b: { type: "integer" } }, required: ["b"] },
      ],
    },
    valid: [{ a: "x", b: 1 }],
    invalid: [{ a: "x" }, { b: 1 }, { a: 1, b: 1 }, "x"],
  },
  {
    name: "allOf where one side forbids the other's properties",
    schema: {
      allOf: [
        { type: "object", properties: { a: { type: "string" } }, additionalProperties: false },
        { type: "object", properties: { b: { type: "integer" } } },
      ],
    },
    valid: [{}, { a: "x" }],
    invalid: [{ b: 1 }, { a: "x", b: 1 }],
  },
  {
    name: "allOf: a property meets the other side's additionalProperties",
    schema: {
      allOf: [
        { type: "object", properties: { a: { type: "integer" } }, required: ["a"] },
        { type: "object", additionalProperties: { type: "integer", minimum: 5 } },
      ],
    },
    valid: [{ a: 5 }, { a: 9 }],
    invalid: [{ a: 4 }, {}],
  },
  {
    name: "allOf with $ref and integer bounds",
    schema: { $defs: { pos: { type: "integer", minimum: 1 } }, allOf: [{ $ref: "#/$defs/pos" }, { maximum: 5 }] },
    valid: [1, 3, 5],
    invalid: [0, 6, -1, "3"],
  },
  {
    name: "allOf of arrays: prefixItems meet items",
    schema: { allOf: [{ type: "array", prefixItems: [{ type: "integer" }] }, { type: "array", items: { type: "integer", maximum: 9 }, maxItems: 2 }] },
    valid: [[], [1], [1, 9]],
    invalid: [[10], [1, 10], [1, 2, 3], ["a"]],
  },
  {
    name: "$ref beside other keywords",
    schema: {
      $defs: { base: { type: "object", properties: { a: { type: "string" } }, required: ["a"] } },
      $ref: "#/$defs/base",
      properties: { b: { type: "boolean" } },
      required: ["b"],
    },
    valid: [{ a: "x", b: true }],
    invalid: [{ a: "x" }, { b: true }],
  },
  {
    name: "$ref: recursive linked list ($defs)",
    schema: {
      $defs: { node: { type: "object", properties: { v: { type: "integer" }, next: { anyOf: [{ $ref: "#/$defs/node" }, { type: "null" }] } }, required: ["v", "next"] } },
      $ref: "#/$defs/node",
    },
    valid: [{ v: 1, next: null }, { v: 1, next: { v: 2, next: { v: 3, next: null } } }],
    invalid: [{ v: 1 }, { v: 1, next: { v: "2", next: null } }, { v: 1, next: 5 }],
  },
  {
    name: "$ref: recursive tree (definitions)",
    schema: {
      definitions: { tree: { type: "object", properties: { value: { type: "integer" }, children: { type: "array", items: { $ref: "#/definitions/tree" } } }, required: ["value"] } },
      $ref: "#/definitions/tree",
    },
    valid: [{ value: 1 }, { value: 1, children: [] }, { value: 1, children: [{ value: 2, children: [{ value: 3 }] }, { value: 4 }] }],
    invalid: [{ value: 1, children: [{}] }, { children: [] }],
  },
  {
    name: '$ref: "#" (the root)',
    schema: { type: "array", items: { $ref: "#" } },
    valid: [[], [[]], [[], [[[]]]]],
    invalid: [[1], [[null]], {}],
  },
  {
    name: "$ref with an escaped pointer",
    schema: { $defs: { "a/b": { type: "integer" }, "c~d": { type: "string" } }, type: "array", prefixItems: [{ $ref: "#/$defs/a~1b" }, { $ref: "#/$defs/c~0d" }] },
    valid: [[], [1], [1, "x"]],
    invalid: [["x"], [1, 1]],
  },
  {
    name: "true is any value",
    schema: true,
    valid: [0, -1.5e-3, "s", null, true, [], {}, [1, { a: [null, "x"] }], { x: { y: { z: [] } } }],
    invalid: [],
    invalidText: ["", "{", "[1,]", "tru", "01", "{a:1}", "[1]]", "'x'", '{"a" 1}'],
  },
  { name: "{} is any value", schema: {}, valid: [1, "x", [null], { a: {} }], invalid: [] },
  { name: "annotations only", schema: { title: "T", description: "d", default: 1, examples: [1], $comment: "c", $schema: "https://json-schema.org/draft/2020-12/schema" }, valid: [1, "x", {}], invalid: [] },
  {
    name: "annotations everywhere",
    schema: {
      $schema: "https://json-schema.org/draft/2020-12/schema",
      $id: "https://example.com/s",
      title: "Search",
      type: "object",
      properties: { q: { type: "string", description: "the query", examples: ["cats"], default: "" }, n: { type: "integer", deprecated: true, readOnly: true } },
      required: ["q"],
    },
    valid: [{ q: "x" }, { q: "x", n: 2 }],
    invalid: [{ n: 2 }],
  },
];

describe("jsonSchemaToGrammar: languages", () => {
  for (const c of CASES) {
    it(c.name, () => {
      const g = grammarOf(c.schema);
      for (const v of c.valid) {
        expect(valid(c.schema, v), `test data: ${JSON.stringify(v)} should be valid`).toBe(true);
        expect(g.accepts(JSON.stringify(v)), `accepts ${JSON.stringify(v)}`).toBe(true);
        if (c.indented !== false) expect(g.accepts(JSON.stringify(v, null, 2)), `accepts indented ${JSON.stringify(v)}`).toBe(true);
      }
      for (const v of c.invalid) {
        expect(valid(c.schema, v), `test data: ${JSON.stringify(v)} should be invalid`).toBe(false);
        expect(g.accepts(JSON.stringify(v)), `rejects ${JSON.stringify(v)}`).toBe(false);
        expect(g.accepts(JSON.stringify(v, null, 2)), `rejects indented ${JSON.stringify(v)}`).toBe(false);
      }
      for (const t of c.validText ?? []) {
        expect(valid(c.schema, JSON.parse(t)), `test data: ${t} should be valid`).toBe(true);
        expect(g.accepts(t), `accepts ${t}`).toBe(true);
      }
      for (const t of c.invalidText ?? []) {
        let value: unknown;
        let parsed = true;
        try {
          value = JSON.parse(t);
        } catch {
          parsed = false;
        }
        if (parsed) expect(valid(c.schema, value), `test data: ${t} should be invalid`).toBe(false);
        expect(g.accepts(t), `rejects ${t}`).toBe(false);
      }
    });
  }

  it("every sentence drawn from the grammars is valid JSON of a valid value", () => {
    let drawn = 0;
    CASES.forEach((c, i) => {
      const g = grammarOf(c.schema);
      const rnd = random(1000 + i);
      for (let k = 0; k < 60; k++) {
        const text = g.sample(rnd, { depth: 10 });
        let value: unknown;
        expect(() => (value = JSON.parse(text)), `${c.name}: ${JSON.stringify(text)} parses`).not.toThrow();
        expect(valid(c.schema, value), `${c.name}: ${JSON.stringify(text)} is valid`).toBe(true);
        drawn++;
      }
    });
    expect(drawn).toBe(CASES.length * 60);
  });

  it("older array forms: items as a list, additionalItems", () => {
    const g = grammarOf({ type: "array", items: [{ type: "string" }, { type: "integer" }], additionalItems: false });
    for (const t of ["[]", '["a"]', '["a",1]']) expect(g.accepts(t), t).toBe(true);
    for (const t of ["[1]", '["a","b"]', '["a",1,2]']) expect(g.accepts(t), t).toBe(false);
    const rest = grammarOf({ type: "array", items: [{ type: "string" }], additionalItems: { type: "null" } });
    expect(rest.accepts('["a",null,null]')).toBe(true);
    expect(rest.accepts('["a",1]')).toBe(false);
  });

  it("a schema without type but with object keywords is an object", () => {
    const schema = { properties: { a: { type: "string" } } };
    const g = grammarOf(schema);
    expect(g.accepts('{"a":"x"}')).toBe(true);
    expect(g.accepts("{}")).toBe(true);
    // Valid under JSON Schema (properties only constrain objects), but not what the author means.
    expect(valid(schema, "x")).toBe(true);
    expect(g.accepts('"x"')).toBe(false);
  });

  it("narrows on purpose: valid texts the grammar does not write", () => {
    // Each of these is valid under its schema; the grammar keeps a model to one way of writing.
    const narrower: [JsonSchema, string][] = [
      [person, '{"name":"a","admin":true,"extra":1}'], // no additionalProperties: declared properties only
      [person, '{"admin":true,"name":"a"}'], // declared order
      [{ type: "integer" }, "1.0"], // integers without fraction
      [{ type: "integer" }, "1e3"], // ... or exponent
      [{ type: "string" }, '"\\ud83d\\ude00"'], // no surrogate escapes (the character itself is fine)
      [{ type: "array" }, `[${" ".repeat(30)}]`], // bounded whitespace
      [{ type: "number" }, "12345678901234567"], // at most 16 integer digits
    ];
    for (const [schema, text] of narrower) {
      expect(valid(schema, JSON.parse(text)), text).toBe(true);
      expect(grammarOf(schema).accepts(text), text).toBe(false);
    }
    expect(grammarOf({ type: "string" }).accepts('"😀"')).toBe(true);
  });

  it("the whole grammar is one root rule and named rules", () => {
    const text = jsonSchemaToGrammar(person);
    expect(text.startsWith("root ::= ")).toBe(true);
    expect(text.endsWith("\n")).toBe(true);
    for (const line of text.trim().split("\n")) expect(line).toMatch(/^[A-Za-z0-9-]+ ::= \S/);
    expect(parseGbnf(text).rules[0]).toBe("root");
  });
});

describe("jsonSchemaToGrammar: integer bounds", () => {
  const bounds = [undefined, -1000, -101, -100, -99, -10, -9, -1, 0, 1, 9, 10, 11, 99, 100, 101, 123, 999, 1000];
  const probes = [...Array.from({ length: 241 }, (_, i) => i - 120), -1001, -1000, -999, 998, 999, 1000, 1001, 12345, -12345, 1e15, -1e15];

  it("minimum and maximum, every pair", () => {
    let grammars = 0;
    for (const lo of bounds) {
      for (const hi of bounds) {
        if (lo !== undefined && hi !== undefined && lo > hi) continue;
        const schema = { type: "integer", ...(lo === undefined ? {} : { minimum: lo }), ...(hi === undefined ? {} : { maximum: hi }) };
        const g = grammarOf(schema);
        grammars++;
        for (const n of probes) {
          const inRange = (lo === undefined || n >= lo) && (hi === undefined || n <= hi);
          expect(g.accepts(String(n)), `${JSON.stringify(schema)}: ${n}`).toBe(inRange);
        }
        expect(g.accepts("-0")).toBe(false);
        expect(g.accepts("007")).toBe(false);
      }
    }
    expect(grammars).toBeGreaterThan(150);
  });

  it("exclusive and fractional bounds", () => {
    const cases: [object, number[], number[]][] = [
      [{ exclusiveMinimum: 2.5 }, [3, 4, 100], [2, 2.5]],
      [{ minimum: 2.5, maximum: 5.9 }, [3, 5], [2, 6]],
      [{ exclusiveMinimum: 3, exclusiveMaximum: 6 }, [4, 5], [3, 6]],
      [{ maximum: -0.5 }, [-1, -100], [0]],
      [{ minimum: -3, exclusiveMaximum: -2 }, [-3], [-2, -4]],
      [{ minimum: 1e15, maximum: 1e15 + 5 }, [1e15, 1e15 + 5], [1e15 - 1, 1e15 + 6]],
      [{ minimum: 12345678901234567890 }, [], [99999]],
    ];
    for (const [bound, inside, outside] of cases) {
      const g = grammarOf({ type: "integer", ...bound });
      for (const n of inside) expect(g.accepts(String(n)), `${JSON.stringify(bound)}: ${n}`).toBe(true);
      for (const n of outside) expect(g.accepts(String(n)), `${JSON.stringify(bound)}: ${n}`).toBe(false);
    }
    expect(grammarOf({ type: "integer", minimum: 12345678901234567890 }).accepts("12345678901234567890")).toBe(true);
  });

  it("bounds beside other types apply to integers only", () => {
    const g = grammarOf({ type: ["integer", "string"], minimum: 5 });
    expect(g.accepts("5")).toBe(true);
    expect(g.accepts("4")).toBe(false);
    expect(g.accepts('"4"')).toBe(true);
  });

  it("an empty range accepts nothing", () => {
    expect(errorOf(() => jsonSchemaToGrammar({ type: "integer", minimum: 5, maximum: 4 }))).toBe("jsonSchema: the schema accepts no value");
    expect(errorOf(() => jsonSchemaToGrammar({ type: "integer", exclusiveMinimum: 1, exclusiveMaximum: 2 }))).toMatch(/accepts no value/);
  });
});

describe("jsonSchemaToGrammar: refusals name the place", () => {
  const refusals: [JsonSchema, string][] = [
    [{ type: "object", properties: { age: { type: "integer", multipleOf: 2 } } }, 'jsonSchema at /properties/age: "multipleOf" is not supported'],
    [{ type: "string", pattern: "^a" }, 'jsonSchema: "pattern" is not supported'],
    [{ type: "array", items: { type: "string", pattern: "x" } }, 'jsonSchema at /items: "pattern" is not supported'],
    [{ type: "object", patternProperties: { "^x": {} } }, 'jsonSchema: "patternProperties" is not supported'],
    [{ not: { type: "string" } }, 'jsonSchema: "not" is not supported'],
    [{ if: { type: "string" }, then: { minLength: 1 } }, 'jsonSchema: "if" is not supported'],
    [{ type: "object", propertyNames: { maxLength: 3 } }, 'jsonSchema: "propertyNames" is not supported'],
    [{ type: "object", minProperties: 1 }, 'jsonSchema: "minProperties" is not supported'],
    [{ type: "object", dependentRequired: { a: ["b"] } }, 'jsonSchema: "dependentRequired" is not supported'],
    [{ type: "array", contains: { type: "integer" } }, 'jsonSchema: "contains" is not supported'],
    [{ type: "array", uniqueItems: true }, 'jsonSchema: "uniqueItems" is not supported'],
    [{ type: "object", unevaluatedProperties: false }, 'jsonSchema: "unevaluatedProperties" is not supported'],
    [{ type: "string", nullable: true }, 'jsonSchema: "nullable" is not supported'],
    [{ type: "object", properties: { mail: { type: "string", format: "email" } } }, 'jsonSchema at /properties/mail/format: "format": "email" is not supported'],
    [{ type: "object", properties: { price: { type: "number", minimum: 0 } } }, 'jsonSchema at /properties/price: "minimum" is not supported for "number" (only for "integer")'],
    [{ minimum: 0 }, 'jsonSchema: "minimum" is only supported with "type": "integer"'],
    [{ type: "string", format: "date", maxLength: 10 }, 'jsonSchema: "format" together with "minLength" or "maxLength" is not supported'],
    [{ enum: ["a", { a: 1 }], required: ["a"] }, 'jsonSchema: "enum" together with "required" is not supported'],
    [{ const: "2024-01-01", format: "date" }, 'jsonSchema: "const" together with "format" is not supported'],
    [{ enum: [[1], "x"], maxItems: 1 }, 'jsonSchema: "enum" together with "maxItems" is not supported'],
    [{ $ref: "https://example.com/schema.json" }, 'jsonSchema at /$ref: external "$ref" "https://example.com/schema.json" is not supported (only "#/..." in the same schema)'],
    [{ type: "object", properties: { a: { $ref: "#/$defs/missing" } } }, 'jsonSchema at /properties/a/$ref: "$ref" "#/$defs/missing" points to nothing in the schema'],
    [{ type: "object", properties: { "a/b": { type: "strin" } } }, 'jsonSchema at /properties/a~1b/type: "type" must be one of null, boolean, object, array, number, integer, string (or a list of them), got "strin"'],
    [{ type: [] }, 'jsonSchema at /type: "type" must name at least one type'],
    [{ type: ["string", "string"] }, 'jsonSchema at /type: "type" lists "string" twice'],
    [{ type: "object", required: "a" }, 'jsonSchema at /required: "required" must be an array of strings'],
    [{ type: "object", required: ["a", 1] }, 'jsonSchema at /required: "required" must be an array of strings'],
    [{ type: "object", properties: [] }, 'jsonSchema at /properties: "properties" must be an object'],
    [{ type: "object", additionalProperties: 1 }, 'jsonSchema at /additionalProperties: "additionalProperties" must be a schema'],
    [{ type: "string", minLength: -1 }, 'jsonSchema at /minLength: "minLength" must be a non-negative integer'],
    [{ type: "array", maxItems: 1.5 }, 'jsonSchema at /maxItems: "maxItems" must be a non-negative integer'],
    [{ type: "string", maxLength: 100_000 }, 'jsonSchema at /maxLength: "maxLength" above 10000 is not supported'],
    [{ type: "integer", minimum: "1" }, 'jsonSchema at /minimum: "minimum" must be a number'],
    [{ enum: [] }, 'jsonSchema at /enum: "enum" must be a non-empty array'],
    [{ enum: [1, Number.NaN] }, "jsonSchema at /enum/1: an enum value must be a JSON value"],
    [{ anyOf: [] }, 'jsonSchema at /anyOf: "anyOf" must be a non-empty array of schemas'],
    [{ anyOf: [{ type: "string" }], oneOf: [{ type: "string" }] }, 'jsonSchema: "anyOf" and "oneOf" together are not supported'],
    [{ type: "object", properties: { a: 5 } } as JsonSchema, "jsonSchema at /properties/a: a schema must be an object or a boolean"],
    [{ type: "array", items: null } as JsonSchema, "jsonSchema at /items: a schema must be an object or a boolean"],
    [false, "jsonSchema: the schema accepts no value"],
    [{ allOf: [{ type: "string" }, { type: "integer" }] }, "jsonSchema: the schema accepts no value"],
    [{ type: "object", properties: { a: false }, required: ["a"] }, "jsonSchema: the schema accepts no value"],
    [{ allOf: [{ prefixItems: [{}] }, { prefixItems: [{}] }] }, 'jsonSchema at /allOf/1: cannot merge two "prefixItems" exactly (allOf)'],
    [{ allOf: [{ format: "date" }, { format: "time" }] }, 'jsonSchema at /allOf/1: cannot merge two different "format" exactly (allOf)'],
    [{ allOf: [{ anyOf: [{ type: "string" }] }, { anyOf: [{ type: "null" }] }] }, 'jsonSchema at /allOf/1: cannot merge two "anyOf"/"oneOf" exactly (allOf)'],
    [{ allOf: [] }, 'jsonSchema at /allOf: "allOf" must be a non-empty array of schemas'],
    [{ $defs: { a: { $ref: "#/$defs/a" } }, $ref: "#/$defs/a" }, 'jsonSchema at /$defs/a/$ref: "$ref" "#/$defs/a" refers to itself without an object or array in between'],
    [
      { $defs: { a: { anyOf: [{ $ref: "#/$defs/b" }, { type: "string" }] }, b: { anyOf: [{ $ref: "#/$defs/a" }, { type: "null" }] } }, $ref: "#/$defs/a" },
      'jsonSchema at /$defs/b/anyOf/0/$ref: "$ref" "#/$defs/a" refers to itself without an object or array in between',
    ],
    [{ $defs: { a: { $ref: "#/$defs/a", type: "string" } }, $ref: "#/$defs/a" }, 'jsonSchema at /$defs/a/$ref: "$ref" "#/$defs/a" refers to itself without an object or array in between'],
    [
      { $defs: { a: { allOf: [{ $ref: "#/$defs/a" }] } }, type: "array", items: { $ref: "#/$defs/a" } },
      'jsonSchema at /$defs/a/allOf/0/$ref: "$ref" "#/$defs/a" refers to itself without an object or array in between',
    ],
    [{ $defs: { a: { allOf: [{ $ref: "#/$defs/a" }] } }, allOf: [{ $ref: "#/$defs/a" }] }, 'jsonSchema at /$defs/a/allOf/0: "$ref" expands more than 64 times (a cycle?)'],
  ];

  for (const [schema, message] of refusals) {
    it(message, () => {
      expect(errorOf(() => jsonSchemaToGrammar(schema))).toBe(message);
    });
  }

  it("prefixes messages with options.where", () => {
    expect(errorOf(() => jsonSchemaToGrammar({ type: "object", properties: { n: { multipleOf: 3 } } }, { where: 'tool "calc" parameters' }))).toBe(
      'tool "calc" parameters at /properties/n: "multipleOf" is not supported',
    );
  });

  it("names places inside definitions", () => {
    const schema = { $defs: { item: { type: "object", properties: { code: { type: "string", pattern: "^[A-Z]+$" } } } }, type: "array", items: { $ref: "#/$defs/item" } };
    expect(errorOf(() => jsonSchemaToGrammar(schema))).toBe('jsonSchema at /$defs/item/properties/code: "pattern" is not supported');
  });

  it("stops at the depth limit", () => {
    let deep: JsonSchema = { type: "string" };
    for (let i = 0; i < 100; i++) deep = { type: "array", items: deep };
    expect(errorOf(() => jsonSchemaToGrammar(deep))).toMatch(/^jsonSchema at (\/items)+: the schema nests deeper than 64 levels$/);
    let fine: JsonSchema = { type: "string" };
    for (let i = 0; i < 60; i++) fine = { type: "array", items: fine };
    expect(grammarOf(fine).accepts(`${"[".repeat(60)}"x"${"]".repeat(60)}`)).toBe(true);
  });

  it("survives a schema object that contains itself", () => {
    const schema: { type: string; properties: Record<string, unknown> } = { type: "object", properties: {} };
    schema.properties.self = schema;
    expect(errorOf(() => jsonSchemaToGrammar(schema))).toMatch(/nests deeper than 64 levels/);
    const value: Record<string, unknown> = {};
    value.me = value;
    expect(errorOf(() => jsonSchemaToGrammar({ const: value }))).toBe('jsonSchema at /const: "const" must be a JSON value');
  });

  it("stops at the size limits", () => {
    const properties: Record<string, JsonSchema> = {};
    for (let i = 0; i < 12_000; i++) properties[`p${i}`] = { type: "integer" };
    expect(errorOf(() => jsonSchemaToGrammar({ type: "object", properties }))).toMatch(/^jsonSchema at \/properties\/p\d+: the schema is too large/);
    expect(errorOf(() => jsonSchemaToGrammar({ enum: Array.from({ length: 1001 }, (_, i) => i) }))).toBe('jsonSchema at /enum: "enum" has more than 1000 values');
    // Many anyOf branches, each distributed over constraints beside them, stay bounded too.
    const wide = { type: "object", properties: { a: { type: "integer" } }, anyOf: Array.from({ length: 11_000 }, () => ({ required: ["a"] })) };
    expect(errorOf(() => jsonSchemaToGrammar(wide))).toMatch(/too large/);
  });

  it("reports ERR_INVALID_ARGUMENT for non-schemas", () => {
    for (const bad of [null, 5, "x", [], undefined]) {
      expect(errorOf(() => jsonSchemaToGrammar(bad as unknown as JsonSchema))).toBe("jsonSchema: a schema must be an object or a boolean");
    }
  });
});

describe("schemaRules", () => {
  const a = { type: "object", properties: { x: { type: "integer", minimum: 0 } }, required: ["x"] };
  const b = { type: "array", items: { type: "string", format: "date" }, maxItems: 2 };

  it("names every rule with the prefix and returns the top rule", () => {
    const { root, rules } = schemaRules(a, "tool0");
    expect(root).toBe("tool0-root");
    expect(rules[0]?.startsWith("tool0-root ::= ")).toBe(true);
    for (const line of rules) expect(line).toMatch(/^tool0-[A-Za-z0-9-]+ ::= \S/);
  });

  it("two prefixes embed in one grammar without clashing", () => {
    const ra = schemaRules(a, "a");
    const rb = schemaRules(b, "b");
    const text = [`root ::= "A" ${ra.root} | "B" ${rb.root}`, ...ra.rules, ...rb.rules].join("\n");
    const g = parseGbnf(text); // throws on a rule defined twice or a missing rule
    expect(g.accepts('A{"x":0}')).toBe(true);
    expect(g.accepts('B["2024-01-31"]')).toBe(true);
    expect(g.accepts('A["2024-01-31"]')).toBe(false);
    expect(g.accepts('B{"x":0}')).toBe(false);
    expect(g.accepts('A{"x":-1}')).toBe(false);
    // Prefixes that are prefixes of each other still cannot meet (the dash separates).
    const r1 = schemaRules(a, "t1");
    const r11 = schemaRules(b, "t11");
    const names = [...r1.rules, ...r11.rules].map((l) => l.split(" ::= ")[0]);
    expect(new Set(names).size).toBe(names.length);
  });

  it("rejects prefixes that could clash or are not rule names", () => {
    for (const bad of ["", "a-b", "a b", "ä", "x".repeat(65)]) {
      expect(errorOf(() => schemaRules(a, bad))).toMatch(/^grammar rule prefix must be 1 to 64 letters or digits/);
    }
  });

  it("errors as jsonSchemaToGrammar does", () => {
    expect(errorOf(() => schemaRules({ type: "string", pattern: "x" }, "p", { where: "args" }))).toBe('args: "pattern" is not supported');
  });
});
