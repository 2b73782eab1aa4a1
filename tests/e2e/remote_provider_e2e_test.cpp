// orgd and the JavaScript example remote provider (deploy/examples/remote-provider, node on
// the npm nats client) on a real nats-server: a repo deployed through it (a gated phase
// advanced, then success), and a secret synced to it — the provider opens the sealed value and
// writes a keyed hash of it to its state file, which the test compares with the value's; the
// value is never on the bus (a subscription to `>`) nor in either process's output. And a
// credential the provider issues (rotation with `issuer:`) comes back sealed to orgd, is pushed
// to the provider's secret target, and the one before it is revoked.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <sodium.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/support/collector.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/remote_example.hpp"
#include "tests/support/secret_values.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using ::testing::HasSubstr;
using testing::NatsServer;
using testing::Subprocess;
using testing::SubprocessOptions;
using testing::TempDir;
using testing::wait_until;

const std::filesystem::path kExample = testing::remote_example_dir();

// Hex of BLAKE2b-256 keyed with `key`: what the example writes for each secret it holds.
std::string keyed_hash(const std::string& value, const std::string& key) {
  unsigned char out[32];
  crypto_generichash(out, sizeof out, reinterpret_cast<const unsigned char*>(value.data()),
                     value.size(), reinterpret_cast<const unsigned char*>(key.data()), key.size());
  std::string hex(64, '0');
  sodium_bin2hex(hex.data(), hex.size() + 1, out, sizeof out);
  return hex;
}

