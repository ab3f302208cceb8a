/**
 * A syntax check of GBNF text that mirrors llama.cpp's parser (src/llama-grammar.cpp): it accepts
 * what that parser accepts and, on the first error, says where. llama.cpp reports the position only
 * on stderr and hands the binding a bare nullptr, so without this a user learns only that the
 * grammar is "invalid". It also refuses left recursion, which llama.cpp detects only in part (see the
 * end). Whether a `<token>` is one token of the vocabulary is left to llama.cpp: that needs the
 * vocabulary.
 */
import { invalidArgument } from "../errors.js";

/** llama.cpp's MAX_REPETITION_THRESHOLD: the most copies a repetition (and a nest of them) may make. */
const MAX_REPEAT = 2000;
/** stoull's range: a larger number makes llama.cpp's parser throw. */
const U64_MAX = 2n ** 64n - 1n;

/** A rule reference: the symbol id and name, where it is and in which rule (for messages). */
type Ref = { id: number; name: string; at: number; rule: string };
/** An element of an alternative as llama.cpp keeps it: a reference, or null for a terminal (a character, a token). */
type Elem = Ref | null;

/**
 * Throws ERR_INVALID_ARGUMENT, prefixed by `where`, when llama.cpp would refuse `text` as a grammar
 * with start rule `root`: a syntax error (line, column and what was expected), a reference to a
 * rule never defined, no rules at all, no rule `root`, or a left-recursive rule. @internal
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
  const names: string[] = []; // by id; a generated name has "_", which a written one cannot have
  const rules = new Map<number, Elem[][]>(); // each rule's alternatives, as llama.cpp builds them
  let maxRule = -1;
  const symbol = (name: string): number => {
    if (!ids.has(name)) ids.set(name, names.push(name) - 1);
    return ids.get(name) as number;
  };
  const generate = (base: string): number => symbol(`${base}_${ids.size}`);
  const generated = (id: number, at: number, rule: string): Ref => ({ id, name: names[id] as string, at, rule });
  const addRule = (id: number, alts: Elem[][]) => {
    rules.set(id, alts);
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
    const alts: Elem[][] = [[]];
    p = sequence(p, rule, alts[0] as Elem[], nested);
    while (src[p] === "|") p = sequence(space(p + 1, true), rule, alts[alts.push([]) - 1] as Elem[], nested);
    addRule(id, alts);
    return p;
  };

  /** One alternative, into `elems` (llama.cpp's elements, but a repeated item is kept once: enough for the checks). */
  const sequence = (p: number, rule: string, elems: Elem[], nested: boolean): number => {
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
      const prev = elems.slice(last);
      if (min === 0) elems.length = last; // moved into the generated rules below (or dropped by {0})
      // x{m,n}: x S(n-m) with S(k) ::= x S(k-1) | "" and S(1) ::= x | ""; x{m,}: x S with S ::= x S | "".
      const optional = max === Infinity ? 1 : max - min;
      let id = -1;
      for (let i = 0; i < optional; i++) {
        const next = generate(rule);
        addRule(next, [i > 0 || max === Infinity ? [...prev, generated(max === Infinity ? next : id, at, rule)] : prev, []]);
        id = next;
      }
      if (optional > 0) elems.push(generated(id, at, rule));
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
        elems.push(generated(id, start, rule));
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
    const bad = (rules.get(id)?.flat() ?? [firstRef.get(id) as Ref]).find((r) => r !== null && !rules.has(r.id));
    if (bad) invalidArgument(`${where}: rule ${JSON.stringify(bad.rule)} references undefined rule ${JSON.stringify(bad.name)} (${lineCol(bad.at)})`);
  }
  if (maxRule < 0) invalidArgument(`${where}: no rules (the grammar has only blanks and comments)`);
  if (!ids.has(root)) invalidArgument(`${where}: no rule ${JSON.stringify(root)}`);

  // Left recursion: a rule that can reach itself before matching anything. llama.cpp refuses it, but
  // counts a rule as possibly empty only when an alternative is empty as written, so it misses a
  // loop through `ws ::= [ ]*` (empty through its generated rule) and then recurses until it aborts
  // the process. Here "can be empty" is the full fixed point: a rule can when one of its alternatives
  // has only references to such rules. Worked off a queue (each alternative counts the references
  // it still waits for), so it takes linear time however the rules are ordered.
  const empty = new Set<number>();
  const queue: number[] = [];
  const waiting = new Map<number, { rule: number; left: number }[]>(); // by rule: alternatives waiting for it
  for (const [id, alts] of rules) {
    for (const alt of alts) {
      if (alt.includes(null)) continue; // a terminal: never empty
      const wait = { rule: id, left: alt.length };
      if (wait.left === 0) queue.push(id);
      for (const r of alt as Ref[]) waiting.get(r.id)?.push(wait) ?? waiting.set(r.id, [wait]);
    }
  }
  for (let id = queue.pop(); id !== undefined; id = queue.pop()) {
    if (empty.has(id)) continue;
    empty.add(id);
    for (const wait of waiting.get(id) ?? []) if (--wait.left === 0) queue.push(wait.rule);
  }
  /** The references a rule can begin with: in each alternative, up to its first element that cannot be empty. */
  const leftRefs = (id: number): Ref[] =>
    (rules.get(id) as Elem[][]).flatMap((alt) => {
      const n = alt.findIndex((e) => e === null || !empty.has(e.id));
      return alt.slice(0, n < 0 ? alt.length : n + 1).filter((e): e is Ref => e !== null);
    });
  const isGenerated = (id: number) => (names[id] as string).includes("_");
  /** Refuses the loop `refs` (each leads to the next rule, the last back to the first one searched). */
  const leftRecursive = (refs: Ref[]): never => {
    // Told from that first rule (the last ref leads into it), or else the next one the user wrote.
    const cycle = [refs[refs.length - 1] as Ref, ...refs.slice(0, -1)];
    const k = cycle.findIndex((r) => !isGenerated(r.id));
    const into = cycle[Math.max(k, 0)] as Ref;
    // Only generated rules: `x*`, `x+` or `x{m,}` of an x that can be empty, looping on itself.
    if (k < 0) return refuse(into.rule, `the repetition at ${lineCol(into.at)} repeats what can be empty`);
    const chain = [into, ...cycle.slice(k + 1), ...cycle.slice(0, k + 1)].filter((r) => !isGenerated(r.id)).map((r) => r.name);
    if (chain.length > 9) chain.splice(4, chain.length - 8, "…"); // a long loop: its ends
    return refuse(into.name, `${chain.join(" → ")} at ${lineCol(into.at)}`);
  };
  const refuse = (rule: string, loop: string): never =>
    invalidArgument(`${where}: rule ${JSON.stringify(rule)} is left-recursive: it can reach itself before matching anything (${loop}); llama.cpp cannot use such a grammar`);
  // A depth-first search over those references, in id order as llama.cpp's (without recursion: a
  // grammar may chain thousands of rules).
  const state = new Map<number, "open" | "done">();
  for (const start of [...rules.keys()].sort((a, b) => a - b)) {
    if (state.has(start)) continue;
    // refs: those still to follow (reversed, to take them in order); via: the one followed to here.
    const path: { id: number; refs: Ref[]; via?: Ref }[] = [{ id: start, refs: leftRefs(start).reverse() }];
    state.set(start, "open");
    while (path.length > 0) {
      const top = path[path.length - 1] as (typeof path)[number];
      const ref = top.refs.pop();
      if (ref === undefined) {
        state.set(top.id, "done");
        path.pop();
      } else if (state.get(ref.id) === "open") {
        leftRecursive([...path.slice(path.findIndex((f) => f.id === ref.id) + 1).map((f) => f.via as Ref), ref]);
      } else if (!state.has(ref.id)) {
        state.set(ref.id, "open");
        path.push({ id: ref.id, refs: leftRefs(ref.id).reverse(), via: ref });
      }
    }
  }
}
