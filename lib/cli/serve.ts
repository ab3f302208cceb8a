/**
 * `llamem serve`: an OpenAI-compatible HTTP server (lib/serve/server.ts) on one model. It fits the
 * model, the context and the sequences into the memory budget first and prints the plan; it
 * stops on SIGINT or SIGTERM, finishing (or, past --shutdown-timeout, aborting) what is in
 * flight and saving conversations to --sessions-dir.
 */
import { Option, type Command } from "commander";
import type { Context } from "../context.js";
import { fitModel } from "../memory/fit.js";
import { loadModel, type Model } from "../model.js";
import { DEFAULTS, type KvCacheType } from "../options.js";
import type { MemoryOptions, MemoryStrategy } from "../session/memory.js";
import { startServer } from "../serve/server.js";
import { setLogLevel } from "../log.js";
import { basename } from "node:path";
import { readWholeFile } from "../files.js";
import { fitReport, parseBytes } from "./fit.js";
import { CliExit, EXIT, styleFor, trapSignals, usageError } from "./output.js";
import {
  DEMO_MODEL_NOTE,
  addFlashAttentionOption,
  addKvTypeOption,
  addLoadOptions,
  addDraftOptions,
  addLoraOption,
  addModelOption,
  applyLoras,
  draftOptionsOf,
  addThreadsOption,
  intArg,
  loadOptionsOf,
  numberArg,
  resolveModel,
  type FlashAttentionMode,
  type LoadCliOptions,
  type DraftCliOptions,
  type LoraSpec,
} from "./options.js";

const STRATEGIES: readonly MemoryStrategy[] = ["tokenBudget", "slidingWindow", "summarize"];

interface ServeCliOptions extends LoadCliOptions, DraftCliOptions {
  model?: string;
  lora?: LoraSpec[];
  host: string;
  port: number;
  apiKey?: string;
  cors?: string;
  modelId?: string;
  chatTemplateFile?: string;
  parallel: number;
  ctx?: number;
  kvUnified?: boolean;
  maxRam?: number;
  maxVram?: number;
  threads?: number;
  kvType?: KvCacheType;
  flashAttn: FlashAttentionMode;
  queue: number;
  maxBody: number;
  embeddings?: string | boolean;
  strategy?: MemoryStrategy;
  budget?: number;
  keepLast?: number;
  conversations: number;
  conversationTtl: number;
  sessionsDir?: string;
  spillRam?: number;
  spillDir?: string;
  shutdownTimeout: number;
  quiet?: boolean;
  verbose?: boolean;
}

