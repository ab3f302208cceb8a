/**
 * JSON Schema to GBNF, llama.cpp's grammar format: a grammar whose sentences are JSON texts that
 * the schema accepts, so a constrained model can only write valid output.
 *
 * The rule is "exact or refuse": every keyword the grammar cannot enforce exactly (`pattern`,
 * `multipleOf`, `not`, number bounds...) is an ERR_INVALID_ARGUMENT naming where it is, never a
 * silently looser grammar. The language is a subset of the valid texts, not all of them: the
 * grammar fixes property order, bounds whitespace and digit counts, and writes `enum`/`const`
 * values compactly, so that a model cannot wander (or loop) and everything it writes validates.
 */
import { invalidArgument } from "../errors.js";

/** A JSON Schema (draft 2020-12 subset). */
export type JsonSchema = boolean | { readonly [key: string]: unknown };

/** Options of {@link jsonSchemaToGrammar} and {@link schemaRules}. */
export interface JsonSchemaGrammarOptions {
  /** What error messages call the schema (default "jsonSchema"), e.g. `tool "search" parameters`. */
  where?: string;
}

/** Guards against pathological schemas: each is an ERR_INVALID_ARGUMENT, never a crash or a hang. */
const LIMITS = {
  /** Nesting of schemas (and of `enum`/`const` values). */
  depth: 64,
  /** Subschemas converted, counting each `anyOf` branch and `allOf` merge. */
  nodes: 10_000,
  /** Rules in the grammar. */
  rules: 10_000,
  /** Characters in the grammar. */
  chars: 2_000_000,
  /** Bounded repetition (`maxLength`, `maxItems`...): llama.cpp expands `x{0,n}` into n rules. */
  repeat: 10_000,
  /** Digits of an integer bound. */
  digits: 40,
  /** Values of one `enum`. */
  enumValues: 1_000,
  /** `$ref` expansions inside one merge (catches `$ref` cycles that never reach a value). */
  expansions: 64,
} as const;

/** Keywords that only annotate: they never change which instances are valid. */
const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "deprecated",
  "readOnly",
  "writeOnly",
  // Definitions are reached through $ref only; where they sit changes nothing.
  "$defs",
  "definitions",
]);

const OBJECT_KEYWORDS = ["properties", "required", "additionalProperties"] as const;
const ARRAY_KEYWORDS = ["items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems"] as const;
const STRING_KEYWORDS = ["minLength", "maxLength", "format"] as const;
const INTEGER_KEYWORDS = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"] as const;

const SUPPORTED = new Set<string>([
  "type",
  "enum",
  "const",
  "anyOf",
  "oneOf",
  "allOf",
  "$ref",
  ...OBJECT_KEYWORDS,
  ...ARRAY_KEYWORDS,
  ...STRING_KEYWORDS,
  ...INTEGER_KEYWORDS,
]);

const TYPES = ["null", "boolean", "object", "array", "number", "integer", "string"] as const;
type TypeName = (typeof TYPES)[number];

/** The string formats enforced exactly, each with the helper rule that spells its value. */
const FORMATS: Readonly<Record<string, string>> = { date: "date", time: "time", "date-time": "date-time", uuid: "uuid" };

type SchemaObject = { readonly [key: string]: unknown };

/**
 * Helper rules, by local name: each body is built from the (prefixed) names of the helpers it
 * uses. Names never end in "-<digits>", which is how generated rules end, so they cannot clash.
 */
const HELPERS: Readonly<Record<string, (r: (name: string) => string) => string>> = {
  // Bounded whitespace: nothing, one space, or a newline and some indentation. Unbounded
  // whitespace lets a model loop on it forever.
  ws: () => `( " " | "\\n" [ \\t]{0,24} )?`,
  // One character of a JSON string. \u escapes of surrogates are left out: each escape then
  // stands for one code point (so minLength/maxLength count exactly as JSON Schema does), and no
  // sentence holds a lone surrogate. Characters beyond U+FFFF are written as themselves.
  chr: () =>
    `[^"\\\\\\x00-\\x1F] | "\\\\" ( ["\\\\/bfnrt] | "u" ( [0-9a-cA-C] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} | [eEfF] [0-9a-fA-F]{3} ) )`,
  str: (r) => `"\\"" ${r("chr")}* "\\""`,
  // A character of a key that must differ from the declared ones: only \" and \\ escapes, so
  // every key has one spelling and the spelling can be compared with the declared names.
  kchr: () => `[^"\\\\\\x00-\\x1F] | "\\\\" ["\\\\]`,
  // Digit counts are bounded for the same reason as whitespace; 2-digit exponents stay finite.
  num: () => `"-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )?`,
  int: () => `"0" | "-"? [1-9] [0-9]{0,15}`,
  bool: () => `"true" | "false"`,
  null: () => `"null"`,
  value: (r) => `${r("any-obj")} | ${r("any-arr")} | ${r("str")} | ${r("num")} | ${r("bool")} | ${r("null")}`,
  "any-obj": (r) =>
    `"{" ${r("ws")} ( ${r("str")} ${r("ws")} ":" ${r("ws")} ${r("value")} ${r("ws")} ( "," ${r("ws")} ${r("str")} ${r("ws")} ":" ${r("ws")} ${r("value")} ${r("ws")} )* )? "}"`,
  "any-arr": (r) => `"[" ${r("ws")} ( ${r("value")} ${r("ws")} ( "," ${r("ws")} ${r("value")} ${r("ws")} )* )? "]"`,
  // RFC 3339 full-date, with the real length of each month (29 February in leap years only).
  date: (r) =>
    `[0-9]{4} "-" ( ( "01" | "03" | "05" | "07" | "08" | "10" | "12" ) "-" ${r("day31")} | ( "04" | "06" | "09" | "11" ) "-" ${r("day30")} | "02-" ${r("day28")} ) | ${r("leap-year")} "-02-29"`,
  // Divisible by 4, and by 400 when it ends in 00.
  "leap-year": () => `[0-9] [0-9] ( [02468] [48] | [13579] [26] | [2468] "0" ) | ( [02468] [048] | [13579] [26] ) "00"`,
  day28: () => `"0" [1-9] | "1" [0-9] | "2" [0-8]`,
  day30: (r) => `${r("day28")} | "29" | "30"`,
  day31: (r) => `${r("day30")} | "31"`,
  // RFC 3339 full-time (the offset is required); leap seconds (:60) are left out.
  time: () =>
    `( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,9} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )`,
  "date-time": (r) => `${r("date")} "T" ${r("time")}`,
  uuid: () => `[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}`,
  "date-string": (r) => `"\\"" ${r("date")} "\\""`,
  "time-string": (r) => `"\\"" ${r("time")} "\\""`,
  "date-time-string": (r) => `"\\"" ${r("date-time")} "\\""`,
  "uuid-string": (r) => `"\\"" ${r("uuid")} "\\""`,
};