std::optional<json> read_state(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) return std::nullopt;
  auto j = json::parse(testing::read_file(file), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

class RemoteProviderE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const auto missing = testing::remote_example_missing(); !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    node_ = testing::find_node();
    ASSERT_GE(sodium_init(), 0);
    server_ = std::make_unique<NatsServer>();
    watcher_ = testing::connect_client(server_->url());
    everything_ = std::make_unique<testing::Collector>(watcher_.get(), ">");
    natsConnection_Flush(watcher_.get());
    for (std::size_t i = 0; i < 32; ++i) {
      hash_key_[i] = static_cast<char>(std::stoi(hash_key_hex_.substr(2 * i, 2), nullptr, 16));
    }

    SubprocessOptions options;
    options.argv = {node_,          (kExample / "provider.js").string(),
                    "--server",     server_->url(),
                    "--subject",    "org.acme.plugin.ext",
                    "--polls",      "1",
                    "--state-file", state_file_.string()};
    options.env = {{"ORGD_EXAMPLE_HASH_KEY", hash_key_hex_}};
    options.unset_env = testing::kOutsideEnv;
    options.cwd = work_.path();
    provider_ = std::make_unique<Subprocess>(std::move(options));
    ASSERT_TRUE(wait_until([&] { return state().has_value() || !provider_->running(); }, 30s));
    ASSERT_TRUE(provider_->running()) << provider_->describe();
  }

  // orgd with the remote provider `ext` (and `secrets_tail` under secrets:), ready once the
  // vault answers.
  void start_orgd(const std::string& repos, const std::string& secrets_tail = "") {
    const auto config_path = work_.path() / "orgd.yaml";
    testing::write_file(
        config_path,
        "org: acme\n"
        "nats:\n  urls: [" +
            server_->url() +
            "]\n  connect_timeout: 2s\n"
            "  reconnect_wait: 100ms\n  data_dir: " +
            data_.str() +
            "\n"
            "http:\n  enabled: false\n"
            "log:\n  level: debug\n"
            "deploy:\n  lease_ttl: 2s\n  health_gate: false\n"
            "providers:\n"
            "  ext: {type: remote, timeout: 5s, capabilities: [deploy_target, secret_target, "
            "credential_issuer, health_probe]}\n"
            "repos:\n" +
            repos + "secrets:\n  master_key_env: ORGD_MASTER_KEY\n  sync_interval: 0\n" +
            secrets_tail);
    SubprocessOptions options;
    options.argv = {ORGD_DAEMON_BINARY, "--config", config_path.string()};
    options.unset_env = testing::kOutsideEnv;
    options.env = {{"ORGD_MASTER_KEY", master_key_}};
    options.cwd = work_.path();
    orgd_ = std::make_unique<Subprocess>(std::move(options));
    ASSERT_TRUE(wait_until(
        [&] {
          auto reply = testing::api_call(watcher_.get(), "org.acme.api.secrets.key", "{}", 1s);
          return (reply && !reply->error_code) || !orgd_->running();
        },
        30s));
    ASSERT_TRUE(orgd_->running()) << orgd_->describe();
  }

  int orgctl(std::vector<std::string> args) {
    SubprocessOptions options;
    options.argv = {ORGCTL_BINARY, "--server", server_->url(), "--org", "acme"};
    options.argv.insert(options.argv.end(), args.begin(), args.end());
    options.unset_env = testing::kOutsideEnv;
    options.cwd = work_.path();
    Subprocess p(std::move(options));
    const auto status = p.wait_for_exit(60s);
    if (!status) p.kill();
    outputs_ += p.stdout_text() + p.stderr_text();
    return status.value_or(-1);
  }

  std::optional<json> state() const { return read_state(state_file_); }
  // The keyed hash the provider holds for `name` in store `store`, or "".
  std::string held(const std::string& store, const std::string& name) const {
    const auto s = state();
    if (!s || !s->contains("secrets") || !(*s)["secrets"].contains(store) ||
        !(*s)["secrets"][store].contains(name)) {
      return "";
    }
    return (*s)["secrets"][store][name].value("hash", "");
  }
  std::string hash(const std::string& value) const { return keyed_hash(value, hash_key_); }

  // Stops both processes, then: `canary` on no message of the bus and in no output.
  void expect_never_shown(const std::string& canary, const std::string& put_subject) {
    orgd_->signal(SIGTERM);
    ASSERT_TRUE(orgd_->wait_for_exit(20s).has_value());
    provider_->signal(SIGTERM);
    EXPECT_EQ(provider_->wait_for_exit(10s), 0) << provider_->describe();
    bool saw_put = false;
    for (const auto& m : everything_->messages()) {
      saw_put = saw_put || m.subject == put_subject;
      EXPECT_EQ(std::string(m.data.begin(), m.data.end()).find(canary), std::string::npos)
          << "in clear on " << m.subject;
    }
    EXPECT_TRUE(saw_put);
    const std::string output = outputs_ + orgd_->stdout_text() + orgd_->stderr_text() +
                               provider_->stdout_text() + provider_->stderr_text();
    EXPECT_EQ(output.find(canary), std::string::npos) << "a process printed the value";
  }

  std::string node_;
  TempDir data_{"orgd-remote-e2e-data"};
  TempDir work_{"orgd-remote-e2e-work"};
  std::string master_key_ = testing::random_master_key_base64();
  std::string hash_key_hex_ = testing::random_hex(32);
  std::string hash_key_ = std::string(32, '\0');
  std::filesystem::path state_file_ = work_.path() / "provider-state.json";
  std::unique_ptr<NatsServer> server_;
  testing::NatsConnectionPtr watcher_;
  std::unique_ptr<testing::Collector> everything_;
  std::unique_ptr<Subprocess> provider_;
  std::unique_ptr<Subprocess> orgd_;
  std::string outputs_;
};

