// Deploy orchestration: a random dependency DAG of R repos (1,000 and 10,000 by default)
// deployed with `all: true` through the `local` provider with `duration: 0s`, so a step takes no
// time of its own and what is measured is orgd's (planning, locks, the record in KV, the lease,
// events, provider calls, the poll interval). The floor is the KV writes such a deploy needs,
// replayed alone with bare nats.c on the same private nats-server, in the same run: the same
// writes, in the same order, with the same sizes, each revision-checked like orgd's.
//
//   bench_deploy [--repos N,...] [--parallel P] [--runs R] [--seed S] [--poll-ms M]
//                [--timeout-s T]
//
// Every flag also reads ORGD_BENCH_<FLAG> (e.g. ORGD_BENCH_REPOS=200). --repos takes a list
// (1,000 and 10,000 by default): each size runs on a server and an orgd of its own, and a last
// line says how each figure grew from the first size to the last.
//
// The first deploy is the census: a plain subscriber on the buckets' subjects ($KV.orgd_deploys.>,
// $KV.orgd_locks.>, $KV.orgd_leases.>) sees every write orgd makes (key, size, put or delete) and
// every direct get. It is not timed into the result (the tap delivers each write a second time).
// One untimed replay follows, so both sides then run against buckets holding what earlier runs
// left (delete markers of the locks). Then R timed deploys alternate with R timed replays.
#include <fmt/format.h>
#include <nats/nats.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <string_view>

#include "bench/bench_support.hpp"
#include "daemon/app/daemon.hpp"
#include "daemon/bus/kv_bucket.hpp"
#include "daemon/bus/streams.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/deploy/deploy_store.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/deploy.pb.h"

namespace orgd::bench {
namespace {

constexpr const char* kOrg = "bench";
constexpr const char* kEnv = "bench";
constexpr int kMaxDependencies = 3;

struct Params {
  std::int64_t repos;
  std::int64_t parallel;
  std::int64_t runs;
  std::int64_t seed;
  std::int64_t poll_ms;
  std::int64_t timeout_s;
};

std::string repo_name(std::int64_t i) { return fmt::format("repo-{:05}", i); }

// Each repo depends on up to kMaxDependencies distinct earlier repos (so the graph is acyclic),
// drawn from a seeded generator: the same seed gives the same graph on every machine.
std::vector<std::vector<std::int64_t>> random_dag(const Params& p) {
  std::mt19937_64 rng(static_cast<std::uint64_t>(p.seed));
  std::vector<std::vector<std::int64_t>> deps(static_cast<std::size_t>(p.repos));
  for (std::int64_t i = 1; i < p.repos; ++i) {
    const std::int64_t most = std::min<std::int64_t>(kMaxDependencies, i);
    const auto count = std::uniform_int_distribution<std::int64_t>(0, most)(rng);
    std::set<std::int64_t> chosen;
    std::uniform_int_distribution<std::int64_t> earlier(0, i - 1);
    while (static_cast<std::int64_t>(chosen.size()) < count) chosen.insert(earlier(rng));
    deps[static_cast<std::size_t>(i)].assign(chosen.begin(), chosen.end());
  }
  return deps;
}

std::string daemon_config(const Params& p, const std::vector<std::vector<std::int64_t>>& dag,
                          const std::string& url, const std::string& data_dir) {
  std::string yaml = fmt::format(
      "org: {}\nnats:\n  urls: [{}]\n  data_dir: {}\nhttp:\n  enabled: false\nlog:\n"
      "  level: warn\ndeploy:\n  parallel: {}\n  health_gate: false\n  lease_ttl: 15s\n"
      "providers:\n  local: {{type: local}}\nrepos:\n",
      kOrg, url, data_dir, p.parallel);
  for (std::size_t r = 0; r < dag.size(); ++r) {
    yaml += fmt::format("  {}:\n", repo_name(static_cast<std::int64_t>(r)));
    if (!dag[r].empty()) {
      yaml += "    depends_on: [";
      for (std::size_t d = 0; d < dag[r].size(); ++d) {
        yaml += (d > 0 ? ", " : "") + repo_name(dag[r][d]);
      }
      yaml += "]\n";
    }
    yaml += fmt::format("    deploy:\n      {}: {{provider: local, duration: 0s}}\n", kEnv);
  }
  return yaml;
}

// ---- what a deploy writes ---------------------------------------------------------------------

enum class Bucket { deploys = 0, locks = 1, leases = 2 };
constexpr const char* kBucketNames[] = {deploy::kDeploysBucket, deploy::kLocksBucket,
                                        deploy::kLeasesBucket};

struct KvWrite {
  Bucket bucket;
  std::string key;
  std::size_t size = 0;
  bool remove = false;  // a delete marker (KV-Operation: DEL)
};

// A plain subscriber on the buckets' subjects: every publish to a bucket reaches it too, so it
// sees each write orgd makes, in order (orgd writes from one connection). A write the stream
// refused (a lost compare-and-set) would be seen as well: run() checks the count against the
// streams' sequence numbers. Direct gets are counted the same way.
class KvTap {
 public:
  explicit KvTap(const std::string& url) : conn_(connect(url, "bench-kv-tap", false)) {
    for (int b = 0; b < 3; ++b) {
      contexts_[b] = {this, static_cast<Bucket>(b)};
      add(fmt::format("$KV.{}.>", kBucketNames[b]), &KvTap::on_write, &contexts_[b]);
    }
    add("$JS.API.DIRECT.GET.>", &KvTap::on_read, this);
    check(natsConnection_Flush(conn_.get()), "flush");
  }

