/**
 * The pinned llama.cpp source and llamem's patches to it (vendor/llama.cpp.json, vendor/patches/):
 * every patch is pinned by its hash, and the checked-out tree says which patches it carries.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const VENDOR = resolve(__dirname, "..", "..", "vendor");
const manifest = JSON.parse(readFileSync(join(VENDOR, "llama.cpp.json"), "utf8")) as {
  commit: string;
  patches?: { file: string; sha256: string }[];
};
const patches = manifest.patches ?? [];

describe("vendored llama.cpp", () => {
  it("pins every file in vendor/patches/ by its sha256, in file-name order", () => {
    const files = readdirSync(join(VENDOR, "patches")).filter((f) => f.endsWith(".patch")).sort();
    expect(patches.map((p) => p.file)).toEqual(files.map((f) => `patches/${f}`));
    for (const p of patches) {
      const sha = createHash("sha256").update(readFileSync(join(VENDOR, p.file))).digest("hex");
      expect(sha, p.file).toBe(p.sha256);
    }
  });

  it.skipIf(process.env.LLAMA_CPP_DIR !== undefined || !existsSync(join(VENDOR, "llama.cpp", ".llamem-source")))(
    "the checked-out source is the pinned commit with exactly those patches applied",
    () => {
      const stamp = readFileSync(join(VENDOR, "llama.cpp", ".llamem-source"), "utf8").trim().split("\n");
      expect(stamp).toEqual([manifest.commit, ...patches.map((p) => `${p.file} ${p.sha256}`)]);
    },
  );
});
