#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "daemon/core/clock.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/plugin/provider.hpp"

namespace orgd {

// What providers may use instead of globals.
struct ProviderEnvironment {
  std::string data_dir;
  std::shared_ptr<const Clock> clock = std::make_shared<SystemClock>();
  // orgd's environment (injected: tests stay hermetic). Providers take from it only what their
  // settings name, e.g. an exec target's `env:`; children never inherit it whole.
  Environment environment{};
};

// Turns `providers.<name>` entries into Provider instances, from one explicit list of factories
// by type (no static self-registration: the linker drops those silently in a static library).
class ProviderRegistry {
 public:
  using Factory = std::function<std::unique_ptr<Provider>(
      const ProviderConfig&, const ProviderEnvironment&, const std::string& source_file)>;

  // The built-in providers. Defined with their list in plugins/builtin_providers.cpp (library
  // orgd_providers): the providers depend on this header, so it cannot depend on them.
  ProviderRegistry();

  // Adds or replaces the factory of a type (tests).
  void add_factory(std::string type, Factory factory);

  bool supports(const std::string& type) const;

  // Throws ConfigError for a type without a factory, and for invalid provider settings.
  std::unique_ptr<Provider> create(const ProviderConfig& config, const ProviderEnvironment& env,
                                   const std::string& source_file) const;

 private:
  std::map<std::string, Factory> factories_;
};

}  // namespace orgd