/** Registers `llamem serve`. */
export function registerServe(program: Command): Command {
  const d = DEFAULTS.serve;
  const cmd = program
    .command("serve")
    .summary("serve a model over an OpenAI-compatible HTTP API, inside a memory budget")
    .description(
      "Serve a model over OpenAI's HTTP API: /v1/chat/completions (streaming or not, tools, response_format), " +
        "/v1/completions, /v1/embeddings (with --embeddings), /v1/models, /health and /metrics (Prometheus). " +
        "The model, the context and --parallel sequences are fitted into --max-ram/--max-vram first, and the plan is printed.\n\n" +
        "A request with an X-Conversation-Id header (or the body's user field) is a conversation: the server keeps its history " +
        "in a session under the memory policy (--strategy, --budget), so the client sends only the new message; idle " +
        "conversations spill to RAM (--spill-ram), then disk.\n\n" +
        "It listens on 127.0.0.1 unless --host says otherwise, and any other address needs --api-key (or $LLAMEM_API_KEY).",
    );
  addModelOption(cmd);
  cmd
    .option("--host <address>", "address to listen on", d.host)
    .option("--port <n>", "port (0: any free one)", intArg(0, 65535), d.port)
    .option("--api-key <key>", "require Authorization: Bearer <key> (default $LLAMEM_API_KEY)")
    .option("--cors <origin>", 'allow browser requests from this origin ("*" for any; default: none)')
    .option("--chat-template-file <file>", "a Jinja chat template to use instead of the model's own")
    .option("--model-id <name>", "the model's name in requests and /v1/models (default: the file's name)")
    .option("--parallel <n>", "sequences: requests generating at once", intArg(1, 256), d.parallel)
    .option("-c, --ctx <n>", "KV cells over all sequences (default: the largest that fits the budget, up to the trained length per sequence)", intArg(1))
    .option("--kv-unified", "one KV pool shared by the sequences (each may use what the others leave) instead of a fixed slice each")
    .option("--max-ram <bytes>", "host memory budget for weights + KV + compute (e.g. 8G)", parseBytes)
    .option("--max-vram <bytes>", "GPU memory budget per GPU", parseBytes);
  addThreadsOption(cmd);
  addKvTypeOption(cmd);
  addFlashAttentionOption(cmd);
  addLoadOptions(cmd);
  addLoraOption(cmd);
  addDraftOptions(cmd);
  return cmd
    .option("--queue <n>", "requests waiting beyond --parallel before 429", intArg(0), d.maxQueue)
    .option("--max-body <bytes>", "largest request body", parseBytes, d.maxBodyBytes)
    .option("--embeddings [model]", "serve /v1/embeddings, with this embedding model (GGUF) or the served model")
    .addOption(new Option("--strategy <name>", "conversations' memory strategy (default tokenBudget)").choices(STRATEGIES))
    .option("--budget <n>", "conversations' most prompt tokens: an integer, or a fraction in (0, 1) of a sequence", numberArg(0, Infinity, true))
    .option("--keep-last <n>", "turns a conversation keeps verbatim", intArg(0))
    .option("--conversations <n>", "conversations kept (the least recently used are dropped past it)", intArg(1), d.maxConversations)
    .option("--conversation-ttl <s>", "seconds an idle conversation is kept", numberArg(0, Infinity, true), d.conversationIdleMs / 1000)
    .option("--sessions-dir <dir>", "save conversations here when dropped or at shutdown, and resume them from here")
    .option("--spill-ram <bytes>", "RAM for idle conversations' KV states before they go to disk (default 1G)", parseBytes)
    .option("--spill-dir <dir>", "directory for spilled KV states (default: a temporary one)")
    .option("--shutdown-timeout <s>", "seconds to let requests in flight finish at shutdown before aborting them", numberArg(0), d.shutdownTimeoutMs / 1000)
    .addOption(new Option("-q, --quiet", "print only the listening line").conflicts("verbose"))
    .option("-v, --verbose", "llama.cpp's log on stderr")
    .addHelpText(
      "after",
      `
Examples:
  $ llamem serve -m model.gguf --max-ram 8G --parallel 8
  $ llamem serve -m model.gguf --host 0.0.0.0 --api-key "$KEY" --strategy summarize --budget 0.5
  $ curl localhost:8080/v1/chat/completions -d '{"model":"model","messages":[{"role":"user","content":"Hi"}]}'`,
    )
    .action(async (o: ServeCliOptions) => {
      await runServe(o);
    });
}

