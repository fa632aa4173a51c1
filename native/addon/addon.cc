// SPDX-License-Identifier: Apache-2.0
// Thin node-addon-api glue over native/core: converts JS options into a plain
// toa_core_config, runs the reader on its own thread and hands batches of raw
// events to JS as Buffers through a thread-safe function. Decoding happens in TS.
#include <napi.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "toa_core.h"
#include "toa_listen_scan.h"
#include "toa_listen.h"
#include <bpf/bpf.h>
#include <unistd.h>
}

namespace {

// Batches queued for JS but not yet taken: past this the reader drops and counts.
constexpr size_t kMaxQueuedBatches = 4096;

// [{mode, code, message}] for each mode that was refused
Napi::Array RefusalsToJs(Napi::Env env, const std::vector<toa_refusal> &refusals) {
  Napi::Array arr = Napi::Array::New(env, refusals.size());
  for (size_t i = 0; i < refusals.size(); i++) {
    Napi::Object r = Napi::Object::New(env);
    r.Set("mode", toa_mode_name(refusals[i].mode));
    r.Set("code", toa_err_code(refusals[i].err));
    r.Set("message", refusals[i].msg);
    arr.Set(i, r);
  }
  return arr;
}

Napi::Error ProbeError(Napi::Env env, const std::string &code, const std::string &message,
                       const std::vector<toa_refusal> &refusals = {}) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  err.Set("name", Napi::String::New(env, "ProbeError"));
  err.Set("refused", RefusalsToJs(env, refusals));
  return err;
}

struct Batch {
  std::vector<uint8_t> bytes;
  uint32_t count = 0;
};

// Options object -> toa_core_config. The TypeScript config schema (src/config.ts) owns
// ranges and defaults and validates first; this checks only what the C side relies on
// (types, the accept table size, CIDR syntax, a power-of-two ring) and requires every
// key, throwing a TypeError that names the key. cfg.trusted and cfg.cgroup_path point
// into `trusted` and `cgroup`: keep them alive with cfg.
class OptionReader {
 public:
  explicit OptionReader(const Napi::Object &o) : o_(o), env_(o.Env()) {}

  Napi::Value Need(const char *key) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined()) throw Fail(key, "is required");
    return v;
  }
  bool Bool(const char *key) const {
    Napi::Value v = Need(key);
    if (!v.IsBoolean()) throw Fail(key, "must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }
  std::string String(const char *key) const {
    Napi::Value v = Need(key);
    if (!v.IsString()) throw Fail(key, "must be a string");
    return v.As<Napi::String>().Utf8Value();
  }
  // a non-negative integer that fits in uint32_t (ranges are the schema's business)
  uint32_t Uint32(const char *key) const { return ToUint32(Need(key), key); }
  Napi::Array Array(const char *key) const {
    Napi::Value v = Need(key);
    if (!v.IsArray()) throw Fail(key, "must be an array");
    return v.As<Napi::Array>();
  }
  // optional keys (tests and benchmarks only)
  Napi::Value Optional(const char *key) const { return o_.Get(key); }

  uint32_t ToUint32(Napi::Value v, const std::string &key) const {
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!v.IsNumber() || d < 0 || d > 4294967295.0 || d != (double)(uint32_t)d)
      throw Fail(key, "must be an integer in [0, 4294967295]");
    return (uint32_t)d;
  }
  Napi::TypeError Fail(const std::string &key, const std::string &what) const {
    return Napi::TypeError::New(env_, "options." + key + " " + what);
  }

 private:
  Napi::Object o_;
  Napi::Env env_;
};

