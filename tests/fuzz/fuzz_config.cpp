// Any bytes, read as a config file: the loader returns a Config or throws ConfigError, nothing
// else (no crash, no other exception, no sanitizer report, no runaway time or memory).
#include <cstddef>
#include <cstdint>
#include <string>

#include "daemon/core/config.hpp"
#include "daemon/core/errors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const orgd::Config config = orgd::load_config_string(text, "fuzz.yaml", orgd::Environment{});
    // Touch what consumers read, so a half-built value would show up here.
    for (const auto& [name, provider] : config.providers) {
      if (!provider.settings.IsMap()) __builtin_trap();
    }
    for (const auto& [name, repo] : config.repos) {
      for (const auto& [env, target] : repo.deploy) {
        if (!target.settings.IsMap() || target.provider.empty()) __builtin_trap();
      }
    }
  } catch (const orgd::ConfigError&) {
  }
  return 0;
}
