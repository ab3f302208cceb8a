/**
 * Child process of the matrix (test/models/qwen3-head96.test.ts): removeTokens on a context whose
 * K cache llama.cpp could crash on while shifting, so a SIGSEGV fails the test instead of killing
 * the test runner. It runs the compiled library (dist/, built by `npm test`'s pretest).
 * Usage: node remove-child.mjs <model> <config JSON: { kvType, text, start, end, n }>
 * Prints { canShift, shifted, tokens, ids, fresh } as one JSON line.
 */
import { loadModel } from "../../dist/lib/index.js";

const [modelPath, configJson] = process.argv.slice(2);
const { kvType, text, start, end, n } = JSON.parse(configJson);
const ctxOpts = { contextSize: 256, kvType, flashAttention: "on", threads: 1 };
const model = await loadModel(modelPath);
const tokens = await model.tokenize(text);
const ctx = await model.createContext(ctxOpts);
const seq = ctx.sequence(0);
await seq.evaluate(tokens);
const shifted = await seq.removeTokens(start, end);
const kept = [...seq.tokens];
const ids = [];
await seq.complete(kept, { maxTokens: n, temperature: 0, onToken: (t) => ids.push(t) });
const fresh = [];
const other = await model.createContext(ctxOpts);
await other.complete(kept, { maxTokens: n, temperature: 0, onToken: (t) => fresh.push(t) });
process.stdout.write(`${JSON.stringify({ canShift: ctx.info.canShift, shifted, tokens, kept, ids, fresh })}\n`);
await other.dispose();
await ctx.dispose();
await model.dispose();
