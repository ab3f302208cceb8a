// ggml's backends at startup: nothing to load in a source build (everything is linked in), the
// best CPU variant in a prebuild. See backends.h.
#include "backends.h"

#include <mutex>

#include "errors.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml-rpc.h"

#ifdef LLAMEM_CPU_VARIANTS
#include <dirent.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#endif

namespace llamem {

namespace {

std::string g_load_error;
std::string g_cpu_path;

#ifdef LLAMEM_CPU_VARIANTS

constexpr const char* kCpuPrefix = "libggml-cpu-";
constexpr const char* kSuffix = ".so";

bool EndsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The folder llamem.node was loaded from: the backend modules lie beside it.
std::string OwnDirectory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&LoadBackendsOnce), &info) == 0 || info.dli_fname == nullptr) return ".";
  std::string path(info.dli_fname);
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// The file a backend's code lives in, from any function it hands out.
std::string ModuleOf(void* fn) {
  Dl_info info{};
  if (fn == nullptr || dladdr(fn, &info) == 0 || info.dli_fname == nullptr) return "";
  return info.dli_fname;
}

// Why no CPU variant loaded, for the addon's load error: ggml's loader is silent in a release build.
std::string ExplainNoCpu(const std::string& dir) {
  std::vector<std::string> files;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string name(e->d_name);
      if (name.rfind(kCpuPrefix, 0) == 0 && EndsWith(name, kSuffix)) files.push_back(name);
    }
    closedir(d);
  }
  if (files.empty()) return "no CPU backend (" + std::string(kCpuPrefix) + "*" + kSuffix + ") in " + dir + "; the prebuild is incomplete";
  std::sort(files.begin(), files.end());
  std::string failures;
  int scored_zero = 0;
  for (const auto& f : files) {
    std::string path = dir + "/" + f;
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      const char* err = dlerror();
      if (failures.empty()) failures = f + ": " + (err ? err : "cannot be loaded");
      continue;
    }
    using ScoreFn = int (*)();
    auto score = reinterpret_cast<ScoreFn>(dlsym(h, "ggml_backend_score"));
    if (score != nullptr && score() == 0) scored_zero++;
    dlclose(h);
  }
  if (!failures.empty()) return "the CPU backends in " + dir + " fail to load (" + failures + ")";
  if (scored_zero == static_cast<int>(files.size())) {
    return "none of the " + std::to_string(files.size()) + " CPU variants in " + dir + " supports this CPU";
  }
  return "ggml registered no CPU device from " + dir;
}

ggml_backend_reg_t CpuReg() {
  ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  return cpu == nullptr ? nullptr : ggml_backend_dev_backend_reg(cpu);
}

void* g_cpu_module = nullptr;  // the loaded variant's dlopen handle (ggml owns the module)

// A function of the loaded CPU variant: through ggml's proc-address table, else its exported symbol.
void* CpuProc(const char* name) {
  ggml_backend_reg_t reg = CpuReg();
  void* fn = reg == nullptr ? nullptr : ggml_backend_reg_get_proc_address(reg, name);
  if (fn == nullptr && g_cpu_module != nullptr) fn = dlsym(g_cpu_module, name);
  return fn;
}

ggml_backend_reg_t g_rpc_reg = nullptr;

void* RpcProc(const char* name) {
  return g_rpc_reg == nullptr ? nullptr : ggml_backend_reg_get_proc_address(g_rpc_reg, name);
}

void Load() {
  const std::string dir = OwnDirectory();
  // The GPU and RPC modules that lie there too, then the best CPU variant (by score).
  ggml_backend_load_all_from_path(dir.c_str());
  g_rpc_reg = ggml_backend_reg_by_name("RPC");
  if (CpuReg() == nullptr) {
    g_load_error = ExplainNoCpu(dir);
    return;
  }
  g_cpu_path = ModuleOf(CpuProc("ggml_backend_get_features"));
  // Already loaded by ggml: this only takes another reference, which is kept for the process.
  if (!g_cpu_path.empty()) g_cpu_module = dlopen(g_cpu_path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
}

#else

void Load() {}

#endif

}  // namespace

