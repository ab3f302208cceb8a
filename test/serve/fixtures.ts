/**
 * What the serving tests share: the chat template (Qwen 2.5's, Hermes-style tool calls) and the
 * schemas of the forced tool call and of the constrained JSON answer.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";

export const TEMPLATE = readFileSync(join(import.meta.dirname, "..", "..", "vendor", "llama.cpp", "models", "templates", "Qwen-Qwen2.5-7B-Instruct.jinja"), "utf8");

/** Arguments a grammar bounds (enums), so a forced call always closes within its tokens. */
export const WEATHER = {
  type: "object",
  properties: { city: { type: "string", enum: ["Paris", "Rome", "Oslo"] }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
  required: ["city", "unit"],
  additionalProperties: false,
} as const;

export const ANSWER = { type: "object", properties: { answer: { type: "string", maxLength: 12 }, sure: { type: "boolean" } }, required: ["answer", "sure"], additionalProperties: false } as const;
