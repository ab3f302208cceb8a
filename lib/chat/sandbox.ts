/**
 * Renders Jinja chat templates in a sandbox: one worker thread per process (template-worker.ts),
 * started on first use. Templates come from model files the user may not trust, so a render is
 * bounded in time (the thread is terminated, and a new one started for the next render), in
 * memory (the thread's heap limits) and in output length, and a failure is ERR_TEMPLATE, never
 * a hang or a crash. Rendering off the JS thread also keeps long histories from stalling the
 * event loop.
 * @internal
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { LlamemError } from "../errors.js";
import { DEFAULTS } from "../options.js";
import type { RenderReply, RenderRequest, StageRequest } from "./template-worker.js";

/** Bounds of one render; each defaults to DEFAULTS.template. */
export interface SandboxLimits {
  timeoutMs?: number;
  maxOutputChars?: number;
  maxRange?: number;
}

type Result = { readonly output: string } | { readonly error: string };

interface Pending {
  resolve(results: readonly Result[]): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** The worker's script: beside this file once compiled; from source (tests), the compiled copy. */
function workerPath(): string {
  const here = fileURLToPath(new URL("./template-worker.js", import.meta.url));
  if (existsSync(here)) return here;
  return fileURLToPath(new URL("../../dist/lib/chat/template-worker.js", import.meta.url));
}

function templateError(message: string, cause?: unknown): LlamemError {
  return new LlamemError("ERR_TEMPLATE", `chat template: ${message}`, cause === undefined ? undefined : { cause });
}

/** Messages staged on one thread for renders to come. */
export interface Stage {
  readonly id: number;
  /** The thread that holds them: a thread stopped meanwhile lost them. */
  readonly worker: Worker;
}

/** Thrown when the thread holding a stage has stopped (another render ran over its time, say): the caller stages again. */
export class StageLost extends Error {
  constructor() {
    super("the sandbox's thread stopped while messages were staged");
  }
}

class Sandbox {
  #worker: Worker | undefined;
  /** Settles once the thread runs (or has stopped). */
  #running: Promise<void> = Promise.resolve();
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;

  /**
   * Appends `messages` to the stage `stage` (a new one when undefined) on the thread, starting it
   * if need be. StageLost when the stage was on a thread that has stopped since.
   */
  stage(stage: Stage | undefined, messages: readonly Record<string, unknown>[]): Stage {
    const worker = this.#start();
    if (stage && stage.worker !== worker) throw new StageLost();
    const s = stage ?? { id: this.#nextId++, worker };
    const request: StageRequest = { stage: s.id, messages };
    try {
      worker.postMessage(request);
    } catch (err) {
      this.drop(s);
      throw templateError(`the template's variables cannot be passed to the sandbox: ${(err as Error).message}`, err);
    }
    return s;
  }

  /** Whether the thread holding `stage` still runs. */
  holds(stage: Stage): boolean {
    return stage.worker === this.#worker;
  }

  /** Lets the thread forget a stage. */
  drop(stage: Stage): void {
    if (stage.worker !== this.#worker) return;
    const request: StageRequest = { stage: stage.id, messages: null };
    stage.worker.postMessage(request);
  }

  /**
   * Renders `source` with each of `variables`; with `staged`, the staged messages are the
   * `messages` of each (or, with `windows`, of each window: see RenderRequest).
   */
  render(source: string, variables: readonly Record<string, unknown>[], now: Date, limits: SandboxLimits = {}, staged?: Stage, windows?: readonly number[]): Promise<readonly Result[]> {
    if (staged && staged.worker !== this.#worker) return Promise.reject(new StageLost());
    const d = DEFAULTS.template;
    const timeoutMs = limits.timeoutMs ?? d.timeoutMs;
    const request: RenderRequest = {
      id: this.#nextId++,
      source,
      variables,
      now: now.getTime(),
      maxOutputChars: limits.maxOutputChars ?? d.maxOutputChars,
      maxRange: limits.maxRange ?? d.maxRange,
      ...(staged ? { staged: staged.id } : {}),
      ...(windows ? { windows } : {}),
    };
    return new Promise<readonly Result[]>((resolve, reject) => {
      const worker = this.#start();
      const timer = setTimeout(() => this.#kill(templateError(`rendering took over ${timeoutMs} ms; the sandbox stopped it`)), timeoutMs);
      this.#pending.set(request.id, { resolve, reject, timer });
      // Keeps the process alive while a render is pending (the worker itself is unref'd).
      worker.ref();
      try {
        worker.postMessage(request);
      } catch (err) {
        // Variables that cannot be copied to the thread (functions, symbols): the caller's mistake.
        this.#settle(request.id);
        clearTimeout(timer);
        reject(templateError(`the template's variables cannot be passed to the sandbox: ${(err as Error).message}`, err));
      }
    });
  }

  /** Starts the thread if it is not running; resolves once it runs (or has stopped: the next render reports why). */
  start(): Promise<void> {
    const w = this.#start();
    // The thread is unreferenced: without this, a process with nothing else to do would exit
    // while its caller waits for the thread to run.
    w.ref();
    return this.#running.finally(() => {
      if (this.#pending.size === 0) w.unref();
    });
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(workerPath(), {
      // The thread's output (nothing but a runtime warning: a template cannot print) goes to the
      // process's own. Taken apart (stdout/stderr: true), one write left the thread's port
      // referenced for good, so the process never exited after its renders (Node 20).
      resourceLimits: { maxOldGenerationSizeMb: DEFAULTS.template.heapMb, maxYoungGenerationSizeMb: 32, stackSizeMb: 4 },
    });
    this.#running = new Promise<void>((resolve) => {
      w.once("online", () => resolve());
      w.once("exit", () => resolve());
    });
    w.on("message", (reply: RenderReply) => {
      this.#settle(reply.id)?.resolve(reply.results);
    });
    // After the "message" listener, which references the thread's port (Node 20): unref() here
    // unreferences both, so a thread that never renders does not keep the process alive.
    w.unref();
    w.on("error", (err: Error & { code?: string }) => {
      const why = err.code === "ERR_WORKER_OUT_OF_MEMORY" ? `rendering ran out of the sandbox's ${DEFAULTS.template.heapMb} MiB heap` : `the sandbox failed: ${err.message}`;
      this.#kill(templateError(why, err));
    });
    w.on("exit", () => {
      if (this.#worker === w) {
        this.#worker = undefined;
        this.#failAll(templateError("the sandbox's thread exited"));
      }
    });
    this.#worker = w;
    return w;
  }

  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id);
    if (!p) return undefined;
    clearTimeout(p.timer);
    this.#pending.delete(id);
    if (this.#pending.size === 0) this.#worker?.unref();
    return p;
  }