  std::size_t writes_seen() const {
    std::lock_guard lock(mutex_);
    return writes_.size();
  }
  std::vector<KvWrite> writes() const {
    std::lock_guard lock(mutex_);
    return writes_;
  }
  std::uint64_t reads() const {
    std::lock_guard lock(mutex_);
    return reads_;
  }

 private:
  struct Context {
    KvTap* tap = nullptr;
    Bucket bucket = Bucket::deploys;
  };

  void add(const std::string& subject, natsMsgHandler handler, void* closure) {
    natsSubscription* raw = nullptr;
    check(natsConnection_Subscribe(&raw, conn_.get(), subject.c_str(), handler, closure),
          "subscribe");
    subs_.emplace_back(raw);
    // A 1,000-repo census is a few hundred MB of records: hold it all rather than drop.
    check(natsSubscription_SetPendingLimits(raw, 10'000'000, 1 << 30), "pending limits");
  }

  static void on_write(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* context = static_cast<Context*>(closure);
    KvWrite write;
    write.bucket = context->bucket;
    const std::string_view subject = natsMsg_GetSubject(msg);
    const std::size_t prefix = 5 + std::strlen(kBucketNames[static_cast<int>(write.bucket)]);
    write.key = std::string(subject.substr(std::min(prefix, subject.size())));
    write.size = static_cast<std::size_t>(natsMsg_GetDataLength(msg));
    const char* op = nullptr;
    write.remove = natsMsgHeader_Get(msg, "KV-Operation", &op) == NATS_OK;
    natsMsg_Destroy(msg);
    std::lock_guard lock(context->tap->mutex_);
    context->tap->writes_.push_back(std::move(write));
  }

  static void on_read(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* tap = static_cast<KvTap*>(closure);
    const bool ours =
        std::string_view(natsMsg_GetSubject(msg)).find(".KV_orgd_") != std::string_view::npos;
    natsMsg_Destroy(msg);
    std::lock_guard lock(tap->mutex_);
    if (ours) ++tap->reads_;
  }

