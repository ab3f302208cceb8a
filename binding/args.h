// Argument checks for every wrapped method: each failure is an ERR_INVALID_ARGUMENT naming
// the argument, thrown before anything reaches llama.cpp.
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "errors.h"
#include "llama.h"
#include "napi.h"

namespace llamem {

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* signature) : info_(info), sig_(signature) {}

  Napi::Value At(size_t i, const char* name) const {
    if (i >= info_.Length() || info_[i].IsUndefined()) Fail(name, "is required");
    return info_[i];
  }
  std::string String(size_t i, const char* name) const {
    Napi::Value v = At(i, name);
    if (!v.IsString()) Fail(name, "must be a string");
    return v.As<Napi::String>().Utf8Value();
  }
  bool Bool(size_t i, const char* name) const {
    Napi::Value v = At(i, name);
    if (!v.IsBoolean()) Fail(name, "must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }
  double Number(size_t i, const char* name) const {
    Napi::Value v = At(i, name);
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) Fail(name, "must be a finite number");
    return v.As<Napi::Number>().DoubleValue();
  }
  int64_t Int(size_t i, const char* name, int64_t min, int64_t max) const {
    double d = Number(i, name);
    if (d != std::floor(d) || d < static_cast<double>(min) || d > static_cast<double>(max)) {
      Fail(name, "must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    }
    return static_cast<int64_t>(d);
  }
  Napi::Object Object(size_t i, const char* name) const {
    Napi::Value v = At(i, name);
    if (!v.IsObject()) Fail(name, "must be an object");
    return v.As<Napi::Object>();
  }
  Napi::Array Array(size_t i, const char* name) const {
    Napi::Value v = At(i, name);
    if (!v.IsArray()) Fail(name, "must be an array");
    return v.As<Napi::Array>();
  }
  llama_token Token(size_t i, const char* name, int32_t n_vocab) const {
    return static_cast<llama_token>(Int(i, name, 0, n_vocab - 1));
  }
  // An Int32Array of token ids, each checked against the vocabulary.
  std::vector<llama_token> Tokens(size_t i, const char* name, int32_t n_vocab) const {
    Napi::Value v = At(i, name);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
      Fail(name, "must be an Int32Array");
    }
    Napi::Int32Array arr = v.As<Napi::Int32Array>();
    std::vector<llama_token> out(arr.Data(), arr.Data() + arr.ElementLength());
    for (llama_token t : out) {
      if (t < 0 || t >= n_vocab) {
        Fail(name, "contains token id " + std::to_string(t) + " outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
      }
    }
    return out;
  }

  [[noreturn]] void Fail(const char* name, const std::string& what) const {
    throw MakeError(info_.Env(), "ERR_INVALID_ARGUMENT", std::string(sig_) + ": " + name + " " + what);
  }

 private:
  const Napi::CallbackInfo& info_;
  const char* sig_;
};

// Throws unless `value` is an object wrapped by the class whose tag is `tag`, so a wrong
// handle is an error instead of a reinterpret_cast into memory of another type.
inline void CheckTag(Napi::Env env, Napi::Value value, const napi_type_tag& tag, const char* what) {
  bool ok = false;
  if (value.IsObject()) napi_check_object_type_tag(env, value, &tag, &ok);
  if (!ok) throw MakeError(env, "ERR_INVALID_ARGUMENT", std::string("expected a ") + what);
}

// Optional fields of an options object, with range checks.
inline int64_t OptInt(Napi::Object o, const char* key, int64_t def, int64_t min, int64_t max) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return def;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : std::nan("");
  if (!std::isfinite(d) || d != std::floor(d) || d < static_cast<double>(min) || d > static_cast<double>(max)) {
    throw MakeError(o.Env(), "ERR_INVALID_ARGUMENT",
                    std::string("option ") + key + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return static_cast<int64_t>(d);
}

inline double OptNumber(Napi::Object o, const char* key, double def, double min, double max) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return def;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : std::nan("");
  if (!std::isfinite(d) || d < min || d > max) {
    throw MakeError(o.Env(), "ERR_INVALID_ARGUMENT",
                    std::string("option ") + key + " must be a number in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return d;
}

inline bool OptBool(Napi::Object o, const char* key, bool def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return def;
  if (!v.IsBoolean()) throw MakeError(o.Env(), "ERR_INVALID_ARGUMENT", std::string("option ") + key + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

}  // namespace llamem
