/**
 * The shape of the compiled package: which modules load which at run time (read from the
 * emitted JavaScript, where type-only imports are gone), and what the published type files show.
 * `npm test` compiles first (pretest), so dist/ is the build under test.
 */
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { packageRoot } from "../../lib/system.js";

const distLib = join(packageRoot, "dist", "lib");

function files(dir: string, ext: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...files(p, ext));
    else if (name.endsWith(ext)) out.push(p);
  }
  return out;
}

/** Relative specifiers a compiled module loads: static imports, re-exports and dynamic import(). */
function runtimeImports(file: string): string[] {
  const src = readFileSync(file, "utf8");
  const specs = new Set<string>();
  for (const m of src.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"/gms)) specs.add(m[1] as string);
  for (const m of src.matchAll(/^\s*import\s+"([^"]+)"/gm)) specs.add(m[1] as string);
  for (const m of src.matchAll(/\bimport\(\s*"([^"]+)"\s*\)/g)) specs.add(m[1] as string);
  return [...specs].filter((s) => s.startsWith(".")).map((s) => resolve(dirname(file), s));
}

const graph = new Map<string, string[]>(files(distLib, ".js").map((f) => [f, runtimeImports(f)]));
const name = (f: string) => relative(distLib, f);

function closure(start: string): Set<string> {
  const seen = new Set<string>();
  const stack = [join(distLib, start)];
  while (stack.length > 0) {
    const f = stack.pop() as string;
    if (seen.has(f)) continue;
    seen.add(f);
    stack.push(...(graph.get(f) ?? []));
  }
  return seen;
}

describe("module graph", () => {
  it("reads a graph that is there", () => {
    // Guards the checks below against passing on an empty or unparsed build.
    expect(graph.size).toBeGreaterThan(30);
    expect(graph.get(join(distLib, "index.js"))?.length).toBeGreaterThan(10);
  });

  it("has no import cycle at run time", () => {
    const state = new Map<string, "open" | "done">();
    const cycles: string[] = [];
    const visit = (f: string, path: string[]) => {
      if (state.get(f) === "done") return;
      if (state.get(f) === "open") {
        cycles.push([...path.slice(path.indexOf(f)), f].map(name).join(" -> "));
        return;
      }
      state.set(f, "open");
      for (const dep of graph.get(f) ?? []) visit(dep, [...path, f]);
      state.set(f, "done");
    };
    for (const f of graph.keys()) visit(f, []);
    expect(cycles).toEqual([]);
  });

  it("loads memory estimation without the inference stack", () => {
    for (const entry of ["memory/estimate.js", "memory/fit.js"]) {
      const loaded = [...closure(entry)].map(name);
      for (const heavy of ["sequence.js", "sampler.js", "generation.js", "context.js", "model.js"]) expect(loaded).not.toContain(heavy);
      expect(loaded.filter((f) => f.startsWith("session/"))).toEqual([]);
      expect(loaded.filter((f) => f.startsWith("gguf/write") || f.startsWith("gguf/synthetic"))).toEqual([]);
    }
  });

  it("keeps the model free of the session layer", () => {
    expect([...closure("model.js")].map(name).filter((f) => f.startsWith("session/"))).toEqual([]);
  });

  it("lets only the modules that own a native object load the addon", () => {
    const owners = [...graph].filter(([, deps]) => deps.includes(join(distLib, "internal", "native.js"))).map(([f]) => name(f)).sort();
    expect(owners).toEqual(
      ["context.js", "devices.js", "log.js", "memory/estimate.js", "model.js", "quantize.js", "rpc.js", "sampler.js", "speculative.js"].sort(),
    );
  });
});

describe("published types", () => {
  const dts = files(distLib, ".d.ts");

  it("show no native type and no internal member", () => {
    expect(dts.length).toBeGreaterThan(30);
    const leaks = dts.flatMap((f) => {
      const text = readFileSync(f, "utf8");
      return [...text.matchAll(/\bNative[A-Z]\w*|@internal/g)].map((m) => `${name(f)}: ${m[0]}`);
    });
    expect(leaks).toEqual([]);
  });

  it("still declare the public API", () => {
    const index = readFileSync(join(distLib, "index.d.ts"), "utf8");
    for (const api of ["loadModel", "Context", "Sequence", "estimateMemory", "createSession", "createPool", "LlamemError"]) {
      expect(index).toContain(api);
    }
    const seq = readFileSync(join(distLib, "sequence.d.ts"), "utf8");
    expect(seq).toContain("generate(");
    expect(seq).not.toContain("host");
  });
});