  Connection conn_;
  std::vector<Subscription> subs_;
  Context contexts_[3];
  mutable std::mutex mutex_;  // guards writes_, reads_
  std::vector<KvWrite> writes_;
  std::uint64_t reads_ = 0;
};

// What the census found, by kind.
struct Census {
  std::vector<KvWrite> writes;  // the deploy's, in order (the scheduler's lease left out)
  std::uint64_t reads = 0;
  std::size_t record = 0, record_bytes = 0, record_max = 0;
  std::size_t lock_create = 0, lock_renew = 0, lock_delete = 0;
  std::size_t active = 0, lease = 0;
  std::size_t bytes = 0, largest = 0;  // every value written, the lease included
};

Census summarize(std::vector<KvWrite> all, std::uint64_t reads) {
  Census c;
  c.reads = reads;
  std::set<std::string> locks_seen;
  for (auto& w : all) {
    if (w.bucket == Bucket::leases && w.key == deploy::kSchedulerLease) continue;
    c.bytes += w.size;
    c.largest = std::max(c.largest, w.size);
    switch (w.bucket) {
      case Bucket::deploys:
        if (w.key.rfind("active.", 0) == 0) {
          ++c.active;
        } else {
          ++c.record;
          c.record_bytes += w.size;
          c.record_max = std::max(c.record_max, w.size);
        }
        break;
      case Bucket::locks:
        if (w.remove) {
          ++c.lock_delete;
          locks_seen.erase(w.key);
        } else if (locks_seen.insert(w.key).second) {
          ++c.lock_create;
        } else {
          ++c.lock_renew;
        }
        break;
      case Bucket::leases:
        ++c.lease;
        break;
    }
    c.writes.push_back(std::move(w));
  }
  return c;
}

// ---- the deploy side --------------------------------------------------------------------------

struct JsDeleter {
  void operator()(jsCtx* js) const { jsCtx_Destroy(js); }
};
using JetStream = std::unique_ptr<jsCtx, JsDeleter>;

JetStream jetstream(natsConnection* conn) {
  jsOptions opts;
  jsOptions_Init(&opts);
  opts.Wait = 10000;
  jsCtx* js = nullptr;
  check(natsConnection_JetStream(&js, conn, &opts), "jetstream");
  return JetStream(js);
}

std::uint64_t last_sequence(jsCtx* js, const std::string& stream) {
  jsStreamInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  check(js_GetStreamInfo(&info, js, stream.c_str(), nullptr, &err), stream.c_str());
  const std::uint64_t seq = info->State.LastSeq;
  jsStreamInfo_Destroy(info);
  return seq;
}

// Messages stored in the three buckets and in ORGD_EVENTS (by sequence: deletes count too).
struct StreamMarks {
  std::uint64_t kv[3] = {0, 0, 0};
  std::uint64_t events = 0;

  static StreamMarks now(jsCtx* js) {
    StreamMarks m;
    for (int b = 0; b < 3; ++b) m.kv[b] = last_sequence(js, std::string("KV_") + kBucketNames[b]);
    m.events = last_sequence(js, kEventsStream);
    return m;
  }
  std::uint64_t kv_total() const { return kv[0] + kv[1] + kv[2]; }
};

struct DeployResult {
  std::string deploy_id;
  std::size_t waves = 0;
  double finished_s = 0;        // request sent -> `finished` event received
  double done_s = 0;            // request sent -> run over (locks, active key, lease released)
  std::uint64_t kv_writes = 0;  // stored in the three buckets meanwhile
  std::uint64_t events = 0;     // stored in ORGD_EVENTS meanwhile
};

class DeployDriver {
 public:
  DeployDriver(const std::string& url, Daemon& daemon, const Params& p)
      : conn_(connect(url, "bench-client", true)),
        js_(jetstream(conn_.get())),
        daemon_(daemon),
        p_(p) {
    natsSubscription* raw = nullptr;
    const std::string finished = fmt::format("org.{}.events.deploy.*.finished", kOrg);
    check(natsConnection_SubscribeSync(&raw, conn_.get(), finished.c_str()), "subscribe");
    finished_.reset(raw);
    check(natsConnection_Flush(conn_.get()), "flush");
  }

  jsCtx* js() { return js_.get(); }

