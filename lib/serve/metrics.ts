/**
 * The server's figures in Prometheus's text format (version 0.0.4): counters it keeps, and the
 * memory, KV and pool figures read when /metrics is scraped.
 * @internal
 */
import type { Context } from "../context.js";
import type { PoolStats } from "../session/pool/pool.js";

/** What the server counts as it runs. */
export class ServerCounters {
  requests = new Map<string, number>();
  rejected = 0;
  promptTokens = 0;
  cachedPromptTokens = 0;
  generatedTokens = 0;
  /** Generated tokens in the last minute, for a tokens-per-second gauge: [time ms, tokens]. */
  readonly #recent: [number, number][] = [];

  request(endpoint: string, status: number): void {
    const key = `${endpoint}\u0000${status}`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
  }

  generated(prompt: number, cached: number, tokens: number): void {
    this.promptTokens += prompt;
    this.cachedPromptTokens += cached;
    this.generatedTokens += tokens;
    this.#recent.push([Date.now(), tokens]);
  }

  /** Generated tokens per second over the last 60 s. */
  tokensPerSecond(now = Date.now()): number {
    while (this.#recent.length > 0 && (this.#recent[0] as [number, number])[0] < now - 60_000) this.#recent.shift();
    return this.#recent.reduce((sum, [, n]) => sum + n, 0) / 60;
  }
}

/** What /metrics reads besides the counters. */
export interface MetricsInput {
  readonly context: Context;
  readonly embeddings: Context | undefined;
  readonly pool: PoolStats;
  readonly counters: ServerCounters;
  readonly inFlight: number;
  readonly queued: number;
  readonly conversations: number;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** The text of GET /metrics. */
export async function renderMetrics(m: MetricsInput): Promise<string> {
  const out: string[] = [];
  const metric = (name: string, type: "gauge" | "counter", help: string, samples: [Record<string, string>, number][]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) {
      const l = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",");
      out.push(`${name}${l ? `{${l}}` : ""} ${Number.isFinite(value) ? value : 0}`);
    }
  };
  const bytes: [Record<string, string>, number][] = [];
  const contexts: [string, Context | undefined][] = [["generation", m.context], ["embeddings", m.embeddings]];
  let cellsUsed = 0;
  let cells = 0;
  for (const [role, ctx] of contexts) {
    if (!ctx || ctx.disposed) continue;
    const mem = await ctx.memory();
    if (role === "generation") {
      cellsUsed = mem.cellsUsed;
      cells = mem.cells;
    }
    const perDevice = new Map<string, { weights: number; kv: number; compute: number }>();
    for (const r of mem.rows) {
      const device = r.device ?? (r.host ? "CPU" : r.bufferType);
      const d = perDevice.get(device) ?? { weights: 0, kv: 0, compute: 0 };
      d.weights += r.model;
      d.kv += r.context;
      d.compute += r.compute;
      perDevice.set(device, d);
    }
    for (const [device, d] of perDevice) {
      // The weights are the model's: counted once, with the generation context.
      if (role === "generation" || ctx.model !== m.context.model) bytes.push([{ device, kind: "weights", context: role }, d.weights]);
      bytes.push([{ device, kind: "kv", context: role }, d.kv], [{ device, kind: "compute", context: role }, d.compute]);
    }
  }
  metric("llamem_memory_bytes", "gauge", "Bytes per device of weights, KV cache and compute buffers.", bytes);
  metric("llamem_kv_cells", "gauge", "KV cells of the generation context, used and free.", [
    [{ state: "used" }, cellsUsed],
    [{ state: "free" }, Math.max(0, cells - cellsUsed)],
  ]);
  metric("llamem_sessions", "gauge", "Conversation sessions by where their KV cache is.", [
    [{ state: "resident" }, m.pool.resident],
    [{ state: "spilled_memory" }, m.pool.spilledMemory],
    [{ state: "spilled_disk" }, m.pool.spilledDisk],
  ]);
  metric("llamem_spilled_bytes", "gauge", "Bytes of spilled sessions' KV states.", [[{}, m.pool.spilledBytes]]);
  metric("llamem_conversations", "gauge", "Conversations the server keeps.", [[{}, m.conversations]]);
  metric("llamem_requests_in_flight", "gauge", "Requests admitted and not yet answered.", [[{}, m.inFlight]]);
  metric("llamem_queue_depth", "gauge", "Requests admitted and waiting for a sequence.", [[{}, m.queued]]);
  metric("llamem_requests_total", "counter", "Requests answered, by endpoint and status.",
    [...m.counters.requests].map(([k, n]) => {
      const [endpoint, status] = k.split("\u0000") as [string, string];
      return [{ endpoint, status }, n];
    }));
  metric("llamem_rejected_total", "counter", "Requests refused with 429 because the queue was full.", [[{}, m.counters.rejected]]);
  metric("llamem_prompt_tokens_total", "counter", "Prompt tokens of answered requests.", [[{}, m.counters.promptTokens]]);
  metric("llamem_prompt_tokens_cached_total", "counter", "Prompt tokens reused from the KV cache instead of evaluated.", [[{}, m.counters.cachedPromptTokens]]);
  metric("llamem_generated_tokens_total", "counter", "Tokens generated.", [[{}, m.counters.generatedTokens]]);
  metric("llamem_generated_tokens_per_second", "gauge", "Tokens generated per second over the last minute.", [[{}, m.counters.tokensPerSecond()]]);
  metric("llamem_evictions_total", "counter", "Conversation turns evicted by memory policies.", [[{}, m.pool.turnsEvicted]]);
  metric("llamem_summaries_total", "counter", "Summaries written by memory policies.", [[{}, m.pool.summaries]]);
  metric("llamem_batched_decode_steps_total", "counter", "Batched decode steps of the generation engine.", [[{}, m.pool.steps]]);
  metric("process_resident_memory_bytes", "gauge", "Resident set size of the server process.", [[{}, process.memoryUsage.rss()]]);
  return out.join("\n") + "\n";
}
