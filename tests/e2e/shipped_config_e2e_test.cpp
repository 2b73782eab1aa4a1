// The shipped configs pass the real `orgd --check-config`: the command a new user runs first,
// from the source tree, exactly as the README and config/orgd.example.yaml say.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>

#include "tests/support/subprocess.hpp"

#ifndef ORGD_DAEMON_BINARY
#error "ORGD_DAEMON_BINARY must name the built orgd"
#endif

namespace orgd {
namespace {

using namespace std::chrono_literals;

struct CheckResult {
  std::optional<int> status;
  std::string out;
  std::string err;
  std::string describe() const {
    return "status " + (status ? std::to_string(*status) : std::string("(still running)")) +
           "\nstdout:\n" + out + "\nstderr:\n" + err;
  }
};

CheckResult check_config(const std::string& relative_path) {
  testing::SubprocessOptions options;
  options.argv = {ORGD_DAEMON_BINARY, "--check-config", "--config", relative_path};
  options.unset_env = testing::kOutsideEnv;  // the file alone decides
  options.cwd = ORGD_SOURCE_DIR;
  testing::Subprocess orgd(std::move(options));
  CheckResult r;
  // Generous: the check itself takes milliseconds.
  r.status = orgd.wait_for_exit(30s);
  if (!r.status) orgd.kill();
  r.out = orgd.stdout_text();
  r.err = orgd.stderr_text();
  return r;
}

TEST(ShippedConfigE2e, ExampleConfigPassesCheckConfig) {
  const auto r = check_config("config/orgd.example.yaml");
  EXPECT_EQ(r.status, 0) << r.describe();
  EXPECT_NE(r.out.find("config/orgd.example.yaml is valid"), std::string::npos) << r.describe();
  // Which provider offers what.
  EXPECT_NE(r.out.find("  provider shell (exec): deploy_target\n"), std::string::npos)
      << r.describe();
  EXPECT_NE(r.out.find("  provider local (local): deploy_target\n"), std::string::npos)
      << r.describe();
  EXPECT_NE(r.out.find("  provider github (github): deploy_target, secret_target, health_probe\n"),
            std::string::npos)
      << r.describe();
}

TEST(ShippedConfigE2e, DevConfigPassesCheckConfig) {
  const auto r = check_config("config/orgd.dev.yaml");
  EXPECT_EQ(r.status, 0) << r.describe();
  EXPECT_NE(r.out.find("config/orgd.dev.yaml is valid"), std::string::npos) << r.describe();
}

}  // namespace
}  // namespace orgd
