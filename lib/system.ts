/**
 * Facts about this machine and this package that several modules need: the package root,
 * physical cores, available RAM. Nothing here loads the addon.
 */
import { existsSync, readFileSync } from "node:fs";
import { availableParallelism, freemem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

function findPackageRoot(): string {
  const here = fileURLToPath(import.meta.url);
  for (let dir = dirname(here); ; ) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, "utf8")) as { name?: unknown }).name === "llamem") return dir;
      } catch {
        // Not ours or unreadable: keep walking up.
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find llamem's package.json above ${here}`);
    dir = up;
  }
}

/** The package root (the directory of llamem's package.json), found from lib/ (tests) or dist/lib/. @internal */
export const packageRoot: string = findPackageRoot();

let physicalCores: number | undefined;

/** Physical cores (llama.cpp gains nothing from SMT siblings), else the logical CPU count. */
export function defaultThreads(): number {
  if (physicalCores !== undefined) return physicalCores;
  let n = 0;
  try {
    const cores = new Set<string>();
    let physical = "";
    for (const line of readFileSync("/proc/cpuinfo", "utf8").split("\n")) {
      const [k, v] = line.split(":").map((s) => s.trim());
      if (k === "physical id") physical = v ?? "";
      if (k === "core id") cores.add(`${physical}/${v}`);
    }
    n = cores.size;
  } catch {
    n = 0;
  }
  physicalCores = n > 0 ? Math.min(n, availableParallelism()) : availableParallelism();
  return physicalCores;
}

/** Available host RAM in bytes (MemAvailable on Linux: free plus reclaimable cache). */
export function availableRam(): number {
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync("/proc/meminfo", "utf8"));
    if (m?.[1]) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return freemem();
}
