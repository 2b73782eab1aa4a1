// Any bytes, read as a config file: the loader returns a Config or throws ConfigError, nothing
// else (no crash, no other exception, no sanitizer report, no runaway time or memory).
#include <cstddef>
#include <cstdint>
#include <chrono>
#include <string>

#include "daemon/core/config.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/plugin/provider.hpp"

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
        // What a provider does with the target's settings: typed reads, then unknown keys.
        try {
          orgd::SettingsReader reader = orgd::target_settings(target, "fuzz.yaml");
          (void)reader.string("command");
          (void)reader.duration("duration", std::chrono::seconds{1});
          (void)reader.boolean("fail", false);
          reader.finish();
        } catch (const orgd::ConfigError&) {
        }
      }
    }
  } catch (const orgd::ConfigError&) {
  }
  return 0;
}
