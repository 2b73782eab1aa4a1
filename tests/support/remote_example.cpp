#include "tests/support/remote_example.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

namespace orgd::testing {

std::filesystem::path remote_example_dir() {
  return std::filesystem::path(ORGD_SOURCE_DIR) / "deploy/examples/remote-provider";
}

std::string find_node() {
  const char* path = std::getenv("PATH");
  const std::string dirs = path != nullptr ? path : "";
  std::size_t at = 0;
  while (at <= dirs.size()) {
    const auto end = std::min(dirs.find(':', at), dirs.size());
    const auto candidate = std::filesystem::path(dirs.substr(at, end - at)) / "node";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    at = end + 1;
  }
  return "";
}

std::string remote_example_missing() {
  const auto modules = remote_example_dir() / "node_modules";
  if (find_node().empty() || !std::filesystem::exists(modules / "nats") ||
      !std::filesystem::exists(modules / "libsodium-wrappers")) {
    return "node or the example's node_modules are missing: run scripts/install-deps.sh";
  }
  return "";
}

}  // namespace orgd::testing
