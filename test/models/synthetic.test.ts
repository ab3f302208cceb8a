/**
 * The synthetic writer's architectures (lib/gguf/synthetic/archs.ts) and `llamem make-model
 * --arch`: each file carries the keys and tensors llama.cpp's loader for that architecture reads,
 * the tokenizer of its vocabulary, and is the same bytes for the same seed.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GGML_TYPE, metadataNumber, metadataString } from "../../lib/gguf/format.js";
import { readGguf } from "../../lib/gguf/read.js";
import { SYNTHETIC_ARCHS, archPlan, defaultVocabPath, writeSyntheticModel, type SyntheticArch } from "../../lib/gguf/synthetic.js";
import { runCli } from "../cli/run.js";
import { archModel } from "../helpers/models.js";

const ARCHS = Object.keys(SYNTHETIC_ARCHS) as SyntheticArch[];
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "llamem-archs-test-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("synthetic architectures", () => {
  it.each(ARCHS)("%s: the architecture's keys, its vocabulary's tokenizer and the planned tensors", async (arch) => {
    const info = SYNTHETIC_ARCHS[arch];
    const f = await readGguf(await archModel(arch, "f16", 1));
    const a = info.architecture;
    expect(metadataString(f, "general.architecture")).toBe(a);
    expect(metadataString(f, "general.name")).toBe(`llamem synthetic ${arch} f16`);
    expect(metadataNumber(f, `${a}.block_count`)).toBe(info.nLayer);
    expect(metadataNumber(f, `${a}.embedding_length`)).toBe(info.nEmbd);
    expect(metadataNumber(f, `${a}.attention.head_count`)).toBe(info.nHead);
    if (info.nHead > 0 && info.headDim !== info.nEmbd / info.nHead) {
      // The head size llama.cpp would otherwise take as n_embd / n_head.
      expect(metadataNumber(f, `${a}.attention.key_length`)).toBe(info.headDim);
      expect(metadataNumber(f, `${a}.attention.value_length`)).toBe(info.headDim);
    }
    if (info.slidingWindow > 0) expect(metadataNumber(f, `${a}.attention.sliding_window`)).toBe(info.slidingWindow);
    if (info.experts > 0) {
      expect(metadataNumber(f, `${a}.expert_count`)).toBe(info.experts);
      expect(metadataNumber(f, `${a}.expert_used_count`)).toBe(info.expertsUsed);
    }
    if (info.recurrent) expect(metadataNumber(f, `${a}.ssm.state_size`)).toBe(info.ssm.dState);

    const vocab = await readGguf(defaultVocabPath(info.vocab));
    for (const k of [...vocab.metadata.keys()].filter((key) => key.startsWith("tokenizer."))) expect(f.metadata.get(k), k).toEqual(vocab.metadata.get(k));
    const nVocab = (vocab.metadata.get("tokenizer.ggml.tokens")?.value as unknown[]).length;
    const plan = archPlan(arch, GGML_TYPE.F16, nVocab);
    expect(f.tensors.map((t) => [t.name, [...t.dims], t.type])).toEqual(plan.tensors.map((t) => [t.name, [...t.dims], t.type]));
    // 1-D tensors stay f32; matrices whose rows are not whole 32-value blocks too.
    for (const t of f.tensors) if (t.dims.length === 1 || (t.dims[0] as number) % 32 !== 0) expect(t.type, t.name).toBe(GGML_TYPE.F32);
  });

  it("writes what makes each family: QKV biases, Q/K norms, fused QKV, post norms, experts, Mamba's A", async () => {
    const names = async (arch: SyntheticArch) => (await readGguf(await archModel(arch, "f16", 1))).tensors.map((t) => t.name);
    expect(await names("qwen2")).toEqual(expect.arrayContaining(["blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"]));
    expect(await names("qwen3")).toEqual(expect.arrayContaining(["blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"]));
    expect(await names("phi3")).toEqual(expect.arrayContaining(["blk.0.attn_qkv.weight"]));
    expect(await names("phi3")).not.toContain("blk.0.attn_q.weight");
    expect(await names("gemma3")).toEqual(expect.arrayContaining(["blk.0.post_attention_norm.weight", "blk.0.post_ffw_norm.weight"]));
    const moe = await readGguf(await archModel("qwen3moe", "f16", 1));
    const info = SYNTHETIC_ARCHS.qwen3moe;
    expect(moe.tensors.find((t) => t.name === "blk.1.ffn_up_exps.weight")?.dims).toEqual([info.nEmbd, 64, info.experts]);
    expect(moe.tensors.find((t) => t.name === "blk.1.ffn_gate_inp.weight")?.dims).toEqual([info.nEmbd, info.experts]);
    const mamba = await readGguf(await archModel("mamba", "f16", 1));
    const a = mamba.tensors.find((t) => t.name === "blk.0.ssm_a");
    if (!a) throw new Error("no blk.0.ssm_a");
    const bytes = readFileSync(mamba.path).subarray(a.offset, a.offset + a.size);
    const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    expect([...values.subarray(0, 16)]).toEqual(Array.from({ length: 16 }, (_, j) => -(j + 1)));
  });

  it("the same seed writes the same bytes; another seed other weights", async () => {
    const p = (n: string) => join(dir, n);
    await writeSyntheticModel(p("a.gguf"), { arch: "phi3", type: "q8_0", seed: 3 });
    await writeSyntheticModel(p("b.gguf"), { arch: "phi3", type: "q8_0", seed: 3 });
    await writeSyntheticModel(p("c.gguf"), { arch: "phi3", type: "q8_0", seed: 4 });
    const [a, b, c] = ["a", "b", "c"].map((n) => readFileSync(p(`${n}.gguf`)));
    expect(a?.equals(b as Buffer)).toBe(true);
    expect(a?.length).toBe(c?.length);
    expect(a?.equals(c as Buffer)).toBe(false);
  });

  it("rejects an unknown architecture and a llama size with another architecture", async () => {
    await expect(writeSyntheticModel(join(dir, "x.gguf"), { arch: "gpt5" as SyntheticArch, type: "f16" })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(writeSyntheticModel(join(dir, "x.gguf"), { arch: "qwen2", preset: "8b", type: "f16" })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });

  it("llamem make-model --arch writes the architecture; a llama size with it is a usage error", async () => {
    const out = join(dir, "cli-phi3.gguf");
    const r = await runCli(["make-model", out, "--arch", "phi3", "--type", "q8_0", "--seed", "2"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^wrote .*cli-phi3\.gguf: phi3 q8_0, .* 15 tensors, .*vocabulary 32064\n$/);
    expect(metadataString(await readGguf(out), "general.architecture")).toBe("phi3");
    for (const args of [["--arch", "qwen2", "--preset", "8b"], ["--arch", "gpt5"], []]) {
      const bad = await runCli(["make-model", join(dir, "bad.gguf"), ...args]);
      expect(bad.code, args.join(" ")).toBe(2);
      expect(bad.stderr).toMatch(/^llamem: /);
    }
  }, 60_000);
});
