/**
 * The native side of public objects, kept out of their classes: a Model's or Context's native
 * handle is reachable only through these functions, from inside lib/, never as a member.
 * @internal
 */
import { invalidArgument } from "../errors.js";
import type { Engine } from "../generation.js";
import type { NativeContext, NativeModel } from "./native.js";

/** @internal */
interface ModelSide {
  readonly native: NativeModel;
  /** Throws ERR_DISPOSED once the model is disposed. */
  readonly check: () => void;
}

/** @internal */
interface ContextSide {
  readonly native: NativeContext;
  readonly engine: Engine;
  readonly check: () => void;
  readonly enqueue: <T>(op: () => T | Promise<T>) => Promise<T>;
}

const models = new WeakMap<object, ModelSide>();
const contexts = new WeakMap<object, ContextSide>();

/** @internal */
export function bindModel(model: object, side: ModelSide): void {
  models.set(model, side);
}

/** @internal */
export function bindContext(context: object, side: ContextSide): void {
  contexts.set(context, side);
}

/** The native model of a live Model; ERR_DISPOSED after dispose, ERR_INVALID_ARGUMENT for anything else. @internal */
export function nativeModel(model: object): NativeModel {
  const side = models.get(model);
  if (!side) invalidArgument("expected a Model from loadModel()");
  side.check();
  return side.native;
}

/** The native side of a live Context (its handle, engine and work queue). @internal */
export function contextSide(context: object): ContextSide {
  const side = contexts.get(context);
  if (!side) invalidArgument("expected a Context from model.createContext()");
  side.check();
  return side;
}