void ReadConfig(const OptionReader &r, toa_core_config &cfg, std::vector<toa_cidr> &trusted, std::string &cgroup) {
  toa_core_config_default(&cfg);
  std::string mode = r.String("mode");
  cfg.mode = toa_mode_from_name(mode.c_str());
  if (cfg.mode < 0) throw r.Fail("mode", "must be one of auto, fexit, kretprobe, sockops");
  Napi::Array sources = r.Array("toaSources");
  cfg.src_module = cfg.src_packet = false;
  for (uint32_t i = 0; i < sources.Length(); i++) {
    Napi::Value v = sources.Get(i);
    std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
    if (s == "module") cfg.src_module = true;
    else if (s == "packet") cfg.src_packet = true;
    else throw r.Fail("toaSources", "entries must be \"module\" or \"packet\"");
  }
  Napi::Array accept = r.Array("toaAccept");
  if (accept.Length() > TOA_MAX_ACCEPT)
    throw r.Fail("toaAccept", "holds at most " + std::to_string(TOA_MAX_ACCEPT) + " pairs");
  cfg.accept_n = 0;
  for (uint32_t i = 0; i < accept.Length(); i++) {
    Napi::Value e = accept.Get(i);
    if (!e.IsObject()) throw r.Fail("toaAccept", "entries must be {kind, len} objects");
    Napi::Object a = e.As<Napi::Object>();
    uint32_t kind = r.ToUint32(a.Get("kind"), "toaAccept[].kind"), len = r.ToUint32(a.Get("len"), "toaAccept[].len");
    // the kernel's accept table is indexed by kind and knows the two TOA lengths only
    if (kind > 255 || (len != 8 && len != 20)) throw r.Fail("toaAccept", "entries need kind 0..255 and len 8 or 20");
    cfg.accept[cfg.accept_n].kind = (uint8_t)kind;
    cfg.accept[cfg.accept_n].len = (uint8_t)len;
    cfg.accept_n++;
  }
  Napi::Array peers = r.Array("trustedPeers");
  if (peers.Length() > TOA_CORE_MAX_TRUSTED)
    throw r.Fail("trustedPeers", "holds at most " + std::to_string(TOA_CORE_MAX_TRUSTED) + " ranges");
  trusted.resize(peers.Length());
  for (uint32_t i = 0; i < peers.Length(); i++) {
    std::string s = peers.Get(i).ToString().Utf8Value();
    if (toa_parse_cidr(s.c_str(), &trusted[i])) throw r.Fail("trustedPeers", "entry is not a CIDR: " + s);
  }
  cfg.trusted = trusted.data();
  cfg.trusted_n = (int)trusted.size();
  cfg.parse_syn = r.Bool("parseSyn");
  cfg.include_loopback = r.Bool("includeLoopback");
  cfg.merge_window_s = r.Uint32("mergeWindowSec");
  cfg.merge_max_keys = r.Uint32("mergeMaxKeys");
  if (cfg.merge_max_keys < 1) throw r.Fail("mergeMaxKeys", "must be at least 1");
  cfg.ringbuf_bytes = r.Uint32("ringBufferBytes");
  if (cfg.ringbuf_bytes < 4096 || (cfg.ringbuf_bytes & (cfg.ringbuf_bytes - 1)))
    throw r.Fail("ringBufferBytes", "must be a power of two of at least 4096 (a page)");
  cgroup = r.String("cgroupPath");  // "" = the cgroup v2 root
  cfg.cgroup_path = cgroup.c_str();
  cfg.rewrite_peer = r.Bool("rewritePeer");
  Napi::Array ports = r.Array("rewritePorts");
  if (ports.Length() > TOA_CORE_MAX_REWRITE_PORTS)
    throw r.Fail("rewritePorts", "holds at most " + std::to_string(TOA_CORE_MAX_REWRITE_PORTS) + " ports");
  cfg.rewrite_ports_n = 0;
  for (uint32_t i = 0; i < ports.Length(); i++) {
    uint32_t port = r.ToUint32(ports.Get(i), "rewritePorts[]");
    if (port < 1 || port > 65535) throw r.Fail("rewritePorts", "entries must be ports 1..65535");
    cfg.rewrite_ports[cfg.rewrite_ports_n++] = (uint16_t)port;
  }
  cfg.synth = r.Optional("synthetic").ToBoolean();  // optional: benchmarks only
  Napi::Value buffer = r.Optional("buffer");       // optional: "auto" (default) or "perfbuf" (tests)
  cfg.force_perfbuf = buffer.IsString() && buffer.As<Napi::String>().Utf8Value() == "perfbuf";
  Napi::Value conntab = r.Optional("connTableMaxEntries");  // optional: 0/absent = no connection table
  cfg.conntab_max_entries = conntab.IsUndefined() ? 0 : r.ToUint32(conntab, "connTableMaxEntries");
}

// Shared by the probe, its reader thread and the thread-safe function's callbacks; deleted by
// the tsfn finalizer, which runs after the last batch call, so it outlives all three users.
struct ReaderLink {
  class Probe *probe;  // null once the probe was destroyed
  std::atomic<size_t> queued{0};  // batches handed to the tsfn but not yet taken by JS
};

