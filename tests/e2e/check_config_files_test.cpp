// `orgd --check-config` names a credential or TLS file the config points at that is missing or
// unreadable, as <config>: <key>: <path>: <reason>, and exits 2; orgd itself does not start
// with one either.
#include <gtest/gtest.h>

#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::Subprocess;
using testing::SubprocessOptions;
using testing::TempDir;

struct Run {
  std::optional<int> status;
  std::string output;
};

Run run_orgd(std::vector<std::string> args) {
  SubprocessOptions options;
  options.argv = {ORGD_DAEMON_BINARY};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.unset_env = testing::kOutsideEnv;
  Subprocess p(std::move(options));
  Run r;
  r.status = p.wait_for_exit(15s);
  if (!r.status) p.kill();
  r.output = p.stdout_text() + p.stderr_text();
  return r;
}

TEST(CheckConfigFiles, AMissingCredentialFileIsNamedWithItsKeyAndExitsTwo) {
  TempDir dir("orgd-e2e-check-files");
  const auto config = dir / "orgd.yaml";
  const auto creds = (dir / "absent.creds").string();
  const auto ca = dir / "ca-dir";
  std::filesystem::create_directories(ca);
  testing::write_file(config,
                      "org: acme\n"
                      "nats:\n"
                      "  urls: [nats://127.0.0.1:4222]\n"
                      "  creds_file: " + creds + "\n"
                      "  tls: {ca_file: " + ca.string() + "}\n"
                      "http:\n  enabled: false\n");
  auto checked = run_orgd({"--check-config", "--config", config.string()});
  ASSERT_TRUE(checked.status.has_value()) << checked.output;
  EXPECT_EQ(*checked.status, 2) << checked.output;
  EXPECT_NE(checked.output.find(config.string() + ": nats.creds_file: " + creds + ": "),
            std::string::npos)
      << checked.output;
  EXPECT_NE(checked.output.find(config.string() + ": nats.tls.ca_file: " + ca.string() +
                                ": is a directory"),
            std::string::npos)
      << checked.output;

  // Starting with it fails the same way, before anything connects.
  auto started = run_orgd({"--config", config.string()});
  ASSERT_TRUE(started.status.has_value()) << started.output;
  EXPECT_EQ(*started.status, 2) << started.output;
  EXPECT_NE(started.output.find("nats.creds_file"), std::string::npos) << started.output;

  // Once the files are there, the check passes.
  testing::write_file(creds, "-----BEGIN NATS USER JWT-----\n");
  testing::write_file(dir / "ca.pem", "-----BEGIN CERTIFICATE-----\n");
  testing::write_file(config,
                      "org: acme\n"
                      "nats:\n"
                      "  urls: [nats://127.0.0.1:4222]\n"
                      "  creds_file: " + creds + "\n"
                      "  tls: {ca_file: " + (dir / "ca.pem").string() + "}\n"
                      "http:\n  enabled: false\n");
  auto fixed = run_orgd({"--check-config", "--config", config.string()});
  ASSERT_TRUE(fixed.status.has_value()) << fixed.output;
  EXPECT_EQ(*fixed.status, 0) << fixed.output;
}

}  // namespace
}  // namespace orgd
