// The base of every off-thread operation: arguments are parsed into plain members on the JS
// thread, Run() works on a libuv thread without touching N-API, and the promise settles on
// the JS thread with Result() or a coded error. C++ exceptions never cross the boundary.
#pragma once

#include <exception>
#include <new>
#include <string>

#include "errors.h"
#include "napi.h"

namespace llamem {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env)
      : Napi::AsyncWorker(env, "llamem"), deferred_(Napi::Promise::Deferred::New(env)) {}

  // Queues the work and returns the promise it settles.
  Napi::Promise Start() {
    Napi::Promise promise = deferred_.Promise();
    Queue();
    return promise;
  }

 protected:
  // Off the JS thread: may throw CodedError or std::exception.
  virtual void Run() = 0;
  // On the JS thread, after Run() succeeded.
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }
  // On the JS thread, after Run() returned or threw, before the promise settles.
  virtual void BeforeSettle(Napi::Env /*env*/) {}

  void Execute() final {
    try {
      Run();
    } catch (const CodedError& e) {
      failure_ = {e.code, e.message};
    } catch (const std::bad_alloc&) {
      failure_ = {"ERR_OUT_OF_MEMORY", "out of memory"};
    } catch (const std::exception& e) {
      failure_ = {"ERR_INTERNAL", e.what()};
    } catch (...) {
      failure_ = {"ERR_INTERNAL", "unknown native exception"};
    }
  }

  void OnOK() final {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    BeforeSettle(env);
    if (failure_.failed()) {
      deferred_.Reject(MakeError(env, failure_.code, failure_.message).Value());
      return;
    }
    try {
      deferred_.Resolve(Result(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const CodedError& e) {
      deferred_.Reject(MakeError(env, e.code, e.message).Value());
    }
  }

  void OnError(const Napi::Error& e) final { deferred_.Reject(e.Value()); }

  Failure failure_;

 private:
  Napi::Promise::Deferred deferred_;
};

}  // namespace llamem
