/**
 * The persistent archive store (SQLite): turns and vectors survive a reopen, namespaces stay apart,
 * the caps (turns, bytes) and the age limit delete rows on disk, a store from another embedding
 * model and a damaged file are typed errors (and, under a session, go into the recall event while
 * the turns go on), a process killed mid-write loses nothing committed, and a session recalls
 * turns archived by an earlier session through it.
 */
import { spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, loadModel, openArchiveStore, recallEntryBytes, type MemoryEvent, type Model, type RecallStore } from "../../lib/index.js";
import type { RecallEntry } from "../../lib/session/recall.js";
import { archModel } from "../helpers/models.js";
import { THREADS } from "./helpers.js";

const dir = mkdtempSync(join(tmpdir(), "llamem-archive-store-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(dir, `store-${n++}.sqlite`);

function entry(text: string, vector: number[], archivedAt = Date.now()): RecallEntry {
  const v = Float32Array.from(vector);
  const norm = Math.hypot(...v);
  return { turn: [{ role: "user", content: text, timestamp: archivedAt }], text: `user: ${text}`, vector: v.map((x) => x / norm), archivedAt };
}

describe("archive store", () => {
  it("keeps turns and vectors across a reopen, one namespace per session", async () => {
    const path = fresh();
    {
      await using store = await openArchiveStore(path);
      const a = await store.namespace("a");
      const b = await store.namespace("b");
      expect(await a.add([entry("apples", [1, 0, 0]), entry("bananas", [0, 1, 0])])).toBe(0);
      await b.add([entry("cherries", [0, 0, 1])]);
      expect(store.namespaces()).toEqual(["a", "b"]);
    }
    await using store = await openArchiveStore(path);
    const a = await store.namespace("a");
    expect(a.size()).toBe(2);
    const found = await a.search(Float32Array.of(0, 1, 0), 5, 0.5, () => false);
    expect(found.map((r) => r.turn[0]?.content)).toEqual(["bananas"]);
    expect(found[0]?.score).toBeCloseTo(1, 5);
    expect((await store.namespace("b")).size()).toBe(1);
    expect((await store.namespace("c")).size()).toBe(0);
  });

  it("the cap and the age limit delete rows on disk, oldest first", async () => {
    const path = fresh();
    {
      await using store = await openArchiveStore(path, { maxTurns: 2, maxAge: 60_000 });
      const ns = await store.namespace("s");
      expect(await ns.add([entry("one", [1, 0]), entry("two", [0, 1]), entry("three", [1, 1])])).toBe(1);
      expect(await ns.add([entry("ancient", [1, 0], Date.now() - 120_000)])).toBe(1);
      expect(ns.size()).toBe(2);
    }
    await using store = await openArchiveStore(path, { maxTurns: 2, maxAge: 60_000 });
    const ns = await store.namespace("s");
    const all = await ns.search(Float32Array.of(Math.SQRT1_2, Math.SQRT1_2), 10, -1, () => false);
    expect(all.map((r) => r.turn[0]?.content).sort()).toEqual(["three", "two"]);
  });

  it("maxBytes deletes rows on disk, oldest first; a turn over it on its own is not kept", async () => {
    const path = fresh();
    // "user: one" is 9 bytes of text and 8 of vector: 17 bytes; "user: three" 19.
    expect(recallEntryBytes(entry("one", [1, 0]))).toBe(17);
    {
      await using store = await openArchiveStore(path, { maxBytes: 40 });
      const ns = await store.namespace("s");
      expect(await ns.add([entry("one", [1, 0]), entry("two", [0, 1]), entry("three", [1, 1])])).toBe(1);
      expect(await ns.add([entry("x".repeat(30), [1, 0])])).toBe(1);
      expect(ns.size()).toBe(2);
      expect(store.db.prepare("SELECT count(*) AS n FROM turns").get()).toEqual({ n: 2 });
    }
    {
      await using store = await openArchiveStore(path, { maxBytes: 40 });
      const all = await (await store.namespace("s")).search(Float32Array.of(Math.SQRT1_2, Math.SQRT1_2), 10, -1, () => false);
      expect(all.map((r) => r.turn[0]?.content).sort()).toEqual(["three", "two"]);
    }
    // Opened with a smaller cap, the namespace's oldest rows over it are deleted at once.
    await using store = await openArchiveStore(path, { maxBytes: 20 });
    const ns = await store.namespace("s");
    expect((await ns.search(Float32Array.of(1, 0), 10, -1, () => false)).map((r) => r.turn[0]?.content)).toEqual(["three"]);
    expect(store.db.prepare("SELECT count(*) AS n FROM turns").get()).toEqual({ n: 1 });
    await expect(openArchiveStore(fresh(), { maxBytes: 0 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });

  it("vectors of another width (another embedding model) and a damaged file are typed errors", async () => {
    const path = fresh();
    await using store = await openArchiveStore(path);
    const ns = await store.namespace("s");
    await ns.add([entry("x", [1, 0, 0])]);
    await expect((async () => ns.add([entry("y", [1, 0, 0, 0])]))()).rejects.toMatchObject({ code: "ERR_STATE_MISMATCH" });
    expect(() => ns.search(Float32Array.of(1, 0), 1, 0, () => false)).toThrow(expect.objectContaining({ code: "ERR_STATE_MISMATCH" }));
    const bad = fresh();
    writeFileSync(bad, Buffer.alloc(64 * 1024, 0x5a));
    await expect(openArchiveStore(bad)).rejects.toMatchObject({ code: "ERR_ARCHIVE_INVALID" });
    await expect(openArchiveStore(join(dir, "no-such-dir", "x.sqlite"))).rejects.toMatchObject({ code: expect.stringMatching(/ERR_IO/) });
  });

  it("a store locked by another writer past the busy timeout is ERR_IO, and works once the lock goes", async () => {
    const path = fresh();
    await using store = await openArchiveStore(path);
    const ns = await store.namespace("s");
    const { default: Sqlite } = await import("better-sqlite3");
    const other = new Sqlite(path);
    other.exec("BEGIN EXCLUSIVE");
    await expect((async () => ns.add([entry("x", [1, 0])]))()).rejects.toMatchObject({ code: "ERR_IO", message: expect.stringMatching(/locked|busy/i) });
    other.exec("ROLLBACK");
    other.close();
    expect(await ns.add([entry("x", [1, 0])])).toBe(0);
    expect(ns.size()).toBe(1);
  }, 30_000);

  it("a full database is ERR_IO, loses nothing committed, and a session's turn goes on, saying so in the recall event", async () => {
    const path = fresh();
    await using store = await openArchiveStore(path);
    const ns = await store.namespace("full");
    await ns.add([entry("kept", [1, 0])]);
    // SQLite answers SQLITE_FULL, as on a full disk, once the file reaches max_page_count pages.
    const pages = store.db.pragma("page_count", { simple: true }) as number;
    store.db.pragma(`max_page_count = ${pages}`);
    const big = (i: number) => entry(`${"x".repeat(8192)} ${i}`, [0, 1]);
    await expect((async () => ns.add([big(1), big(2)]))()).rejects.toMatchObject({ code: "ERR_IO", message: expect.stringMatching(/full/) });
    expect(ns.size()).toBe(1);
    // Fill what room is left in the last pages, so that any further write fails.
    let added = 0;
    for (; added < 10_000; added++) {
      try {
        await ns.add([entry(`filler ${added}`, [1, 1])]);
      } catch (err) {
        expect(err).toMatchObject({ code: "ERR_IO" });
        break;
      }
    }
    expect(added).toBeLessThan(10_000);
    expect(ns.size()).toBe(1 + added);

    const model = await loadModel(await archModel("qwen2", "f16"));
    try {
      const events: MemoryEvent[] = [];
      const embed = async (texts: readonly string[]) => texts.map((t) => [t.length % 7, 1]);
      await using session = await createSession(model, {
        context: { contextSize: 1024, ...THREADS },
        maxTokens: 4,
        temperature: 0,
        memory: { budget: 120, recall: { embed, store: ns } },
        onMemoryEvent: (e) => events.push(e),
      });
      for (let i = 0; i < 6; i++) await session.prompt(`${"long words ".repeat(20)}${i}`);
      const failed = events.find((e) => e.kind === "recall" && e.error !== undefined);
      expect(failed?.error).toMatchObject({ code: "ERR_IO" });
      expect(session.history.length).toBeGreaterThan(0);
    } finally {
      await model.dispose();
    }
  });

  describe("under a session, a store that fails costs recall, not the turn", () => {
    let model: Model;
    beforeAll(async () => {
      model = await loadModel(await archModel("qwen2", "f16"));
    });
    afterAll(async () => {
      await model.dispose();
    });
    const embed = async (texts: readonly string[]) => texts.map((t) => [t.length % 7, 1]);
    const long = (i: number) => `${"long words ".repeat(20)}${i}`;
    async function sessionOn(store: RecallStore, events: MemoryEvent[]) {
      return createSession(model, {
        context: { contextSize: 1024, ...THREADS },
        maxTokens: 4,
        temperature: 0,
        memory: { budget: 120, recall: { embed, store } },
        onMemoryEvent: (e) => events.push(e),
      });
    }
    const recallErrors = (events: readonly MemoryEvent[]) => events.filter((e) => e.kind === "recall" && e.error !== undefined).map((e) => e.error);

    it("a namespace written with another embedding model: ERR_STATE_MISMATCH in the recall event, every turn answered", async () => {
      await using store = await openArchiveStore(fresh());
      const ns = await store.namespace("dims");
      await ns.add([entry("three dimensions", [1, 0, 0])]);
      const events: MemoryEvent[] = [];
      await using session = await sessionOn(ns, events);
      for (let i = 0; i < 4; i++) expect(typeof (await session.prompt(long(i)))).toBe("string");
      expect(session.history.length).toBeGreaterThan(0);
      expect((await session.stats()).turnsEvicted).toBeGreaterThan(0);
      const errors = recallErrors(events);
      expect(errors.length).toBeGreaterThan(0);
      for (const e of errors) expect(e).toMatchObject({ code: "ERR_STATE_MISMATCH" });
      // Nothing of the other width was written.
      expect(await ns.size()).toBe(1);
    });

    it("a store locked by another writer past the busy timeout: ERR_IO in the recall event, and recall works once the lock goes", async () => {
      const path = fresh();
      await using store = await openArchiveStore(path);
      const ns = await store.namespace("locked");
      const events: MemoryEvent[] = [];
      await using session = await sessionOn(ns, events);
      for (let i = 0; i < 3; i++) await session.prompt(long(i));
      const stored = await ns.size();
      expect(stored).toBeGreaterThan(0);
      const { default: Sqlite } = await import("better-sqlite3");
      const other = new Sqlite(path);
      other.exec("BEGIN EXCLUSIVE");
      try {
        // This turn's evicted turn cannot be written (SQLite waits out its busy timeout first).
        expect(typeof (await session.prompt(long(3)))).toBe("string");
      } finally {
        other.exec("ROLLBACK");
        other.close();
      }
      expect(await ns.size()).toBe(stored);
      expect(recallErrors(events)).toEqual([]);
      expect(typeof (await session.prompt(long(4)))).toBe("string");
      expect(recallErrors(events)).toEqual([expect.objectContaining({ code: "ERR_IO", message: expect.stringMatching(/locked|busy/i) })]);
      // The lock is gone: this turn's eviction was written.
      expect(await ns.size()).toBeGreaterThan(stored);
    }, 60_000);

    it("a store file damaged on disk during the session: ERR_ARCHIVE_INVALID in the recall event, every turn answered", async () => {
      const path = fresh();
      await using store = await openArchiveStore(path);
      const ns = await store.namespace("damaged");
      const events: MemoryEvent[] = [];
      await using session = await sessionOn(ns, events);
      for (let i = 0; i < 3; i++) await session.prompt(long(i));
      expect(await ns.size()).toBeGreaterThan(0);
      // Everything committed into the main file, then every page after the header overwritten.
      store.db.pragma("wal_checkpoint(TRUNCATE)");
      const size = statSync(path).size;
      const fd = openSync(path, "r+");
      writeSync(fd, Buffer.alloc(size - 4096, 0x5a), 0, size - 4096, 4096);
      closeSync(fd);
      // Another connection's write makes the session's connection read the pages from disk again.
      const { default: Sqlite } = await import("better-sqlite3");
      const other = new Sqlite(path);
      other.pragma("user_version = 1");
      other.close();
      for (let i = 3; i < 6; i++) expect(typeof (await session.prompt(long(i)))).toBe("string");
      const errors = recallErrors(events);
      expect(errors.length).toBeGreaterThan(0);
      for (const e of errors) expect(e).toMatchObject({ code: "ERR_ARCHIVE_INVALID" });
      expect(session.history.length).toBeGreaterThan(0);
    });
  });

  it("a process killed mid-write loses nothing it had committed, and the store opens", async () => {
    const path = fresh();
    const url = new URL("../../lib/session/archive-store.ts", import.meta.url).href;
    const script = `
      const { openArchiveStore } = await import(${JSON.stringify(url.replace("/lib/", "/dist/lib/").replace(/\.ts$/, ".js"))});
      const store = await openArchiveStore(${JSON.stringify(path)});
      const ns = await store.namespace("crash");
      for (let i = 0; ; i++) {
        const v = new Float32Array(64).fill(0); v[i % 64] = 1;
        await ns.add([{ turn: [{ role: "user", content: "turn " + i, timestamp: 0 }], text: "turn " + i, vector: v, archivedAt: Date.now() }]);
        process.stdout.write(i + 1 + "\\n");
      }`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    let committed = 0;
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        const lines = d.toString().trim().split("\n");
        committed = Number(lines[lines.length - 1]);
        if (committed >= 200 && !child.killed) {
          child.kill("SIGKILL");
          resolve();
        }
      });
      child.on("exit", (code) => (code === null ? resolve() : reject(new Error(`exited ${code}: ${stderr}`))));
    });
    await using store = await openArchiveStore(path);
    const ns = await store.namespace("crash");
    expect(ns.size()).toBeGreaterThanOrEqual(committed);
    expect((await ns.search(Float32Array.from({ length: 64 }, (_, i) => (i === 5 ? 1 : 0)), 1, 0.5, () => false)).length).toBe(1);
  }, 60_000);

  it("a later session recalls what an earlier one archived, through the store", async () => {
    const path = fresh();
    const model = await loadModel(await archModel("qwen2", "f16"));
    const words = ["vault", "code", "blue", "river", "stone"];
    const embed = async (texts: readonly string[]) => texts.map((t) => words.map((w) => (t.toLowerCase().includes(w) ? 1 : 0.01)));
    try {
      {
        await using store = await openArchiveStore(path);
        await using session = await createSession(model, {
          context: { contextSize: 1024, ...THREADS },
          maxTokens: 4,
          temperature: 0,
          memory: { budget: 150, recall: { embed, store: await store.namespace("chat-1") } },
        });
        await session.prompt("The code for the blue vault is river stone.");
        for (let i = 0; i < 5; i++) await session.prompt(`Tell me about number ${i} and the colour of the sky, please.`);
      }
      await using store = await openArchiveStore(path);
      const events: MemoryEvent[] = [];
      await using session = await createSession(model, {
        context: { contextSize: 1024, ...THREADS },
        maxTokens: 4,
        temperature: 0,
        memory: { budget: 150, recall: { embed, store: await store.namespace("chat-1"), minScore: 0.5 } },
        onMemoryEvent: (e) => events.push(e),
      });
      await session.prompt("What is the blue vault code?");
      const recall = events.find((e) => e.kind === "recall");
      expect(recall?.recalled?.[0]?.turn[0]?.content).toBe("The code for the blue vault is river stone.");
    } finally {
      await model.dispose();
    }
  });

  it("imports a JSONL archive, keeping each turn's archive time", async () => {
    const jsonl = join(dir, "old-archive.jsonl");
    const turns = [
      { messages: [{ role: "user", content: "The blue vault code is river stone.", timestamp: 1 }, { role: "assistant", content: "Noted.", timestamp: 2 }], archivedAt: 1000, reason: "prune" },
      { messages: [{ role: "user", content: "My cat is Luna.", timestamp: 3 }], archivedAt: 2000, reason: "summarize" },
    ];
    writeFileSync(jsonl, turns.map((t) => JSON.stringify(t)).join("\n") + "\n");
    await using store = await openArchiveStore(fresh());
    const embed = async (texts: readonly string[]) => texts.map((t) => [t.includes("vault") ? 1 : 0.1, t.includes("cat") ? 1 : 0.1]);
    expect(await store.importArchive(jsonl, "imported", embed)).toBe(2);
    const ns = await store.namespace("imported");
    const found = await ns.search(Float32Array.of(1, 0), 1, 0.5, () => false);
    expect(found[0]?.turn.map((m) => m.content)).toEqual(["The blue vault code is river stone.", "Noted."]);
    writeFileSync(jsonl, "{ not an archived turn }\n");
    await expect(store.importArchive(jsonl, "x", embed)).rejects.toMatchObject({ code: "ERR_ARCHIVE_INVALID" });
  });
});
