/**
 * `llamem chat`: an interactive conversation on a chat session, with its memory policy.
 *
 * Each line read from stdin is one user message and each reply is streamed to stdout, followed
 * by a newline. stdout carries the replies and nothing else (plus the "> " marker when a person
 * types at a terminal); everything for humans (progress, memory events, /stats, errors) goes to
 * stderr. Lines starting with "/" are commands: /save, /load, /stats, /history, /help, /exit.
 */
import { createInterface, type Interface } from "node:readline";
import { Command, InvalidArgumentError, Option } from "commander";
import { LlamemError } from "../errors.js";
import { loadModel, type Model } from "../model.js";
import type { Context } from "../context.js";
import { setLogLevel } from "../log.js";
import { DEFAULTS, samplingOf } from "../options.js";
import { createSession, loadSession, checkFingerprint, type ChatSession, type LoadSessionOptions } from "../session/session.js";
import { readSession } from "../session/persist.js";
import { openArchiveStore, type ArchiveStore } from "../session/archive-store.js";
import type { RecallStore } from "../session/recall.js";
import type { MemoryEvent, MemoryOptions, MemoryStrategy, SessionMessage } from "../session/memory.js";
import {
  CliExit,
  EXIT,
  ProgressBar,
  formatBytes,
  formatTable,
  outputGuard,
  reportError,
  styleFor,
  usageError,
  type OutStream,
  type Style,
} from "./output.js";
import {
  DEMO_MODEL_NOTE,
  addContextOptions,
  addLoadOptions,
  addDraftOptions,
  addLoraOption,
  applyLoras,
  draftOptionsOf,
  addModelOption,
  addSamplingOptions,
  addVerbosityOptions,
  contextOptionsOf,
  intArg,
  numberArg,
  loadOptionsOf,
  resolveModel,
  type ModelCliOptions,
} from "./options.js";

const STRATEGIES = ["slidingWindow", "tokenBudget", "summarize"] as const satisfies readonly MemoryStrategy[];

/** The options of `llamem chat`, as commander hands them over. */
interface ChatOptions extends ModelCliOptions {
  budget?: number;
  strategy?: MemoryStrategy;
  keepLast?: number;
  archive?: string;
  load?: string;
  recall?: boolean | string;
  recallMinScore?: number;
  recallStore?: string;
}

/** The one line printed for an unknown or malformed command. */
const COMMAND_HELP = "commands: /save FILE, /load FILE, /stats, /history, /recall QUERY, /help, /exit (start a message with // to send a /)";

/** Parses --budget: an integer >= 1 (tokens) or a fraction in (0, 1) of the context, as memory.budget takes. */
function budgetArg(value: string): number {
  const n = value.trim() === "" ? NaN : Number(value);
  if (!(Number.isFinite(n) && ((n > 0 && n < 1) || (Number.isInteger(n) && n >= 1)))) {
    throw new InvalidArgumentError("expected an integer >= 1 (tokens) or a fraction in (0, 1) of the context.");
  }
  return n;
}