/**
 * The GBNF grammar (root rule `root`) whose sentences are exactly JSON texts valid under `schema`.
 *
 * Supported: `type` (a name or a list), `enum`/`const` (any JSON values), `anyOf`/`oneOf` (as
 * alternatives: exact when the branches do not overlap), `allOf` and `$ref` with siblings when the
 * parts merge exactly, `$ref` to a local JSON pointer (`#/$defs/...`, `#/definitions/...`, `#`;
 * recursion works), objects (`properties`, `required`, `additionalProperties`), arrays (`items`,
 * `prefixItems`, `minItems`, `maxItems`, and the older `items: [...]`/`additionalItems`), strings
 * (`minLength`, `maxLength`, `format`: date, time, date-time, uuid), integers with `minimum`,
 * `maximum`, `exclusiveMinimum`, `exclusiveMaximum`; `true`/`{}` is any JSON value. Annotations
 * (title, description, default, examples, $schema, $id, $comment...) are ignored.
 *
 * Choices that narrow the language (every sentence stays valid):
 * - An object without `additionalProperties` gets no properties beyond the declared ones (JSON
 *   Schema would allow any); write `additionalProperties: true` or a schema to allow more.
 * - Properties come in the declared order; required ones always, optional ones may be left out.
 * - A schema without `type` but with keywords of one kind (`properties`, `items`, `minLength`)
 *   is taken as that type, as its author means; with none, it is any value.
 * - Whitespace between tokens is bounded, numbers have at most 16+16 digits and a 2-digit
 *   exponent, integers are written without fraction or exponent.
 *
 * @throws ERR_INVALID_ARGUMENT naming the place in the schema (`jsonSchema at /properties/age:
 * "multipleOf" is not supported`) for unsupported keywords, invalid schemas, schemas that accept
 * no value, and schemas past the size limits.
 */
export function jsonSchemaToGrammar(schema: JsonSchema, options?: JsonSchemaGrammarOptions): string {
  const builder = new GrammarBuilder(schema, "", whereOf(options));
  const top = builder.top();
  return [`root ::= ${top}`, ...builder.lines()].join("\n") + "\n";
}

/**
 * The rules for `schema` named with `prefix` (for embedding in a larger grammar): returns the name
 * of its top rule (`<prefix>-root`) and the rule lines (each "name ::= body"), plus shared helper
 * rules (whitespace, string, number...) named with `prefix` too, so two calls with different
 * prefixes never clash. `prefix` is letters and digits only (a dash in it could make two prefixes
 * spell the same names). Same conversion and errors as {@link jsonSchemaToGrammar}.
 */
export function schemaRules(schema: JsonSchema, prefix: string, options?: JsonSchemaGrammarOptions): { root: string; rules: string[] } {
  if (typeof prefix !== "string" || !/^[A-Za-z0-9]{1,64}$/.test(prefix)) {
    invalidArgument(`grammar rule prefix must be 1 to 64 letters or digits, got ${JSON.stringify(String(prefix))}`);
  }
  const builder = new GrammarBuilder(schema, prefix, whereOf(options));
  const top = builder.top();
  const root = `${prefix}-root`;
  return { root, rules: [`${root} ::= ${top}`, ...builder.lines()] };
}

function whereOf(options: JsonSchemaGrammarOptions | undefined): string {
  const where = options?.where;
  return typeof where === "string" && where.length > 0 ? where : "jsonSchema";
}

function isObject(value: unknown): value is SchemaObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A JSON pointer segment, escaped. */
function segment(key: string | number): string {
  return `/${String(key).replace(/~/g, "~0").replace(/\//g, "~1")}`;
}

/** A GBNF string literal that matches exactly `text` (any text: quotes, controls and lone surrogates escaped). @internal */
export function literal(text: string): string {
  let out = '"';
  for (const ch of text) {
    const cp = ch.codePointAt(0) as number;
    if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (cp < 0x20 || cp === 0x7f) out += `\\x${cp.toString(16).padStart(2, "0")}`;
    else if (cp >= 0xd800 && cp <= 0xdfff) out += `\\u${cp.toString(16).padStart(4, "0")}`;
    else out += ch;
  }
  return `${out}"`;
}