  DeployResult deploy() {
    DeployResult r;
    const StreamMarks before = StreamMarks::now(js_.get());
    const std::string subject = fmt::format("org.{}.api.deploy", kOrg);
    const std::string body = fmt::format(R"({{"all":true,"env":"{}"}})", kEnv);
    const auto start = SteadyClock::now();
    natsMsg* reply = nullptr;
    check(natsConnection_Request(&reply, conn_.get(), subject.c_str(), body.data(),
                                 static_cast<int>(body.size()), 120'000),
          "P.api.deploy");
    const std::string data(natsMsg_GetData(reply),
                           static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
    const char* error = nullptr;
    const bool failed = natsMsgHeader_Get(reply, "Nats-Service-Error", &error) == NATS_OK;
    const std::string error_text = failed && error != nullptr ? error : "";
    natsMsg_Destroy(reply);
    if (failed) throw std::runtime_error("P.api.deploy answered: " + error_text + " " + data);
    v1::DeployAccepted accepted;
    if (!decode(data, Encoding::json, accepted, 1 << 24)) {
      throw std::runtime_error("P.api.deploy: cannot read the reply: " + data.substr(0, 200));
    }
    r.deploy_id = accepted.deploy_id();
    r.waves = static_cast<std::size_t>(accepted.waves_size());

    const auto deadline = start + std::chrono::seconds(p_.timeout_s);
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
      natsMsg* msg = nullptr;
      if (left.count() <= 0 ||
          natsSubscription_NextMsg(&msg, finished_.get(), left.count()) != NATS_OK) {
        throw std::runtime_error(
            fmt::format("deploy {} did not finish within {} s", r.deploy_id, p_.timeout_s));
      }
      v1::DeployEvent event;
      const bool read = static_cast<bool>(
          decode(std::string_view(natsMsg_GetData(msg),
                                  static_cast<std::size_t>(natsMsg_GetDataLength(msg))),
                 Encoding::json, event, 1 << 20));
      natsMsg_Destroy(msg);
      if (!read || event.deploy_id() != r.deploy_id) continue;
      r.finished_s = seconds_since(start);
      if (event.state() != v1::DeployRecord::succeeded) {
        throw std::runtime_error(fmt::format("deploy {} finished {}", r.deploy_id,
                                             v1::DeployRecord::State_Name(event.state())));
      }
      break;
    }
    // The run releases its locks, active key and lease after `finished`: the next deploy needs
    // the locks, and the baseline replays those writes too.
    if (!wait_for([&] { return daemon_.orchestrator()->running() == 0; }, 60s)) {
      throw std::runtime_error("deploy " + r.deploy_id + " did not release its locks");
    }
    r.done_s = seconds_since(start);
    const StreamMarks after = StreamMarks::now(js_.get());
    r.kv_writes = after.kv_total() - before.kv_total();
    r.events = after.events - before.events;
    return r;
  }

 private:
  Connection conn_;
  JetStream js_;
  Subscription finished_;
  Daemon& daemon_;
  const Params& p_;
};

// ---- the baseline -----------------------------------------------------------------------------

// The census's writes, replayed with bare nats.c into three buckets made like orgd's (ttl,
// history and replicas read from orgd's streams; the same storage): a put for the active key, as
// orgd does; kvStore_Create for a key's first write and kvStore_Update against its previous
// revision after that; kvStore_Delete for deletes. Sequential, one connection with SendAsap (as
// orgd's).
class KvReplay {
 public:
  explicit KvReplay(const std::string& url)
      : conn_(connect(url, "bench-baseline-kv", true)), js_(jetstream(conn_.get())) {
    for (int b = 0; b < 3; ++b) {
      const std::string stream = std::string("KV_") + kBucketNames[b];
      jsStreamInfo* info = nullptr;
      jsErrCode err = static_cast<jsErrCode>(0);
      check(js_GetStreamInfo(&info, js_.get(), stream.c_str(), nullptr, &err), stream.c_str());
      BucketSpec spec;
      spec.name = fmt::format("bench_{}", kBucketNames[b] + 5);  // orgd_x -> bench_x
      spec.description = "bench_deploy baseline";
      spec.ttl =
          std::chrono::duration_cast<Duration>(std::chrono::nanoseconds(info->Config->MaxAge));
      spec.history = static_cast<int>(info->Config->MaxMsgsPerSubject);
      spec.replicas = static_cast<int>(info->Config->Replicas);
      jsStreamInfo_Destroy(info);
      auto opened = KvBucket::open(js_.get(), spec);
      if (!opened) throw std::runtime_error(opened.error().message);
      check(js_KeyValue(&kv_[b], js_.get(), spec.name.c_str()), "js_KeyValue");
    }
  }
  ~KvReplay() {
    for (auto* kv : kv_) kvStore_Destroy(kv);
  }
  KvReplay(const KvReplay&) = delete;
  KvReplay& operator=(const KvReplay&) = delete;

