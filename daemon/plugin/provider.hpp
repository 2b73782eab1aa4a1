#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/config.hpp"
#include "daemon/core/duration.hpp"
#include "daemon/core/errors.hpp"

// The provider SPI (DESIGN.md §8). Providers take validated settings and never read raw config
// after construction; the orchestrator calls targets synchronously from its provider threads,
// each call under a deadline (a call past it fails the attempt and keeps its thread).
namespace orgd {

struct DeployContext {
  std::string repo, env, ref, deploy_id;
  int attempt = 1;
};

// `interrupted` (from recover() only): the attempt ended because orgd stopped or died while it
// ran (an exec command killed with orgd), not because the deploy failed; the orchestrator runs
// the step again as a new attempt that does not count against its retries.
enum class DeployStatus { running, succeeded, failed, interrupted };

struct DeployProgress {
  DeployStatus status = DeployStatus::running;
  std::string handle;  // the provider's id of the started deploy, for poll/rollback/resume
  std::string error;   // set when failed or interrupted
};

using LogSink = std::function<void(std::string_view line)>;

// One per repo+env target, built from validated settings.
class DeployTarget {
 public:
  virtual ~DeployTarget() = default;
  virtual Result<DeployProgress> start(const DeployContext& context, const LogSink& log) = 0;
  virtual Result<DeployProgress> poll(const DeployContext& context, const std::string& handle) = 0;
  virtual Result<DeployProgress> rollback(const DeployContext& context, const LogSink& log) = 0;
  virtual bool can_rollback() const = 0;
  // The longest a start() or rollback() can take when the provider bounds its own calls (exec
  // kills its command after `timeout`). The orchestrator then never abandons such a call sooner,
  // even with a shorter step_timeout: the work it does is still running, and a new attempt
  // beside it would run it twice at once.
  virtual std::optional<Duration> max_call_duration() const { return std::nullopt; }
  // Re-checks a step that was in flight when its orgd died, before its start was recorded with a
  // handle: what became of the deploy `context` names (deploy id, repo, env, attempt)? not_found
  // means the provider knows nothing of it and the orchestrator may start it again; interrupted
  // that it was started and ended with orgd, so it runs again as a new attempt.
  virtual Result<DeployProgress> recover(const DeployContext& context) {
    (void)context;
    return not_found("provider keeps no record of started deploys");
  }
};

class Provider {
 public:
  virtual ~Provider() = default;
  // The instance's name (providers.<name>) and its type (local, exec, ...).
  const std::string& name() const { return name_; }
  const std::string& type() const { return type_; }
  // Validates the per-target settings; throws ConfigError naming file, line and key.
  virtual std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig& target,
                                                           const std::string& source_file) = 0;

 protected:
  Provider(std::string name, std::string type) : name_(std::move(name)), type_(std::move(type)) {}

 private:
  std::string name_;
  std::string type_;
};

// Reads a settings map key by key, collecting every problem as "file:line: path.key: message";
// finish() rejects the keys nobody asked for and throws all problems at once.
class SettingsReader {
 public:
  SettingsReader(const YAML::Node& settings, std::string source_file, int line, std::string path)
      : settings_(settings), source_(std::move(source_file)), line_(line), path_(std::move(path)) {
    if (settings_ && !settings_.IsNull() && !settings_.IsMap()) {
      report(line_, "", "expected a map of settings");
    }
  }

  // A target's settings: everything in repos.<repo>.deploy.<env> but the reserved keys.
  static SettingsReader for_target(const DeployTargetConfig& target,
                                   const std::string& source_file) {
    SettingsReader reader{target.settings, source_file, target.line, "deploy." + target.env};
    for (const auto& key : reserved_target_keys()) reader.known_.insert(key);
    return reader;
  }

  // A provider's own settings: everything in providers.<name> but `type`.
  static SettingsReader for_provider(const ProviderConfig& config,
                                     const std::string& source_file) {
    SettingsReader reader{config.settings, source_file, config.line, "providers." + config.name};
    reader.known_.insert("type");
    return reader;
  }

  std::optional<std::string> string(const std::string& key) {
    const YAML::Node value = take(key);
    if (!value) return std::nullopt;
    if (!value.IsScalar() || value.Scalar().empty()) {
      report(line_of(value), key, "expected a non-empty string");
      return std::nullopt;
    }
    return value.Scalar();
  }

  std::string required_string(const std::string& key) {
    const YAML::Node& map = settings_;  // const: a mutable operator[] would insert the key
    const bool present = settings_.IsMap() && map[key];
    auto value = string(key);
    if (!present) report(line_, key, "required key missing");
    return value.value_or("");
  }

  Duration duration(const std::string& key, Duration fallback) {
    const YAML::Node value = take(key);
    if (!value) return fallback;
    const auto parsed = value.IsScalar() ? parse_duration(value.Scalar()) : std::nullopt;
    if (!parsed) {
      report(line_of(value), key, "expected a duration such as 500ms, 30s or 5m");
      return fallback;
    }
    return *parsed;
  }

  bool boolean(const std::string& key, bool fallback) {
    const YAML::Node value = take(key);
    if (!value) return fallback;
    bool parsed = false;
    if (!value.IsScalar() || !YAML::convert<bool>::decode(value, parsed)) {
      report(line_of(value), key, "expected true or false");
      return fallback;
    }
    return parsed;
  }

  // A list of non-empty strings (`[A, B]`); nullopt when absent or not such a list (reported).
  std::optional<std::vector<std::string>> string_list(const std::string& key) {
    const YAML::Node value = take(key);
    if (!value) return std::nullopt;
    std::vector<std::string> items;
    bool valid = value.IsSequence();
    for (std::size_t i = 0; valid && i < value.size(); ++i) {
      valid = value[i].IsScalar() && !value[i].Scalar().empty();
      if (valid) items.push_back(value[i].Scalar());
    }
    if (!valid) {
      report(line_of(value), key, "expected a list of non-empty strings");
      return std::nullopt;
    }
    return items;
  }

  // A problem with a key's value that only the provider can see (a missing directory, a name
  // that is not set), reported like the others: file, the key's line, path.key.
  void invalid(const std::string& key, std::string_view message) {
    const YAML::Node& map = settings_;
    const YAML::Node value = settings_.IsMap() ? map[key] : YAML::Node{YAML::NodeType::Undefined};
    report(value ? line_of(value) : line_, key, message);
  }

  void finish() {
    if (settings_.IsMap()) {
      for (const auto& entry : settings_) {
        const auto key = entry.first.IsScalar() ? entry.first.Scalar() : std::string{"?"};
        if (known_.count(key) == 0) report(line_of(entry.first), key, "unknown key");
      }
    }
    if (!problems_.empty()) throw ConfigError(std::move(problems_));
  }

 private:
  YAML::Node take(const std::string& key) {
    known_.insert(key);
    if (!settings_.IsMap()) return YAML::Node{YAML::NodeType::Undefined};
    // A const lookup: a mutable operator[] would insert the key.
    const YAML::Node& map = settings_;
    return map[key];
  }

  int line_of(const YAML::Node& node) const {
    return node.Mark().is_null() ? line_ : node.Mark().line + 1;
  }

  void report(int line, const std::string& key, std::string_view message) {
    std::string text = source_;
    if (line > 0) text += ":" + std::to_string(line);
    text += ": " + path_;
    if (!key.empty()) text += "." + key;
    text += ": ";
    text += message;
    problems_.push_back(std::move(text));
  }

  YAML::Node settings_;
  std::string source_;
  int line_;
  std::string path_;
  std::set<std::string> known_;
  std::vector<std::string> problems_;
};

}  // namespace orgd