/** Registers `llamem chat`. */
export function registerChat(program: Command): Command {
  const cmd = program
    .command("chat")
    .summary("chat with a model, keeping the conversation within a memory budget")
    .description(
      "Chat with a model: each line on stdin is a message, each reply is streamed to stdout. At a terminal it\n" +
        "shows a \"> \" prompt; piped, every line is one message and the chat ends at end of input, or at the first\n" +
        "failed reply or command (a /load of a damaged file, say) with its error and exit code.\n" +
        "The memory policy (--budget, --strategy, --keep-last) keeps the prompt bounded; --verbose shows its decisions.\n" +
        "Commands: /save FILE, /load FILE, /stats, /history, /recall QUERY (what recall would bring back), /help, /exit (or end of input); \"//text\" sends \"/text\".\n" +
        "Ctrl-C stops a reply; at the prompt it ends the chat (exit 130).\n" +
        "Without -m the model is $LLAMEM_MODEL, else the bundled demo model (random weights: its text is noise).",
    );
  addModelOption(cmd);
  cmd
    .option("--system <text>", "system message (a session resumed with --load keeps its own)")
    .option("--budget <n>", "most prompt tokens: an integer, or a fraction in (0, 1) of the context (default: context - max-tokens - 16)", budgetArg)
    .addOption(new Option("--strategy <name>", "how old turns leave the prompt (default tokenBudget)").choices(STRATEGIES))
    .option("--keep-last <n>", "turns kept verbatim besides the new one (default 8 for slidingWindow, 2 for summarize)", intArg(0))
    .option("--archive <file>", "append evicted turns to this JSONL file (default: kept in memory)")
    .option("--load <file>", "resume a session saved with /save")
    .option("--recall [model]", "bring archived turns back by meaning, embedded by the chat model or by this embedding model (GGUF); with --archive, the file's turns too")
    .option("--recall-min-score <x>", `least cosine similarity of a recalled turn (default ${DEFAULTS.recall.minScore})`, numberArg(-1, 1))
    .option("--recall-store <file>", "keep recall's turns and vectors in this SQLite archive store (namespace \"chat\"), across runs");
  addSamplingOptions(cmd, { maxTokens: "most tokens of a reply", seed: "random seed" });
  addContextOptions(cmd);
  addLoadOptions(cmd);
  addLoraOption(cmd);
  addDraftOptions(cmd);
  addVerbosityOptions(cmd, "show memory events, per-reply timings and llama.cpp's log on stderr");
  return cmd
    .addHelpText(
      "after",
      `
Examples:
  $ llamem chat -m model.gguf --system "You are a concise assistant."
  $ llamem chat -m model.gguf --budget 2048 --strategy summarize --keep-last 4 --verbose
  $ llamem chat -m model.gguf --strategy slidingWindow --keep-last 6 --archive old-turns.jsonl
  $ printf 'Hi, I am Ada.\\nWhat is my name?\\n/save ada.llamem\\n' | llamem chat -m model.gguf --temperature 0
  $ llamem chat -m model.gguf --load ada.llamem`,
    )
    .action(async (options: ChatOptions) => {
      await runChat(options);
    });
}

