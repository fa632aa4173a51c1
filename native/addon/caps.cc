// N-API glue of native/core/toa_caps.c: capabilities of the running sidecar (src/caps.ts).
#include <napi.h>

#include "toa_caps.h"

namespace {

// capability masks stay below 2^41: exact as JS numbers
Napi::Value EffectiveCaps(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(toa_caps_effective()));
}

// true when bpf() on held fds still needs CAP_BPF here (sys_bpf's global gate before 5.19)
Napi::Value BpfFdOpsNeedCap(const Napi::CallbackInfo& info) {
  int r = toa_caps_bpf_fd_ops_need_cap();
  if (r < 0) {
    Napi::Error e = Napi::Error::New(info.Env(), std::string("cannot test bpf() without CAP_BPF: ") + strerror(-r));
    throw e;
  }
  return Napi::Boolean::New(info.Env(), r == 1);
}

// restrictCapabilities(keepMask) -> { before, after, threads, unchanged, boundingTrimmed }
Napi::Value RestrictCaps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "restrictCapabilities(keepMask: number)");
  uint64_t keep = static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue());
  struct toa_caps_result res;
  char err[256] = "";
  int r = toa_caps_restrict(keep, 0, &res, err, sizeof(err));
  if (r < 0) throw Napi::Error::New(env, std::string("cannot drop capabilities: ") + err);
  Napi::Object o = Napi::Object::New(env);
  o.Set("before", Napi::Number::New(env, static_cast<double>(res.before)));
  o.Set("after", Napi::Number::New(env, static_cast<double>(res.after)));
  o.Set("threads", Napi::Number::New(env, res.threads));
  o.Set("unchanged", Napi::Number::New(env, res.unchanged));
  o.Set("boundingTrimmed", Napi::Boolean::New(env, res.bounding_trimmed != 0));
  return o;
}

}  // namespace

extern "C" void toa_register_caps(napi_env raw_env, napi_value raw_exports) {
  Napi::Env env(raw_env);
  Napi::Object exports(raw_env, raw_exports);
  exports.Set("effectiveCapabilities", Napi::Function::New(env, EffectiveCaps));
  exports.Set("bpfFdOpsNeedCap", Napi::Function::New(env, BpfFdOpsNeedCap));
  exports.Set("restrictCapabilities", Napi::Function::New(env, RestrictCaps));
}