  struct Timing {
    double total_s = 0;
    double record_s = 0;  // of which the writes of the record (deploy.<id>)
  };

  // Times the whole sequence. `census_id` in keys becomes `run_id`, so every replay writes a
  // record of its own, as every deploy does.
  Timing replay(const std::vector<KvWrite>& writes, const std::string& census_id,
                const std::string& run_id) {
    std::size_t largest = 0;
    for (const auto& w : writes) largest = std::max(largest, w.size);
    if (payload_.size() < largest) payload_.assign(largest, 'x');
    std::vector<std::string> keys;
    keys.reserve(writes.size());
    for (const auto& w : writes) {
      std::string key = w.key;
      if (auto at = key.find(census_id); at != std::string::npos) {
        key.replace(at, census_id.size(), run_id);
      }
      keys.push_back(std::move(key));
    }
    std::map<std::string, std::uint64_t> revisions[3];
    Timing timing;
    const auto start = SteadyClock::now();
    for (std::size_t i = 0; i < writes.size(); ++i) {
      const KvWrite& w = writes[i];
      const bool record = w.bucket == Bucket::deploys && keys[i].rfind("deploy.", 0) == 0;
      const auto write_start = SteadyClock::now();
      const int b = static_cast<int>(w.bucket);
      kvStore* kv = kv_[b];
      const char* key = keys[i].c_str();
      const int len = static_cast<int>(w.size);
      std::uint64_t& revision = revisions[b][keys[i]];
      if (w.remove) {
        check(kvStore_Delete(kv, key), "baseline kvStore_Delete");
        revision = 0;
      } else if (w.bucket == Bucket::deploys &&
                 (keys[i].rfind("active.", 0) == 0 || keys[i].rfind("index.", 0) == 0)) {
        // Keys that outlive one deploy (the active key, the recent-deploys index): a write
        // whatever the revision, as the replay does not carry revisions from run to run.
        check(kvStore_Put(&revision, kv, key, payload_.data(), len), "baseline kvStore_Put");
      } else if (revision == 0) {
        check(kvStore_Create(&revision, kv, key, payload_.data(), len), "baseline kvStore_Create");
      } else {
        check(kvStore_Update(&revision, kv, key, payload_.data(), len, revision),
              "baseline kvStore_Update");
      }
      if (record) timing.record_s += seconds_since(write_start);
    }
    timing.total_s = seconds_since(start);
    return timing;
  }

