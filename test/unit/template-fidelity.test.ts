/**
 * Every chat template in llama.cpp's models/templates/ renders as Python's jinja2 renders it
 * (the fixtures, written by scripts/template-fixtures.py): plain chat, a system prompt, several
 * turns, no generation prompt, tools offered and called, reasoning on and off. A case jinja2
 * refuses (the template's own raise_exception) must fail here too, with ERR_TEMPLATE.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { renderTemplate } from "../../lib/chat/sandbox.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures", "templates");
const TEMPLATES = join(import.meta.dirname, "..", "..", "vendor", "llama.cpp", "models", "templates");

/** The clock the fixtures were rendered with (a naive local time, as Python's datetime.now()). */
const NOW = new Date(2026, 2, 14, 9, 26, 53);

/**
 * Where @huggingface/jinja differs from jinja2, and why. Each is asserted to still differ, so the
 * list shrinks when the engine improves.
 */
const KNOWN: Record<string, { cases: readonly string[] | "all"; why: string }> = {
  "Apriel-1.6-15b-Thinker-fixed.jinja": { cases: ["tools", "tools-offered"], why: "the `string` filter on an object is not implemented" },
  "unsloth-Apriel-1.5.jinja": { cases: "all", why: "`length` of an undefined variable is an error (jinja2: 0); `string` of an object" },
  "ByteDance-Seed-OSS.jinja": { cases: "all", why: "a dict literal with integer keys is refused" },
  "CohereForAI-c4ai-command-r-plus-tool_use.jinja": { cases: ["plain", "system", "multi-turn", "no-generation-prompt", "reasoning", "reasoning-off"], why: "looping over an undefined `tools` is an error (jinja2: no iterations)" },
  "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja": { cases: "all", why: "looping over an undefined `tools`, and `trim` of an undefined description, are errors" },
  "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": { cases: "all", why: "looping over an undefined `tools`, and `trim` of an undefined description, are errors" },
  "Kimi-K2-Instruct.jinja": { cases: ["tools"], why: "a list's `append` method is not implemented" },
  "Kimi-K2-Thinking.jinja": { cases: ["tools"], why: "a list's `append` method is not implemented" },
  "meetkai-functionary-medium-v3.1.jinja": { cases: "all", why: "`selectattr` on none is an error; jinja2 HTML-escapes where this engine does not" },
  "meetkai-functionary-medium-v3.2.jinja": { cases: ["tools-offered"], why: "unpacking a tuple in a for loop is not implemented" },
  "openbmb-MiniCPM5-1B.jinja": { cases: ["tools"], why: "the `min` filter is not implemented" },
  "tencent-Hy3.jinja": { cases: "all", why: "a global function the template calls is not defined by this engine" },
};

interface Fixture {
  template: string;
  cases: { case: string; variables: Record<string, unknown>; output?: string; error?: string }[];
}

const files = existsSync(FIXTURES) ? readdirSync(FIXTURES).filter((f) => f.endsWith(".json")).sort() : [];

describe("chat template fidelity against jinja2", () => {
  it("has a fixture for every template in llama.cpp's models/templates", () => {
    const templates = readdirSync(TEMPLATES).filter((f) => f.endsWith(".jinja")).sort();
    expect(files.map((f) => f.replace(/\.json$/, ".jinja"))).toEqual(templates);
    expect(templates.length).toBeGreaterThan(60);
  });

  for (const file of files) {
    const fixture = JSON.parse(readFileSync(join(FIXTURES, file), "utf8")) as Fixture;
    it(fixture.template, async () => {
      const source = readFileSync(join(TEMPLATES, fixture.template), "utf8");
      const known = KNOWN[fixture.template];
      for (const c of fixture.cases) {
        const outcome = await renderTemplate(source, c.variables, NOW).then(
          (output) => ({ output }),
          (err: { code?: string; message: string }) => ({ code: err.code, message: err.message }),
        );
        const expected = c.error === undefined ? { output: c.output } : { code: "ERR_TEMPLATE" };
        const same = "output" in outcome ? outcome.output === expected.output : expected.code === outcome.code;
        if (known && (known.cases === "all" || known.cases.includes(c.case))) {
          expect(same, `${c.case}: listed as differing (${known.why}) but now renders as jinja2 does; remove it from KNOWN`).toBe(false);
        } else if (c.error === undefined) {
          expect(outcome, c.case).toEqual(expected);
        } else {
          expect(outcome, `${c.case}: jinja2 refused (${c.error})`).toMatchObject(expected);
        }
      }
    });
  }
});
