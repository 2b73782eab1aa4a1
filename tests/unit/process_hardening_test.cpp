// Core dumps are off after disable_core_dumps(), checked in a child process so the test runner
// itself stays as it was.
#include "daemon/core/process_hardening.hpp"

#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace orgd {
namespace {

TEST(ProcessHardeningTest, CoreDumpsAreOffAndCannotBeRaisedAgain) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Exit codes name the check that failed.
    if (!disable_core_dumps().empty()) _exit(1);
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) _exit(2);
    rlimit limit{};
    if (getrlimit(RLIMIT_CORE, &limit) != 0 || limit.rlim_cur != 0 || limit.rlim_max != 0) {
      _exit(3);
    }
    const rlimit raise{RLIM_INFINITY, RLIM_INFINITY};
    // Without CAP_SYS_RESOURCE the hard limit cannot go up again; with it (tests run as root
    // in containers) it can, so only the soft limit's state is checked above.
    if (geteuid() != 0 && setrlimit(RLIMIT_CORE, &raise) == 0) _exit(4);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "check " << WEXITSTATUS(status) << " failed";
}

}  // namespace
}  // namespace orgd
