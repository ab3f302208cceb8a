/**
 * A small GBNF recognizer for tests: parses a grammar the way llama.cpp's parser reads it (rule
 * names, literals, classes, groups, alternatives, * + ? {m,n}, comments) and says whether a
 * string is a sentence of it. It memoizes, per rule and position, the set of positions a rule
 * can end at, so ambiguity costs little; left recursion is reported (llama.cpp refuses it too).
 * Not the native sampler: it checks the language, not token by token generation.
 */

type Node =
  | { readonly k: "lit"; readonly cps: readonly number[] }
  | { readonly k: "cls"; readonly neg: boolean; readonly ranges: readonly (readonly [number, number])[] }
  | { readonly k: "any" }
  | { readonly k: "ref"; readonly name: string }
  | { readonly k: "seq"; readonly items: readonly Node[] }
  | { readonly k: "alt"; readonly options: readonly Node[] }
  | { readonly k: "rep"; readonly node: Node; readonly min: number; readonly max: number };

/** A parsed grammar. */
export interface Gbnf {
  /** The rule names, in order of definition. */
  readonly rules: readonly string[];
  /** Whether `input` is a sentence of the grammar (from `start`, default "root"). */
  accepts(input: string, start?: string): boolean;
  /**
   * A random sentence (from `start`, default "root"): alternatives, repetition counts and
   * characters drawn with `random` (a () => [0,1) function); past `depth` nested rules it takes
   * the shortest way out, so it ends on recursive grammars.
   */
  sample(random: () => number, options?: { start?: string; depth?: number }): string;
}

/** Characters tried for negated classes and `.`: plain, escaped-in-JSON, controls, wide. */
const CHAR_POOL = Array.from('aZ09 _-.,:;{}[]"\\/\n\t\r\u0000\u0001\u001f\u007féü中\u2028😀~^$', (ch) => ch.codePointAt(0) as number);

const isWordChar = (c: string | undefined) => c !== undefined && /[A-Za-z0-9-]/.test(c);

class Parser {
  private pos = 0;
  readonly rules = new Map<string, Node>();

  constructor(private readonly src: string) {}

  private fail(msg: string): never {
    const line = this.src.slice(0, this.pos).split("\n").length;
    throw new Error(`GBNF parse error (line ${line}): ${msg} near ${JSON.stringify(this.src.slice(this.pos, this.pos + 30))}`);
  }

  /** Skips spaces and comments; newlines too when `newlines`. */
  private space(newlines: boolean): void {
    while (this.pos < this.src.length) {
      const c = this.src[this.pos] as string;
      if (c === "#") {
        while (this.pos < this.src.length && this.src[this.pos] !== "\n" && this.src[this.pos] !== "\r") this.pos++;
      } else if (c === " " || c === "\t" || (newlines && (c === "\n" || c === "\r"))) {
        this.pos++;
      } else break;
    }
  }

  private name(): string {
    const start = this.pos;
    while (isWordChar(this.src[this.pos])) this.pos++;
    if (this.pos === start) this.fail("expected a rule name");
    return this.src.slice(start, this.pos);
  }

  private int(): number {
    const start = this.pos;
    while (/[0-9]/.test(this.src[this.pos] ?? "")) this.pos++;
    if (this.pos === start) this.fail("expected a number");
    return Number(this.src.slice(start, this.pos));
  }

