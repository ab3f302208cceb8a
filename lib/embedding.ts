/**
 * Embeddings and reranking on an embedding context: texts tokenized as llama.cpp's embedding
 * example does (the model's special tokens added), packed into batches over the context's
 * sequences (one text per sequence, a batch within one micro-batch), pooled natively, and
 * normalized here.
 */
import { LlamemError, fromNative, invalidArgument } from "./errors.js";
import type { ContextInfo } from "./context.js";
import type { Model } from "./model.js";

/** Options of {@link Context.embed}. */
export interface EmbedOptions {
  /** Scale each vector to unit (Euclidean) length, so a dot product is the cosine (default true). */
  normalize?: boolean;
  /** Cancels between batches; the promise rejects with ERR_ABORTED. */
  signal?: AbortSignal;
  /**
   * Cut a text longer than the context takes at once (its first tokens and its last, which is
   * the separator or end token when the tokenizer adds one) instead of ERR_CONTEXT_FULL (default false).
   */
  truncate?: boolean;
}

/** What embedding needs of a context. @internal */
export interface Embedder {
  readonly model: Model;
  readonly info: ContextInfo;
  /** One native pass over the entries, queued behind the context's other work. */
  run(entries: { seq: number; tokens: Int32Array }[]): Promise<Float32Array[]>;
}

function checkEmbedder(e: Embedder, what: string): void {
  if (!e.info.embeddings) invalidArgument(`${what} needs an embedding context: createContext({ embeddings: true })`);
}

/** The most tokens one text may have: it must fit a micro-batch and a sequence. */
function textLimit(info: ContextInfo): number {
  return Math.min(info.ubatchSize, info.batchSize, info.sequenceContextSize);
}

/** Runs `inputs` (token lists) in as few passes as fit, in order; returns one vector each. */
async function pooled(e: Embedder, inputs: readonly Int32Array[], signal: AbortSignal | undefined): Promise<Float32Array[]> {
  const limit = textLimit(e.info);
  const out: Float32Array[] = [];
  let i = 0;
  while (i < inputs.length) {
    if (signal?.aborted) throw new LlamemError("ERR_ABORTED", "embedding was aborted");
    const entries: { seq: number; tokens: Int32Array }[] = [];
    let tokens = 0;
    while (i < inputs.length && entries.length < e.info.sequences) {
      const t = inputs[i] as Int32Array;
      if (entries.length > 0 && tokens + t.length > limit) break;
      entries.push({ seq: entries.length, tokens: t });
      tokens += t.length;
      i++;
    }
    try {
      out.push(...(await e.run(entries)));
    } catch (err) {
      throw fromNative(err);
    }
  }
  return out;
}

function checkTexts(texts: readonly string[], what: string): void {
  if (!Array.isArray(texts)) invalidArgument(`${what} must be an array of strings`);
  texts.forEach((t, i) => {
    if (typeof t !== "string") invalidArgument(`${what}[${i}] must be a string`);
  });
}

function checkOptions(o: EmbedOptions): void {
  if (o === null || typeof o !== "object") invalidArgument("options must be an object");
  if (o.normalize !== undefined && typeof o.normalize !== "boolean") invalidArgument("normalize must be true or false");
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) invalidArgument("signal must be an AbortSignal");
  if (o.truncate !== undefined && typeof o.truncate !== "boolean") invalidArgument("truncate must be true or false");
}

/** Tokenizes `text` for one sequence, refusing one longer than the context takes at once. */
async function tokens(e: Embedder, text: string, index: number, what: string, truncate: boolean): Promise<Int32Array> {
  const ids = await e.model.tokenizeRaw(text, { addSpecial: true, parseSpecial: false });
  if (ids.length === 0) invalidArgument(`${what}[${index}] has no tokens`);
  const limit = textLimit(e.info);
  if (ids.length > limit && truncate) {
    const cut = new Int32Array(limit);
    cut.set(ids.subarray(0, limit - 1));
    cut[limit - 1] = ids[ids.length - 1] as number;
    return cut;
  }
  if (ids.length > limit) {
    throw new LlamemError("ERR_CONTEXT_FULL", `${what}[${index}] has ${ids.length} tokens, more than the ${limit} this embedding context takes at once; use a larger batchSize and contextSize`);
  }
  return ids;
}

