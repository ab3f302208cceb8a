/**
 * Where llamem's own files are: the package root, found from lib/ (tests) or dist/lib/.
 * @internal
 */
import { existsSync, readFileSync } from "node:fs";
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

/** The package root (the directory of llamem's package.json). */
export const packageRoot: string = findPackageRoot();
