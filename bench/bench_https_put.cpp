// Secret-PUT-like requests (a JSON body of a sealed value, an Authorization header, 204 back)
// to a loopback FakeHttpServer: through HttpsClient, and through a minimal keep-alive
// Boost.Beast client doing the same requests on one connection, alternating, in the same run.
// The ratio is what the client's pooling, limits, breaker, rate-limit bookkeeping and metrics
// cost per request over the bare protocol work.

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <iostream>

#include "bench/bench_support.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/net/https_client.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/plugin/registry.hpp"
#include "tests/fakes/fake_github.hpp"
#include "tests/fakes/http_server.hpp"
#include "tests/support/test_pki.hpp"

namespace orgd::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;

struct Params {
  std::int64_t requests = 2000;
  std::int64_t warmup = 200;
  bool tls = true;
};

// GitHub API calls the github provider makes per operation, counted by the fake GitHub: a
// secret put (its public key fetched once per target and cached), and a deploy step from dispatch
// to a successful run read twice, with and without return_run_details.
void api_calls_per_operation() {
  constexpr int kPuts = 100;
  constexpr int kSteps = 10;
  for (const bool run_details : {true, false}) {
    testing::FakeGithubServer fake;
    fake.github().add_token("ghp_bench");
    fake.github().set_return_run_details_supported(run_details);
    fake.github().set_run_name("deploy.yml", "deploy ${{ inputs.deploy_id }}");
    fake.github().complete_runs_after_polls(2, "success");
    const Environment env(std::map<std::string, std::string>{{"GH_TOKEN", "ghp_bench"}});
    std::string yaml = "org: acme\nproviders:\n  gh: {type: github, api_url: '" + fake.base_url() +
                       "', token_env: GH_TOKEN}\nrepos:\n  api:\n    secret_targets:\n"
                       "      - {provider: gh}\n    deploy:\n      prod: {provider: gh, workflow: "
                       "deploy.yml, poll_interval: 1s, inputs: {deploy_id: '${ORGD_DEPLOY_ID}'}}\n";
    const Config config = load_config_string(yaml, "bench.yaml", env);
    MetricsRegistry metrics;
    ProviderEnvironment provided;
    provided.org = "acme";
    provided.environment = env;
    provided.http = make_https_transport_factory(metrics, env);
    const auto inventory = deploy::Inventory::build(config, ProviderRegistry{}, provided);
    if (run_details) {
      auto& secrets = *inventory->providers().secret_targets("api").at(0);
      fake.github().clear_calls();
      for (int i = 0; i < kPuts; ++i) {
        if (!secrets.put("SECRET_" + std::to_string(i), Secret::from("value"))) {
          throw std::runtime_error("secret put failed");
        }
      }
      fmt::print("  github API calls per secret put ({} puts, one target): {:.2f}\n", kPuts,
                 static_cast<double>(fake.github().calls().size()) / kPuts);
    }
    DeployTarget& target = *inventory->target("api", "prod")->target;
    fake.github().clear_calls();
    int polls = 0;
    for (int i = 0; i < kSteps; ++i) {
      DeployContext c;
      c.repo = "api";
      c.env = "prod";
      c.ref = "v1";
      c.deploy_id = "bench-" + std::to_string(i);
      auto progress = target.start(c, {});
      while (progress && progress.value().status == DeployStatus::running) {
        c.handle = progress.value().handle;
        progress = target.poll(c);
        ++polls;
      }
      if (!progress || progress.value().status != DeployStatus::succeeded) {
        throw std::runtime_error("deploy step did not succeed");
      }
    }
    fmt::print("  github API calls per deploy step ({} steps, return_run_details {}): {:.1f} "
               "({:.1f} of them polls)\n",
               kSteps, run_details ? "supported" : "unsupported",
               static_cast<double>(fake.github().calls().size()) / kSteps,
               static_cast<double>(polls) / kSteps);
  }
}

std::string micros(double us) {
  return us >= 1000 ? fmt::format("{:.2f} ms", us / 1000) : fmt::format("{:.0f} µs", us);
}

// The baseline: one kept-alive connection, a request written and its response read, nothing
// else (no pool, no limits, no metrics).
class BareClient {
 public:
  BareClient(int port, asio::ssl::context* tls) : stream_(ioc_), tls_stream_() {
    asio::ip::tcp::resolver resolver{ioc_};
    const auto endpoints = resolver.resolve("127.0.0.1", std::to_string(port));
    if (tls != nullptr) {
      tls_stream_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc_, *tls);
      beast::get_lowest_layer(*tls_stream_).connect(endpoints);
      SSL_set1_host(tls_stream_->native_handle(), "127.0.0.1");
      tls_stream_->handshake(asio::ssl::stream_base::client);
    } else {
      stream_.connect(endpoints);
    }
  }

  int put(const http::request<http::string_body>& request) {
    http::response<http::string_body> response;
    buffer_.clear();
    if (tls_stream_) {
      http::write(*tls_stream_, request);
      http::read(*tls_stream_, buffer_, response);
    } else {
      http::write(stream_, request);
      http::read(stream_, buffer_, response);
    }
    return static_cast<int>(response.result_int());
  }

 private:
  asio::io_context ioc_;
  beast::tcp_stream stream_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_stream_;
  beast::flat_buffer buffer_;
};