  private hex(n: number): number {
    const text = this.src.slice(this.pos, this.pos + n);
    if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(text)) this.fail("bad hex escape");
    this.pos += n;
    return parseInt(text, 16);
  }

  /** One character (code point) of a literal or class, with escapes. */
  private char(): number {
    const c = this.src.codePointAt(this.pos);
    if (c === undefined) this.fail("unexpected end");
    if (c !== 0x5c) {
      this.pos += c > 0xffff ? 2 : 1;
      return c;
    }
    const e = this.src[this.pos + 1];
    this.pos += 2;
    switch (e) {
      case "x":
        return this.hex(2);
      case "u":
        return this.hex(4);
      case "U":
        return this.hex(8);
      case "t":
        return 9;
      case "r":
        return 13;
      case "n":
        return 10;
      case "\\":
      case '"':
      case "[":
      case "]":
        return e.codePointAt(0) as number;
      default:
        return this.fail(`unknown escape \\${e}`);
    }
  }

  parse(): Map<string, Node> {
    this.space(true);
    while (this.pos < this.src.length) {
      const name = this.name();
      this.space(false);
      if (!this.src.startsWith("::=", this.pos)) this.fail("expected ::=");
      this.pos += 3;
      this.space(true);
      const body = this.alternatives(false);
      if (this.rules.has(name)) this.fail(`rule ${name} defined twice`);
      this.rules.set(name, body);
      this.space(false);
      if (this.pos < this.src.length) {
        if (this.src[this.pos] !== "\n" && this.src[this.pos] !== "\r") this.fail("expected end of rule");
      }
      this.space(true);
    }
    for (const [, node] of this.rules) this.checkRefs(node);
    return this.rules;
  }

  private checkRefs(node: Node): void {
    switch (node.k) {
      case "ref":
        if (!this.rules.has(node.name)) throw new Error(`GBNF: undefined rule ${node.name}`);
        break;
      case "seq":
        node.items.forEach((n) => this.checkRefs(n));
        break;
      case "alt":
        node.options.forEach((n) => this.checkRefs(n));
        break;
      case "rep":
        this.checkRefs(node.node);
        break;
      default:
    }
  }

  private alternatives(nested: boolean): Node {
    const options = [this.sequence(nested)];
    while (this.src[this.pos] === "|") {
      this.pos++;
      this.space(true);
      options.push(this.sequence(nested));
    }
    return options.length === 1 ? (options[0] as Node) : { k: "alt", options };
  }

  private sequence(nested: boolean): Node {
    const items: Node[] = [];
    for (;;) {
      const c = this.src[this.pos];
      let item: Node | undefined;
      if (c === '"') {
        this.pos++;
        const cps: number[] = [];
        while (this.src[this.pos] !== '"') {
          if (this.pos >= this.src.length) this.fail("unterminated literal");
          cps.push(this.char());
        }
        this.pos++;
        item = { k: "lit", cps };
      } else if (c === "[") {
        this.pos++;
        const neg = this.src[this.pos] === "^";
        if (neg) this.pos++;
        const ranges: [number, number][] = [];
        while (this.src[this.pos] !== "]") {
          if (this.pos >= this.src.length) this.fail("unterminated class");
          const lo = this.char();
          if (this.src[this.pos] === "-" && this.src[this.pos + 1] !== "]") {
            this.pos++;
            const hi = this.char();
            if (hi < lo) this.fail("reversed range");
            ranges.push([lo, hi]);
          } else ranges.push([lo, lo]);
        }
        this.pos++;
        item = { k: "cls", neg, ranges };
      } else if (c === ".") {
        this.pos++;
        item = { k: "any" };
      } else if (c === "(") {
        this.pos++;
        this.space(true);
        item = this.alternatives(true);
        if (this.src[this.pos] !== ")") this.fail("expected )");
        this.pos++;
      } else if (isWordChar(c)) {
        item = { k: "ref", name: this.name() };
      } else if (c === "*" || c === "+" || c === "?" || c === "{") {
        const last = items.pop();
        if (last === undefined) this.fail(`${c} with nothing before it`);
        let min = 0;
        let max = Infinity;
        if (c === "+") min = 1;
        else if (c === "?") max = 1;
        if (c === "{") {
          this.pos++;
          this.space(false);
          min = this.int();
          this.space(false);
          if (this.src[this.pos] === ",") {
            this.pos++;
            this.space(false);
            max = this.src[this.pos] === "}" ? Infinity : this.int();
          } else max = min;
          this.space(false);
          if (this.src[this.pos] !== "}") this.fail("expected }");
        }
        this.pos++;
        items.push({ k: "rep", node: last, min, max });
      } else break;
      if (item !== undefined) items.push(item);
      this.space(nested);
    }
    return items.length === 1 ? (items[0] as Node) : { k: "seq", items };
  }
}

