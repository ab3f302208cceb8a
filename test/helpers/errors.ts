import { expect } from "vitest";
import { LlamemError } from "../../lib/errors.js";

/** The LlamemError code a promise rejects with (undefined if it resolves); any other error fails the test. */
export async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(LlamemError);
    return (err as LlamemError).code;
  }
  return undefined;
}
