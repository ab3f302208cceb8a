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

/** The message of the ERR_INVALID_ARGUMENT a call throws; anything else (or no error) fails the test. */
export function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(LlamemError);
    expect((err as LlamemError).code).toBe("ERR_INVALID_ARGUMENT");
    return (err as LlamemError).message;
  }
  throw new Error("expected an error");
}

/** The LlamemError a promise rejects with; a resolved promise or any other error fails the test. */
export async function failure(p: Promise<unknown>): Promise<LlamemError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(LlamemError);
    return err as LlamemError;
  }
  throw new Error("expected a rejection");
}
