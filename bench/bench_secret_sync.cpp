// Syncing N secrets (default 1,000) to GitHub organization Actions secrets, against the fake
// GitHub over loopback HTTP, in the same run:
//   (a) baseline: what a `gh secret set` loop does: per secret, GET the public key, seal, PUT
//       (2 API calls per secret), through orgd's own HTTPS client so only the call pattern
//       differs;
//   (b) orgd full sync (SecretSync: records in a real JetStream KV, one listing to plan, the
//       key fetched once, one PUT per secret, one listing after to note the target's times);
//   (c) orgd no-change sync (one listing, no writes).
// And what reading a target's records from orgd_sync costs: one record per name (keys, then a
// get each: what SecretSync does) against one record for the whole target (a single get), the
// trade-off docs/secret-sync.md describes.
// A GitHub repository holds at most 100 secrets, an organization 1,000: hence an org target.

#include <sodium.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "bench/bench_support.hpp"
#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/net/https_client.hpp"
#include "daemon/plugin/registry.hpp"
#include "daemon/secrets/secret_sync.hpp"
#include "tests/fakes/fake_github.hpp"

namespace orgd::bench {
namespace {

constexpr const char* kToken = "ghp_benchSecretSync0123456789abcdef";

struct Params {
  std::int64_t secrets = 1000;
  std::int64_t runs = 3;
  // Held on every answer of the fake, for a figure closer to api.github.com's round trips.
  std::int64_t api_latency_ms = 0;
};

struct Figures {
  double seconds = 0;
  std::size_t calls = 0;
  std::size_t writes = 0;
};

std::string secret_name(std::int64_t i) { return fmt::format("SECRET_{:04d}", i); }
std::string secret_value(std::int64_t i) { return fmt::format("bench-value-{}-{}", i, i * 7919); }

std::size_t writes(testing::FakeGithub& github) {
  std::size_t n = 0;
  for (const auto& call : github.calls()) {
    if (call.method != "GET") ++n;
  }
  return n;
}

std::string base64(std::string_view bytes) {
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // the NUL
  return out;
}

std::string unbase64(const std::string& text) {
  std::string out(text.size(), '\0');
  std::size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0) {
    throw std::runtime_error("public key is not base64");
  }
  out.resize(len);
  return out;
}

// (a): per secret, the org's public key, then the sealed PUT, as `gh secret set --org` does.
Figures baseline(const Params& p) {
  testing::FakeGithubServer fake;
  fake.github().add_token(kToken);
  fake.github().set_delay(std::chrono::milliseconds{p.api_latency_ms});
  MetricsRegistry metrics;
  const Environment env(std::map<std::string, std::string>{});
  HttpClientOptions options;
  options.provider = "gh-baseline";
  options.rate_limit_headers = RateLimitHeaders::github;
  auto transport = make_https_transport_factory(metrics, env)(options);
  if (!transport) throw std::runtime_error(transport.error().message);
  auto auth = std::make_shared<const Secret>(Secret::from(std::string("Bearer ") + kToken));
  auto send = [&](const std::string& method, const std::string& path, std::string body) {
    HttpRequest r;
    r.method = method;
    r.url = fake.base_url() + path;
    r.headers = {{"Accept", "application/vnd.github+json"}, {"X-GitHub-Api-Version", "2022-11-28"}};
    if (!body.empty()) r.headers.push_back({"Content-Type", "application/json"});
    r.body = std::move(body);
    r.authorization = auth;
    auto answer = transport.value()->send(std::move(r));
    if (!answer || answer.value().status / 100 != 2) {
      throw std::runtime_error("baseline " + method + " " + path + " failed");
    }
    return std::move(answer.value());
  };
  const auto start = SteadyClock::now();
  for (std::int64_t i = 0; i < p.secrets; ++i) {
    const auto key =
        nlohmann::json::parse(send("GET", "/orgs/acme/actions/secrets/public-key", {}).body);
    const Secret value = Secret::from(secret_value(i));
    auto sealed = seal_to(unbase64(key["key"].get<std::string>()), value);
    if (!sealed) throw std::runtime_error(sealed.error().message);
    nlohmann::json body{{"encrypted_value", base64(sealed.value())},
                        {"key_id", key["key_id"]},
                        {"visibility", "private"}};
    send("PUT", "/orgs/acme/actions/secrets/" + secret_name(i), body.dump());
  }
  Figures f{seconds_since(start), fake.github().calls().size(), writes(fake.github())};
  if (fake.github().secret_value(testing::SecretScope::org("acme"), secret_name(p.secrets - 1)) !=
      secret_value(p.secrets - 1)) {
    throw std::runtime_error("baseline: the fake does not hold the last value");
  }
  return f;
}

struct OrgdFigures {
  Figures full, unchanged;
  double load_seconds = 0;  // SecretSync's read of the records alone (keys + a get each)
  double keys_seconds = 0;  // of which the keys() listing
};

// (b) and (c): SecretSync with orgd_sync in JetStream.
OrgdFigures orgd_sync(const Params& p, jsCtx* js, int run) {
  testing::FakeGithubServer fake;
  fake.github().add_token(kToken);
  fake.github().set_delay(std::chrono::milliseconds{p.api_latency_ms});
  MetricsRegistry metrics;
  const Environment env(std::map<std::string, std::string>{{"GH_TOKEN", kToken}});
  const std::string yaml = "org: acme\nproviders:\n  gh: {type: github, api_url: '" +
                           fake.base_url() +
                           "', token_env: GH_TOKEN}\nrepos:\n  api:\n    secret_targets:\n"
                           "      - {provider: gh, org: true}\n";
  const Config config = load_config_string(yaml, "bench.yaml", env);
  ProviderEnvironment provided;
  provided.org = "acme";
  provided.environment = env;
  provided.http = make_https_transport_factory(metrics, env);
  auto set = ProviderSet::build(config, ProviderRegistry{}, provided);

  auto bucket = KvBucket::open(js, {fmt::format("orgd_sync_bench_{}", run), "", Duration{0}, 1, 1});
  if (!bucket) throw std::runtime_error(bucket.error().message);
  secrets::SyncOptions options;
  options.replica_id = "bench";
  secrets::SecretSync sync{*bucket.value(), Secret::from(std::string(32, 'k')), options};
  std::vector<secrets::DesiredSecret> desired;
  for (std::int64_t i = 0; i < p.secrets; ++i) {
    desired.push_back(
        {secret_name(i), std::make_shared<const Secret>(Secret::from(secret_value(i))), 1, "org"});
  }
  const auto target =
      secrets::SyncTarget::make("gh", set->secret_targets("api").at(0), false, std::move(desired));
  OrgdFigures f;
  auto start = SteadyClock::now();
  auto full = sync.sync({target});
  f.full = {seconds_since(start), fake.github().calls().size(), writes(fake.github())};
  if (!full.in_sync() || full.targets[0].pushed != static_cast<std::size_t>(p.secrets)) {
    throw std::runtime_error("orgd full sync did not push every secret");
  }
  fake.github().clear_calls();
  start = SteadyClock::now();
  auto again = sync.sync({target});
  f.unchanged = {seconds_since(start), fake.github().calls().size(), writes(fake.github())};
  if (!again.in_sync() || again.targets[0].unchanged != static_cast<std::size_t>(p.secrets)) {
    throw std::runtime_error("orgd no-change sync found changes");
  }
  secrets::SyncState state{*bucket.value(), system_clock()};
  start = SteadyClock::now();
  auto loaded = state.load(target.id);
  f.load_seconds = seconds_since(start);
  start = SteadyClock::now();
  auto keys = bucket.value()->keys(target.id + ".>");
  f.keys_seconds = seconds_since(start);
  if (!keys) throw std::runtime_error(keys.error().message);
  if (!loaded || loaded.value().size() != static_cast<std::size_t>(p.secrets)) {
    throw std::runtime_error("records not read back");
  }
  return f;
}

// The alternative layout: the target's records as one JSON value (its size, one get).
std::pair<std::size_t, double> one_record_per_target(const Params& p, jsCtx* js) {
  auto bucket = KvBucket::open(js, {"orgd_sync_bench_single", "", Duration{0}, 1, 1});
  if (!bucket) throw std::runtime_error(bucket.error().message);
  const Secret key = Secret::from(std::string(32, 'k'));
  nlohmann::json all = nlohmann::json::object();
  secrets::SyncRecord r;
  r.version = 1;
  r.scope = "org";
  r.pushed_at = std::chrono::system_clock::now();
  r.target_updated_at = r.pushed_at;
  for (std::int64_t i = 0; i < p.secrets; ++i) {
    r.digest =
        secrets::secret_digest(key, "t", secret_name(i), Secret::from(secret_value(i))).value();
    all[secret_name(i)] = nlohmann::json::parse(secrets::encode_record(r));
  }
  const std::string value = all.dump();
  if (!bucket.value()->put("t", value)) throw std::runtime_error("put of the single record failed");
  const auto start = SteadyClock::now();
  auto got = bucket.value()->get("t");
  const double seconds = seconds_since(start);
  if (!got || !got.value()) throw std::runtime_error("get of the single record failed");
  return {value.size(), seconds};
}

int run(const Params& p) {
  if (sodium_init() < 0) throw std::runtime_error("sodium_init");
  BenchServer server;
  Connection conn = connect(server.url(), "bench-secret-sync", true);
  jsCtx* js = nullptr;
  check(natsConnection_JetStream(&js, conn.get(), nullptr), "jetstream");

  std::vector<double> base_s, full_s, same_s, load_s, keys_s;
  Figures base{}, full{}, same{};
  for (int i = 0; i < p.runs; ++i) {
    base = baseline(p);
    const auto o = orgd_sync(p, js, i);
    full = o.full;
    same = o.unchanged;
    base_s.push_back(base.seconds);
    full_s.push_back(full.seconds);
    same_s.push_back(same.seconds);
    load_s.push_back(o.load_seconds);
    keys_s.push_back(o.keys_seconds);
  }
  const auto [single_bytes, single_s] = one_record_per_target(p, js);
  jsCtx_Destroy(js);

  const double n = static_cast<double>(p.secrets);
  fmt::print(
      "bench_secret_sync: {} secrets to one GitHub organization target, fake GitHub over "
      "loopback HTTP (+{} ms per answer), orgd_sync in JetStream; median of {} runs; {}\n",
      p.secrets, p.api_latency_ms, p.runs, machine_summary());
  auto line = [&](const char* what, double s, const Figures& f) {
    fmt::print("  {:<42} {:>8.3f} s  {:>6} API calls ({:.2f}/secret, {} writes)\n", what, s,
               grouped(f.calls), static_cast<double>(f.calls) / n, grouped(f.writes));
  };
  line("(a) baseline: gh secret set loop", median(base_s), base);
  line("(b) orgd full sync", median(full_s), full);
  line("(c) orgd no-change sync", median(same_s), same);
  fmt::print("  full sync vs baseline: {:.2f}x faster, {:.2f}x fewer API calls\n",
             median(base_s) / median(full_s),
             static_cast<double>(base.calls) / static_cast<double>(full.calls));
  fmt::print(
      "  no-change sync vs baseline: {:.1f}x faster, {:.0f}x fewer API calls, 0 writes\n",
      median(base_s) / median(same_s),
      static_cast<double>(base.calls) / static_cast<double>(std::max<std::size_t>(1, same.calls)));
  fmt::print(
      "  orgd_sync read of {} records: {:.1f} ms one record per name (keys {:.1f} ms, then a "
      "get each); one record per target would be {} KB in one get ({:.1f} ms)\n",
      p.secrets, median(load_s) * 1000, median(keys_s) * 1000, single_bytes / 1024,
      single_s * 1000);
  return 0;
}

}  // namespace
}  // namespace orgd::bench

int main(int argc, char** argv) {
  using namespace orgd::bench;
  try {
    const Flags flags(argc, argv);
    if (flags.help()) {
      std::cout << "bench_secret_sync [--secrets N (1000, at most 1000: an org's limit)] "
                   "[--runs N (3)] [--api-latency-ms N (0): held on every answer of the fake]\n";
      return 0;
    }
    Params p;
    p.secrets = flags.integer("secrets", p.secrets, 1, 1000);
    p.runs = flags.integer("runs", p.runs, 1, 50);
    p.api_latency_ms = flags.integer("api-latency-ms", p.api_latency_ms, 0, 2000);
    return run(p);
  } catch (const std::exception& e) {
    std::cerr << "bench_secret_sync: " << e.what() << "\n";
    return 1;
  }
}