class Probe : public Napi::ObjectWrap<Probe> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Probe",
                       {InstanceMethod("start", &Probe::Start), InstanceMethod("sweep", &Probe::Sweep),
                        InstanceMethod("synthesize", &Probe::Synthesize),
                        InstanceMethod("stop", &Probe::Stop), InstanceMethod("stats", &Probe::Stats),
                        InstanceMethod("connDump", &Probe::ConnDump), InstanceMethod("connFind", &Probe::ConnFind),
                        InstanceMethod("connStats", &Probe::ConnStats)});
  }

  // The constructor only validates and stores options: nothing touches the kernel yet.
  explicit Probe(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Probe>(info) {
    if (!info[0].IsObject()) throw Napi::TypeError::New(info.Env(), "new Probe(options): options object required");
    OptionReader r(info[0].As<Napi::Object>());
    ReadConfig(r, cfg_, trusted_, cgroup_);
    uint32_t poll_ms = r.Uint32("pollIntervalMs");
    if (poll_ms < 1 || poll_ms > INT32_MAX) throw r.Fail("pollIntervalMs", "must be at least 1");
    poll_ms_ = (int)poll_ms;
    batch_max_ = r.Uint32("batchMaxEvents");
    if (batch_max_ < 1) throw r.Fail("batchMaxEvents", "must be at least 1");
  }

  // start() holds a reference on the JS object until the reader is gone, so garbage
  // collection cannot get here while the reader runs. Environment teardown (process or
  // worker exit) can: then stop the reader and wait for it, since it uses `this`.
  ~Probe() override {
    stopping_ = true;
    if (reader_.joinable()) reader_.join();
    if (link_) link_->probe = nullptr;  // the tsfn finalizer may still run later
    if (core_) toa_core_close(core_);
  }

 private:
  static void Log(enum toa_log_level level, const char *msg, void *user) {
    auto *self = static_cast<Probe *>(user);
    std::lock_guard<std::mutex> lock(self->log_mu_);
    if (self->logs_.size() < 256) self->logs_.push_back({level, msg});
  }

  // start(onBatch, onError?): onError(err) runs once if the reader fails for good (the probe
  // then reads nothing more); err has .code like the errors start() throws.
  Napi::Value Start(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (started_) throw ProbeError(env, "EBUSY", "probe already started");
    if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "start(onBatch, onError): onBatch callback required");
    if (!info[1].IsUndefined() && !info[1].IsFunction())
      throw Napi::TypeError::New(env, "start(onBatch, onError): onError must be a function");
    toa_refusal refusals[3];
    int nref = 0;
    int err = toa_core_open(&core_, &cfg_, &Probe::Log, this, refusals, &nref);
    refusals_.assign(refusals, refusals + nref);
    if (err) {
      std::string msg = std::string("failed to attach the probe (") + toa_err_code(err) + ")";
      for (auto &r : refusals_) msg += std::string("\n  ") + toa_mode_name(r.mode) + ": " + r.msg;
      throw ProbeError(env, toa_err_code(err), msg, refusals_);
    }
    if (TestHookBreakReader()) {
      int e = toa_core_test_break_reader(core_);
      if (e) Log(TOA_LOG_WARN, (std::string("test hook: cannot break the reader: ") + strerror(-e)).c_str(), this);
    }
    started_ = true;
    if (info[1].IsFunction()) on_error_ = Napi::Persistent(info[1].As<Napi::Function>());
    link_ = new ReaderLink{this};
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "toa-otel reader", 0, 1, link_,
                                          [](Napi::Env env, ReaderLink *link) {
                                            if (link->probe) link->probe->OnReaderGone(env);
                                            delete link;
                                          });
    Ref();  // ObjectWrap: keep this object alive while the reader runs (OnReaderGone releases it)
    reader_ = std::thread([this] { ReaderLoop(); });
    return env.Undefined();
  }

  // Tests: TOA_OTEL_TEST_BREAK_READER=1 makes the reader's first poll fail for real
  // (its epoll fd is swapped for /dev/null), to check that a dead reader stops the sidecar.
  static bool TestHookBreakReader() {
    const char *v = getenv("TOA_OTEL_TEST_BREAK_READER");
    return v && strcmp(v, "1") == 0;
  }

  // ---- reader thread ----
  static int OnEvent(const toa_event *ev, void *user) {
    auto *self = static_cast<Probe *>(user);
    Batch *b = self->current_;
    if (!b) b = self->current_ = new Batch(), b->bytes.reserve(size_t(self->batch_max_) * sizeof(toa_event));
    const uint8_t *p = reinterpret_cast<const uint8_t *>(ev);
    b->bytes.insert(b->bytes.end(), p, p + sizeof(toa_event));
    if (++b->count >= self->batch_max_) self->Flush();
    return 0;
  }

  void Flush() {
    Batch *b = current_;
    current_ = nullptr;
    if (!b || !b->count) {
      delete b;
      return;
    }
    ReaderLink *link = link_;
    if (link->queued.load() >= kMaxQueuedBatches) {  // JS is not keeping up: count, never block the reader
      dropped_batches_++;
      dropped_events_ += b->count;
      delete b;
      return;
    }
    link->queued++;
    auto deliver = [link](Napi::Env env, Napi::Function cb, Batch *batch) {
      link->queued--;
      if (!env) {  // finalizing: the batch can no longer reach JS
        delete batch;
        return;
      }
      uint32_t count = batch->count;
      Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(
          env, batch->bytes.data(), batch->bytes.size(), [](Napi::Env, uint8_t *, Batch *b) { delete b; }, batch);
      cb.Call({buf, Napi::Number::New(env, count)});
    };
    if (tsfn_.NonBlockingCall(b, deliver) != napi_ok) {
      link->queued--;
      dropped_batches_++;
      dropped_events_ += b->count;
      delete b;
    }
  }

  void ReaderLoop() {
    while (!stopping_) {
      int n = toa_core_poll(core_, poll_ms_, &Probe::OnEvent, this);
      if (n < 0) {  // the core already retried EINTR: the reader cannot go on
        fatal_code_ = toa_err_code(n);
        fatal_ = std::string("cannot poll the kernel event buffer: ") + strerror(-n) + "; no connections are read any more";
        break;
      }
      Flush();
    }
    // Stop: no new records, flush the merge window, drain everything that is left.
    toa_core_detach(core_);
    toa_core_sweep(core_);
    while (toa_core_consume(core_, &Probe::OnEvent, this) > 0) {
    }
    Flush();
    tsfn_.Release();
  }

  // Runs on the JS thread once the reader released the tsfn and every batch was delivered.
  void OnReaderGone(Napi::Env env) {
    if (reader_.joinable()) reader_.join();
    link_ = nullptr;  // the tsfn finalizer deletes it after this returns
    if (core_) {
      toa_core_stats(core_, &final_stats_);
      have_final_stats_ = true;
      toa_core_close(core_);
      core_ = nullptr;
    }
    stopped_ = true;
    if (!fatal_.empty() && !on_error_.IsEmpty()) {
      try {
        on_error_.Call({ProbeError(env, fatal_code_, fatal_).Value()});
      } catch (const Napi::Error &) {
        // an exception from the JS handler must not escape into the finalizer
      }
    } else if (!fatal_.empty()) {
      Log(TOA_LOG_ERROR, fatal_.c_str(), this);  // no handler: at least the next stats() shows it
    }
    on_error_.Reset();
    for (auto &d : stop_waiters_) d.Resolve(env.Undefined());
    stop_waiters_.clear();
    Unref();  // the reader is gone: the JS object may be collected again
  }

  Napi::Value Sweep(const Napi::CallbackInfo &info) {
    if (!core_ || stopping_) return Napi::Number::New(info.Env(), 0);
    int n = toa_core_sweep(core_);
    return Napi::Number::New(info.Env(), n < 0 ? 0 : n);
  }

  // Benchmarks: write N synthetic records through the kernel buffer path.
  Napi::Value Synthesize(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!core_ || stopping_) throw ProbeError(env, "ESTOPPED", "probe is not running");
    int n = toa_core_synthesize(core_, info[0].ToNumber().Uint32Value());
    if (n < 0) throw ProbeError(env, toa_err_code(n), std::string("failed to synthesize records: ") + strerror(-n) + " (start the probe with synthetic: true)");
    return Napi::Number::New(env, n);
  }

  Napi::Value Stop(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    auto deferred = Napi::Promise::Deferred::New(env);
    if (!started_ || stopped_) {
      deferred.Resolve(env.Undefined());
      return deferred.Promise();
    }
    stop_waiters_.push_back(deferred);
    stopping_ = true;  // the reader finishes its poll (<= pollIntervalMs), drains and releases
    return deferred.Promise();
  }

  // Connection table (trace enrichment), kept by the C core from the kernel's records (bpf/toa_conntab.h).
  // connFind(queries: Buffer of n TOA_CONN_QUERY_SIZE-byte queries) -> Buffer of
  // n * TOA_CONN_WAYS entries (key then value; family 0 = none) or null when the table is off.
  // One call per OTLP request: the span enrichment packs every socket peer it needs. An optional
  // second Buffer receives the entries (and is returned): the caller reuses it between requests.
  Napi::Value ConnFind(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!info[0].IsBuffer() || info[0].As<Napi::Buffer<uint8_t>>().Length() % TOA_CONN_QUERY_SIZE != 0)
      throw Napi::TypeError::New(env, "connFind(queries): a Buffer of " + std::to_string(TOA_CONN_QUERY_SIZE) + "-byte queries");
    Napi::Buffer<uint8_t> q = info[0].As<Napi::Buffer<uint8_t>>();
    uint32_t n = (uint32_t)(q.Length() / TOA_CONN_QUERY_SIZE);
    size_t need = (size_t)n * TOA_CONN_WAYS * TOA_CONN_ENTRY_SIZE;
    bool given = info.Length() > 1 && !info[1].IsUndefined();
    if (given && (!info[1].IsBuffer() || info[1].As<Napi::Buffer<uint8_t>>().Length() < need))
      throw Napi::TypeError::New(env, "connFind(queries, out): out must be a Buffer of at least " + std::to_string(need) + " bytes");
    if (!core_ || !cfg_.conntab_max_entries) return env.Null();
    Napi::Buffer<uint8_t> out = given ? info[1].As<Napi::Buffer<uint8_t>>() : Napi::Buffer<uint8_t>::New(env, need);
    int r = toa_core_conn_find(core_, q.Data(), n, out.Data());
    if (r < 0) return env.Null();
    return out;
  }

  // connDump() -> Buffer of every live entry (key then value, TOA_CONN_ENTRY_SIZE bytes each)
  // or null when the table is off / the probe is stopped. Tests and tools only.
  Napi::Value ConnDump(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    uint64_t c[TOA_CT_MAX];
    uint32_t max = 0;
    if (!core_ || !cfg_.conntab_max_entries || toa_core_conn_counters(core_, c, &max)) return env.Null();
    std::vector<uint8_t> buf((size_t)max * TOA_CONN_ENTRY_SIZE);
    int n = toa_core_conn_dump(core_, buf.data(), max);
    if (n < 0) throw ProbeError(env, toa_err_code(-n), std::string("connection table dump failed: ") + strerror(-n));
    return Napi::Buffer<uint8_t>::Copy(env, buf.data(), (size_t)n * TOA_CONN_ENTRY_SIZE);
  }

  // connStats() -> {maxEntries, keySize, valueSize, querySize, ways, counters: {inserted, ...}} or null when off
  Napi::Value ConnStats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    uint64_t c[TOA_CT_MAX];
    uint32_t max = 0;
    if (!core_ || toa_core_conn_counters(core_, c, &max)) return env.Null();
    Napi::Object o = Napi::Object::New(env);
    o.Set("maxEntries", max);
    o.Set("keySize", TOA_CONN_KEY_SIZE);
    o.Set("valueSize", TOA_CONN_VAL_SIZE);
    o.Set("querySize", TOA_CONN_QUERY_SIZE);
    o.Set("ways", TOA_CONN_WAYS);
    o.Set("logSlotsPerCpu", toa_core_conn_log_slots(core_));
    Napi::Object counters = Napi::Object::New(env);
    for (int i = 0; i < TOA_CT_MAX; i++)
      if (toa_conntab_counter_name(i)) counters.Set(toa_conntab_counter_name(i), Napi::Number::New(env, (double)c[i]));
    o.Set("counters", counters);
    return o;
  }

  Napi::Value Stats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    struct toa_core_stats st{};
    if (core_) toa_core_stats(core_, &st);
    else if (have_final_stats_) st = final_stats_;
    Napi::Object o = Napi::Object::New(env);
    o.Set("mode", core_ || have_final_stats_ ? toa_mode_name(st.mode) : "");
    o.Set("bufferKind", st.buffer_kind ? st.buffer_kind : "");
    o.Set("sweepSupported", st.sweep_supported);
    o.Set("refused", RefusalsToJs(env, refusals_));
    Napi::Object counters = Napi::Object::New(env);
    for (int i = 0; i < TOA_CNT_MAX; i++)
      if (toa_counter_name(i)) counters.Set(toa_counter_name(i), Napi::Number::New(env, (double)st.counters[i]));
    o.Set("counters", counters);
    o.Set("droppedBatches", Napi::Number::New(env, (double)dropped_batches_.load()));
    o.Set("droppedEvents", Napi::Number::New(env, (double)dropped_events_.load()));
    Napi::Array progs = Napi::Array::New(env, st.nprogs);
    for (int i = 0; i < st.nprogs; i++) {
      Napi::Object p = Napi::Object::New(env);
      p.Set("name", st.progs[i].name);
      p.Set("runCount", Napi::Number::New(env, (double)st.progs[i].run_cnt));
      p.Set("runTimeNs", Napi::Number::New(env, (double)st.progs[i].run_time_ns));
      progs.Set(i, p);
    }
    o.Set("programs", progs);
    // log lines the core produced since the last call (mode choice, refusals, warnings)
    Napi::Array logs;
    {
      std::lock_guard<std::mutex> lock(log_mu_);
      logs = Napi::Array::New(env, logs_.size());
      for (size_t i = 0; i < logs_.size(); i++) {
        Napi::Object l = Napi::Object::New(env);
        static const char *names[] = {"debug", "info", "warn", "error"};
        l.Set("level", names[logs_[i].first]);
        l.Set("message", logs_[i].second);
        logs.Set(i, l);
      }
      logs_.clear();
    }
    o.Set("logs", logs);
    return o;
  }

  toa_core_config cfg_{};
  std::vector<toa_cidr> trusted_;
  std::string cgroup_;
  int poll_ms_ = 50;
  uint32_t batch_max_ = 4096;
  toa_core *core_ = nullptr;
  std::vector<toa_refusal> refusals_;
  Napi::ThreadSafeFunction tsfn_;
  std::thread reader_;
  std::atomic<bool> stopping_{false};
  bool started_ = false, stopped_ = false;
  Batch *current_ = nullptr;  // reader thread only
  ReaderLink *link_ = nullptr;
  Napi::FunctionReference on_error_;
  std::string fatal_, fatal_code_;  // written by the reader before it releases the tsfn
  std::atomic<uint64_t> dropped_batches_{0}, dropped_events_{0};
  std::vector<Napi::Promise::Deferred> stop_waiters_;
  struct toa_core_stats final_stats_{};
  bool have_final_stats_ = false;
  std::mutex log_mu_;
  std::vector<std::pair<int, std::string>> logs_;
};