/** A character inside a GBNF `[...]` class; the class's own syntax characters are escaped. */
function classChar(ch: string): string {
  const cp = ch.codePointAt(0) as number;
  if (/^[A-Za-z0-9 !#$%&'()*+,./:;<=>?@_`{|}~"]$/.test(ch)) return ch;
  if (cp <= 0xff) return `\\x${cp.toString(16).padStart(2, "0")}`;
  if (cp <= 0xffff) return `\\u${cp.toString(16).padStart(4, "0")}`;
  return `\\U${cp.toString(16).padStart(8, "0")}`;
}

/** GBNF items in sequence, skipping empty ones. */
function seq(...items: string[]): string {
  return items.filter((item) => item !== "").join(" ");
}

/** Alternatives as one GBNF factor. */
function group(alternatives: readonly string[]): string {
  return alternatives.length === 1 ? (alternatives[0] as string) : `( ${alternatives.join(" | ")} )`;
}

/** `{min,max}` repetition of a factor; max undefined is unbounded. */
function repeat(factor: string, min: number, max: number | undefined): string {
  if (max === 0) return "";
  if (min === 0 && max === undefined) return `${factor}*`;
  if (min === 0 && max === 1) return `${factor}?`;
  if (min === 1 && max === 1) return factor;
  if (max === undefined) return `${factor}{${min},}`;
  return min === max ? `${factor}{${min}}` : `${factor}{${min},${max}}`;
}

/** Structural equality of JSON values (key order of objects does not count). */
function jsonEqual(a: unknown, b: unknown, depth = 0): boolean {
  if (a === b) return true;
  if (depth > LIMITS.depth || typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => jsonEqual(x, b[i], depth + 1));
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  const ob = b as Record<string, unknown>;
  return ka.every((k) => Object.hasOwn(ob, k) && jsonEqual((a as Record<string, unknown>)[k], ob[k], depth + 1));
}

/** Whether `value` is a JSON value (what JSON.parse can return), not too deep. */
function isJsonValue(value: unknown, depth = 0): boolean {
  if (depth > LIMITS.depth) return false;
  if (value === null || typeof value === "boolean" || typeof value === "string") return true;
  if (typeof value === "number") return Number.isFinite(value);
  if (Array.isArray(value)) return value.every((v) => isJsonValue(v, depth + 1));
  if (typeof value !== "object") return false;
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  return Object.values(value).every((v) => isJsonValue(v, depth + 1));
}

/** The JSON type of a JSON value, "integer" for whole numbers. */
function jsonType(value: unknown): TypeName {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value as TypeName;
}

/** A $ref resolved inside the root schema. */
interface ResolvedRef {
  /** The canonical key: "#" and the decoded pointer. */
  readonly key: string;
  /** Where the target sits, as error messages show it. */
  readonly path: string;
  readonly target: unknown;
}

class GrammarBuilder {
  private readonly rules = new Map<string, string>();
  private chars = 0;
  private counter = 0;
  private nodes = 0;
  /** Rule names of $ref targets, by canonical pointer. */
  private readonly refRules = new Map<string, string>();
  /** Pointers already checked for $ref cycles that never reach a value. */
  private readonly acyclic = new Set<string>();
  /** Generated rules shared by identical constraints (string lengths, integer ranges). */
  private readonly shared = new Map<string, string>();

  constructor(
    private readonly root: JsonSchema,
    private readonly prefix: string,
    private readonly where: string,
  ) {}

  /** The expression of the whole schema. */
  top(): string {
    const expr = this.gen(this.root, "", 0);
    if (expr === undefined) this.fail("", "the schema accepts no value");
    return expr;
  }

  /** The rule lines, in the order they were made. */
  lines(): string[] {
    return [...this.rules].map(([name, body]) => `${name} ::= ${body}`);
  }

  private fail(path: string, message: string): never {
    return invalidArgument(`${this.where}${path === "" ? "" : ` at ${path}`}: ${message}`);
  }

  private name(local: string): string {
    return this.prefix === "" ? local : `${this.prefix}-${local}`;
  }

  /** A new rule name: the hint (sanitized) and a number, so it never equals a helper's name. */
  private fresh(hint: string): string {
    const clean = hint.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40) || "rule";
    return this.name(`${clean}-${++this.counter}`);
  }

  private define(name: string, body: string, path: string): string {
    this.rules.set(name, body);
    this.chars += name.length + body.length + 5;
    if (this.rules.size > LIMITS.rules || this.chars > LIMITS.chars) {
      this.fail(path, `the schema is too large (the grammar would pass ${LIMITS.rules} rules or ${LIMITS.chars} characters)`);
    }
    return name;
  }

  /** The name of a helper rule, defining it (and the helpers it uses) on first use. */
  private helper(local: string): string {
    const name = this.name(local);
    if (!this.rules.has(name)) {
      const build = HELPERS[local];
      if (build === undefined) throw new Error(`no grammar helper ${local}`);
      this.rules.set(name, ""); // reserved first: helpers may refer to each other
      this.define(name, build((n) => this.helper(n)), "");
    }
    return name;
  }

  /** A rule for `body` shared by every use of the same constraint. */
  private sharedRule(key: string, hint: string, body: () => string, path: string): string {
    const known = this.shared.get(key);
    if (known !== undefined) return known;
    const name = this.define(this.fresh(hint), body(), path);
    this.shared.set(key, name);
    return name;
  }

  // ---- schema walking ----------------------------------------------------------------------

  /** The GBNF expression of `schema`, or undefined when it accepts no value. */
  private gen(schema: unknown, path: string, depth: number): string | undefined {
    if (depth > LIMITS.depth) this.fail(path, `the schema nests deeper than ${LIMITS.depth} levels`);
    if (++this.nodes > LIMITS.nodes) this.fail(path, `the schema is too large (more than ${LIMITS.nodes} subschemas)`);
    if (typeof schema === "boolean") return schema ? this.helper("value") : undefined;
    if (!isObject(schema)) this.fail(path, "a schema must be an object or a boolean");
    this.checkKeywords(schema, path);
    if (schema.$ref !== undefined) {
      // A bare $ref becomes a rule reference (that is what makes recursion work); with sibling
      // constraints the target is merged in, one level, like allOf.
      if (Object.keys(schema).every((k) => k === "$ref" || ANNOTATIONS.has(k))) return this.refRule(schema.$ref, `${path}/$ref`, depth);
      return this.genFlat(this.flatten(schema, path, { n: 0 }), path, depth);
    }
    if (schema.allOf !== undefined) return this.genFlat(this.flatten(schema, path, { n: 0 }), path, depth);
    return this.genFlat(schema, path, depth);
  }

  private checkKeywords(schema: SchemaObject, path: string): void {
    for (const key of Object.keys(schema)) {
      if (!SUPPORTED.has(key) && !ANNOTATIONS.has(key)) this.fail(path, `"${key}" is not supported`);
    }
    if (schema.uniqueItems !== undefined && schema.uniqueItems !== false) {
      if (schema.uniqueItems === true) this.fail(path, `"uniqueItems" is not supported`);
      this.fail(path, `"uniqueItems" must be a boolean`);
    }
  }

  /** A schema without top-level $ref and allOf (no `$ref` left at the top, no `allOf`). */
  private genFlat(schema: unknown, path: string, depth: number): string | undefined {
    if (typeof schema === "boolean") return schema ? this.helper("value") : undefined;
    if (!isObject(schema)) this.fail(path, "a schema must be an object or a boolean");
    this.checkKeywords(schema, path);

    if (schema.anyOf !== undefined || schema.oneOf !== undefined) return this.genAlternatives(schema, path, depth);
    if (schema.enum !== undefined || schema.const !== undefined) return this.genEnum(schema, path);

    const types = this.types(schema, path);
    if (schema.type === undefined && types.length === 6) return this.helper("value"); // no type keyword at all: any value
    const alternatives: string[] = [];
    for (const type of types) {
      let expr: string | undefined;
      switch (type) {
        case "null":
          expr = this.helper("null");
          break;
        case "boolean":
          expr = this.helper("bool");
          break;
        case "number":
          expr = this.helper("num");
          break;
        case "integer":
          expr = this.genInteger(schema, path);
          break;
        case "string":
          expr = this.genString(schema, path);
          break;
        case "object":
          expr = this.genObject(schema, path, depth);
          break;
        case "array":
          expr = this.genArray(schema, path, depth);
          break;
      }
      if (expr !== undefined) alternatives.push(expr);
    }
    return alternatives.length === 0 ? undefined : group(alternatives);
  }

  /** The types a schema's branches are made for (see the inference note on jsonSchemaToGrammar). */
  private types(schema: SchemaObject, path: string): TypeName[] {
    const has = (keys: readonly string[]) => keys.some((k) => schema[k] !== undefined);
    let types: TypeName[];
    if (schema.type !== undefined) {
      const list: unknown[] = Array.isArray(schema.type) ? schema.type : [schema.type];
      if (list.length === 0) this.fail(`${path}/type`, `"type" must name at least one type`);
      types = [];
      for (const t of list) {
        if (typeof t !== "string" || !(TYPES as readonly string[]).includes(t)) {
          this.fail(`${path}/type`, `"type" must be one of ${TYPES.join(", ")} (or a list of them), got ${JSON.stringify(t) ?? String(t)}`);
        }
        if (types.includes(t as TypeName)) this.fail(`${path}/type`, `"type" lists "${t}" twice`);
        types.push(t as TypeName);
      }
    } else {
      types = [];
      if (has(OBJECT_KEYWORDS)) types.push("object");
      if (has(ARRAY_KEYWORDS)) types.push("array");
      if (has(STRING_KEYWORDS)) types.push("string");
      if (types.length === 0) types = [...TYPES].filter((t) => t !== "integer");
    }
    // Bounds are enforced for integers only; for other numbers they would need a comparison the
    // grammar cannot make exactly.
    const bound = INTEGER_KEYWORDS.find((k) => schema[k] !== undefined);
    if (bound !== undefined && schema.type === undefined) this.fail(path, `"${bound}" is only supported with "type": "integer"`);
    if (bound !== undefined && types.includes("number")) this.fail(path, `"${bound}" is not supported for "number" (only for "integer")`);
    // A number branch already holds every integer.
    if (types.includes("number")) types = types.filter((t) => t !== "integer");
    return types;
  }

  private genAlternatives(schema: SchemaObject, path: string, depth: number): string | undefined {
    if (schema.anyOf !== undefined && schema.oneOf !== undefined) this.fail(path, `"anyOf" and "oneOf" together are not supported`);
    const key = schema.anyOf !== undefined ? "anyOf" : "oneOf";
    const branches = schema[key];
    if (!Array.isArray(branches) || branches.length === 0) this.fail(`${path}/${key}`, `"${key}" must be a non-empty array of schemas`);
    const rest: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(schema)) if (k !== key && !ANNOTATIONS.has(k)) rest[k] = v;
    const constrained = Object.keys(rest).length > 0;
    const out: string[] = [];
    branches.forEach((branch: unknown, i: number) => {
      const where = `${path}/${key}/${i}`;
      // Constraints beside anyOf apply to every branch: A and (B1 or B2) = (A and B1) or (A and B2).
      const expr = constrained
        ? this.genFlat(this.merge(this.flatten(rest, path, { n: 0 }), this.flatten(branch, where, { n: 0 }), where), where, depth + 1)
        : this.gen(branch, where, depth + 1);
      if (expr !== undefined && !out.includes(expr)) out.push(expr);
    });
    return out.length === 0 ? undefined : group(out);
  }

  /**
   * `enum`/`const`: the listed values that the schema's other keywords accept, written as
   * literals. Values are checked here where the check is exact (types, lengths, bounds); keywords
   * that would need more (a format, object or array keywords on object or array values) refuse.
   */
  private genEnum(schema: SchemaObject, path: string): string | undefined {
    const name = schema.enum !== undefined ? "enum" : "const";
    let values: unknown[];
    if (schema.enum !== undefined) {
      if (!Array.isArray(schema.enum) || schema.enum.length === 0) this.fail(`${path}/enum`, `"enum" must be a non-empty array`);
      if (schema.enum.length > LIMITS.enumValues) this.fail(`${path}/enum`, `"enum" has more than ${LIMITS.enumValues} values`);
      values = schema.enum.slice();
      values.forEach((v, i) => {
        if (!isJsonValue(v)) this.fail(`${path}/enum/${i}`, "an enum value must be a JSON value");
      });
    } else {
      values = [schema.const];
    }
    if (schema.const !== undefined) {
      if (!isJsonValue(schema.const)) this.fail(`${path}/const`, `"const" must be a JSON value`);
      values = values.filter((v) => jsonEqual(v, schema.const));
    }
    if (schema.type !== undefined) {
      const types = this.types({ type: schema.type }, path);
      values = values.filter((v) => {
        const t = jsonType(v);
        return types.includes(t) || (t === "integer" && types.includes("number"));
      });
    }
    const minLength = this.nonNegativeInteger(schema, "minLength", path) ?? 0;
    const maxLength = this.nonNegativeInteger(schema, "maxLength", path) ?? Infinity;
    const bound = (key: string): number | undefined => {
      const value = schema[key];
      if (value !== undefined && (typeof value !== "number" || !Number.isFinite(value))) this.fail(`${path}/${key}`, `"${key}" must be a number`);
      return value as number | undefined;
    };
    const [min, xmin, max, xmax] = [bound("minimum"), bound("exclusiveMinimum"), bound("maximum"), bound("exclusiveMaximum")];
    values = values.filter((v) => {
      if (typeof v === "string") {
        const length = [...v].length; // JSON Schema counts code points
        return length >= minLength && length <= maxLength;
      }
      if (typeof v === "number") return (min === undefined || v >= min) && (xmin === undefined || v > xmin) && (max === undefined || v <= max) && (xmax === undefined || v < xmax);
      return true;
    });
    for (const key of Object.keys(schema)) {
      if (["enum", "const", "type", "minLength", "maxLength", ...INTEGER_KEYWORDS].includes(key) || ANNOTATIONS.has(key)) continue;
      // The rest constrain only strings (format), objects or arrays: fine while no value is one.
      const applies = key === "format" ? "string" : (OBJECT_KEYWORDS as readonly string[]).includes(key) ? "object" : "array";
      if (values.some((v) => jsonType(v) === applies)) this.fail(path, `"${name}" together with "${key}" is not supported`);
    }
    const out: string[] = [];
    for (const v of values) {
      const lit = literal(JSON.stringify(v));
      if (!out.includes(lit)) out.push(lit);
    }
    return out.length === 0 ? undefined : group(out);
  }

  private nonNegativeInteger(schema: SchemaObject, key: string, path: string): number | undefined {
    const value = schema[key];
    if (value === undefined) return undefined;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0) this.fail(`${path}/${key}`, `"${key}" must be a non-negative integer`);
    if (value > LIMITS.repeat) this.fail(`${path}/${key}`, `"${key}" above ${LIMITS.repeat} is not supported`);
    return value;
  }

  private genString(schema: SchemaObject, path: string): string | undefined {
    if (schema.format !== undefined) {
      const format = schema.format;
      if (typeof format !== "string") this.fail(`${path}/format`, `"format" must be a string`);
      const helper = FORMATS[format];
      if (helper === undefined || !Object.hasOwn(FORMATS, format)) this.fail(`${path}/format`, `"format": ${JSON.stringify(format)} is not supported`);
      if (schema.minLength !== undefined || schema.maxLength !== undefined) {
        this.fail(path, `"format" together with "minLength" or "maxLength" is not supported`);
      }
      return this.helper(`${helper}-string`);
    }
    const min = this.nonNegativeInteger(schema, "minLength", path) ?? 0;
    const max = this.nonNegativeInteger(schema, "maxLength", path);
    if (max !== undefined && max < min) return undefined;
    if (min === 0 && max === undefined) return this.helper("str");
    return this.sharedRule(`str:${min}:${max}`, "string", () => `"\\"" ${repeat(this.helper("chr"), min, max)} "\\""`, path);
  }

  private genInteger(schema: SchemaObject, path: string): string | undefined {
    const bound = (key: string): number | undefined => {
      const value = schema[key];
      if (value === undefined) return undefined;
      if (typeof value !== "number" || !Number.isFinite(value)) this.fail(`${path}/${key}`, `"${key}" must be a number`);
      return value;
    };
    let lo: bigint | undefined;
    let hi: bigint | undefined;
    const raise = (v: bigint) => (lo = lo === undefined || v > lo ? v : lo);
    const lower = (v: bigint) => (hi = hi === undefined || v < hi ? v : hi);
    const minimum = bound("minimum");
    const exclusiveMinimum = bound("exclusiveMinimum");
    const maximum = bound("maximum");
    const exclusiveMaximum = bound("exclusiveMaximum");
    if (minimum !== undefined) raise(BigInt(Math.ceil(minimum)));
    if (exclusiveMinimum !== undefined) raise(BigInt(Math.floor(exclusiveMinimum)) + 1n);
    if (maximum !== undefined) lower(BigInt(Math.floor(maximum)));
    if (exclusiveMaximum !== undefined) lower(BigInt(Math.ceil(exclusiveMaximum)) - 1n);
    if (lo === undefined && hi === undefined) return this.helper("int");
    if (lo !== undefined && hi !== undefined && lo > hi) return undefined;
    for (const b of [lo, hi]) {
      if (b !== undefined && (b < 0n ? -b : b).toString().length > LIMITS.digits) this.fail(path, `integer bounds beyond ${LIMITS.digits} digits are not supported`);
    }
    const [l, h] = [lo, hi];
    return this.sharedRule(`int:${l}:${h}`, "integer", () => integerRange(l, h), path);
  }

  private genObject(schema: SchemaObject, path: string, depth: number): string | undefined {
    const props = schema.properties ?? {};
    if (!isObject(props)) this.fail(`${path}/properties`, `"properties" must be an object`);
    const required = schema.required ?? [];
    if (!Array.isArray(required) || !required.every((r) => typeof r === "string")) {
      this.fail(`${path}/required`, `"required" must be an array of strings`);
    }
    const requiredSet = new Set<string>(required as string[]);
    const extra = schema.additionalProperties;
    if (extra !== undefined && typeof extra !== "boolean" && !isObject(extra)) {
      this.fail(`${path}/additionalProperties`, `"additionalProperties" must be a schema`);
    }
    const extraExpr = extra === true ? this.helper("value") : isObject(extra) ? this.gen(extra, `${path}/additionalProperties`, depth + 1) : undefined;

    const ws = this.helper("ws");
    const members: { key: string; item: string; required: boolean }[] = [];
    const excluded = new Set<string>(Object.keys(props));
    const member = (key: string, expr: string) => `${literal(JSON.stringify(key))} ${ws} ":" ${ws} ${expr} ${ws}`;
    for (const [key, sub] of Object.entries(props)) {
      const expr = this.gen(sub, `${path}/properties${segment(key)}`, depth + 1);
      if (expr === undefined) {
        if (requiredSet.has(key)) return undefined;
        continue;
      }
      members.push({ key, item: member(key, expr), required: requiredSet.has(key) });
    }
    for (const key of requiredSet) {
      if (Object.hasOwn(props, key)) continue;
      // Required but not declared: additionalProperties says what it holds (any value when absent).
      if (extra === false) return undefined;
      const expr = extra === undefined ? this.helper("value") : extraExpr;
      if (expr === undefined) return undefined;
      members.push({ key, item: member(key, expr), required: true });
      excluded.add(key);
    }

    // Extra members come after the declared ones, with keys that differ from every declared key.
    let tailAfter = "";
    let tailFirst = "";
    if (extraExpr !== undefined) {
      const key = excluded.size === 0 ? this.helper("str") : this.notKeys([...excluded], path);
      const item = `${key} ${ws} ":" ${ws} ${extraExpr} ${ws}`;
      tailAfter = `( "," ${ws} ${item} )*`;
      tailFirst = `( ${item} ${tailAfter} )?`;
    }

    // after: the rest once a member was written (each next one needs a comma); first: the rest
    // while none was. Built from the end, so optional members cost linear size, not 2^n.
    const anyOptional = members.some((m) => !m.required);
    let after = tailAfter;
    let first = tailFirst;
    for (let i = members.length - 1; i >= 0; i--) {
      const m = members[i] as (typeof members)[number];
      // `after` is used twice below; a rule keeps the grammar linear in the number of members.
      if (anyOptional && after.length > 40) after = this.define(this.fresh("members"), after, path);
      const nextAfter = m.required ? seq(`","`, ws, m.item, after) : seq(`( "," ${ws} ${m.item} )?`, after);
      const nextFirst = m.required ? seq(m.item, after) : first === "" ? `( ${seq(m.item, after)} )?` : `( ${seq(m.item, after)} | ${first} )`;
      after = nextAfter;
      first = nextFirst;
    }
    const body = seq(`"{"`, ws, first, `"}"`);
    return this.define(this.fresh("object"), body, path);
  }

  /**
   * A JSON string (with its quotes) whose value is none of `keys`: a trie of the keys, where each
   * node accepts its children, any other character (then anything), or the end unless a key ends
   * there. Keys holding control characters cannot be spelled here anyway, so they drop out.
   */
  private notKeys(keys: readonly string[], path: string): string {
    interface Node {
      children: Map<string, Node>;
      end: boolean;
    }
    const rootNode: Node = { children: new Map(), end: false };
    for (const key of keys) {
      if (/[\x00-\x1f\ud800-\udfff]/.test(key)) continue;
      let node = rootNode;
      for (const ch of key) {
        let next = node.children.get(ch);
        if (next === undefined) {
          next = { children: new Map(), end: false };
          node.children.set(ch, next);
        }
        node = next;
      }
      node.end = true;
    }
    const kchr = this.helper("kchr");
    const spell = (ch: string) => literal(ch === '"' || ch === "\\" ? `\\${ch}` : ch);
    const build = (node: Node): string => {
      const alts: string[] = [];
      if (!node.end) alts.push(`"\\""`);
      for (const [ch, child] of node.children) alts.push(`${spell(ch)} ${build(child)}`);
      const plain = [...node.children.keys()].filter((ch) => ch !== '"' && ch !== "\\").map(classChar).join("");
      alts.push(`[^"\\\\\\x00-\\x1F${plain}] ${kchr}* "\\""`);
      if (!node.children.has('"')) alts.push(`"\\\\\\"" ${kchr}* "\\""`);
      if (!node.children.has("\\")) alts.push(`"\\\\\\\\" ${kchr}* "\\""`);
      return this.define(this.fresh("key"), alts.join(" | "), path);
    };
    return this.sharedRule(`keys:${JSON.stringify([...keys].sort())}`, "other-key", () => `"\\"" ${build(rootNode)}`, path);
  }

  private genArray(schema: SchemaObject, path: string, depth: number): string | undefined {
    let prefix: unknown[] = [];
    let prefixPath = `${path}/prefixItems`;
    let rest: unknown = true;
    let restPath = `${path}/items`;
    if (Array.isArray(schema.items)) {
      // The form before 2020-12: items as a list is prefixItems, additionalItems the rest.
      if (schema.prefixItems !== undefined) this.fail(path, `"items" as an array together with "prefixItems" is not supported`);
      prefix = schema.items;
      prefixPath = `${path}/items`;
      rest = schema.additionalItems ?? true;
      restPath = `${path}/additionalItems`;
    } else {
      if (schema.prefixItems !== undefined) {
        if (!Array.isArray(schema.prefixItems)) this.fail(prefixPath, `"prefixItems" must be an array of schemas`);
        prefix = schema.prefixItems;
      }
      if (schema.items !== undefined) rest = schema.items;
    }
    const min = this.nonNegativeInteger(schema, "minItems", path) ?? 0;
    let max = this.nonNegativeInteger(schema, "maxItems", path);
    if (prefix.length > LIMITS.repeat) this.fail(prefixPath, `more than ${LIMITS.repeat} prefix items are not supported`);

    const items: string[] = [];
    for (let i = 0; i < prefix.length && (max === undefined || i < max); i++) {
      const expr = this.gen(prefix[i], `${prefixPath}/${i}`, depth + 1);
      if (expr === undefined) {
        // No value fits this position: the array ends before it.
        max = max === undefined ? i : Math.min(max, i);
        break;
      }
      items.push(expr);
    }
    const restExpr = items.length < prefix.length ? undefined : this.gen(rest, restPath, depth + 1);
    if (restExpr === undefined) max = max === undefined ? items.length : Math.min(max, items.length);
    if (max !== undefined && min > max) return undefined;
    if (min === 0 && max === undefined && items.length === 0 && rest === true) return this.helper("any-arr");

    const ws = this.helper("ws");
    let body: string;
    if (items.length === 0) {
      const item = seq(restExpr as string, ws);
      const more = `( "," ${ws} ${item} )`;
      if (max === 0) body = seq(`"["`, ws, `"]"`);
      else if (min === 0) body = seq(`"["`, ws, `( ${seq(item, repeat(more, 0, max === undefined ? undefined : max - 1))} )?`, `"]"`);
      else body = seq(`"["`, ws, item, repeat(more, min - 1, max === undefined ? undefined : max - 1), `"]"`);
    } else {
      const k = items.length;
      let tail = restExpr === undefined ? "" : repeat(`( "," ${ws} ${restExpr} ${ws} )`, Math.max(0, min - k), max === undefined ? undefined : max - k);
      for (let i = k - 1; i >= 0; i--) {
        const element = seq(i === 0 ? "" : `"," ${ws}`, items[i] as string, ws);
        tail = i < min ? seq(element, tail) : `( ${seq(element, tail)} )?`;
      }
      body = seq(`"["`, ws, tail, `"]"`);
    }
    return this.define(this.fresh("array"), body, path);
  }

  // ---- $ref ----------------------------------------------------------------------------------

  private resolve(ref: unknown, path: string): ResolvedRef {
    if (typeof ref !== "string") this.fail(path, `"$ref" must be a string`);
    if (!ref.startsWith("#")) this.fail(path, `external "$ref" ${JSON.stringify(ref)} is not supported (only "#/..." in the same schema)`);
    let pointer: string;
    try {
      pointer = decodeURIComponent(ref.slice(1));
    } catch {
      this.fail(path, `"$ref" ${JSON.stringify(ref)} is not a valid JSON pointer`);
    }
    if (pointer !== "" && !pointer.startsWith("/")) {
      this.fail(path, `"$ref" ${JSON.stringify(ref)} is not supported (only JSON pointers such as "#/$defs/name")`);
    }
    let target: unknown = this.root;
    if (pointer !== "") {
      for (const raw of pointer.slice(1).split("/")) {
        const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
        if (Array.isArray(target) && /^(0|[1-9][0-9]*)$/.test(key) && Number(key) < target.length) target = target[Number(key)];
        else if (isObject(target) && Object.hasOwn(target, key)) target = target[key];
        else this.fail(path, `"$ref" ${JSON.stringify(ref)} points to nothing in the schema`);
      }
    }
    return { key: `#${pointer}`, path: pointer, target };
  }

  /** The rule of a $ref target, made on first use: its name is known before its body, so it can recur. */
  private refRule(ref: unknown, path: string, depth: number): string | undefined {
    const resolved = this.resolve(ref, path);
    const known = this.refRules.get(resolved.key);
    if (known !== undefined) return known;
    this.checkCycles(resolved, path);
    const last = resolved.key.split("/").pop() ?? "";
    const name = this.fresh(`ref-${last}`);
    this.refRules.set(resolved.key, name);
    this.rules.set(name, ""); // reserved, so the rule keeps its place before those it uses
    const body = this.gen(resolved.target, resolved.path, depth + 1);
    if (body === undefined) this.fail(path, `"$ref" ${JSON.stringify(ref)} accepts no value`);
    this.define(name, body, path);
    return name;
  }

  /**
   * Rejects $ref cycles that go through no object or array (`a: {anyOf: [{$ref: a}, ...]}`):
   * they would be left-recursive rules, which llama.cpp refuses, and mean nothing finite.
   */
  private checkCycles(start: ResolvedRef, path: string): void {
    const open = new Set<string>();
    const visit = (at: ResolvedRef, where: string, depth: number): void => {
      if (this.acyclic.has(at.key)) return;
      if (open.has(at.key)) this.fail(where, `"$ref" ${JSON.stringify(at.key)} refers to itself without an object or array in between`);
      if (depth > LIMITS.depth) this.fail(where, `"$ref" chains deeper than ${LIMITS.depth}`);
      open.add(at.key);
      for (const [ref, refPath] of directRefs(at.target, at.path)) visit(this.resolve(ref, refPath), refPath, depth + 1);
      open.delete(at.key);
      this.acyclic.add(at.key);
    };
    visit(start, path, 0);
  }

  // ---- merging (allOf, $ref with siblings, constraints beside anyOf) ----------------------------

  /** `schema` with its top-level $ref and allOf merged in: an object with neither, or a boolean. */
  private flatten(schema: unknown, path: string, budget: { n: number }): unknown {
    if (typeof schema === "boolean") return schema;
    if (!isObject(schema)) this.fail(path, "a schema must be an object or a boolean");
    this.checkKeywords(schema, path);
    const rest: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(schema)) if (k !== "$ref" && k !== "allOf" && !ANNOTATIONS.has(k)) rest[k] = v;
    let out: unknown = rest;
    if (schema.$ref !== undefined) {
      if (++budget.n > LIMITS.expansions) this.fail(path, `"$ref" expands more than ${LIMITS.expansions} times (a cycle?)`);
      const resolved = this.resolve(schema.$ref, `${path}/$ref`);
      out = this.merge(this.flatten(resolved.target, resolved.path, budget), out, path);
    }
    if (schema.allOf !== undefined) {
      const all = schema.allOf;
      if (!Array.isArray(all) || all.length === 0) this.fail(`${path}/allOf`, `"allOf" must be a non-empty array of schemas`);
      all.forEach((branch: unknown, i: number) => {
        out = this.merge(out, this.flatten(branch, `${path}/allOf/${i}`, budget), `${path}/allOf/${i}`);
      });
    }
    return out;
  }

  /**
   * The schema that accepts exactly what both accept (both already flattened), or an error where
   * that cannot be written without allOf.
   */
  private merge(a: unknown, b: unknown, path: string): unknown {
    if (a === false || b === false) return false;
    if (a === true) return b;
    if (b === true) return a;
    if (++this.nodes > LIMITS.nodes) this.fail(path, `the schema is too large (more than ${LIMITS.nodes} subschemas)`);
    const x = a as SchemaObject;
    const y = b as SchemaObject;
    const cannot = (what: string): never => this.fail(path, `cannot merge ${what} exactly (allOf)`);
    const out: Record<string, unknown> = {};
    const keys = new Set([...Object.keys(x), ...Object.keys(y)]);
    const handled = new Set<string>();
    const both = (k: string) => x[k] !== undefined && y[k] !== undefined;

    // Alternatives stay alternatives; the caller distributes the rest over them.
    const altX = x.anyOf !== undefined || x.oneOf !== undefined;
    const altY = y.anyOf !== undefined || y.oneOf !== undefined;
    if (altX && altY) cannot(`two "anyOf"/"oneOf"`);
    for (const k of ["anyOf", "oneOf"]) {
      handled.add(k);
      if (x[k] !== undefined) out[k] = x[k];
      if (y[k] !== undefined) out[k] = y[k];
    }

    // Object keywords, together: a property one side declares meets the other side's
    // additionalProperties.
    if (OBJECT_KEYWORDS.some((k) => x[k] !== undefined || y[k] !== undefined)) {
      const px = x.properties ?? {};
      const py = y.properties ?? {};
      if (!isObject(px) || !isObject(py)) this.fail(path, `"properties" must be an object`);
      const ax = x.additionalProperties;
      const ay = y.additionalProperties;
      const props: Record<string, unknown> = {};
      const meet = (s: unknown, other: unknown): unknown => (other === false ? false : isObject(other) ? { allOf: [s, other] } : s);
      for (const key of new Set([...Object.keys(px), ...Object.keys(py)])) {
        const inX = Object.hasOwn(px, key);
        const inY = Object.hasOwn(py, key);
        props[key] = inX && inY ? { allOf: [px[key], py[key]] } : inX ? meet(px[key], ay) : meet(py[key], ax);
      }
      if (x.properties !== undefined || y.properties !== undefined) out.properties = props;
      const required = [x.required ?? [], y.required ?? []];
      for (const r of required) {
        if (!Array.isArray(r) || !r.every((s) => typeof s === "string")) this.fail(path, `"required" must be an array of strings`);
      }
      const union = [...new Set([...(required[0] as string[]), ...(required[1] as string[])])];
      if (x.required !== undefined || y.required !== undefined) out.required = union;
      // Absent (any, in JSON Schema) is neutral here; the result's absence then means "declared
      // properties only" to the generator, which is a subset and so still exact-or-narrower.
      const extra =
        ax === false || ay === false
          ? false
          : ax === undefined || ax === true
            ? (ay ?? ax)
            : ay === undefined || ay === true
              ? ax
              : { allOf: [ax, ay] };
      if (extra !== undefined) out.additionalProperties = extra;
      for (const k of OBJECT_KEYWORDS) handled.add(k);
    }

    // Array keywords: a side's prefixItems meet the other side's items.
    if (["items", "prefixItems", "additionalItems"].some((k) => x[k] !== undefined || y[k] !== undefined)) {
      const norm = (s: SchemaObject): { prefix: unknown[] | undefined; rest: unknown } => {
        if (Array.isArray(s.items)) return { prefix: s.items, rest: s.additionalItems };
        if (s.prefixItems !== undefined && !Array.isArray(s.prefixItems)) this.fail(path, `"prefixItems" must be an array of schemas`);
        return { prefix: s.prefixItems as unknown[] | undefined, rest: s.items };
      };
      const nx = norm(x);
      const ny = norm(y);
      if (nx.prefix !== undefined && ny.prefix !== undefined) cannot(`two "prefixItems"`);
      const allOf = (p: unknown, q: unknown): unknown => (p === undefined ? q : q === undefined ? p : { allOf: [p, q] });
      const prefix = nx.prefix ?? ny.prefix;
      const otherRest = nx.prefix !== undefined ? ny.rest : nx.rest;
      if (prefix !== undefined) out.prefixItems = prefix.map((p) => allOf(p, otherRest));
      const rest = allOf(nx.rest, ny.rest);
      if (rest !== undefined) out.items = rest;
      for (const k of ["items", "prefixItems", "additionalItems"]) handled.add(k);
    }

    for (const k of keys) {
      if (handled.has(k)) continue;
      if (!both(k)) {
        out[k] = x[k] !== undefined ? x[k] : y[k];
        continue;
      }
      const vx = x[k];
      const vy = y[k];
      switch (k) {
        case "type": {
          const tx: unknown[] = Array.isArray(vx) ? vx : [vx];
          const ty: unknown[] = Array.isArray(vy) ? vy : [vy];
          const types = new Set<unknown>();
          for (const t of tx) {
            if (ty.includes(t)) types.add(t);
            else if (t === "integer" && ty.includes("number")) types.add("integer");
            else if (t === "number" && ty.includes("integer")) types.add("integer");
          }
          if (types.size === 0) return false;
          out.type = [...types];
          break;
        }
        case "enum":
          if (!Array.isArray(vx) || !Array.isArray(vy)) this.fail(path, `"enum" must be an array`);
          out.enum = vx.filter((v) => vy.some((w) => jsonEqual(v, w)));
          if ((out.enum as unknown[]).length === 0) return false;
          break;
        case "const":
          if (!jsonEqual(vx, vy)) return false;
          out.const = vx;
          break;
        case "minimum":
        case "exclusiveMinimum":
        case "minLength":
        case "minItems":
        case "maximum":
        case "exclusiveMaximum":
        case "maxLength":
        case "maxItems": {
          if (typeof vx !== "number" || typeof vy !== "number") this.fail(path, `"${k}" must be a number`);
          out[k] = k.startsWith("min") || k === "exclusiveMinimum" ? Math.max(vx, vy) : Math.min(vx, vy);
          break;
        }
        case "uniqueItems":
          out[k] = vx === true || vy === true;
          break;
        default:
          if (!jsonEqual(vx, vy)) cannot(`two different "${k}"`);
          out[k] = vx;
      }
    }
    return out;
  }
}