async function runChat(o: ChatOptions): Promise<void> {
  const err = process.stderr;
  const errStyle = styleFor(err);
  if (o.recallStore !== undefined && (o.recall === undefined || o.recall === false)) usageError("--recall-store needs --recall");
  const { path, demo } = resolveModel(o.model);
  if (demo && !o.quiet) {
    err.write(errStyle.yellow(DEMO_MODEL_NOTE) + "\n");
  }
  if (o.verbose) setLogLevel("info");

  const stdinTTY = process.stdin.isTTY === true;
  // The marker is for a person typing; it goes to stdout at a terminal, else to stderr, so that
  // redirected stdout holds only the replies.
  const markerStream: NodeJS.WriteStream = process.stdout.isTTY ? process.stdout : process.stderr;
  const interactive = stdinTTY;

  // Ctrl-C handling. `current` is what an interrupt cancels (the model load or a reply); an
  // interrupt with nothing to cancel, or a second one while a cancelled reply winds down, ends
  // the chat. A third exits at once, for when the wind-down hangs.
  let current: AbortController | undefined;
  let phase: "load" | "reply" | "idle" = "load";
  // Set by a signal handler (or a closed stdout) with the code the chat ends with. Read through
  // endCode(): TypeScript's narrowing cannot see the handlers assign it.
  let ending: { code: number } | undefined;
  const endCode = (): number | undefined => ending?.code;
  let rl: Interface | undefined;
  let rlClosed = false;
  const end = (code: number) => {
    if (ending) process.exit(ending.code);
    ending = { code };
    current?.abort(new LlamemError("ERR_ABORTED", "interrupted"));
    rl?.close();
  };
  const onSigint = () => {
    if (phase === "reply" && current && !current.signal.aborted) {
      current.abort(new LlamemError("ERR_ABORTED", "reply interrupted"));
      return;
    }
    end(EXIT.SIGINT);
  };
  const onSigterm = () => end(EXIT.SIGTERM);
  process.on("SIGINT", onSigint);
  process.on("SIGTERM", onSigterm);
  // A failed write to stdout (a reader that went away, a full disk) ends the chat; runToExit
  // reports it (quietly for a closed pipe).
  const output = outputGuard(process.stdout);
  const onOutputFailed = () => {
    if (!ending) end(EXIT.OK);
  };
  output.signal.addEventListener("abort", onOutputFailed);

  const bar = new ProgressBar("loading", { enabled: !o.quiet });
  let model: Model | undefined;
  let context: Context | undefined;
  let session: ChatSession | undefined;
  let embedder: Model | undefined;
  let draft: Model | undefined;
  let store: ArchiveStore | undefined;
  try {
    current = new AbortController();
    model = await loadModel(path, { ...loadOptionsOf(o), onProgress: (p) => bar.update(p), signal: current.signal });
    bar.update(1);
    // The CLI owns the context (rather than the session) so that /load can put another session
    // on the same context and /stats can report its memory.
    if (o.draft !== undefined) draft = await loadModel(o.draft, { ...loadOptionsOf(o), signal: current.signal });
    context = await model.createContext({ ...contextOptionsOf(o), ...draftOptionsOf(draft, o) });
    await applyLoras(model, context, o.lora);
    bar.done();
    current = undefined;

    if (typeof o.recall === "string") embedder = await loadModel(o.recall, loadOptionsOf(o));
    let recallModel = o.recall === undefined || o.recall === false ? undefined : (embedder ?? model);
    let recallStore: RecallStore | undefined;
    if (o.recallStore !== undefined) {
      // A damaged, locked or unreadable store costs the chat its recall, not the chat itself.
      try {
        store = await openArchiveStore(o.recallStore);
        recallStore = await store.namespace("chat");
      } catch (e) {
        if (!(e instanceof LlamemError)) throw e;
        await store?.close();
        store = undefined;
        recallModel = undefined;
        err.write(errStyle.yellow(`llamem: warning: --recall-store: ${e.message} (${e.code}); chatting on without recall`) + "\n");
      }
    }
    const sessionOptions = chatSessionOptions(o, err, errStyle, recallModel, recallStore);
    if (o.load !== undefined) {
      if (o.system !== undefined && !o.quiet) err.write(errStyle.dim("llamem: --system is ignored with --load: the saved session keeps its own") + "\n");
      const path = o.load;
      session = await loadSession(context, path, sessionOptions).catch((e: unknown) => {
        throw loadFailure(path, e);
      });
    } else {
      session = await createSession(context, { ...sessionOptions, system: o.system });
    }

    // A signal during the load has nothing left to cancel; rl does not exist yet to be closed.
    const loadEnd = endCode();
    if (loadEnd !== undefined) throw new CliExit(loadEnd);
    rl = createInterface({
      input: process.stdin,
      output: interactive ? markerStream : undefined,
      terminal: interactive && markerStream.isTTY === true,
      prompt: "> ",
      historySize: interactive ? 100 : 0,
    });
    // At a terminal in raw mode Ctrl-C arrives as a keypress, which readline reports here.
    rl.on("SIGINT", onSigint);
    rl.on("close", () => {
      rlClosed = true;
    });
    const showPrompt = () => {
      if (interactive && !rlClosed && endCode() === undefined) rl?.prompt();
    };
    phase = "idle";
    showPrompt();
    for await (const input of rl) {
      if (endCode() !== undefined) break;
      const line = input.trim();
      if (line === "") {
        showPrompt();
        continue;
      }
      if (line.startsWith("/") && !line.startsWith("//")) {
        const result = await runCommand(line, { o, model, context, session, sessionOptions, style: errStyle });
        if (result.exit) break;
        // A failed /load may have put the conversation on a new session all the same.
        if (result.session) session = result.session;
        if (result.error) {
          // A person can retry; a script must not carry on as if the command had worked.
          if (!interactive) throw result.error;
          reportError(result.error);
        }
        showPrompt();
        continue;
      }
      current = new AbortController();
      phase = "reply";
      try {
        // "//text" sends "/text": the way to start a message with a slash.
        await reply(session, line.startsWith("//") ? line.slice(1) : line, current.signal, o);
      } catch (e) {
        const aborted = e instanceof LlamemError && e.code === "ERR_ABORTED";
        if (!aborted) {
          if (!interactive) throw e;
          reportError(e);
        } else if (endCode() === undefined && !o.quiet) {
          err.write(errStyle.dim("llamem: reply interrupted") + "\n");
        }
      } finally {
        current = undefined;
        phase = "idle";
      }
      showPrompt();
    }
    // Ctrl-C at the prompt leaves the cursor after "> ": end that line for the shell.
    const code = endCode();
    if (code !== undefined && interactive) markerStream.write("\n");
    if (code !== undefined) throw new CliExit(code);
  } catch (e) {
    const code = endCode();
    if (code !== undefined && e instanceof LlamemError && e.code === "ERR_ABORTED") throw new CliExit(code);
    throw e;
  } finally {
    bar.done();
    rl?.close();
    await session?.dispose();
    await context?.dispose();
    await draft?.dispose();
    await embedder?.dispose();
    await store?.close();
    await model?.dispose();
    output.signal.removeEventListener("abort", onOutputFailed);
    process.off("SIGINT", onSigint);
    process.off("SIGTERM", onSigterm);
  }
}

