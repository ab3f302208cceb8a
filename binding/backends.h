// ggml's backends at startup. A source build links them statically (the CPU backend built for
// this machine). A prebuild (LLAMEM_CPU_VARIANTS) carries one CPU backend module per CPU level
// beside llamem.node and loads the best one this CPU supports, by ggml's own score.
#pragma once

#include <string>
#include <vector>

namespace llamem {

struct CpuBackendInfo {
  // "native" (a source build for this machine), "portable" (a static baseline build), or the
  // variant a prebuild chose: "sapphirerapids", "haswell", "x64", ...
  std::string variant;
  // The module the variant was loaded from; empty for a static build.
  std::string path;
  // The CPU features the backend was built with and this CPU has (ggml_backend_get_features).
  std::vector<std::string> features;
};

// Loads the backends once per process (ggml's registry is global). Returns an empty string, or
// why no CPU backend could be loaded (the addon then refuses to load).
const std::string& LoadBackendsOnce();

// The CPU backend in use; valid after LoadBackendsOnce() succeeded.
CpuBackendInfo CpuBackend();

}  // namespace llamem