/** Parses a GBNF grammar; throws on syntax llama.cpp would refuse (and on undefined rules). */
export function parseGbnf(grammar: string): Gbnf {
  const rules = new Parser(grammar).parse();
  return {
    rules: [...rules.keys()],
    accepts(input: string, start = "root"): boolean {
      if (!rules.has(start)) throw new Error(`GBNF: no rule ${start}`);
      const cps = Array.from(input, (ch) => ch.codePointAt(0) as number);
      const memo = new Map<string, readonly number[]>();
      const open = new Set<string>();

      const match = (node: Node, pos: number): readonly number[] => {
        switch (node.k) {
          case "lit": {
            for (let i = 0; i < node.cps.length; i++) if (cps[pos + i] !== node.cps[i]) return [];
            return [pos + node.cps.length];
          }
          case "cls": {
            const c = cps[pos];
            if (c === undefined) return [];
            const inside = node.ranges.some(([lo, hi]) => c >= lo && c <= hi);
            return inside !== node.neg ? [pos + 1] : [];
          }
          case "any":
            return pos < cps.length ? [pos + 1] : [];
          case "ref": {
            const key = `${node.name}@${pos}`;
            const known = memo.get(key);
            if (known !== undefined) return known;
            if (open.has(key)) throw new Error(`GBNF: left recursion through ${node.name}`);
            open.add(key);
            const out = match(rules.get(node.name) as Node, pos);
            open.delete(key);
            memo.set(key, out);
            return out;
          }
          case "seq": {
            let current: readonly number[] = [pos];
            for (const item of node.items) {
              const next = new Set<number>();
              for (const p of current) for (const q of match(item, p)) next.add(q);
              current = [...next];
              if (current.length === 0) break;
            }
            return current;
          }
          case "alt": {
            const out = new Set<number>();
            for (const o of node.options) for (const q of match(o, pos)) out.add(q);
            return [...out];
          }
          case "rep": {
            const out = new Set<number>();
            if (node.min === 0) out.add(pos);
            let current = new Set<number>([pos]);
            const seen = new Set<number>(node.min === 0 ? [pos] : []);
            for (let i = 1; i <= node.max && current.size > 0; i++) {
              const next = new Set<number>();
              for (const p of current) for (const q of match(node.node, p)) next.add(q);
              if (i < node.min) {
                current = next;
                continue;
              }
              // Past the minimum, a position reached before adds nothing new (and ends loops).
              for (const q of next) out.add(q);
              current = new Set([...next].filter((q) => !seen.has(q)));
              for (const q of next) seen.add(q);
            }
            return [...out];
          }
        }
      };
      return match({ k: "ref", name: start }, 0).includes(cps.length);
    },
    sample(random: () => number, options?: { start?: string; depth?: number }): string {
      const start = options?.start ?? "root";
      const limit = options?.depth ?? 12;
      if (!rules.has(start)) throw new Error(`GBNF: no rule ${start}`);
      const cost = exitCosts(rules);
      const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T;
      const out: number[] = [];
      const gen = (node: Node, depth: number): void => {
        switch (node.k) {
          case "lit":
            out.push(...node.cps);
            return;
          case "cls": {
            const fits = CHAR_POOL.filter((c) => node.ranges.some(([lo, hi]) => c >= lo && c <= hi) !== node.neg);
            if (!node.neg && (fits.length === 0 || random() < 0.7)) {
              const [lo, hi] = pick(node.ranges);
              let cp = lo + Math.floor(random() * (hi - lo + 1));
              if (cp >= 0xd800 && cp <= 0xdfff) cp = lo;
              out.push(cp);
              return;
            }
            if (fits.length === 0) throw new Error("GBNF sample: no character fits a class");
            out.push(pick(fits));
            return;
          }
          case "any":
            out.push(pick(CHAR_POOL));
            return;
          case "ref":
            gen(rules.get(node.name) as Node, depth + 1);
            return;
          case "seq":
            for (const item of node.items) gen(item, depth);
            return;
          case "alt": {
            if (depth <= limit) return gen(pick(node.options), depth);
            const best = Math.min(...node.options.map((o) => cost(o)));
            return gen(node.options.find((o) => cost(o) === best) as Node, depth);
          }
          case "rep": {
            const extra = depth <= limit ? Math.floor(random() * 4) : 0;
            const n = Math.min(node.max, node.min + extra);
            for (let i = 0; i < n; i++) gen(node.node, depth);
            return;
          }
        }
      };
      gen({ k: "ref", name: start }, 0);
      return String.fromCodePoint(...out);
    },
  };
}

/** For each node, how many rule expansions the shortest way to a finished sentence takes. */
function exitCosts(rules: ReadonlyMap<string, Node>): (node: Node) => number {
  const ruleCost = new Map<string, number>([...rules.keys()].map((k) => [k, Infinity]));
  const cost = (node: Node): number => {
    switch (node.k) {
      case "lit":
      case "cls":
      case "any":
        return 0;
      case "ref":
        return (ruleCost.get(node.name) as number) + 1;
      case "seq":
        return Math.max(0, ...node.items.map(cost));
      case "alt":
        return Math.min(...node.options.map(cost));
      case "rep":
        return node.min === 0 ? 0 : cost(node.node);
    }
  };
  for (let changed = true; changed; ) {
    changed = false;
    for (const [name, body] of rules) {
      const c = cost(body);
      if (c < (ruleCost.get(name) as number)) {
        ruleCost.set(name, c);
        changed = true;
      }
    }
  }
  return cost;
}

/** Whether `input` is a sentence of `grammar` (parsed each call; use parseGbnf to reuse). */
export function gbnfAccepts(grammar: string, input: string): boolean {
  return parseGbnf(grammar).accepts(input);
}