Napi::Value Capabilities(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  toa_cap_line lines[16];
  int n = toa_core_capabilities(lines, 16);
  Napi::Array arr = Napi::Array::New(env, n < 0 ? 0 : n);
  for (int i = 0; i < n; i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", lines[i].name);
    o.Set("ok", lines[i].ok);
    o.Set("detail", lines[i].detail);
    arr.Set(i, o);
  }
  return arr;
}

// The C layout of struct toa_event and the header's enum values, so the TS
// decoder never restates them by hand.
Napi::Value Layout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env), fields = Napi::Object::New(env), enums = Napi::Object::New(env);
  auto field = [&](const char *name, size_t off, size_t size) {
    Napi::Object f = Napi::Object::New(env);
    f.Set("offset", Napi::Number::New(env, (double)off));
    f.Set("size", Napi::Number::New(env, (double)size));
    fields.Set(name, f);
  };
#define F(n) field(#n, offsetof(toa_event, n), sizeof(((toa_event *)0)->n))
  F(ts_boot_ns); F(cgroup_id); F(probe_ns); F(pid); F(since_last_s); F(suppressed);
  F(type); F(family); F(mode); F(toa_source); F(toa_kind); F(toa_len); F(toa_trusted); F(flags);
  F(local_port); F(peer_port); F(toa_port); F(reserved); F(local_addr); F(peer_addr); F(toa_addr); F(comm);