/** The session options the command line sets (everything but the system prompt). */
function chatSessionOptions(o: ChatOptions, err: OutStream, style: Style, recallModel: Model | undefined, recallStore: RecallStore | undefined): LoadSessionOptions {
  const memory: MemoryOptions = {};
  if (recallModel) {
    memory.recall = { embed: recallModel, ...(o.recallMinScore === undefined ? {} : { minScore: o.recallMinScore }), ...(recallStore ? { store: recallStore } : {}) };
  }
  if (o.budget !== undefined) memory.budget = o.budget;
  if (o.strategy !== undefined) memory.strategy = o.strategy;
  if (o.keepLast !== undefined) memory.keepLastTurns = o.keepLast;
  if (o.archive !== undefined) memory.archive = { path: o.archive };
  return {
    memory,
    ...samplingOf(o),
    maxTokens: o.maxTokens,
    onMemoryEvent: o.verbose ? (e) => err.write(style.dim(formatEvent(e)) + "\n") : undefined,
  };
}

/** One stderr line for a memory decision: kind, prompt tokens before → after, time, KV reuse. */
export function formatEvent(e: MemoryEvent): string {
  const kv = e.kvReused ? "kv reused" : `kv not reused (${e.reevaluatedTokens} tokens re-evaluated)`;
  return `llamem: memory ${e.kind}: ${e.tokensBefore} → ${e.tokensAfter} tokens, ${e.ms.toFixed(1)} ms, ${kv}: ${e.reason}`;
}

/** Streams one reply to stdout and ends it with a newline. */
async function reply(session: ChatSession, text: string, signal: AbortSignal, o: ChatOptions): Promise<void> {
  const out = process.stdout;
  let last = "";
  try {
    for await (const piece of session.stream(text, { signal })) {
      if (piece.length === 0) continue;
      out.write(piece);
      last = piece;
    }
  } finally {
    // Also after an interrupted reply: the next prompt or reply starts on its own line.
    if (!last.endsWith("\n")) out.write("\n");
  }
  const r = session.lastGeneration;
  if (o.verbose && r) {
    process.stderr.write(
      `llamem: ${r.promptTokens} prompt tokens (${r.evaluatedPromptTokens} evaluated, ${r.promptTokens - r.evaluatedPromptTokens} from the cache), ` +
        `${r.generatedTokens} generated (${r.generatedTokensPerSecond.toFixed(1)} tok/s), ` +
        `first token ${r.timeToFirstTokenMs.toFixed(0)} ms, stop: ${r.stopReason}\n`,
    );
  }
}

/** What a command needs. */
interface CommandScope {
  o: ChatOptions;
  model: Model;
  context: Context;
  session: ChatSession;
  sessionOptions: LoadSessionOptions;
  style: Style;
}

/** What a "/" command did. */
interface CommandResult {
  /** End the chat (/exit). */
  exit?: boolean;
  /** The session to go on with, when the command replaced it (/load, even a failed one). */
  session?: ChatSession;
  /** What the command failed with. */
  error?: Error;
}

/** Runs a "/" command. */
async function runCommand(line: string, s: CommandScope): Promise<CommandResult> {
  const err = process.stderr;
  const space = line.search(/\s/);
  const name = space < 0 ? line : line.slice(0, space);
  const arg = space < 0 ? "" : line.slice(space).trim();
  const needFile = () => ({ error: new LlamemError("ERR_INVALID_ARGUMENT", `${name} needs a file name (${COMMAND_HELP})`) });
  try {
    switch (name) {
      case "/exit":
      case "/quit":
        return { exit: true };
      case "/help":
        err.write(`${COMMAND_HELP}\n`);
        return {};
      case "/save": {
        if (arg === "") return needFile();
        const bytes = await s.session.save(arg);
        if (!s.o.quiet) err.write(s.style.dim(`llamem: saved ${s.session.history.length} messages to ${arg} (${formatBytes(bytes)})`) + "\n");
        return {};
      }
      case "/load": {
        if (arg === "") return needFile();
        return await replaceSession(arg, s);
      }
      case "/stats":
        await writeStats(s.session, s.context);
        return {};
      case "/history":
        writeHistory(s.session);
        return {};
      case "/recall": {
        if (arg === "") return { error: new LlamemError("ERR_INVALID_ARGUMENT", `/recall needs a query (${COMMAND_HELP})`) };
        const found = await s.session.recall(arg);
        if (found.length === 0) err.write("llamem: recall finds nothing for that (no archived turn scores high enough)\n");
        for (const r of found) err.write(`llamem: recall ${r.score.toFixed(3)}: ${r.turn.map((m) => `${m.role}: ${m.content}`).join(" | ").slice(0, 200)}\n`);
        return {};
      }
      default:
        err.write(`llamem: unknown command ${name}; ${COMMAND_HELP}\n`);
        return {};
    }
  } catch (e) {
    return { error: e instanceof Error ? e : new Error(String(e)) };
  }
}

