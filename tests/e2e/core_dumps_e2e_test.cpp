// The built orgd turns core dumps off for itself at start: its /proc limits say so.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <filesystem>
#include <string>

#include "tests/support/nats_server.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#ifndef ORGD_DAEMON_BINARY
#error "ORGD_DAEMON_BINARY must name the built orgd"
#endif

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::NatsServer;
using testing::Subprocess;
using testing::SubprocessOptions;
using testing::TempDir;
using testing::wait_until;

// "Max core file size  0  0  bytes" from /proc/<pid>/limits, or empty.
std::string core_limit_line(pid_t pid) {
  const std::string limits =
      testing::read_file(std::filesystem::path("/proc") / std::to_string(pid) / "limits");
  const auto at = limits.find("Max core file size");
  if (at == std::string::npos) return {};
  return limits.substr(at, limits.find('\n', at) - at);
}

TEST(CoreDumpsE2eTest, OrgdRunsWithCoreDumpsOff) {
  NatsServer server;
  TempDir dir("orgd-core");
  testing::write_file(dir / "orgd.yaml", "org: acme\nnats:\n  urls: [" + server.url() +
                                             "]\n  data_dir: " + dir.path().string() +
                                             "\nhttp:\n  enabled: false\nlog:\n  level: info\n");
  // orgd starts with core dumps allowed up to the hard limit (shells often set the soft one to
  // 0), so what it shows is its own doing.
  rlimit inherited{};
  ASSERT_EQ(getrlimit(RLIMIT_CORE, &inherited), 0);
  const rlimit allowed{inherited.rlim_max, inherited.rlim_max};
  ASSERT_EQ(setrlimit(RLIMIT_CORE, &allowed), 0);
  if (inherited.rlim_max == 0) GTEST_SKIP() << "core dumps are off for the tests already";
  SubprocessOptions options;
  options.argv = {ORGD_DAEMON_BINARY, "--config", (dir / "orgd.yaml").string()};
  options.unset_env = testing::kOutsideEnv;
  options.cwd = dir.path();
  Subprocess orgd(std::move(options));
  ASSERT_EQ(setrlimit(RLIMIT_CORE, &inherited), 0);
  // Running and connected: start-up (and so the hardening at its start) is behind it.
  ASSERT_TRUE(wait_until(
      [&] {
        constexpr const char* kReady = "NATS connection ready";
        return !orgd.running() || orgd.stderr_text().find(kReady) != std::string::npos ||
               orgd.stdout_text().find(kReady) != std::string::npos;
      },
      30s));
  ASSERT_TRUE(orgd.running()) << orgd.describe();
  const std::string line = core_limit_line(orgd.pid());
  ASSERT_FALSE(line.empty());
  // Soft and hard limit both 0.
  EXPECT_NE(line.find(" 0 "), std::string::npos) << line;
  EXPECT_EQ(line.find("unlimited"), std::string::npos) << line;
  std::size_t zeros = 0;
  for (std::size_t at = line.find(" 0"); at != std::string::npos; at = line.find(" 0", at + 1)) {
    ++zeros;
  }
  EXPECT_EQ(zeros, 2u) << line;
}

}  // namespace
}  // namespace orgd
