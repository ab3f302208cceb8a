// Quantizing a GGUF with llama.cpp's quantizer, off the JS thread. The output is written to a
// temporary file and renamed into place, so a failure never leaves a half-written model.
#include <atomic>
#include <cstdio>
#include <random>
#include <string>
#include <unistd.h>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "worker.h"

namespace llamem {

namespace {

class QuantizeWorker : public PromiseWorker {
 public:
  QuantizeWorker(Napi::Env env, std::string in, std::string out, llama_model_quantize_params params)
      : PromiseWorker(env), in_(std::move(in)), out_(std::move(out)), params_(params) {}

 protected:
  void Run() override {
    // A name of this call's own: two quantizations to one output must never write one file.
    static std::atomic<uint64_t> counter{0};
    std::random_device rd;
    char suffix[40];
    std::snprintf(suffix, sizeof(suffix), "%llu-%08x", static_cast<unsigned long long>(counter.fetch_add(1)), rd());
    const std::string tmp = out_ + ".tmp-" + std::to_string(getpid()) + "-" + suffix;
    TakeLastNativeError();
    const uint32_t rc = llama_model_quantize(in_.c_str(), tmp.c_str(), &params_);
    if (rc != 0) {
      std::remove(tmp.c_str());
      std::string why = TakeLastNativeError();
      Throw("ERR_QUANTIZE", "quantizing " + in_ + " failed" + (why.empty() ? "" : ": " + why));
    }
    if (std::rename(tmp.c_str(), out_.c_str()) != 0) {
      std::remove(tmp.c_str());
      Throw("ERR_IO", "cannot move the quantized model into place at " + out_);
    }
  }

 private:
  std::string in_, out_;
  llama_model_quantize_params params_;
};

}  // namespace

// quantize(input, output, { ftype, threads, allowRequantize, pure }) -> Promise<void>
Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "quantize(input, output, options)");
  std::string in = args.String(0, "input");
  std::string out = args.String(1, "output");
  Fields f(args.Object(2, "options"), "options");
  if (in.empty() || out.empty()) args.Fail("input/output", "must not be empty");
  if (in == out) args.Fail("output", "must differ from the input");
  llama_model_quantize_params p = llama_model_quantize_default_params();
  p.ftype = static_cast<llama_ftype>(f.Int("ftype", 0, LLAMA_FTYPE_GUESSED - 1));
  p.nthread = static_cast<int32_t>(f.Int("threads", 0, 1024));
  p.allow_requantize = f.Bool("allowRequantize");
  p.pure = f.Bool("pure");
  return (new QuantizeWorker(env, std::move(in), std::move(out), p))->Start();
}

}  // namespace llamem
