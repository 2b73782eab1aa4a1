#include "daemon/core/environment.hpp"

#include <string_view>

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX, not in a header

namespace orgd {

Environment Environment::current() {
  std::map<std::string, std::string> vars;
  if (environ == nullptr) return Environment{std::move(vars)};
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view text{*entry};
    const auto eq = text.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    // The first definition wins, as with getenv().
    vars.emplace(std::string{text.substr(0, eq)}, std::string{text.substr(eq + 1)});
  }
  return Environment{std::move(vars)};
}

std::optional<std::string> Environment::get(const std::string& name) const {
  const auto it = vars_.find(name);
  if (it == vars_.end()) return std::nullopt;
  return it->second;
}

}  // namespace orgd