TEST_F(RemoteProviderE2e, ARepoIsDeployedAndASecretSyncedThroughTheJavaScriptProvider) {
  start_orgd(
      "  worker:\n"
      "    secrets: [API_KEY]\n"
      "    deploy:\n      prod: {provider: ext, service: worker, steps: [50, 100]}\n"
      "    secret_targets:\n      - {provider: ext, store: workers}\n");

  // The health probe (describe, then health) as operators see it in P.api.providers.
  ASSERT_TRUE(wait_until(
      [&] {
        auto reply = testing::api_call(watcher_.get(), "org.acme.api.providers", "", 2s);
        if (!reply || reply->error_code) return false;
        const auto list = json::parse(reply->data, nullptr, /*allow_exceptions=*/false);
        if (!list.is_object() || !list.contains("providers")) return false;
        for (const auto& p : list["providers"]) {
          if (p.value("name", "") == "ext" && p.value("ok", false) &&
              p.value("detail", "").find("example-remote-provider 0.1.0: ") == 0) {
            return true;
          }
        }
        return false;
      },
      30s))
      << orgd_->describe();

  // A deploy through the provider: its 50% phase, then 100%.
  const auto accepted =
      testing::api_deploy(watcher_.get(), "org.acme", R"({"repos":["worker"],"env":"prod"})");
  const auto record =
      testing::wait_deploy_finished(watcher_.get(), "org.acme", accepted.deploy_id(), 60s, 250ms);
  ASSERT_EQ(record.state(), v1::DeployRecord::succeeded)
      << record.DebugString() << orgd_->describe() << provider_->describe();
  ASSERT_EQ(record.steps_size(), 1);
  EXPECT_EQ(record.steps(0).handle(), "example-" + accepted.deploy_id() + "-1");
  const auto s = state();
  ASSERT_TRUE(s);
  ASSERT_EQ((*s)["deploys"].size(), 1u);
  EXPECT_EQ((*s)["deploys"][0]["status"], "succeeded");
  EXPECT_EQ((*s)["deploys"][0]["phase"], 2) << "the gated phase was advanced";

  // A secret imported into the vault reaches the provider, sealed.
  const std::string canary = "canary-remote-e2e-" + testing::random_hex(10);
  testing::write_file(work_.path() / ".env", "API_KEY=" + canary + "\n");
  ASSERT_EQ(orgctl({"secrets", "import", ".env", "--scope", "worker"}), 0) << outputs_;
  ASSERT_TRUE(
      wait_until([&] { return held("repo:worker/workers", "API_KEY") == hash(canary); }, 30s))
      << testing::read_file(state_file_) << orgd_->describe() << provider_->describe();
  EXPECT_THAT(provider_->stderr_text(), HasSubstr("secret.put repo:worker/workers API_KEY"));
  expect_never_shown(canary, "org.acme.plugin.ext.secret.put");
}

TEST_F(RemoteProviderE2e, ACredentialIssuedByTheProviderIsRotatedIntoItsTargetAndTheOldRevoked) {
  start_orgd(
      "  worker:\n"
      "    secrets: [WORKER_TOKEN]\n"
      "    secret_targets:\n      - {provider: ext, store: tokens}\n",
      "  rotation:\n    WORKER_TOKEN: {issuer: ext, overlap: 0s}\n");
  // The credential the provider issued (by its hash) is the one its target holds.
  const auto issued_and_held = [&](std::size_t issued) {
    const auto s = state();
    if (!s || !s->contains("credentials") || (*s)["credentials"].size() != issued) return false;
    const std::string now = held("repo:worker/tokens", "WORKER_TOKEN");
    for (const auto& [id, c] : (*s)["credentials"].items()) {
      if (!c.value("revoked", false) && c.value("hash", "") == now) return true;
    }
    return false;
  };
  ASSERT_EQ(orgctl({"secrets", "rotate", "WORKER_TOKEN", "--scope", "worker"}), 0) << outputs_;
  ASSERT_TRUE(wait_until([&] { return issued_and_held(1); }, 30s))
      << testing::read_file(state_file_) << orgd_->describe() << outputs_;
  const std::string first = held("repo:worker/tokens", "WORKER_TOKEN");

  ASSERT_EQ(orgctl({"secrets", "rotate", "WORKER_TOKEN", "--scope", "worker"}), 0) << outputs_;
  ASSERT_TRUE(wait_until(
      [&] {
        if (!issued_and_held(2)) return false;
        const auto now = state();
        if (!now || !now->contains("credentials")) return false;
        int revoked = 0;
        for (const auto& [id, c] : (*now)["credentials"].items()) {
          revoked += c.value("revoked", false) ? 1 : 0;
        }
        return revoked == 1;
      },
      30s))
      << testing::read_file(state_file_) << orgd_->describe() << outputs_;
  EXPECT_NE(held("repo:worker/tokens", "WORKER_TOKEN"), first);
  EXPECT_THAT(provider_->stderr_text(), HasSubstr("revoke cred-1-"));
  // Every value the example issues starts so: none crossed the bus in clear, or was printed.
  expect_never_shown("example-credential-", "org.acme.plugin.ext.secret.put");
}

}  // namespace
}  // namespace orgd
