/**
 * A syntax check of GBNF text that mirrors llama.cpp's parser (src/llama-grammar.cpp): it accepts
 * what that parser accepts and, on the first error, says where. llama.cpp reports the position only
 * on stderr and hands the binding a bare nullptr, so without this a user learns only that the
 * grammar is "invalid". Left recursion, and whether a `<token>` is one token of the vocabulary, are
 * left to llama.cpp: they need the rules' meaning or the vocabulary, not the syntax.
 */
import { invalidArgument } from "../errors.js";

/** llama.cpp's MAX_REPETITION_THRESHOLD: the most copies a repetition (and a nest of them) may make. */
const MAX_REPEAT = 2000;
/** stoull's range: a larger number makes llama.cpp's parser throw. */
const U64_MAX = 2n ** 64n - 1n;

/** A rule reference: the symbol id and name, where it is and in which rule (for messages). */
type Ref = { id: number; name: string; at: number; rule: string };

/**
 * Throws ERR_INVALID_ARGUMENT, prefixed by `where`, when llama.cpp would refuse `text` as a grammar
 * with start rule `root`: a syntax error (line, column and what was expected), a reference to a
 * rule never defined, no rules at all, or no rule `root`. @internal
 */
export function checkGbnf(text: string, root: string, where: string): void {
  const src = text;
  const len = src.length;
  const lineCol = (at: number): string => {
    const lines = src.slice(0, at).split(/\r\n|\r|\n/);
    return `line ${lines.length}, column ${[...(lines[lines.length - 1] ?? "")].length + 1}`;
  };
  const found = (at: number) => (at >= len ? "the end of the grammar" : JSON.stringify(String.fromCodePoint(src.codePointAt(at) ?? 0)));
  const fail = (at: number, what: string): never => invalidArgument(`${where}: ${lineCol(at)}: ${what}`);
  // "_" is a common slip in names, which take only letters, digits and "-".
  const hint = (at: number) => (src[at] === "_" ? ' (rule names are letters, digits and "-")' : "");
  const expecting = (at: number, what: string): never => fail(at, `expecting ${what}, found ${found(at)}${hint(at)}`);
  // llama.cpp reads a C string: it would silently ignore all from a NUL on (a leading NUL: the whole
  // grammar, so no constraint at all). Refused rather than silently loosened.
  if (src.includes("\0")) fail(src.indexOf("\0"), "a NUL character (llama.cpp would ignore the rest of the grammar)");

  // The symbol table as llama.cpp keeps it (ids in order of first sight; groups and repetitions add
  // `rule_N`, N the table's size): ids decide which rules llama.cpp checks, and how many rules a
  // group is counted as when a repetition copies it.
  const ids = new Map<string, number>();
  const firstRef = new Map<number, Ref>();
  const rules = new Map<number, Ref[]>(); // only the references of each rule matter here
  let maxRule = -1;
  const symbol = (name: string): number => {
    if (!ids.has(name)) ids.set(name, ids.size);
    return ids.get(name) as number;
  };
  const generate = (base: string): number => {
    const id = ids.size;
    ids.set(`${base}_${id}`, id);
    return id;
  };
  const addRule = (id: number, refs: Ref[]) => {
    rules.set(id, refs);
    maxRule = Math.max(maxRule, id);
  };

  const isDigit = (c: string | undefined) => c !== undefined && c >= "0" && c <= "9";
  const isWord = (c: string | undefined) => c !== undefined && (/[a-zA-Z-]/.test(c) || isDigit(c));

  /** Skips blanks and comments, and line breaks where `newlines` (inside groups, after `::=`, `|`). */
  const space = (p: number, newlines: boolean): number => {
    for (;;) {
      const c = src[p];
      if (c === "#") while (p < len && src[p] !== "\r" && src[p] !== "\n") p++;
      else if (c === " " || c === "\t" || (newlines && (c === "\r" || c === "\n"))) p++;
      else return p;
    }
  };
  const name = (p: number): number => {
    let e = p;
    while (isWord(src[e])) e++;
    return e === p ? expecting(p, "a rule name (letters, digits, -)") : e;
  };
  /** An unsigned decimal; llama.cpp's stoull refuses what does not fit 64 bits. */
  const int = (p: number): [number, number] => {
    let e = p;
    while (isDigit(src[e])) e++;
    if (e === p) expecting(p, "a number");
    const n = BigInt(src.slice(p, e));
    if (n > U64_MAX) fail(p, "number too large");
    return [Number(n), e];
  };
  /** One character of a literal or class: an escape or a code point. */
  const char = (p: number): number => {
    if (src[p] !== "\\") return p + ((src.codePointAt(p) ?? 0) > 0xffff ? 2 : 1);
    const e = src[p + 1];
    const hex = e === "x" ? 2 : e === "u" ? 4 : e === "U" ? 8 : 0;
    if (hex > 0) {
      let q = p + 2;
      while (q < p + 2 + hex && /[0-9a-fA-F]/.test(src[q] ?? "")) q++;
      return q === p + 2 + hex ? q : fail(p, `expecting ${hex} hex digits after "\\${e}"`);
    }
    if (e !== undefined && 'trn\\"[]-'.includes(e)) return p + 2;
    return fail(p, `unknown escape "\\${e ?? ""}" (use \\x, \\u, \\U, \\t, \\n, \\r, \\\\, \\", \\[, \\], \\-)`);
  };

  const alternates = (p: number, rule: string, id: number, nested: boolean): number => {
    const elems: (Ref | null)[] = [];
    p = sequence(p, rule, elems, nested);
    while (src[p] === "|") {
      elems.push(null);
      p = sequence(space(p + 1, true), rule, elems, nested);
    }
    addRule(id, elems.filter((e): e is Ref => e !== null));
    return p;
  };

  /** One alternative; `elems` stands for llama.cpp's elements (null: not a reference). */
  const sequence = (p: number, rule: string, elems: (Ref | null)[], nested: boolean): number => {
    let last = elems.length; // where the item a repetition applies to starts
    let copies = 1; // rules that item stands for (llama.cpp's n_prev_rules)
    const item = () => {
      last = elems.length;
      copies = 1;
    };
    const repeat = (at: number, min: number, max: number) => {
      if (last === elems.length) fail(at, `expecting something before ${found(at)} to repeat`);
      const total = max !== Infinity && max > 0 ? max : Math.max(min, 1);
      if (copies * total > MAX_REPEAT) fail(at, `this repetition makes more than ${MAX_REPEAT} copies of rules; repeat less or simplify what is repeated`);
      const prev = elems.slice(last).filter((e): e is Ref => e !== null);
      if (min === 0) elems.length = last; // moved into the generated rules below (or dropped by {0})
      const optional = max === Infinity ? 1 : max - min;
      for (let i = 0; i < optional; i++) addRule(generate(rule), prev);
      if (optional > 0) elems.push(null); // a reference to a generated rule: always defined
      copies *= total;
    };
    while (p < len) {
      const c = src[p] as string;
      const start = p;
      if (c === '"' || c === "[") {
        const close = c === '"' ? '"' : "]";
        p++;
        if (c === "[" && src[p] === "^") p++;
        item();
        while (src[p] !== close) {
          if (p >= len) fail(start, `${c === '"' ? "literal" : "character class"} is not closed by ${JSON.stringify(close)}`);
          p = char(p);
          elems.push(null);
          // A range a-b; a "-" just before "]" is a plain character.
          if (c === "[" && src[p] === "-" && src[p + 1] !== "]") {
            if (p + 1 >= len) fail(start, 'character class is not closed by "]"');
            p = char(p + 1);
          }
        }
        p = space(p + 1, nested);
      } else if (c === "<" || c === "!") {
        if (c === "!") p++;
        if (src[p] !== "<") expecting(p, '"<" (a token) after "!"');
        if (src[++p] === "[") {
          p = int(p + 1)[1];
          if (src[p] !== "]") expecting(p, '"]" after the token id');
          if (src[++p] !== ">") expecting(p, '">" after the token id');
        } else {
          while (p < len && src[p] !== ">") p++;
          if (p >= len) fail(start, 'token is not closed by ">"');
        }
        item();
        elems.push(null);
        p = space(p + 1, nested);
      } else if (isWord(c)) {
        const e = name(p);
        const ref = { id: symbol(src.slice(p, e)), name: src.slice(p, e), at: p, rule };
        if (!firstRef.has(ref.id)) firstRef.set(ref.id, ref);
        item();
        elems.push(ref);
        p = space(e, nested);
      } else if (c === "(") {
        const before = ids.size;
        const id = generate(rule);
        p = alternates(space(p + 1, true), rule, id, true);
        last = elems.length;
        copies = Math.max(1, ids.size - before);
        elems.push(null);
        if (src[p] !== ")") expecting(p, `")" to close the group at ${lineCol(start)}`);
        p = space(p + 1, nested);
      } else if (c === ".") {
        item();
        elems.push(null);
        p = space(p + 1, nested);
      } else if (c === "*" || c === "+" || c === "?") {
        p = space(p + 1, nested);
        repeat(start, c === "+" ? 1 : 0, c === "?" ? 1 : Infinity);
      } else if (c === "{") {
        p = space(p + 1, nested);
        if (!isDigit(src[p])) expecting(p, 'a number after "{"');
        let min: number;
        let max = Infinity;
        [min, p] = int(p);
        p = space(p, nested);
        if (src[p] === "}") max = min;
        else if (src[p] === ",") {
          p = space(p + 1, nested);
          if (isDigit(src[p])) [max, p] = int(p);
          p = space(p, nested);
          if (src[p] !== "}") expecting(p, '"}"');
        } else expecting(p, '"," or "}"');
        p = space(p + 1, nested);
        if (min > MAX_REPEAT) fail(start, `more than ${MAX_REPEAT} repetitions`);
        if (max > MAX_REPEAT) max = Infinity; // llama.cpp's reading: no upper bound
        // llama.cpp does not refuse this: it counts max - min down from 2^64 and never ends.
        if (max < min) fail(start, `the maximum ${max} is less than the minimum ${min}`);
        repeat(start, min, max);
      } else break;
    }
    return p;
  };

  const definition = (p: number): number => {
    const e = name(p);
    const ruleName = src.slice(p, e);
    p = space(e, false);
    const id = symbol(ruleName);
    if (!src.startsWith("::=", p)) expecting(p, `"::=" after rule name ${JSON.stringify(ruleName)}`);
    p = alternates(space(p + 3, true), ruleName, id, false);
    if (src[p] === "\r") p += src[p + 1] === "\n" ? 2 : 1;
    else if (src[p] === "\n") p++;
    else if (p < len) expecting(p, `a new line after rule ${JSON.stringify(ruleName)}`);
    return space(p, true);
  };

  for (let p = space(0, true); p < len; ) p = definition(p);

  // llama.cpp's checks after parsing, in its order: every rule id up to the highest is defined (an
  // id with no rule came from a reference), every reference is to a defined rule, there are rules.
  for (let id = 0; id <= maxRule; id++) {
    const bad = (rules.get(id) ?? [firstRef.get(id) as Ref]).find((r) => !rules.has(r.id));
    if (bad) invalidArgument(`${where}: rule ${JSON.stringify(bad.rule)} references undefined rule ${JSON.stringify(bad.name)} (${lineCol(bad.at)})`);
  }
  if (maxRule < 0) invalidArgument(`${where}: no rules (the grammar has only blanks and comments)`);
  if (!ids.has(root)) invalidArgument(`${where}: no rule ${JSON.stringify(root)}`);
}