  #failAll(err: Error): void {
    for (const id of [...this.#pending.keys()]) this.#settle(id)?.reject(err);
  }

  /** Stops the thread (a render over its time, or a broken thread) and fails what was pending; the next render starts a new one. */
  #kill(err: Error): void {
    const w = this.#worker;
    this.#worker = undefined;
    this.#failAll(err);
    if (w) void w.terminate();
  }
}

/** The process's sandbox: one thread, shared by every model and session. */
const sandbox = new Sandbox();

/**
 * Starts the sandbox's thread ahead of the first render, which would otherwise wait while the
 * thread starts (it holds a core for milliseconds). Resolves once it runs, or has stopped.
 */
export function startSandbox(): Promise<void> {
  return sandbox.start();
}

/**
 * Renders the Jinja template `source` with `variables` (plain JSON-like data) in the sandbox.
 * `strftime_now` reads `now`. Rejects with ERR_TEMPLATE on a template error, or when a limit is hit.
 */
export async function renderTemplate(source: string, variables: Record<string, unknown>, now: Date = new Date(), limits?: SandboxLimits): Promise<string> {
  const [r] = await sandbox.render(source, [variables], now, limits);
  if (!r || "error" in r) throw templateError(r?.error ?? "no result");
  return r.output;
}

/**
 * Stages messages on the sandbox's thread for renders to come ({@link renderStaged},
 * {@link renderWindows}): a long list crosses in several slices, the caller letting its event
 * loop run between them. Pass the returned stage to the next slice. StageLost when the thread
 * stopped since the last slice.
 */
export function stageMessages(stage: Stage | undefined, messages: readonly Record<string, unknown>[]): Stage {
  return sandbox.stage(stage, messages);
}

/** Whether the thread holding `stage` still runs (a stage lost must be sent again). */
export function stageHeld(stage: Stage): boolean {
  return sandbox.holds(stage);
}

/** Lets the thread forget a stage. */
export function dropStage(stage: Stage): void {
  sandbox.drop(stage);
}

/**
 * Renders `source` with `variables` and the staged messages as `messages`, as
 * {@link renderTemplate} does. StageLost (before rendering) when the thread holding them stopped.
 */
export async function renderStaged(source: string, variables: Record<string, unknown>, stage: Stage, now: Date = new Date(), limits?: SandboxLimits): Promise<string> {
  const [r] = await sandbox.render(source, [variables], now, limits, stage);
  if (!r || "error" in r) throw templateError(r?.error ?? "no result");
  return r.output;
}

/**
 * For each index i, the text staged message i adds after message i-1 rendered alone (see
 * RenderRequest.windows), rendered with `variables`: the text, or an ERR_TEMPLATE error where
 * it has none. The time limit covers the whole list. StageLost (before rendering) when the
 * thread holding the stage stopped.
 */
export async function renderWindows(source: string, variables: Record<string, unknown>, stage: Stage, windows: readonly number[], now: Date = new Date(), limits?: SandboxLimits): Promise<(string | LlamemError)[]> {
  const results = await sandbox.render(source, [variables], now, limits, stage, windows);
  return results.map((r) => ("error" in r ? templateError(r.error) : r.output));
}

/**
 * Renders `source` with each of `variables` in one trip to the sandbox: the texts, or an
 * ERR_TEMPLATE error for each render that failed. The time limit covers the whole list.
 */
export async function renderTemplates(source: string, variables: readonly Record<string, unknown>[], now: Date = new Date(), limits?: SandboxLimits): Promise<(string | LlamemError)[]> {
  const results = await sandbox.render(source, variables, now, limits);
  return results.map((r) => ("error" in r ? templateError(r.error) : r.output));
}
