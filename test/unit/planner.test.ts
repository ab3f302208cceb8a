/**
 * The eviction planner, without a model: turns described by token counts, ages and pins.
 */
import { describe, expect, it } from "vitest";
import { LlamemError } from "../../lib/errors.js";
import type { SessionMessage } from "../../lib/session/memory.js";
import {
  agedOut,
  budgetTokens,
  countToShed,
  describeTurns,
  evictable,
  newestTimestamp,
  outsideWindow,
  promptFloor,
  splitTurns,
  toFold,
  toShed,
  type TurnFacts,
} from "../../lib/session/planner.js";
import type { Rendered } from "../../lib/session/render.js";

/** Turns of the given sizes, timestamps 1, 2, 3, … and none pinned; the last is the turn being prompted. */
const turns = (...tokens: (number | undefined)[]): TurnFacts[] => tokens.map((t, i) => ({ tokens: t, newest: i + 1, pinned: false }));
const pin = (facts: TurnFacts[], ...indices: number[]): TurnFacts[] => facts.map((f, i) => (indices.includes(i) ? { ...f, pinned: true } : f));

const msg = (role: string, content: string, timestamp = 0, pinned = false): SessionMessage =>
  pinned ? { role, content, timestamp, pinned: true } : { role, content, timestamp };

describe("splitTurns", () => {
  it("starts a turn at each user message; leading other messages form their own turn", () => {
    const h = [msg("system", "s"), msg("assistant", "hi"), msg("user", "a"), msg("assistant", "b"), msg("tool", "t"), msg("user", "c")];
    expect(splitTurns(h).map((t) => t.map((m) => m.content))).toEqual([["s", "hi"], ["a", "b", "t"], ["c"]]);
    expect(splitTurns([])).toEqual([]);
  });
});

describe("budgetTokens", () => {
  it("defaults to the context less the reply and a margin, and takes integers or fractions", () => {
    expect(budgetTokens({ budget: undefined }, 512, 64)).toBe(512 - 64 - 16);
    expect(budgetTokens({ budget: 100 }, 512, 64)).toBe(100);
    expect(budgetTokens({ budget: 0.5 }, 512, 64)).toBe(256);
  });

  it("leaves room for one generated token, and refuses a budget below one token", () => {
    expect(budgetTokens({ budget: 10_000 }, 512, 4)).toBe(511);
    expect(() => budgetTokens({ budget: undefined }, 64, 64)).toThrow(LlamemError);
    try {
      budgetTokens({ budget: 0.001 }, 100, 4);
      expect.unreachable();
    } catch (err) {
      expect((err as LlamemError).code).toBe("ERR_INVALID_ARGUMENT");
    }
  });
});

describe("newestTimestamp", () => {
  it("handles any number of messages (no argument spread)", () => {
    const many = Array.from({ length: 500_000 }, (_, i) => ({ timestamp: i }));
    expect(newestTimestamp(many)).toBe(499_999);
    expect(newestTimestamp([])).toBe(-Infinity);
  });
});

describe("evictable turns", () => {
  it("never includes pinned turns or the turn being prompted", () => {
    expect(evictable(turns(10, 10, 10, 10))).toEqual([0, 1, 2]);
    expect(evictable(pin(turns(10, 10, 10, 10), 1))).toEqual([0, 2]);
    expect(evictable(turns(10))).toEqual([]);
    expect(evictable([])).toEqual([]);
  });
});

describe("maxAge", () => {
  it("evicts the evictable turns whose newest message is older than the limit", () => {
    // Timestamps 1..5; limit 4: turns 0, 1, 2 are older; turn 1 is pinned; turn 4 is the new one.
    expect(agedOut(pin(turns(1, 1, 1, 1, 1), 1), 4)).toEqual([0, 2]);
    // The new turn is never aged out, however old.
    expect(agedOut(turns(1, 1), 100)).toEqual([0]);
  });
});

describe("sliding window", () => {
  it("evicts the oldest evictable turns beyond keepLastTurns", () => {
    expect(outsideWindow(turns(1, 1, 1, 1, 1, 1), 2)).toEqual([0, 1, 2]);
    expect(outsideWindow(turns(1, 1, 1), 5)).toEqual([]);
    expect(outsideWindow(turns(1, 1, 1), 0)).toEqual([0, 1]);
    // Pinned turns are neither evicted nor counted in the window.
    expect(outsideWindow(pin(turns(1, 1, 1, 1, 1), 0, 3), 1)).toEqual([1]);
  });
});

describe("token budget", () => {
  it("drops the fewest oldest turns that shed the excess", () => {
    expect(countToShed([30, 20, 50], 1)).toBe(1);
    expect(countToShed([30, 20, 50], 30)).toBe(1);
    expect(countToShed([30, 20, 50], 31)).toBe(2);
    expect(countToShed([30, 20, 50], 1000)).toBe(3);
  });

  it("stops before a turn of unknown size, dropping at least one", () => {
    expect(countToShed([30, undefined, 50], 100)).toBe(1);
    expect(countToShed([undefined, 20], 100)).toBe(1);
  });

  it("picks turns by index, skipping pinned ones and the new turn", () => {
    const t = pin(turns(30, 999, 20, 50, 7), 1);
    expect(toShed(t, 40)).toEqual([0, 2]);
    expect(toShed(t, 0)).toEqual([]);
    expect(toShed(t, -5)).toEqual([]);
    expect(toShed(t, 10_000)).toEqual([0, 2, 3]);
    expect(toShed(turns(5), 100)).toEqual([]);
  });
});

