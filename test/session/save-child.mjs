/**
 * Child process of persist.test.ts: chats, saves the session, reports the replies on stdout and
 * kills itself with SIGKILL (no cleanup, no dispose), as a crashed app would.
 * It runs the compiled library (dist/, built by `npm test`'s pretest), as an application would.
 * Usage: node save-child.mjs <model> <session file> <archive file> <config JSON>
 */
import { createSession, loadModel } from "../../dist/lib/index.js";

const [modelPath, savePath, archivePath, configJson] = process.argv.slice(2);
const config = JSON.parse(configJson);
const model = await loadModel(modelPath);
const session = await createSession(model, {
  system: config.system,
  maxTokens: config.maxTokens,
  temperature: 0,
  context: { contextSize: 512, threads: 1 },
  memory: { budget: config.budget, archive: { path: archivePath } },
});
const replies = [];
for (const p of config.prompts) replies.push(await session.prompt(p));
await session.save(savePath);
process.stdout.write(`${JSON.stringify({ replies, history: session.history })}\n`, () => process.kill(process.pid, "SIGKILL"));
