/**
 * Reasoning ("thinking") text, apart from the answer: which tags a model family wraps it in
 * (found in its chat template), and a splitter that routes a reply's pieces to reasoning or
 * answer as they stream, holding back text that may be the start of a tag.
 */

/** The tags around a model's reasoning. */
export interface ThinkingTags {
  readonly open: string;
  readonly close: string;
}

/** The families' tags, as their templates write them; the first whose both tags a template holds wins. */
const FAMILIES: readonly ThinkingTags[] = [
  { open: "<seed:think>", close: "</seed:think>" },
  { open: "<think>", close: "</think>" },
  { open: "[THINK]", close: "[/THINK]" },
  { open: "<|channel>thought", close: "<channel|>" },
];

/** The thinking tags a chat template uses, or undefined for a template without reasoning. */
export function thinkingTags(templateSource: string | undefined): ThinkingTags | undefined {
  if (templateSource === undefined) return undefined;
  return FAMILIES.find((t) => templateSource.includes(t.open) && templateSource.includes(t.close));
}

/**
 * Whether a rendered prompt leaves the model inside its reasoning: the generation prompt ends
 * with the open tag (Qwen 3.5, DeepSeek R1 open it for the model), so the reply starts with
 * reasoning and has no open tag of its own.
 */
export function opensThinking(prompt: string, tags: ThinkingTags): boolean {
  const tail = prompt.trimEnd();
  return tail.endsWith(tags.open) && tail.lastIndexOf(tags.close) < tail.lastIndexOf(tags.open);
}

/** A piece of a reply, sorted. */
export interface SplitPiece {
  readonly reasoning: string;
  readonly content: string;
}

/** Longest suffix of `text` that is a proper prefix of `tag`: it may become the tag. */
function partialTag(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (text.endsWith(tag.slice(0, n))) return n;
  return 0;
}

/**
 * Routes a streamed reply into reasoning and answer. Reasoning starts at the open tag (at the
 * start of the reply, after whitespace) or at once when the prompt opened it, and ends at the
 * close tag; the tags themselves are in neither part, and whitespace after the close tag is
 * dropped from the answer.
 */
export class ReasoningSplitter {
  #state: "start" | "reasoning" | "content";
  #held = "";
  /** All the reasoning and answer so far. */
  reasoning = "";
  content = "";

  constructor(
    readonly tags: ThinkingTags,
    inside: boolean,
  ) {
    this.#state = inside ? "reasoning" : "start";
  }

  /** Takes the next piece of the reply; returns what of it is now known to be reasoning or answer. */
  push(piece: string): SplitPiece {
    let text = this.#held + piece;
    this.#held = "";
    let reasoning = "";
    let content = "";
    for (;;) {
      if (this.#state === "start") {
        const lead = text.length - text.trimStart().length;
        const rest = text.slice(lead);
        if (rest.startsWith(this.tags.open)) {
          this.#state = "reasoning";
          text = rest.slice(this.tags.open.length);
          continue;
        }
        if (rest.length === 0 || this.tags.open.startsWith(rest)) {
          this.#held = text;
          break;
        }
        this.#state = "content";
        continue;
      }
      if (this.#state === "reasoning") {
        const at = text.indexOf(this.tags.close);
        if (at >= 0) {
          reasoning += text.slice(0, at);
          text = text.slice(at + this.tags.close.length).trimStart();
          this.#state = "content";
          this.#afterClose = true;
          continue;
        }
        const keep = partialTag(text, this.tags.close);
        reasoning += text.slice(0, text.length - keep);
        this.#held = text.slice(text.length - keep);
        break;
      }
      // The answer; right after the close tag, leading whitespace is still being dropped.
      if (this.#afterClose) {
        text = text.trimStart();
        if (text.length === 0) break;
        this.#afterClose = false;
      }
      content += text;
      break;
    }
    this.reasoning += reasoning;
    this.content += content;
    return { reasoning, content };
  }

  #afterClose = false;

  /** The end of the reply: what was held back goes where it was headed. */
  end(): SplitPiece {
    const held = this.#held;
    this.#held = "";
    if (held.length === 0) return { reasoning: "", content: "" };
    if (this.#state === "reasoning") {
      this.reasoning += held;
      return { reasoning: held, content: "" };
    }
    this.content += held;
    return { reasoning: "", content: held };
  }
}
