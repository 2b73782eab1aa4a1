// orgd and the JavaScript example remote provider (deploy/examples/remote-provider, node on
// the npm nats client) on a real nats-server: a repo deployed through it (a gated phase
// advanced, then success), and a secret synced to it — the provider opens the sealed value and
// writes a keyed hash of it to its state file, which the test compares with the value's; the
// value is never on the bus (a subscription to `>`) nor in either process's output.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "tests/support/collector.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/secret_values.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using testing::NatsServer;
using testing::Subprocess;
using testing::SubprocessOptions;
using testing::TempDir;
using testing::wait_until;
using ::testing::HasSubstr;

const std::filesystem::path kExample =
    std::filesystem::path(ORGD_SOURCE_DIR) / "deploy/examples/remote-provider";

// node on PATH, or empty.
std::string find_node() {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "";
  std::size_t at = 0;
  while (at <= dirs.size()) {
    const auto end = std::min(dirs.find(':', at), dirs.size());
    const auto candidate = std::filesystem::path(dirs.substr(at, end - at)) / "node";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    at = end + 1;
  }
  return "";
}

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

TEST(RemoteProviderE2e, ARepoIsDeployedAndASecretSyncedThroughTheJavaScriptProvider) {
  const std::string node = find_node();
  if (node.empty() || !std::filesystem::exists(kExample / "node_modules/nats") ||
      !std::filesystem::exists(kExample / "node_modules/libsodium-wrappers")) {
    GTEST_SKIP() << "node or the example's node_modules are missing: run scripts/install-deps.sh";
  }
  ASSERT_EQ(sodium_init() < 0, false);
  NatsServer server;
  TempDir data("orgd-remote-e2e-data");
  TempDir work("orgd-remote-e2e-work");
  const std::string master_key = testing::random_master_key_base64();
  const std::string hash_key_hex = testing::random_hex(32);
  std::string hash_key(32, '\0');
  for (std::size_t i = 0; i < 32; ++i) {
    hash_key[i] = static_cast<char>(std::stoi(hash_key_hex.substr(2 * i, 2), nullptr, 16));
  }
  const auto state_file = work.path() / "provider-state.json";

  auto watcher = testing::connect_client(server.url());
  testing::Collector everything(watcher.get(), ">");
  natsConnection_Flush(watcher.get());

  SubprocessOptions provider_options;
  provider_options.argv = {node, (kExample / "provider.js").string(), "--server", server.url(),
                           "--subject", "org.acme.plugin.ext", "--polls", "1", "--state-file",
                           state_file.string()};
  provider_options.env = {{"ORGD_EXAMPLE_HASH_KEY", hash_key_hex}};
  provider_options.unset_env = testing::kOutsideEnv;
  provider_options.cwd = work.path();
  Subprocess provider(std::move(provider_options));
  ASSERT_TRUE(wait_until([&] { return read_state(state_file).has_value() || !provider.running(); },
                         30s));
  ASSERT_TRUE(provider.running()) << provider.describe();

  const auto config_path = work.path() / "orgd.yaml";
  testing::write_file(
      config_path,
      "org: acme\n"
      "nats:\n  urls: [" + server.url() + "]\n  connect_timeout: 2s\n  reconnect_wait: 100ms\n"
      "  data_dir: " + data.str() + "\n"
      "http:\n  enabled: false\n"
      "log:\n  level: debug\n"
      "deploy:\n  lease_ttl: 2s\n  health_gate: false\n"
      "providers:\n"
      "  ext: {type: remote, timeout: 5s, capabilities: [deploy_target, secret_target, "
      "health_probe]}\n"
      "repos:\n"
      "  worker:\n"
      "    secrets: [API_KEY]\n"
      "    deploy:\n      prod: {provider: ext, service: worker, steps: [50, 100]}\n"
      "    secret_targets:\n      - {provider: ext, store: workers}\n"
      "secrets:\n  master_key_env: ORGD_MASTER_KEY\n  sync_interval: 0\n");
  SubprocessOptions orgd_options;
  orgd_options.argv = {ORGD_DAEMON_BINARY, "--config", config_path.string()};
  orgd_options.unset_env = testing::kOutsideEnv;
  orgd_options.env = {{"ORGD_MASTER_KEY", master_key}};
  orgd_options.cwd = work.path();
  Subprocess orgd(std::move(orgd_options));
  ASSERT_TRUE(wait_until(
      [&] {
        auto reply = testing::api_call(watcher.get(), "org.acme.api.secrets.key", "{}", 1s);
        return (reply && !reply->error_code) || !orgd.running();
      },
      30s));
  ASSERT_TRUE(orgd.running()) << orgd.describe();

  // A deploy through the provider: its 50% phase, then 100%.
  const auto accepted =
      testing::api_deploy(watcher.get(), "org.acme", R"({"repos":["worker"],"env":"prod"})");
  const auto record =
      testing::wait_deploy_finished(watcher.get(), "org.acme", accepted.deploy_id(), 60s, 250ms);
  ASSERT_EQ(record.state(), v1::DeployRecord::succeeded)
      << record.DebugString() << orgd.describe() << provider.describe();
  ASSERT_EQ(record.steps_size(), 1);
  EXPECT_EQ(record.steps(0).handle(), "example-" + accepted.deploy_id() + "-1");
  const auto state = read_state(state_file);
  ASSERT_TRUE(state);
  ASSERT_EQ((*state)["deploys"].size(), 1u);
  EXPECT_EQ((*state)["deploys"][0]["status"], "succeeded");
  EXPECT_EQ((*state)["deploys"][0]["phase"], 2) << "the gated phase was advanced";

  // A secret set in the vault reaches the provider, sealed.
  const std::string canary = "canary-remote-e2e-" + testing::random_hex(10);
  testing::write_file(work.path() / ".env", "API_KEY=" + canary + "\n");
  SubprocessOptions orgctl_options;
  orgctl_options.argv = {ORGCTL_BINARY, "--server", server.url(), "--org", "acme",
                         "secrets", "import", ".env", "--scope", "worker"};
  orgctl_options.unset_env = testing::kOutsideEnv;
  orgctl_options.cwd = work.path();
  Subprocess orgctl(std::move(orgctl_options));
  ASSERT_EQ(orgctl.wait_for_exit(60s), 0) << orgctl.describe();
  const std::string expected = keyed_hash(canary, hash_key);
  ASSERT_TRUE(wait_until(
      [&] {
        const auto s = read_state(state_file);
        return s && s->contains("secrets") && (*s)["secrets"].contains("repo:worker/workers") &&
               (*s)["secrets"]["repo:worker/workers"].contains("API_KEY") &&
               (*s)["secrets"]["repo:worker/workers"]["API_KEY"]["hash"] == expected;
      },
      30s))
      << testing::read_file(state_file) << orgd.describe() << provider.describe();

  orgd.signal(SIGTERM);
  ASSERT_TRUE(orgd.wait_for_exit(20s).has_value());
  provider.signal(SIGTERM);
  EXPECT_EQ(provider.wait_for_exit(10s), 0) << provider.describe();

  bool saw_put = false;
  for (const auto& m : everything.messages()) {
    saw_put = saw_put || m.subject == "org.acme.plugin.ext.secret.put";
    EXPECT_EQ(std::string(m.data.begin(), m.data.end()).find(canary), std::string::npos)
        << "in clear on " << m.subject;
  }
  EXPECT_TRUE(saw_put);
  const std::string output = orgd.stdout_text() + orgd.stderr_text() + provider.stdout_text() +
                             provider.stderr_text() + orgctl.stdout_text() + orgctl.stderr_text();
  EXPECT_EQ(output.find(canary), std::string::npos) << "a process printed the value";
  EXPECT_THAT(provider.stderr_text(), HasSubstr("secret.put repo:worker/workers API_KEY"));
}

}  // namespace
}  // namespace orgd
