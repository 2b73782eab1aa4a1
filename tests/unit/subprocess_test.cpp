// core/subprocess: the one spawner of orgd's children (embedded nats-server, exec commands, test
// fixtures).
#include "daemon/core/subprocess.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace orgd {
namespace {

// Everything the child wrote to its output pipe, and its wait status.
std::pair<std::string, int> run(SpawnOptions options) {
  options.capture_output = true;
  SpawnedChild child = spawn_child(options);
  std::string out;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(child.output.get(), buffer, sizeof buffer);
    if (n > 0) {
      out.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  const auto status = reap_child(child.pid, /*block=*/true);
  return {out, status.value_or(-1)};
}

TEST(SpawnChildTest, ChildGetsExactlyTheGivenEnvironment) {
  ASSERT_EQ(::setenv("ORGD_TEST_PROCESS_CANARY", "canary-process", 1), 0);
  SpawnOptions options;
  options.argv = {"/usr/bin/env"};
  options.env = {{"ONLY", "this"}};
  const auto [out, status] = run(options);
  ::unsetenv("ORGD_TEST_PROCESS_CANARY");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(out, "ONLY=this\n");
}

TEST(SpawnChildTest, AllowListTakesOnlyItsNamesAndTheExtras) {
  const Environment from{{{"PATH", "/bin"},
                          {"HOME", "/root"},
                          {"GITHUB_TOKEN", "canary"},
                          {"REGION", "eu"},
                          {"UNLISTED", "x"}}};
  const std::map<std::string, std::string> expected = {
      {"PATH", "/bin"}, {"HOME", "/root"}, {"REGION", "eu"}};
  EXPECT_EQ(child_environment(from, {"REGION", "NOT_SET"}), expected);
}

TEST(SpawnChildTest, NoDescriptorOfTheParentLeaks) {
  // Not close-on-exec, and far above what the child opens itself: only the spawner's closing
  // keeps it out of the child.
  const int opened = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(opened, 0);
  const int leaky = ::fcntl(opened, F_DUPFD, 200);
  ::close(opened);
  ASSERT_GE(leaky, 200);
  SpawnOptions options;
  options.argv = {"/bin/sh", "-c", "ls /proc/self/fd"};
  const auto [out, status] = run(options);
  ::close(leaky);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(("\n" + out).find("\n" + std::to_string(leaky) + "\n"), std::string::npos) << out;
}

TEST(SpawnChildTest, WorkdirAndGroupAreApplied) {
  SpawnOptions options;
  options.argv = {"/bin/sh", "-c", "pwd; ps -o pgid= -p $$ | tr -d ' '; echo $$"};
  options.env = {{"PATH", "/usr/bin:/bin"}};
  options.workdir = "/";
  options.new_process_group = true;
  const auto [out, status] = run(options);
  EXPECT_EQ(status, 0) << out;
  const auto first = out.find('\n');
  ASSERT_NE(first, std::string::npos) << out;
  EXPECT_EQ(out.substr(0, first), "/");
  const auto second = out.find('\n', first + 1);
  ASSERT_NE(second, std::string::npos) << out;
  const std::string pgid = out.substr(first + 1, second - first - 1);
  const std::string pid = out.substr(second + 1, out.find('\n', second + 1) - second - 1);
  EXPECT_EQ(pgid, pid) << out;
}

TEST(SpawnChildTest, FailuresNameTheirCause) {
  SpawnOptions missing_dir;
  missing_dir.argv = {"/bin/true"};
  missing_dir.workdir = "/no/such/dir";
  try {
    spawn_child(missing_dir);
    ADD_FAILURE() << "started in a missing directory";
  } catch (const SpawnError& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot change to the working directory /no/such/dir: No such file or directory");
  }
  SpawnOptions not_on_path;
  not_on_path.argv = {"no-such-program-anywhere"};
  not_on_path.env = {{"PATH", "/usr/bin:/bin"}};
  EXPECT_THROW(spawn_child(not_on_path), SpawnError);
  SpawnOptions not_executable;
  not_executable.argv = {"/etc/hostname"};
  try {
    spawn_child(not_executable);
    ADD_FAILURE() << "executed a text file";
  } catch (const SpawnError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot execute '/etc/hostname'"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace orgd