/** The $refs a schema reaches without going into an object or array (through $ref, allOf, anyOf, oneOf). */
function directRefs(schema: unknown, path: string, depth = 0, out: [unknown, string][] = []): [unknown, string][] {
  if (!isObject(schema) || depth > LIMITS.depth) return out;
  if (schema.$ref !== undefined) out.push([schema.$ref, `${path}/$ref`]);
  for (const key of ["allOf", "anyOf", "oneOf"]) {
    const list = schema[key];
    if (Array.isArray(list)) list.forEach((s: unknown, i: number) => directRefs(s, `${path}/${key}/${i}`, depth + 1, out));
  }
  return out;
}

// ---- integer ranges --------------------------------------------------------------------------

/** GBNF for the integers from `lo` to `hi` (either may be open), without leading zeros or "-0". */
function integerRange(lo: bigint | undefined, hi: bigint | undefined): string {
  const parts: string[] = [];
  if (lo === undefined || lo < 0n) {
    // Negative: "-" and a magnitude from max(1, -hi) to -lo.
    const from = hi !== undefined && hi < 0n ? -hi : 1n;
    parts.push(`"-" ${group(positiveRange(from, lo === undefined ? undefined : -lo))}`);
  }
  if ((lo === undefined || lo <= 0n) && (hi === undefined || hi >= 0n)) parts.push(`"0"`);
  if (hi === undefined || hi >= 1n) {
    const from = lo !== undefined && lo > 1n ? lo : 1n;
    parts.push(...positiveRange(from, hi));
  }
  return parts.join(" | ");
}