async function runServe(o: ServeCliOptions): Promise<void> {
  const err = process.stderr;
  const style = styleFor(err);
  const apiKey = o.apiKey ?? process.env["LLAMEM_API_KEY"];
  const loopback = ["127.0.0.1", "::1", "localhost"].includes(o.host);
  if (!loopback && apiKey === undefined) usageError(`--host ${o.host} reaches beyond this machine: pass --api-key (or set LLAMEM_API_KEY)`);
  if (apiKey !== undefined && apiKey.length < 8) usageError("--api-key must be at least 8 characters");
  const { path, demo } = resolveModel(o.model);
  if (demo && !o.quiet) err.write(style.yellow(DEMO_MODEL_NOTE) + "\n");
  if (o.verbose) setLogLevel("info");
  const trap = trapSignals();
  let model: Model | undefined;
  let embedModel: Model | undefined;
  let draft: Model | undefined;
  let context: Context | undefined;
  let embeddings: Context | undefined;
  try {
    // The plan: what fits the budget, printed before anything is allocated.
    const fit = await fitModel(path, {
      gpuLayers: o.gpuLayers ?? "auto",
      contextSize: o.ctx ?? "auto",
      sequences: o.parallel,
      ...(o.kvUnified ? { kvUnified: true } : {}),
      ...(o.lora === undefined ? {} : { adapters: o.lora.map((l) => l.path) }),
      ...(o.draft === undefined ? {} : { draft: { path: o.draft, gpuLayers: o.gpuLayers ?? DEFAULTS.gpuLayers } }),
      ...(o.maxRam === undefined ? {} : { maxRam: o.maxRam }),
      ...(o.maxVram === undefined ? {} : { maxVram: o.maxVram }),
      ...(o.kvType === undefined ? {} : { kvType: o.kvType }),
      flashAttention: o.flashAttn,
    });
    if (!o.quiet) err.write(fitReport(path, fit, [...fit.reasons, o.kvUnified ? `${o.parallel} sequences sharing ${fit.contextSize} cells` : `${o.parallel} sequences of ${Math.floor(fit.contextSize / o.parallel)} tokens`], o, style));
    model = await loadModel(path, { ...loadOptionsOf(o), gpuLayers: fit.gpuLayers, signal: trap.signal });
    if (o.draft !== undefined) draft = await loadModel(o.draft, { ...loadOptionsOf(o), signal: trap.signal });
    context = await model.createContext({
      ...draftOptionsOf(draft, o),
      contextSize: fit.contextSize,
      sequences: o.parallel,
      ...(o.kvUnified ? { kvUnified: true } : {}),
      ...(o.threads === undefined ? {} : { threads: o.threads }),
      ...(o.kvType === undefined ? {} : { kvType: o.kvType }),
      flashAttention: o.flashAttn,
    });
    await applyLoras(model, context, o.lora);
    if (o.embeddings !== undefined && o.embeddings !== false) {
      embedModel = typeof o.embeddings === "string" ? await loadModel(o.embeddings, loadOptionsOf(o)) : undefined;
      const e = embedModel ?? model;
      // A decoder has no pooling of its own: its texts are averaged over their tokens.
      embeddings = await e.createContext(e.embeddingShape(4, e.info.hasDecoder ? "mean" : undefined, o.threads));
    }
    const memory: MemoryOptions = {};
    if (o.strategy !== undefined) memory.strategy = o.strategy;
    if (o.budget !== undefined) memory.budget = o.budget;
    if (o.keepLast !== undefined) memory.keepLastTurns = o.keepLast;
    const template = o.chatTemplateFile === undefined ? undefined : (await readWholeFile(o.chatTemplateFile)).toString("utf8");
    const server = await startServer(context, {
      ...(template === undefined ? {} : { template }),
      host: o.host,
      port: o.port,
      ...(apiKey === undefined ? {} : { apiKey }),
      ...(o.cors === undefined ? {} : { cors: o.cors }),
      modelId: o.modelId ?? basename(path).replace(/\.gguf$/i, ""),
      maxQueue: o.queue,
      maxBodyBytes: o.maxBody,
      ...(embeddings === undefined ? {} : { embeddings }),
      conversations: { memory, max: o.conversations, idleMs: o.conversationTtl * 1000, ...(o.sessionsDir === undefined ? {} : { dir: o.sessionsDir }) },
      spill: { ...(o.spillRam === undefined ? {} : { memoryBytes: o.spillRam }), ...(o.spillDir === undefined ? {} : { dir: o.spillDir }) },
      shutdownTimeoutMs: o.shutdownTimeout * 1000,
    });
    // Scripts wait for this line.
    process.stdout.write(`llamem serve listening on ${server.url}\n`);
    if (trap.signal.aborted) await server.close();
    else await new Promise<void>((resolve) => trap.signal.addEventListener("abort", () => resolve(), { once: true }));
    if (!o.quiet) err.write("llamem: shutting down: finishing requests in flight\n");
    await server.close();
    // A signal is how a server is meant to stop.
    throw new CliExit(EXIT.OK);
  } finally {
    await embeddings?.dispose();
    await context?.dispose();
    await draft?.dispose();
    await embedModel?.dispose();
    await model?.dispose();
    trap.release();
  }
}