int run(int argc, char** argv) {
  Flags flags(argc, argv);
  if (flags.help()) {
    std::cout << "bench_https_put [--requests N] [--warmup N] [--tls 0|1]\n"
                 "  (or ORGD_BENCH_REQUESTS, ORGD_BENCH_WARMUP, ORGD_BENCH_TLS)\n";
    return 0;
  }
  Params p;
  p.requests = flags.integer("requests", p.requests, 1, 10'000'000);
  p.warmup = flags.integer("warmup", p.warmup, 0, 1'000'000);
  p.tls = flags.integer("tls", 1, 0, 1) == 1;

  testing::TestPki pki;
  if (p.tls && !pki.make()) throw std::runtime_error("openssl could not make the test PKI");
  testing::FakeHttpServer::Options server_options;
  if (p.tls) {
    server_options.tls = true;
    server_options.cert_file = pki.path("server.pem");
    server_options.key_file = pki.path("server-key.pem");
  }
  testing::FakeHttpServer server{[](const testing::FakeRequest&) {
                                   testing::FakeResponse r;
                                   r.status = 204;
                                   return r;
                                 },
                                 server_options};

  const std::string body =
      R"({"encrypted_value":")" + std::string(88, 'A') + R"(","key_id":"568250167242549743"})";
  const std::string target = "/repos/acme/api/actions/secrets/DATABASE_URL";
  const std::string token = "Bearer ghs_" + std::string(36, 'x');

  MetricsRegistry metrics;
  HttpClientOptions options;
  options.provider = "bench";
  if (p.tls) options.ca_file = pki.path("ca.pem");
  auto created = HttpsClient::create(options, &metrics);
  if (!created) throw std::runtime_error(created.error().message);
  auto client = created.value();
  HttpRequest put;
  put.method = "PUT";
  put.url = server.base_url() + target;
  put.headers = {{"Accept", "application/vnd.github+json"},
                 {"X-GitHub-Api-Version", "2022-11-28"},
                 {"Content-Type", "application/json"}};
  put.body = body;
  put.authorization = std::make_shared<const Secret>(Secret::from(token));

  asio::ssl::context tls{asio::ssl::context::tls_client};
  if (p.tls) {
    tls.load_verify_file(pki.path("ca.pem"));
    tls.set_verify_mode(asio::ssl::verify_peer);
  }
  BareClient bare{server.port(), p.tls ? &tls : nullptr};
  http::request<http::string_body> bare_put{http::verb::put, target, 11};
  bare_put.set(http::field::host, "127.0.0.1:" + std::to_string(server.port()));
  bare_put.set(http::field::user_agent, "orgd");
  bare_put.set(http::field::accept, "application/vnd.github+json");
  bare_put.set("X-GitHub-Api-Version", "2022-11-28");
  bare_put.set(http::field::content_type, "application/json");
  bare_put.set(http::field::authorization, token);
  bare_put.body() = body;
  bare_put.prepare_payload();

  auto time_client = [&] {
    const auto start = SteadyClock::now();
    auto r = client->send(put);
    if (!r || r.value().status != 204) {
      throw std::runtime_error("HttpsClient: " +
                               (r ? std::to_string(r.value().status) : r.error().message));
    }
    return std::chrono::duration<double, std::micro>(SteadyClock::now() - start).count();
  };
  auto time_bare = [&] {
    const auto start = SteadyClock::now();
    if (bare.put(bare_put) != 204) throw std::runtime_error("baseline: not 204");
    return std::chrono::duration<double, std::micro>(SteadyClock::now() - start).count();
  };

  fmt::print(
      "bench_https_put: {} sequential secret-PUT requests each ({} bytes of JSON, 204 back) "
      "over {} to a loopback FakeHttpServer, after {} warm-up, alternating\n"
      "machine: {}\n",
      grouped(static_cast<std::uint64_t>(p.requests)), body.size(), p.tls ? "TLS" : "plain HTTP",
      p.warmup, machine_summary());
  std::fflush(stdout);
  for (std::int64_t i = 0; i < p.warmup; ++i) {
    time_client();
    time_bare();
  }
  std::vector<double> client_us;
  std::vector<double> bare_us;
  client_us.reserve(static_cast<std::size_t>(p.requests));
  bare_us.reserve(static_cast<std::size_t>(p.requests));
  const auto connections_before = server.connections_accepted();
  for (std::int64_t i = 0; i < p.requests; ++i) {
    if (i % 2 == 0) {
      client_us.push_back(time_client());
      bare_us.push_back(time_bare());
    } else {
      bare_us.push_back(time_bare());
      client_us.push_back(time_client());
    }
  }
  const double b50 = percentile(bare_us, 0.50);
  const double b99 = percentile(bare_us, 0.99);
  const double c50 = percentile(client_us, 0.50);
  const double c99 = percentile(client_us, 0.99);
  fmt::print("  baseline  bare Beast keep-alive client : p50 {:>9}  p99 {:>9}\n", micros(b50),
             micros(b99));
  fmt::print("  orgd      HttpsClient::send            : p50 {:>9}  p99 {:>9}\n", micros(c50),
             micros(c99));
  fmt::print("  ratio orgd/baseline: p50 {:.2f}  p99 {:.2f}; new connections during the run: {}\n",
             b50 > 0 ? c50 / b50 : 0, b99 > 0 ? c99 / b99 : 0,
             server.connections_accepted() - connections_before);
  api_calls_per_operation();
  return 0;
}

}  // namespace
}  // namespace orgd::bench

int main(int argc, char** argv) {
  try {
    return orgd::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_https_put: " << e.what() << "\n";
    return 2;
  }
}
