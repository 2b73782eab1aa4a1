#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/core/config_values.hpp"
#include "daemon/core/duration.hpp"

// The strict YAML reader behind the config loader and the providers' settings: every problem is
// collected as "<file>:<line>: <key path>: <problem>" and raised together as one ConfigError, so a
// user fixes a file in one pass; unknown keys and wrong types are problems, never ignored.
namespace orgd {

// The line (1-based) of a node, or `fallback` when it has no position.
int line_of(const YAML::Node& node, int fallback);

// "a map", "a list", ..., for "expected X, got Y" messages.
std::string kind_of(const YAML::Node& node);

// One key: value pair of a YAML map.
struct SchemaEntry {
  std::string key;
  YAML::Node key_node;
  YAML::Node value;
  std::string path;    // dotted, e.g. "nats.tls.ca_file"
  int line = 0;        // of the key
  int value_line = 0;  // of the value (the key's when the value has no position)
};

// Reads one document against the schema its caller walks, collecting the problems.
class SchemaReader {
 public:
  explicit SchemaReader(std::string source) : source_(std::move(source)) {}

  const std::string& source() const { return source_; }
  bool has_problems() const { return !problems_.empty(); }
  std::size_t problem_count() const { return problems_.size(); }

  // The document in `text`: one YAML document, bounded in depth and size (aliases expanded), so
  // later code may recurse freely. Throws ConfigError when it is not.
  YAML::Node parse(const std::string& text);

  // "<file>:<line>: <path>: <message>"; without a line (0) or a path those parts are left out.
  void report(int line, std::string_view path, std::string_view message);
  // "environment: <variable>: <message>", after every problem of the file.
  void report_env(std::string_view variable, std::string_view message);

  // Throws the problems as one ConfigError, in file order, the environment's last; at most
  // kMaxProblems of them.
  [[noreturn]] void fail();
  void throw_if_problems() {
    if (has_problems()) fail();
  }

  // The entries of a map with string keys, each key once. With `allowed`, other keys are
  // reported. Null counts as an empty map. nullopt (reported) when the node is something else.
  std::optional<std::vector<SchemaEntry>> mapping(const YAML::Node& node, const std::string& path,
                                                  int line, Words allowed);

  // Typed reads of an entry's value: on a problem it is reported and `out` keeps its value.
  std::optional<std::string> scalar(const SchemaEntry& e, std::string_view expected);
  void read_string(const SchemaEntry& e, std::string& out, bool allow_empty = true);
  void read_bool(const SchemaEntry& e, bool& out);
  void read_int(const SchemaEntry& e, std::int64_t min, std::int64_t max, int& out);
  void read_bytes(const SchemaEntry& e, std::int64_t min, std::int64_t max, std::int64_t& out);
  void read_duration(const SchemaEntry& e, bool allow_zero, Duration& out);
  void read_choice(const SchemaEntry& e, Words choices, std::string& out);
  // A list of strings (null = empty), each with its line.
  std::vector<std::pair<std::string, int>> read_list(const SchemaEntry& e);
  // A list of names ([A-Za-z0-9_-]+), each once; `what` names them in messages ("secret").
  std::vector<std::string> read_names(const SchemaEntry& e, std::string_view what);

 private:
  void count_documents(const std::string& text);
  // `budget`: how many nodes the document may have once aliases are expanded.
  bool check_shape(const YAML::Node& root, std::size_t budget);

  std::string source_;
  struct Problem {
    int order = 0;  // the line, 0 when the problem has none
    std::string text;
  };
  std::vector<Problem> problems_;
};

// A provider's view of its settings: one map (a deploy target's, or providers.<name>), read key
// by key through a SchemaReader's typed reads (the same checks and messages as the rest of the
// file); finish() rejects the keys nobody asked for and throws all problems at once. Providers see this map only, never the rest of the config
// (config.hpp's target_settings() and provider_settings() make one).
class SettingsReader {
 public:
  // `path` starts each problem's key ("deploy.production"); `orgd_keys` belong to orgd, not the
  // provider, and are neither read nor reported as unknown.
  SettingsReader(const YAML::Node& settings, std::string source_file, int line, std::string path,
                 const std::vector<std::string>& orgd_keys);

  std::optional<std::string> string(const std::string& key);
  std::string required_string(const std::string& key);
  Duration duration(const std::string& key, Duration fallback);
  bool boolean(const std::string& key, bool fallback);
  // A list of non-empty strings (`[A, B]`); nullopt when absent or not such a list (reported).
  std::optional<std::vector<std::string>> string_list(const std::string& key);
  // A map of strings (`{a: x, b: y}`; a number or bool value is taken as written); nullopt
  // when absent or not such a map (reported).
  std::optional<std::map<std::string, std::string>> string_map(const std::string& key);

  // A problem with a key's value that only the provider can see (a missing directory, a name
  // that is not set), reported like the others: file, the key's line, path.key.
  void invalid(const std::string& key, std::string_view message);

  void finish();

 private:
  // The key's entry (nullopt when absent), marked as read.
  std::optional<SchemaEntry> entry(const std::string& key);
  YAML::Node lookup(const std::string& key) const;
  void report(int line, const std::string& key, std::string_view message);

  YAML::Node settings_;
  int line_;
  std::string path_;
  std::set<std::string> known_;
  SchemaReader schema_;
};

}  // namespace orgd
