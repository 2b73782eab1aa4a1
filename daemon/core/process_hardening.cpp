#include "daemon/core/process_hardening.hpp"

#include <sys/prctl.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>

namespace orgd {

std::string disable_core_dumps() {
  std::string failed;
  const rlimit none{0, 0};
  if (setrlimit(RLIMIT_CORE, &none) != 0) {
    failed = std::string("setrlimit(RLIMIT_CORE): ") + std::strerror(errno);
  }
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    if (!failed.empty()) failed += "; ";
    failed += std::string("prctl(PR_SET_DUMPABLE): ") + std::strerror(errno);
  }
  return failed;
}

}  // namespace orgd