/** Alternatives for the integers from `lo` (at least 1) to `hi` (open: up to 16 digits or lo's length). */
function positiveRange(lo: bigint, hi: bigint | undefined): string[] {
  const digitsLo = lo.toString().length;
  const top = (n: number) => 10n ** BigInt(n) - 1n;
  const out: string[] = [];
  const digitsHi = hi === undefined ? Math.max(16, digitsLo) : hi.toString().length;
  const lastFull = hi === undefined ? digitsHi : digitsHi - 1;
  out.push(...sameLength(lo.toString(), (hi !== undefined && digitsHi === digitsLo ? hi : top(digitsLo)).toString()));
  // Whole lengths in between: any first digit but 0, then any digits.
  if (lastFull > digitsLo) out.push(`[1-9] ${repeat("[0-9]", digitsLo, lastFull - 1)}`);
  if (hi !== undefined && digitsHi > digitsLo) out.push(...sameLength((10n ** BigInt(digitsHi - 1)).toString(), hi.toString()));
  return out;
}

/** Alternatives for the digit strings of one length from `lo` to `hi`, digit by digit. */
function sameLength(lo: string, hi: string): string[] {
  const n = lo.length;
  if (lo === hi) return [literal(lo)];
  const l0 = Number(lo[0]);
  const h0 = Number(hi[0]);
  const digits = (a: number, b: number) => (a === b ? `"${a}"` : `[${a}-${b}]`);
  if (n === 1) return [digits(l0, h0)];
  const restLo = lo.slice(1);
  const restHi = hi.slice(1);
  if (l0 === h0) return [`"${l0}" ${group(sameLength(restLo, restHi))}`];
  const out: string[] = [];
  let from = l0;
  let to = h0;
  // First digit l0 with a partial rest, then full middle digits, then h0 with a partial rest.
  if (!/^0*$/.test(restLo)) {
    out.push(`"${l0}" ${group(sameLength(restLo, "9".repeat(n - 1)))}`);
    from++;
  }
  let last: string | undefined;
  if (!/^9*$/.test(restHi)) {
    last = `"${h0}" ${group(sameLength("0".repeat(n - 1), restHi))}`;
    to--;
  }
  if (from <= to) out.push(`${digits(from, to)} ${repeat("[0-9]", n - 1, n - 1)}`);
  if (last !== undefined) out.push(last);
  return out;
}