const std::string& LoadBackendsOnce() {
  static std::once_flag once;  // ggml's backend registry is process-wide
  std::call_once(once, Load);
  return g_load_error;
}

CpuBackendInfo CpuBackend() {
  CpuBackendInfo info;
#if defined(LLAMEM_CPU_VARIANTS)
  info.path = g_cpu_path;
  std::string file = g_cpu_path.substr(g_cpu_path.find_last_of('/') + 1);
  const std::string prefix = "libggml-cpu-", suffix = ".so";
  if (file.rfind(prefix, 0) == 0 && file.size() > prefix.size() + suffix.size()) {
    info.variant = file.substr(prefix.size(), file.size() - prefix.size() - suffix.size());
  } else {
    info.variant = file.empty() ? "unknown" : file;
  }
#elif defined(LLAMEM_PORTABLE)
  info.variant = "portable";
#else
  info.variant = "native";
#endif
  ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  if (cpu == nullptr) return info;
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu);
  auto get_features = reinterpret_cast<ggml_backend_get_features_t>(ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"));
  if (get_features == nullptr) return info;
  for (ggml_backend_feature* f = get_features(reg); f != nullptr && f->name != nullptr; f++) {
    // Flags are "1"; other entries (e.g. the variant's own name in some builds) are not features.
    if (f->value != nullptr && std::string(f->value) == "1") info.features.emplace_back(f->name);
  }
  return info;
}

}  // namespace llamem

#ifdef LLAMEM_CPU_VARIANTS
// A prebuild links no CPU or RPC backend: they are modules loaded at startup. These stand in for
// the functions of theirs the binding calls by name, forwarding to the loaded module (as
// llama.cpp's own tools do through ggml_backend_reg_get_proc_address). scripts/prebuild.mjs
// fails when the addon needs a symbol that no shipped library defines: add a stand-in here.
extern "C" {

struct ggml_threadpool* ggml_threadpool_new(struct ggml_threadpool_params* params) {
  auto fn = reinterpret_cast<decltype(&ggml_threadpool_new)>(llamem::CpuProc("ggml_threadpool_new"));
  return fn == nullptr ? nullptr : fn(params);
}

void ggml_threadpool_free(struct ggml_threadpool* threadpool) {
  auto fn = reinterpret_cast<decltype(&ggml_threadpool_free)>(llamem::CpuProc("ggml_threadpool_free"));
  if (fn != nullptr) fn(threadpool);
}

void ggml_threadpool_pause(struct ggml_threadpool* threadpool) {
  static auto fn = reinterpret_cast<decltype(&ggml_threadpool_pause)>(llamem::CpuProc("ggml_threadpool_pause"));
  if (fn != nullptr) fn(threadpool);
}

// The addon loads only with a CPU variant in place, so this one always has a target.
const struct ggml_type_traits_cpu* ggml_get_type_traits_cpu(enum ggml_type type) {
  static auto fn = reinterpret_cast<decltype(&ggml_get_type_traits_cpu)>(llamem::CpuProc("ggml_get_type_traits_cpu"));
  return fn(type);
}

ggml_backend_reg_t ggml_backend_rpc_reg(void) { return llamem::g_rpc_reg; }

ggml_backend_reg_t ggml_backend_rpc_add_server(const char* endpoint) {
  auto fn = reinterpret_cast<decltype(&ggml_backend_rpc_add_server)>(llamem::RpcProc("ggml_backend_rpc_add_server"));
  if (fn == nullptr) {
    llamem::RecordNativeError("the RPC backend (libggml-rpc.so) is not loaded");
    return nullptr;
  }
  return fn(endpoint);
}

void ggml_backend_rpc_start_server(const char* endpoint, const char* cache_dir, size_t n_threads, size_t n_devices,
                                   ggml_backend_dev_t* devices) {
  auto fn = reinterpret_cast<decltype(&ggml_backend_rpc_start_server)>(llamem::RpcProc("ggml_backend_rpc_start_server"));
  if (fn == nullptr) {
    llamem::RecordNativeError("the RPC backend (libggml-rpc.so) is not loaded");
    return;
  }
  fn(endpoint, cache_dir, n_threads, n_devices, devices);
}

}  // extern "C"
#endif
