import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Native addons and worker threads do not mix: each test file runs in its own process.
    pool: "forks",
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
