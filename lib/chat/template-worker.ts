/**
 * The chat template sandbox's thread: renders Jinja templates with @huggingface/jinja and
 * nothing else. A template sees only the variables it is sent (plain data, copied across
 * threads) and the globals set here; the interpreter gives it no way to reach Node's APIs, so it
 * can do no I/O. The host (sandbox.ts) bounds its time by terminating this thread, and its memory
 * through the thread's heap limits.
 * @internal
 */
import { parentPort } from "node:worker_threads";
import { Environment, Interpreter, parse, tokenize } from "@huggingface/jinja";

/** What the host asks: render `source` with each of `variables` (several renders in one message saves round trips). */
export interface RenderRequest {
  readonly id: number;
  readonly source: string;
  readonly variables: readonly Record<string, unknown>[];
  /**
   * The id of messages staged ahead (see {@link StageRequest}): they become each render's
   * `messages` (they stay staged until the host drops them).
   */
  readonly staged?: number;
  /**
   * With `staged` and one entry in `variables`: for each index i, the text message i adds after
   * message i-1 (i > 0) rendered alone: the window of messages i-1 and i less the window of
   * message i-1 (for i = 0, the window of message 0), each rendered with the variables given.
   * One result per index: the text, or an error when a window fails or the longer window does
   * not begin with the shorter (the host then renders the whole prefixes).
   */
  readonly windows?: readonly number[];
  /** strftime_now's clock, in ms since the epoch. */
  readonly now: number;
  readonly maxOutputChars: number;
  readonly maxRange: number;
}

/**
 * A slice of the messages of renders to come, appended to those staged under `stage`. A long
 * list crosses in slices so that copying it (and building it) never holds the host's event loop
 * long; `messages: null` drops what was staged.
 */
export interface StageRequest {
  readonly stage: number;
  readonly messages: readonly Record<string, unknown>[] | null;
}

/** The answer: each render's text, or the engine's message. */
export interface RenderReply {
  readonly id: number;
  readonly results: readonly ({ readonly output: string } | { readonly error: string })[];
}

type Program = ReturnType<typeof parse>;

/** Parsed templates by source: a session renders the same one on every turn. */
const programs = new Map<string, Program>();
const MAX_PROGRAMS = 16;

function program(source: string): Program {
  let p = programs.get(source);
  if (p) {
    // Most recently used last, so the oldest goes first when the cache is full.
    programs.delete(source);
    programs.set(source, p);
    return p;
  }
  // Options as transformers renders chat templates: trim_blocks and lstrip_blocks.
  p = parse(tokenize(source, { lstrip_blocks: true, trim_blocks: true }));
  programs.set(source, p);
  if (programs.size > MAX_PROGRAMS) programs.delete(programs.keys().next().value as string);
  return p;
}

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** Python's strftime in the C locale, for the directives chat templates use; local time, as datetime.now(). */
export function strftime(date: Date, format: string): string {
  const dayOfYear = Math.floor((Date.UTC(date.getFullYear(), date.getMonth(), date.getDate()) - Date.UTC(date.getFullYear(), 0, 1)) / 86_400_000) + 1;
  const hour12 = date.getHours() % 12 === 0 ? 12 : date.getHours() % 12;
  const codes: Record<string, () => string> = {
    Y: () => String(date.getFullYear()),
    y: () => pad(date.getFullYear() % 100),
    m: () => pad(date.getMonth() + 1),
    d: () => pad(date.getDate()),
    e: () => String(date.getDate()).padStart(2, " "),
    j: () => pad(dayOfYear, 3),
    H: () => pad(date.getHours()),
    I: () => pad(hour12),
    M: () => pad(date.getMinutes()),
    S: () => pad(date.getSeconds()),
    p: () => (date.getHours() < 12 ? "AM" : "PM"),
    A: () => DAYS[date.getDay()] as string,
    a: () => (DAYS[date.getDay()] as string).slice(0, 3),
    B: () => MONTHS[date.getMonth()] as string,
    b: () => (MONTHS[date.getMonth()] as string).slice(0, 3),
    "%": () => "%",
  };
  return format.replace(/%(.)/g, (all, c: string) => codes[c]?.() ?? all);
}

function render(req: RenderRequest, variables: Record<string, unknown>): string {
  const env = new Environment();
  const range = (start: number, stop?: number, step = 1): number[] => {
    if (stop === undefined) [start, stop] = [0, start];
    if (![start, stop, step].every(Number.isInteger) || step === 0) throw new Error("range() takes integers and a non-zero step");
    const n = Math.max(0, Math.ceil((stop - start) / step));
    // A template from an untrusted file could ask for billions of items; refuse before building them.
    if (n > req.maxRange) throw new Error(`range() of ${n} items is over the sandbox's limit of ${req.maxRange}`);
    return Array.from({ length: n }, (_, i) => start + i * step);
  };
  const globals: Record<string, unknown> = {
    true: true,
    false: false,
    none: null,
    True: true,
    False: false,
    None: null,
    range,
    raise_exception: (message: unknown) => {
      throw new Error(String(message));
    },
    strftime_now: (format: unknown) => strftime(new Date(req.now), String(format)),
  };
  for (const [k, v] of Object.entries({ ...globals, ...variables })) env.set(k, v);
  const result = new Interpreter(env).run(program(req.source));
  const output = String(result.value);
  if (output.length > req.maxOutputChars) throw new Error(`the output (${output.length} characters) is over the sandbox's limit of ${req.maxOutputChars}`);
  return output;
}

/** Messages staged for renders to come, by stage id. */
const staged = new Map<number, Record<string, unknown>[]>();

type Result = RenderReply["results"][number];

function attempt(req: RenderRequest, variables: Record<string, unknown>): Result {
  try {
    return { output: render(req, variables) };
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

function answer(req: RenderRequest): Result[] {
  if (req.staged === undefined) return req.variables.map((v) => attempt(req, v));
  const messages = staged.get(req.staged);
  // The host checks that the stage is on this thread; a missing one is a bug, not a template's fault.
  if (!messages) return req.variables.map(() => ({ error: "the staged messages are missing" }));
  if (req.windows === undefined) return req.variables.map((v) => attempt(req, { ...v, messages }));
  const v = req.variables[0] ?? {};
  return req.windows.map((i): Result => {
    const m = messages[i] as Record<string, unknown>;
    if (i === 0) return attempt(req, { ...v, messages: [m] });
    const prev = messages[i - 1] as Record<string, unknown>;
    const before = attempt(req, { ...v, messages: [prev] });
    if ("error" in before) return before;
    const after = attempt(req, { ...v, messages: [prev, m] });
    if ("error" in after) return after;
    // Only the difference crosses back: half the strings, and none the host must cut.
    return after.output.startsWith(before.output) ? { output: after.output.slice(before.output.length) } : { error: "the window does not extend the one before" };
  });
}

parentPort?.on("message", (req: RenderRequest | StageRequest) => {
  if ("stage" in req) {
    if (req.messages === null) staged.delete(req.stage);
    else {
      const list = staged.get(req.stage);
      if (list) for (const m of req.messages) list.push(m);
      else staged.set(req.stage, req.messages.slice());
    }
    return;
  }
  const reply: RenderReply = { id: req.id, results: answer(req) };
  parentPort?.postMessage(reply);
});
