#include "daemon/core/config.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <new>

#include "daemon/core/config_env.hpp"
#include "daemon/core/config_sections.hpp"
#include "daemon/core/config_values.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/yaml_schema.hpp"

namespace orgd {
namespace {

// Bounds that keep a hostile or broken file from costing more than a moment to reject (the
// document's own bounds are the schema reader's).
constexpr std::size_t kMaxFileBytes = 4 * 1024 * 1024;

Config load(const std::string& text, const std::string& source, const Environment& env) {
  Config config;
  config.source = source;
  SchemaReader schema{source};
  const YAML::Node root = schema.parse(text);
  if (root.IsNull()) {
    schema.report(1, "",
                  fmt::format("the file is empty (expected a map with keys: {})",
                              join(ConfigSections::top_level_keys())));
    schema.fail();
  }
  ConfigSections sections{schema};
  try {
    sections.load(root, config);
  } catch (const YAML::Exception& e) {
    // Every access above is guarded; this is a last line of defence for yaml-cpp surprises.
    schema.report(e.mark.is_null() ? 0 : e.mark.line + 1, "", "invalid YAML: " + e.msg);
  }
  apply_environment(env, config, schema);
  sections.check_combinations(config);
  schema.throw_if_problems();
  return config;
}

}  // namespace

SettingsReader target_settings(const DeployTargetConfig& target, const std::string& source_file) {
  return SettingsReader{target.settings, source_file, target.line, "deploy." + target.env,
                        reserved_target_keys()};
}

SettingsReader provider_settings(const ProviderConfig& config, const std::string& source_file) {
  static const std::vector<std::string> orgd_keys{"type"};
  return SettingsReader{config.settings, source_file, config.line, "providers." + config.name,
                        orgd_keys};
}

SettingsReader secret_target_settings(const SecretTargetConfig& target,
                                      const std::string& source_file) {
  const std::string path = target.organization
                               ? "secrets.org_targets[" + std::to_string(target.index) + "]"
                               : "repos." + target.repo + ".secret_targets[" +
                                     std::to_string(target.index) + "]";
  return SettingsReader{target.settings, source_file, target.line, path,
                        reserved_secret_target_keys()};
}

Config load_config_string(const std::string& text, const std::string& source_name,
                          const Environment& env) {
  if (text.size() > kMaxFileBytes) {
    throw ConfigError(
        {fmt::format("{}: the file is larger than {} MiB", source_name, kMaxFileBytes >> 20)});
  }
  try {
    return load(text, source_name, env);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    // yaml-cpp may throw more than YAML::Exception on odd input; it is still a config problem.
    throw ConfigError({fmt::format("{}: cannot parse: {}", source_name, printable(e.what(), 200))});
  }
}

Config load_config_file(const std::string& path, const Environment& env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw ConfigError({fmt::format("{}: cannot open: {}", path, std::strerror(errno))});
  }
  std::string text;
  char buffer[64 * 1024];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    text.append(buffer, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxFileBytes) {
      throw ConfigError(
          {fmt::format("{}: the file is larger than {} MiB", path, kMaxFileBytes >> 20)});
    }
  }
  if (in.bad()) throw ConfigError({fmt::format("{}: cannot read", path)});
  return load_config_string(text, path, env);
}

std::string config_origin(const std::string& path, const Environment& env) {
  if (!path.empty()) return path;
  if (auto yaml = env.get("ORGD_CONFIG_YAML"); yaml && !yaml->empty()) return "$ORGD_CONFIG_YAML";
  return "<embedded>";
}

Config load_daemon_config(const std::string& path, const Environment& env) {
  if (!path.empty()) return load_config_file(path, env);
  if (auto yaml = env.get("ORGD_CONFIG_YAML"); yaml && !yaml->empty()) {
    return load_config_string(*yaml, "$ORGD_CONFIG_YAML", env);
  }
  return load_config_string(embedded_default_config(), "<embedded>", env);
}

}  // namespace orgd