describe("summarize", () => {
  it("folds all but keepLastTurns on the first fold, then what sheds the excess", () => {
    const t = turns(10, 10, 10, 10, 10, 10);
    expect(toFold(t, 1, 2, true)).toEqual([0, 1, 2]);
    expect(toFold(t, 15, 2, false)).toEqual([0, 1]);
    // At least one turn is folded even when keepLastTurns covers them all.
    expect(toFold(t, 1, 9, true)).toEqual([0]);
    expect(toFold(t, 0, 2, true)).toEqual([]);
    expect(toFold(turns(10), 100, 0, true)).toEqual([]);
  });
});

describe("promptFloor", () => {
  it("is the prompt less every evictable turn (and what may be dropped)", () => {
    // 100 tokens in all: turns of 10, 20 (pinned), 30, and the new one of 15.
    const t = pin(turns(10, 20, 30, 15), 1);
    expect(promptFloor(100, t)).toBe(60);
    expect(promptFloor(100, t, 25)).toBe(35);
    expect(promptFloor(100, turns(15))).toBe(100);
  });

  it("is unknown when an evictable turn's size is", () => {
    expect(promptFloor(100, turns(10, undefined, 15))).toBeUndefined();
    // A pinned or new turn of unknown size does not matter.
    expect(promptFloor(100, pin(turns(10, undefined, undefined), 1))).toBe(90);
  });
});

describe("describeTurns", () => {
  it("takes each turn's tokens from the rendered spans, its newest timestamp, and its pins", () => {
    const system = {};
    const h = [
      msg("user", "a", 5),
      msg("assistant", "b", 7),
      msg("user", "c", 8, true),
      msg("assistant", "d", 9),
      msg("user", "e", 10),
      msg("system", "note", 11),
      msg("user", "f", 12),
    ];
    const items = [{ key: system, role: "system", content: "sys" }, ...h.map((m) => ({ key: m, role: m.role, content: m.content }))];
    const spans = [
      { start: 0, end: 4 },
      { start: 4, end: 7 },
      { start: 7, end: 12 },
      { start: 12, end: 14 },
      { start: 14, end: 15 },
      { start: 15, end: 18 },
      { start: 18, end: 20 },
      undefined,
    ];
    const rendered: Rendered = { items, tokens: new Int32Array(24), spans };
    const facts = describeTurns(splitTurns(h), rendered);
    expect(facts).toEqual([
      { tokens: 8, newest: 7, pinned: false },
      { tokens: 3, newest: 9, pinned: true },
      { tokens: 5, newest: 11, pinned: true },
      { tokens: undefined, newest: 12, pinned: false },
    ]);
    // memory.pinned pins more.
    expect(describeTurns(splitTurns(h), rendered, (m) => m.content === "a")[0]?.pinned).toBe(true);
  });

  it("finds each message's span whatever the items' order, and a message without an item has no size", () => {
    const h = [msg("user", "a", 1), msg("assistant", "b", 2), msg("user", "c", 3), msg("assistant", "d", 4), msg("user", "e", 5)];
    const inOrder: Rendered = {
      items: [{ key: {}, role: "system", content: "summary" }, ...h.map((m) => ({ key: m, role: m.role, content: m.content }))],
      tokens: new Int32Array(0),
      spans: [
        { start: 0, end: 2 },
        { start: 2, end: 5 },
        { start: 5, end: 9 },
        { start: 9, end: 10 },
        { start: 10, end: 16 },
        { start: 16, end: 17 },
      ],
    };
    const want = describeTurns(splitTurns(h), inOrder);
    expect(want.map((f) => f.tokens)).toEqual([7, 7, 1]);
    // The same items and spans in another order: the walk falls back to a map, with the same facts.
    const order = [3, 0, 5, 1, 4, 2];
    const shuffled: Rendered = { items: order.map((i) => inOrder.items[i] as Rendered["items"][number]), tokens: inOrder.tokens, spans: order.map((i) => inOrder.spans[i]) };
    expect(describeTurns(splitTurns(h), shuffled)).toEqual(want);
    // A message the render left out: its turn's size is unknown, the others are found.
    const without: Rendered = { items: inOrder.items.filter((it) => it.key !== h[2]), tokens: inOrder.tokens, spans: inOrder.spans.filter((_, i) => i !== 3) };
    expect(describeTurns(splitTurns(h), without).map((f) => f.tokens)).toEqual([7, undefined, 1]);
  });

  it("describes 10,000 messages in one pass", () => {
    const h = Array.from({ length: 10_000 }, (_, i) => msg(i % 2 ? "assistant" : "user", `m${i}`, i));
    const rendered: Rendered = { items: h.map((m) => ({ key: m, role: m.role, content: m.content })), tokens: new Int32Array(0), spans: h.map((_, i) => ({ start: 3 * i, end: 3 * i + 3 })) };
    const facts = describeTurns(splitTurns(h), rendered);
    expect(facts).toHaveLength(5_000);
    expect(facts.every((f, t) => f.tokens === 6 && f.newest === 2 * t + 1 && !f.pinned)).toBe(true);
  });
});