/**
 * Why a saved session could not be loaded. llamem's own errors keep their code; anything else
 * (a file that passed the header checks and still broke the load) is reported as a damaged
 * file, ERR_STATE_MISMATCH (exit 4), naming it, rather than as an internal error.
 */
function loadFailure(path: string, e: unknown): LlamemError {
  if (e instanceof LlamemError) return e;
  const why = e instanceof Error ? e.message : String(e);
  return new LlamemError("ERR_STATE_MISMATCH", `cannot load the saved session ${path}: ${why}`, { cause: e });
}

/**
 * /load: swaps the session for the saved one, on the same context. When the file turns out to
 * be unusable only after the current session is gone, the chat goes on with the conversation
 * it had, on a new session, and the error is returned with it.
 */
async function replaceSession(path: string, s: CommandScope): Promise<CommandResult> {
  // Read and check the file before the current session is disposed, so that a wrong path or
  // another model's file leaves the conversation as it was.
  const { header } = await readSession(path);
  await checkFingerprint(s.model, header, path);
  const history: readonly SessionMessage[] = [...s.session.history];
  const system = s.session.system;
  // One session per sequence: the old one must go before the saved one takes sequence 0.
  await s.session.dispose();
  let next: ChatSession;
  try {
    next = await loadSession(s.context, path, s.sessionOptions);
  } catch (e) {
    // Keep the chat going on the conversation it had (its cache is evaluated again).
    const fallback = await createSession(s.context, { ...s.sessionOptions, system });
    fallback.setHistory(history);
    return { session: fallback, error: loadFailure(path, e) };
  }
  if (!s.o.quiet) process.stderr.write(s.style.dim(`llamem: loaded ${next.history.length} messages from ${path}`) + "\n");
  return { session: next };
}

/** /stats: the session's figures and the context's memory, on stderr. */
async function writeStats(session: ChatSession, context: Context): Promise<void> {
  const st = await session.stats();
  const m = await context.memory();
  const rows: string[][] = [
    ["messages", `${st.messages} (${st.turns} turns)`],
    ["kv tokens", `${st.kvTokens}`],
    ["kv bytes", `${st.kvBytes} (${formatBytes(st.kvBytes)})`],
    ["kv cells", `${m.cellsUsed} of ${m.cells}`],
    ["summaries", `${st.summaries}`],
    ["turns evicted", `${st.turnsEvicted}`],
    ["tokens evaluated", `${st.evaluatedTokens}`],
    ["tokens generated", `${st.generatedTokens}`],
    ["memory", `weights ${formatBytes(m.weights)}, kv ${formatBytes(m.kv)}, compute ${formatBytes(m.compute)}`],
    ...(st.recall ? [["recall", `${st.recall.turns} archived turns, embedding context ${formatBytes(st.recall.contextBytes)}`]] : []),
  ];
  process.stderr.write(formatTable(rows) + "\n");
}

/** /history: the conversation the prompt is built from, on stderr. */
function writeHistory(session: ChatSession): void {
  const lines: string[] = [];
  if (session.system !== undefined) lines.push(`system: ${session.system}`);
  if (session.summary !== undefined) lines.push(`summary: ${session.summary}`);
  for (const m of session.history) lines.push(`${m.role}${m.pinned ? " (pinned)" : ""}: ${m.content}`);
  process.stderr.write(lines.length > 0 ? lines.join("\n") + "\n" : "(no messages yet)\n");
}