 private:
  Connection conn_;
  JetStream js_;
  kvStore* kv_[3] = {nullptr, nullptr, nullptr};
  std::string payload_;
};

// ---- report -----------------------------------------------------------------------------------

std::string seconds_text(double s) {
  return s >= 1 ? fmt::format("{:.2f} s", s) : fmt::format("{:.0f} ms", s * 1000);
}

std::string runs_text(const std::vector<double>& v) {
  std::string out;
  for (double s : v) out += (out.empty() ? "" : " · ") + seconds_text(s);
  return out;
}

// One size's figures, for the growth line.
struct Figure {
  std::int64_t repos = 0;
  double orgd_s = 0, base_s = 0;
  std::size_t writes = 0, bytes = 0, largest = 0;
};

Figure measure(const Params& p) {
  logging::setup(LogConfig{"warn", "text"});
  BenchServer server;
  ScratchDir data_dir("orgd-bench-deploy");
  const auto dag = random_dag(p);
  std::size_t edges = 0;
  for (const auto& d : dag) edges += d.size();

  const auto startup = SteadyClock::now();
  Config config = load_config_string(daemon_config(p, dag, server.url(), data_dir.path().string()),
                                     "bench_deploy", Environment());
  const double config_s = seconds_since(startup);
  logging::setup(config.log);
  DaemonOptions options;
  options.deploy_poll_interval = std::chrono::milliseconds(p.poll_ms);
  Daemon daemon(std::move(config), options, Environment());
  daemon.start();
  if (!wait_for([&] { return daemon.ready() && daemon.orchestrator()->attached(); }, 30s)) {
    throw std::runtime_error("orgd did not become ready within 30 s");
  }
  const double startup_s = seconds_since(startup);
  DeployDriver driver(server.url(), daemon, p);

  // The census deploy, tapped.
  Census census;
  DeployResult census_run;
  {
    KvTap tap(server.url());
    const StreamMarks before = StreamMarks::now(driver.js());
    census_run = driver.deploy();
    const StreamMarks after = StreamMarks::now(driver.js());
    const std::uint64_t stored = after.kv_total() - before.kv_total();
    // The tap may see more (a scheduler lease renewal since), never fewer.
    if (!wait_for([&] { return tap.writes_seen() >= stored; }, 30s)) {
      throw std::runtime_error(fmt::format("census: the tap saw {} writes, the buckets stored {}",
                                           tap.writes_seen(), stored));
    }
    census = summarize(tap.writes(), tap.reads());
  }
  const std::size_t census_writes = census.writes.size();

  fmt::print(
      "bench_deploy: {} repos in a random DAG (seed {}, up to {} earlier repos each: {} edges, "
      "{} waves), `local` provider with duration 0s, parallel {}, poll {} ms, health gate off; "
      "{} timed deploys alternating with the baseline, after 1 census deploy\n"
      "machine: {}; nats-server at {}\n"
      "  start-up: {} to ready, of which {} loading the config\n",
      grouped(static_cast<std::uint64_t>(p.repos)), p.seed, kMaxDependencies, grouped(edges),
      census_run.waves, p.parallel, p.poll_ms, p.runs, machine_summary(), server.url(),
      seconds_text(startup_s), seconds_text(config_s));
  fmt::print(
      "  census (deploy {}, tapped, {}): {} KV writes = record {} (mean {} B, largest {} B, "
      "{} MB in all) + locks {} create, {} renew, {} delete + active key {} + lease {}; "
      "{} KV gets; {} events\n"
      "  bytes written to KV by the deploy: {} ({:.0f} B a repo), largest value {} B\n",
      census_run.deploy_id, seconds_text(census_run.done_s), grouped(census_writes),
      grouped(census.record), grouped(census.record == 0 ? 0 : census.record_bytes / census.record),
      grouped(census.record_max), fmt::format("{:.1f}", census.record_bytes / 1e6),
      grouped(census.lock_create), grouped(census.lock_renew), grouped(census.lock_delete),
      census.active, census.lease, grouped(census.reads), grouped(census_run.events),
      grouped(census.bytes), static_cast<double>(census.bytes) / static_cast<double>(p.repos),
      grouped(census.largest));
  std::fflush(stdout);

  KvReplay replay(server.url());
  replay.replay(census.writes, census_run.deploy_id, "replay-warmup");

  std::vector<double> done_s, finished_s, base_s, base_record_s;
  std::vector<std::uint64_t> kv_writes;
  for (std::int64_t i = 0; i < p.runs; ++i) {
    const auto r = driver.deploy();
    done_s.push_back(r.done_s);
    finished_s.push_back(r.finished_s);
    kv_writes.push_back(r.kv_writes);
    const auto timing =
        replay.replay(census.writes, census_run.deploy_id, fmt::format("replay-{}", i));
    base_s.push_back(timing.total_s);
    base_record_s.push_back(timing.record_s);
  }
  const auto conflicts = daemon.metrics().counter("orgd_deploy_commit_conflicts_total", "").value();
  daemon.stop();

  const double n = static_cast<double>(p.repos);
  const double orgd = median(done_s);
  const double base = median(base_s);
  std::string writes_text;
  for (auto w : kv_writes) writes_text += (writes_text.empty() ? "" : " · ") + grouped(w);
  fmt::print(
      "  baseline  nats.c kvStore, the census's {} writes replayed : {:>9}  ({:.0f} µs a "
      "write, {} of it the record's {} writes; runs: {})\n",
      grouped(census_writes), seconds_text(base), base * 1e6 / static_cast<double>(census_writes),
      seconds_text(median(base_record_s)), grouped(census.record), runs_text(base_s));
  fmt::print(
      "  orgd      P.api.deploy all, until locks released    : {:>9}  (`finished` at {}; "
      "runs: {})\n",
      seconds_text(orgd), seconds_text(median(finished_s)), runs_text(done_s));
  fmt::print(
      "  per step: orgd {:.0f} µs, baseline {:.0f} µs; {:.0f} steps/s; {:.2f} KV writes "
      "a step (stored per timed run: {}, scheduler lease included); {:.0f} commit "
      "conflicts\n",
      orgd * 1e6 / n, base * 1e6 / n, n / orgd, static_cast<double>(census_writes) / n, writes_text,
      conflicts);
  fmt::print("  ratio orgd/baseline: {:.2f}  (medians)\n", base > 0 ? orgd / base : 0);
  std::fflush(stdout);
  return Figure{p.repos, orgd, base, census_writes, census.bytes, census.largest};
}

int run(int argc, char** argv) {
  Flags flags(argc, argv);
  if (flags.help()) {
    std::puts(
        "bench_deploy [--repos N,...=1000,10000] [--parallel P=8] [--runs R=3] [--seed S=1] "
        "[--poll-ms M=5] [--timeout-s T=600]\n(each flag also from ORGD_BENCH_<FLAG>)");
    return 0;
  }
  Params p;
  const auto sizes = flags.integers("repos", {1000, 10000}, 1, 99'999);
  p.parallel = flags.integer("parallel", 8, 1, 1000);
  p.runs = flags.integer("runs", 3, 1, 100);
  p.seed = flags.integer("seed", 1, 0, std::numeric_limits<std::int64_t>::max());
  p.poll_ms = flags.integer("poll-ms", 5, 1, 10'000);
  p.timeout_s = flags.integer("timeout-s", 600, 1, 86'400);
  if (*std::max_element(sizes.begin(), sizes.end()) >= 5000) {
    fmt::print(
        "note: a 10,000-repo size takes 4-5 minutes with --runs 1 on 2 cores (a census deploy, "
        "a warm-up replay, then each run's deploy and replay); --repos 1000 runs the small size "
        "alone\n\n");
    std::fflush(stdout);
  }
  std::vector<Figure> all;
  for (auto repos : sizes) {
    p.repos = repos;
    all.push_back(measure(p));
    fmt::print("\n");
  }
  if (all.size() > 1) {
    const Figure& a = all.front();
    const Figure& b = all.back();
    const auto per_repo = [](const Figure& f) {
      return static_cast<double>(f.bytes) / static_cast<double>(f.repos);
    };
    fmt::print(
        "bench_deploy growth {} → {} repos (×{:.0f}): orgd deploy ×{:.1f}, baseline ×{:.1f}; "
        "ratio orgd/baseline {:.2f} → {:.2f}; KV writes ×{:.1f}; bytes written ×{:.1f} ({:.0f} → "
        "{:.0f} B a repo); largest value {} B → {} B\n",
        grouped(static_cast<std::uint64_t>(a.repos)), grouped(static_cast<std::uint64_t>(b.repos)),
        static_cast<double>(b.repos) / static_cast<double>(a.repos), b.orgd_s / a.orgd_s,
        b.base_s / a.base_s, a.orgd_s / a.base_s, b.orgd_s / b.base_s,
        static_cast<double>(b.writes) / static_cast<double>(a.writes),
        static_cast<double>(b.bytes) / static_cast<double>(a.bytes), per_repo(a), per_repo(b),
        grouped(a.largest), grouped(b.largest));
  }
  return 0;
}

}  // namespace
}  // namespace orgd::bench

int main(int argc, char** argv) {
  try {
    return orgd::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_deploy: " << e.what() << "\n";
    return 2;
  }
}
