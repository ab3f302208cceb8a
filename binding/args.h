// Argument checks for every wrapped method: each failure is an ERR_INVALID_ARGUMENT naming
// the argument, thrown before anything reaches llama.cpp.
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <utility>
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

// The payload of an External that a worker created and tagged with `tag`; any other value
// (an untagged External, one of another type) throws instead of being reinterpreted.
template <typename T>
T* TaggedExternal(Napi::Env env, Napi::Value value, const napi_type_tag& tag, const char* message) {
  bool ok = false;
  if (value.IsExternal()) napi_check_object_type_tag(env, value, &tag, &ok);
  if (!ok) throw MakeError(env, "ERR_INVALID_ARGUMENT", message);
  return value.As<Napi::External<T>>().Data();
}

// Wraps `data` in an External tagged with `tag`, deleted when the External is collected.
template <typename T>
Napi::External<T> NewTaggedExternal(Napi::Env env, T* data, const napi_type_tag& tag) {
  auto ext = Napi::External<T>::New(env, data, [](Napi::Env, T* p) { delete p; });
  napi_status st = napi_type_tag_object(env, ext, &tag);
  if (st != napi_ok) throw MakeError(env, "ERR_INTERNAL", "cannot tag a native handle");
  return ext;
}

// Required fields of an options object (lib/ passes every field; the binding holds no
// defaults). `where` names the object in errors: "options", "entries[2]", "stages[0]".
class Fields {
 public:
  Fields(Napi::Object o, std::string where) : o_(o), where_(std::move(where)) {}

  // The field as given; only undefined (absent) is refused, so callers can accept null.
  Napi::Value Any(const char* key) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined()) Fail(key, "is required");
    return v;
  }
  Napi::Value Value(const char* key) const {
    Napi::Value v = Any(key);
    if (v.IsNull()) Fail(key, "is required (got null)");
    return v;
  }
  int64_t Int(const char* key, int64_t min, int64_t max) const {
    const double d = NumberOf(key, Value(key));
    if (d != std::floor(d) || d < static_cast<double>(min) || d > static_cast<double>(max)) {
      Fail(key, "must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    }
    return static_cast<int64_t>(d);
  }
  double Number(const char* key, double min, double max) const {
    const double d = NumberOf(key, Value(key));
    if (d < min || d > max) Fail(key, "must be a number in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    return d;
  }
  bool Bool(const char* key) const {
    Napi::Value v = Value(key);
    if (!v.IsBoolean()) Fail(key, "must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }
  std::string String(const char* key) const {
    Napi::Value v = Value(key);
    if (!v.IsString()) Fail(key, "must be a string");
    return v.As<Napi::String>().Utf8Value();
  }
  std::vector<std::string> Strings(const char* key) const {
    Napi::Array a = ArrayOf(key);
    std::vector<std::string> out;
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value item = a.Get(i);
      if (!item.IsString()) Fail(key, "must hold only strings");
      out.push_back(item.As<Napi::String>().Utf8Value());
    }
    return out;
  }
  std::vector<double> Numbers(const char* key, double min, double max) const {
    Napi::Array a = ArrayOf(key);
    std::vector<double> out;
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value item = a.Get(i);
      const double d = item.IsNumber() ? item.As<Napi::Number>().DoubleValue() : std::nan("");
      if (!std::isfinite(d) || d < min || d > max) {
        Fail(key, "must hold numbers in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
      }
      out.push_back(d);
    }
    return out;
  }
  Napi::Array ArrayOf(const char* key) const {
    Napi::Value v = Value(key);
    if (!v.IsArray()) Fail(key, "must be an array");
    return v.As<Napi::Array>();
  }

  [[noreturn]] void Fail(const char* key, const std::string& what) const {
    throw MakeError(o_.Env(), "ERR_INVALID_ARGUMENT", where_ + "." + key + " " + what);
  }

 private:
  double NumberOf(const char* key, Napi::Value v) const {
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : std::nan("");
    if (!std::isfinite(d)) Fail(key, "must be a finite number");
    return d;
  }

  Napi::Object o_;
  std::string where_;
};

}  // namespace llamem