#undef F
#define E(n) enums.Set(#n, Napi::Number::New(env, (double)(n)))
  E(TOA_EVENT_ACCEPT); E(TOA_EVENT_SWEEP); E(TOA_FAMILY_IPV4); E(TOA_FAMILY_IPV6);
  E(TOA_MODE_NONE); E(TOA_MODE_FEXIT); E(TOA_MODE_KRETPROBE); E(TOA_MODE_SOCKOPS);
  E(TOA_SOURCE_NONE); E(TOA_SOURCE_MODULE); E(TOA_SOURCE_PACKET_ACK); E(TOA_SOURCE_PACKET_SYN);
  E(TOA_FLAG_V4MAPPED); E(TOA_FLAG_MODULE_AGREES); E(TOA_FLAG_MODULE_DIFFERS); E(TOA_FLAG_TOA_V6); E(TOA_FLAG_REWRITTEN);
  E(TOA_SINCE_LAST_NONE);
#undef E
  o.Set("size", Napi::Number::New(env, (double)sizeof(toa_event)));
  o.Set("fields", fields);
  o.Set("enums", enums);
  return o;
}

// cgroupPath(id: bigint, cgroupRoot: string): {path} below the v2 mount, or {errno}
// (ESTALE when the cgroup is gone, EPERM without CAP_DAC_READ_SEARCH).
Napi::Value CgroupPath(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  bool lossless = true;
  uint64_t id = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
  std::string root = info[1].As<Napi::String>().Utf8Value();
  char path[4096];
  int err = toa_cgroup_path(id, root.c_str(), path, sizeof(path));
  Napi::Object o = Napi::Object::New(env);
  if (err) o.Set("errno", -err);
  else o.Set("path", path);
  return o;
}

