#include "daemon/plugin/registry.hpp"

#include <utility>

namespace orgd {

void ProviderRegistry::add_factory(std::string type, Factory factory) {
  factories_[std::move(type)] = std::move(factory);
}

bool ProviderRegistry::supports(const std::string& type) const {
  return factories_.count(type) != 0;
}

std::unique_ptr<Provider> ProviderRegistry::create(const ProviderConfig& config,
                                                   const ProviderEnvironment& env,
                                                   const std::string& source_file) const {
  const auto it = factories_.find(config.type);
  if (it == factories_.end()) {
    std::string where = source_file;
    if (config.line > 0) where += ":" + std::to_string(config.line);
    const bool planned = config.type == "github" || config.type == "cloudflare" ||
                         config.type == "synadia" || config.type == "remote";
    std::string built;
    for (const auto& [type, factory] : factories_) built += (built.empty() ? "" : ", ") + type;
    throw ConfigError({where + ": providers." + config.name + ": type '" + config.type + "' " +
                       (planned ? "is not built yet" : "is unknown") + " (built: " + built + ")"});
  }
  return it->second(config, env, source_file);
}

}  // namespace orgd
