// Failures travel as (code, message) pairs: workers fill a Failure off the JS thread,
// and the JS thread turns it into an Error whose `code` lib/errors.ts maps to LlamemError.
#pragma once

#include <string>

#include "napi.h"

namespace llamem {

struct Failure {
  std::string code;
  std::string message;
  bool failed() const { return !code.empty(); }
};

// Thrown inside workers and argument parsing; caught at the N-API boundary.
struct CodedError {
  std::string code;
  std::string message;
};

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message);
[[noreturn]] void Throw(const std::string& code, const std::string& message);

// The most recent error line llama.cpp logged on this thread, to explain a NULL return.
std::string TakeLastNativeError();
void RecordNativeError(const char* text);

}  // namespace llamem