/** Scales `v` to unit length in place (a zero vector stays zero). */
function normalizeInPlace(v: Float32Array): Float32Array {
  let sum = 0;
  for (const x of v) sum += x * x;
  const norm = Math.sqrt(sum);
  if (norm > 0) for (let i = 0; i < v.length; i++) v[i] = (v[i] as number) / norm;
  return v;
}

/** @internal See {@link Context.embed}. */
export async function embedTexts(e: Embedder, texts: readonly string[], o: EmbedOptions = {}): Promise<Float32Array[]> {
  checkEmbedder(e, "embed()");
  checkTexts(texts, "texts");
  checkOptions(o);
  if (e.info.pooling === "rank") invalidArgument("this context ranks (pooling rank): use rerank(query, documents)");
  const inputs: Int32Array[] = [];
  for (const [i, t] of texts.entries()) inputs.push(await tokens(e, t, i, "texts", o.truncate === true));
  const vectors = await pooled(e, inputs, o.signal);
  return o.normalize === false ? vectors : vectors.map(normalizeInPlace);
}

/**
 * The tokens of a (query, document) pair as llama.cpp's embedding example builds them: the
 * model's rerank template if it has one, else the query, the end-of-sentence and separator
 * tokens the vocabulary adds, and the document.
 */
async function pairTokens(e: Embedder, query: string, document: string, index: number): Promise<Int32Array> {
  const info = e.model.info;
  const template = info.metadata["tokenizer.chat_template.rerank"];
  if (template !== undefined) {
    const text = template.replaceAll("{query}", query).replaceAll("{document}", document);
    const ids = await e.model.tokenizeRaw(text, { addSpecial: true, parseSpecial: true });
    return checkLength(e, ids, index);
  }
  const q = await e.model.tokenizeRaw(query, { addSpecial: true, parseSpecial: false });
  const d = await e.model.tokenizeRaw(document, { addSpecial: true, parseSpecial: false });
  // [BOS/CLS] query [EOS] [SEP] | [BOS/CLS] doc [EOS] [SEP]: the pair keeps the query's lead and the document's tail.
  const lead = info.addBos && info.bos >= 0 && d[0] === info.bos ? 1 : 0;
  const ids = new Int32Array(q.length + d.length - lead);
  ids.set(q, 0);
  ids.set(d.subarray(lead), q.length);
  return checkLength(e, ids, index);
}

function checkLength(e: Embedder, ids: Int32Array, index: number): Int32Array {
  const limit = textLimit(e.info);
  if (ids.length > limit) {
    throw new LlamemError("ERR_CONTEXT_FULL", `documents[${index}] with the query has ${ids.length} tokens, more than the ${limit} this context takes at once`);
  }
  return ids;
}

/** @internal See {@link Context.rerank}. */
export async function rerankTexts(e: Embedder, query: string, documents: readonly string[], o: Omit<EmbedOptions, "normalize"> = {}): Promise<number[]> {
  checkEmbedder(e, "rerank()");
  if (typeof query !== "string") invalidArgument("query must be a string");
  checkTexts(documents, "documents");
  checkOptions(o);
  if (e.info.pooling !== "rank") invalidArgument(`rerank() needs a reranker's context (pooling "rank"); this one pools "${e.info.pooling}"`);
  const inputs: Int32Array[] = [];
  for (const [i, d] of documents.entries()) inputs.push(await pairTokens(e, query, d, i));
  return (await pooled(e, inputs, o.signal)).map((v) => v[0] as number);
}