// listenerScan(cgroupRoot): the start scan of sockops mode into a scratch map of the same
// layout (benchmarks, diagnostics); the probe runs it itself after attach.
Napi::Value ListenerScan(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string root = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  int fd = bpf_map_create(BPF_MAP_TYPE_HASH, "toa_listen_scan", sizeof(toa_listen_key), sizeof(toa_listen_val), 8192, nullptr);
  if (fd < 0) {
    Napi::Error::New(env, std::string("listenerScan: map create failed: ") + strerror(errno)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  toa_listen_scan_result r;
  int err = toa_listen_scan(fd, nullptr, root.empty() ? nullptr : root.c_str(), &r);
  Napi::Array entries = Napi::Array::New(env);
  toa_listen_key k, next;
  toa_listen_val v;
  for (void *prev = nullptr; !err && !bpf_map_get_next_key(fd, prev, &next); prev = &k) {
    k = next;
    if (bpf_map_lookup_elem(fd, &k, &v)) continue;
    Napi::Object e = Napi::Object::New(env);
    e.Set("netns", Napi::BigInt::New(env, (uint64_t)k.netns));
    e.Set("port", k.port);
    e.Set("pid", v.pid);
    e.Set("cgroupId", Napi::BigInt::New(env, (uint64_t)v.cgroup_id));
    entries.Set(entries.Length(), e);
  }
  close(fd);
  if (err) {
    Napi::Error::New(env, std::string("listenerScan: ") + strerror(-err)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("listeners", r.listeners);
  o.Set("owned", r.owned);
  o.Set("added", r.added);
  o.Set("netns", r.netns);
  o.Set("netnsFailed", r.netns_failed);
  o.Set("netnsProcfs", r.netns_procfs);
  o.Set("entries", entries);
  return o;
}

Napi::Value ClockOffsetNs(const Napi::CallbackInfo &info) {
  return Napi::BigInt::New(info.Env(), (int64_t)toa_clock_offset_ns());
}

// native/addon/caps.cc (C linkage: the same function from inside this unnamed namespace)
extern "C" void toa_register_caps(napi_env env, napi_value exports);

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Probe", Probe::Init(env));
  toa_register_caps(env, exports);
  exports.Set("capabilities", Napi::Function::New(env, Capabilities));
  exports.Set("layout", Napi::Function::New(env, Layout));
  exports.Set("clockOffsetNs", Napi::Function::New(env, ClockOffsetNs));
  exports.Set("cgroupPath", Napi::Function::New(env, CgroupPath));
  exports.Set("listenerScan", Napi::Function::New(env, ListenerScan));
  return exports;
}

}  // namespace

NODE_API_MODULE(toa_otel, Init)
