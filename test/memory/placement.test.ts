import { describe, expect, it } from "vitest";
import { listDevices, loadModel, type Model } from "../../lib/index.js";
import { codeOf } from "../helpers/errors.js";
import { tinyModel } from "../helpers/models.js";

async function greedy(model: Model): Promise<string> {
  await using ctx = await model.createContext({ contextSize: 256, threads: 1 });
  return (await ctx.complete("Placement", { maxTokens: 8, temperature: 0 })).text;
}

describe("placement: devices, split and tensor overrides", () => {
  it("pins tensors by name pattern to a device and picks devices by name, with the same output", async () => {
    const path = await tinyModel("q8_0");
    let plain: string;
    {
      await using model = await loadModel(path);
      plain = await greedy(model);
    }
    const cpu = listDevices().find((d) => d.type === "cpu");
    expect(cpu).toBeDefined();
    await using pinned = await loadModel(path, {
      devices: [cpu?.name ?? "CPU"],
      splitMode: "none",
      tensorOverrides: [{ pattern: "ffn_.*", device: cpu?.name ?? "CPU" }],
    });
    expect(await greedy(pinned)).toBe(plain);
  });

  it("refuses unknown devices, bad patterns and bad split modes with ERR_INVALID_ARGUMENT", async () => {
    const path = await tinyModel("q8_0");
    expect(await codeOf(loadModel(path, { devices: ["NO_SUCH_DEVICE"] }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(loadModel(path, { tensorOverrides: [{ pattern: "blk.*", device: "NO_SUCH_DEVICE" }] }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(loadModel(path, { tensorOverrides: [{ pattern: "ffn_(", device: "CPU" }] }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(loadModel(path, { splitMode: "diagonal" as never }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(loadModel(path, { tensorSplit: [1, -1] }))).toBe("ERR_INVALID_ARGUMENT");
    // Still fine afterwards.
    await using model = await loadModel(path);
    expect(model.info.layers).toBe(2);
  });
});
