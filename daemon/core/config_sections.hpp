#pragma once

#include <yaml-cpp/yaml.h>

#include "daemon/core/config.hpp"
#include "daemon/core/config_values.hpp"
#include "daemon/core/yaml_schema.hpp"

namespace orgd {

// The loaders of a config's sections (org, nats, http, log, secrets, deploy, providers, repos):
// each checks its keys and values against its schema and fills its part of Config, reporting
// every problem to the SchemaReader. Providers are read before repos whatever the file's order,
// since deploy targets name them; repos' dependencies are checked for cycles.
class ConfigSections {
 public:
  // Where sections start, for problems about settings that go together.
  struct Lines {
    int nats = 0;
    int tls = 0;
    int secrets = 0;
  };

  explicit ConfigSections(SchemaReader& schema) : schema_(schema) {}

  // The keys a config may have at its top level.
  static Words top_level_keys();

  void load(const YAML::Node& root, Config& config);

  // Settings that only make sense together, checked once file and environment are merged.
  void check_combinations(const Config& config);

 private:
  SchemaReader& schema_;
  Lines lines_;
};

}  // namespace orgd
