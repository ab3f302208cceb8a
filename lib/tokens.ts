/**
 * Token id arrays crossing into the native layer. Int32Array.from would silently turn NaN,
 * 1.5 or 2^32 + 1 into real token ids, so every id is checked first.
 * @internal
 */
import { describeValue, invalidArgument } from "./errors.js";

/** Copies `tokens` into an Int32Array; ERR_INVALID_ARGUMENT for anything but integers in [0, 2^31). */
export function toTokenIds(tokens: ArrayLike<number>, what = "tokens"): Int32Array {
  if (tokens === null || typeof tokens !== "object" || typeof tokens.length !== "number") invalidArgument(`${what} must be an array of token ids`);
  const out = new Int32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (typeof t !== "number" || !Number.isInteger(t) || t < 0 || t > 0x7fffffff) {
      invalidArgument(`${what}[${i}] is ${describeValue(t)}, not a token id (an integer >= 0)`);
    }
    out[i] = t;
  }
  return out;
}
