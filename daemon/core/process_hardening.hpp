#pragma once

#include <string>

namespace orgd {

// Turns core dumps off for this process: RLIMIT_CORE 0 (soft and hard, so a child cannot raise
// it again) and PR_SET_DUMPABLE 0 (no core even where a core pattern pipes to a helper, and
// /proc/<pid>/mem, environ and ptrace closed to other processes of the same user). A core of
// orgd would hold the NATS credentials, provider tokens and vault keys it keeps in memory.
// Returns an empty string on success, else what failed (start-up goes on: a platform may not
// allow it, and orgd is still better running than not).
std::string disable_core_dumps();

}  // namespace orgd
