import type { Context } from "../../lib/index.js";
import { contextSide } from "../../lib/internal/handles.js";
import type { NativeBatchEntry, NativeLoop } from "../../lib/internal/native.js";

/**
 * Calls `seen` with every `evalBatch` call's entries and loop argument on `ctx`, until the
 * returned function is called. The binding's methods are read-only on its prototype: an own
 * property shadows the method, and removing it restores the original.
 */
export function watchEvalBatch(ctx: Context, seen: (entries: NativeBatchEntry[], loop: NativeLoop | null) => void): () => void {
  const native = contextSide(ctx).native;
  const evalBatch = native.evalBatch.bind(native) as (entries: NativeBatchEntry[], loop: NativeLoop | null) => Promise<unknown>;
  Object.defineProperty(native, "evalBatch", {
    configurable: true,
    value: (entries: NativeBatchEntry[], loop: NativeLoop | null) => {
      seen(entries, loop);
      return evalBatch(entries, loop);
    },
  });
  return () => {
    delete (native as { evalBatch?: unknown }).evalBatch;
  };
}
