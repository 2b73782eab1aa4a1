// The exec provider inside the daemon: its commands get the allow-list environment and the
// target's `env:` names from the Environment orgd was given, never orgd's credentials, and a
// failed step's error carries the command's last output line.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <filesystem>
#include <map>
#include <string>

#include "daemon/app/daemon.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/deploy.pb.h"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using v1::DeployRecord;

TEST(ExecEnvironmentInDaemon, CommandsSeeTheAllowListAndEnvNamesButNoCredentials) {
  // orgd connects with a token from its environment: a credential a command must not see.
  testing::NatsServerOptions options;
  options.extra_config = "authorization {\n  token: \"canary-nats-token\"\n}\n";
  testing::NatsServer server(options);
  testing::TempDir dir;
  const fs::path out = dir / "out";
  fs::create_directories(out);
  const std::string yaml =
      "org: acme\n"
      "nats:\n  urls: [" +
      server.url() + "]\n  token_env: ORGD_NATS_TOKEN\n  data_dir: " + dir.str() +
      "\n"
      "http:\n  enabled: false\n"
      "log:\n  level: warn\n"
      "deploy:\n  health_gate: false\n"
      "providers:\n  shell: {type: exec}\n"
      "repos:\n"
      "  api:\n    deploy:\n      dev: {provider: shell, workdir: " +
      out.string() +
      ", env: [DEPLOY_REGION], command: 'env > env.txt; echo checking; deploy-tool-not-here'}\n";
  // orgd's environment as main() would pass it: credentials next to what commands may see.
  const Environment env{{{"PATH", "/usr/bin:/bin"},
                         {"HOME", "/home/orgd"},
                         {"ORGD_NATS_TOKEN", "canary-nats-token"},
                         {"GITHUB_TOKEN", "canary-github-token"},
                         {"ORGD_MASTER_KEY", "canary-master-key"},
                         {"DEPLOY_REGION", "eu-west"}}};
  Daemon daemon(load_config_string(yaml, "test.yaml", env), DaemonOptions{}, env);
  daemon.start();
  ASSERT_TRUE(testing::wait_until([&] { return daemon.ready(); }, 15s));
  auto client = testing::connect_client("nats://canary-nats-token@127.0.0.1:" +
                                        std::to_string(server.port()));

  const auto reply = testing::request(client.get(), "org.acme.api.deploy",
                                      R"({"repos":["api"],"env":"dev","ref":"v1"})", 5s);
  ASSERT_TRUE(reply.has_value());
  v1::DeployAccepted accepted;
  ASSERT_TRUE(decode(*reply, Encoding::json, accepted, 1 << 20)) << *reply;
  DeployRecord record;
  ASSERT_TRUE(testing::wait_until(
      [&] {
        const auto got = testing::request(client.get(), "org.acme.api.deploy.get",
                                          R"({"deployId":")" + accepted.deploy_id() + R"("})");
        return got && decode(*got, Encoding::json, record, 1 << 22) &&
               record.state() == DeployRecord::failed;
      },
      20s))
      << record.DebugString();
  ASSERT_EQ(record.steps_size(), 1);
  const std::string error = record.steps(0).error();
  EXPECT_EQ(error.rfind("exit code 127: ", 0), 0u) << error;
  EXPECT_NE(error.find("deploy-tool-not-here: not found"), std::string::npos) << error;

  const std::string dumped = testing::read_file(out / "env.txt");
  EXPECT_EQ(dumped.find("canary"), std::string::npos) << dumped;
  EXPECT_NE(dumped.find("DEPLOY_REGION=eu-west\n"), std::string::npos) << dumped;
  EXPECT_NE(dumped.find("HOME=/home/orgd\n"), std::string::npos) << dumped;
  EXPECT_NE(dumped.find("ORGD_DEPLOY_ID=" + accepted.deploy_id() + "\n"), std::string::npos)
      << dumped;
  daemon.stop();
}

}  // namespace
}  // namespace orgd
