#include "daemon/core/yaml_schema.hpp"

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>

#include <algorithm>
#include <limits>
#include <sstream>

#include "daemon/core/errors.hpp"

namespace orgd {
namespace {

// Bounds that keep a hostile or broken file from costing more than a moment to reject.
// Deeper than any valid config; an alias that refers to its own ancestor (&a [*a]) makes a cycle,
// which this bound also stops.
constexpr int kMaxDepth = 32;
// Nodes visited with aliases expanded, which stops "billion laughs" documents: a document
// without aliases has fewer nodes than bytes ("[1,1,1]" is 4 in 7), so one node per byte of
// the text, plus this much for anchors shared by many entries, bounds the work by the
// document's size (4 MiB at most) instead of refusing the configs of large orgs (10,000 repos
// with a deploy target, health and secrets each are over 200,000 nodes).
constexpr std::size_t kExtraNodes = 100'000;
constexpr std::size_t kMaxProblems = 100;

std::string child_path(const std::string& path, std::string_view key) {
  if (path.empty()) return std::string{key};
  return path + "." + std::string{key};
}

}  // namespace

int line_of(const YAML::Node& node, int fallback) {
  if (!node.IsDefined()) return fallback;
  const YAML::Mark mark = node.Mark();
  if (mark.is_null() || mark.line < 0) return fallback;
  return mark.line + 1;
}

std::string kind_of(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Null:
      return "nothing (null)";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

YAML::Node SchemaReader::parse(const std::string& text) {
  YAML::Node root;
  try {
    count_documents(text);
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    report(e.mark.is_null() ? 0 : e.mark.line + 1, "", "YAML syntax error: " + e.msg);
    fail();
  }
  throw_if_problems();
  if (!check_shape(root, text.size() + kExtraNodes)) fail();
  return root;
}

void SchemaReader::fail() {
  // In file order (the loader visits providers before repos); environment problems last.
  std::stable_sort(problems_.begin(), problems_.end(),
                   [](const Problem& a, const Problem& b) { return a.order < b.order; });
  std::vector<std::string> lines;
  for (auto& p : problems_) {
    if (lines.size() == kMaxProblems) {
      lines.push_back(
          fmt::format("{}: ... and {} more problems", source_, problems_.size() - kMaxProblems));
      break;
    }
    lines.push_back(std::move(p.text));
  }
  throw ConfigError(std::move(lines));
}

void SchemaReader::report(int line, std::string_view path, std::string_view message) {
  std::string text = source_;
  if (line > 0) text += fmt::format(":{}", line);
  text += ": ";
  if (!path.empty()) {
    text += printable(path, 200);
    text += ": ";
  }
  text += message;
  problems_.push_back({line, std::move(text)});
}

void SchemaReader::report_env(std::string_view variable, std::string_view message) {
  problems_.push_back(
      {std::numeric_limits<int>::max(), fmt::format("environment: {}: {}", variable, message)});
}

// Reports a second document. yaml-cpp 0.7's LoadAll() never returns on some inputs (a stray ','
// at the top level yields empty documents forever without consuming it), so the documents are
// walked here with a bound and only the first one is loaded.
void SchemaReader::count_documents(const std::string& text) {
  class DocumentStarts : public YAML::EventHandler {
   public:
    std::vector<YAML::Mark> marks;
    void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
  };
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts starts;
  while (starts.marks.size() < 2 && parser.HandleNextDocument(starts)) {
  }
  if (starts.marks.size() < 2) return;
  const YAML::Mark& first = starts.marks[0];
  const YAML::Mark& second = starts.marks[1];
  if (second.pos == first.pos) {
    // The parser made no progress: a token it cannot place, which it would repeat forever.
    report(first.line + 1, "", "YAML syntax error: unexpected character");
  } else if (second.pos >= 0 && static_cast<std::size_t>(second.pos) < text.size() &&
             text.compare(static_cast<std::size_t>(second.pos), 3, "---") == 0) {
    report(second.line + 1, "",
           "more than one YAML document ('---'): a config is a single document");
  } else {
    report(second.line + 1, "", "YAML syntax error: unexpected text after the document");
  }
}

// Walks the whole document once, without recursion, so that later code may recurse freely.
bool SchemaReader::check_shape(const YAML::Node& root, std::size_t budget) {
  std::vector<std::pair<YAML::Node, int>> stack;
  stack.emplace_back(root, 0);
  std::size_t visited = 0;
  while (!stack.empty()) {
    auto [node, depth] = std::move(stack.back());
    stack.pop_back();
    if (++visited > budget) {
      report(line_of(node, 0), "",
             fmt::format("the document is too large: more than {} nodes once aliases are "
                         "expanded (a config may have one per byte of its text, plus {})",
                         budget, kExtraNodes));
      return false;
    }
    if (depth > kMaxDepth) {
      report(line_of(node, 0), "",
             fmt::format("nested deeper than {} levels (or an alias refers to its own parent)",
                         kMaxDepth));
      return false;
    }
    if (node.IsMap()) {
      for (const auto& kv : node) {
        stack.emplace_back(kv.first, depth + 1);
        stack.emplace_back(kv.second, depth + 1);
      }
    } else if (node.IsSequence()) {
      for (const auto& item : node) stack.emplace_back(item, depth + 1);
    }
  }
  return true;
}

// The entries of a map with string keys, each key once. With `allowed`, other keys are
// reported. Null counts as an empty map. nullopt (reported) when the node is something else.
std::optional<std::vector<SchemaEntry>> SchemaReader::mapping(const YAML::Node& node,
                                                              const std::string& path, int line,
                                                              Words allowed) {
  std::vector<SchemaEntry> entries;
  if (!node.IsDefined() || node.IsNull()) return entries;
  if (!node.IsMap()) {
    report(line_of(node, line), path, "expected a map, got " + kind_of(node));
    return std::nullopt;
  }
  for (const auto& kv : node) {
    const YAML::Node& key = kv.first;
    const int key_line = line_of(key, line_of(node, line));
    if (!key.IsScalar()) {
      report(key_line, path, "map keys must be strings, got " + kind_of(key));
      continue;
    }
    SchemaEntry entry;
    entry.key = key.Scalar();
    entry.key_node = key;
    entry.value = kv.second;
    entry.path = child_path(path, entry.key);
    entry.line = key_line;
    // A missing value (null) is positioned at the next token, often on a later line.
    entry.value_line = entry.value.IsNull() ? key_line : line_of(entry.value, key_line);
    if (!allowed.empty() && !contains(allowed, entry.key)) {
      report(key_line, entry.path, fmt::format("unknown key (expected one of: {})", join(allowed)));
      continue;
    }
    const auto first = std::find_if(entries.begin(), entries.end(),
                                    [&](const SchemaEntry& e) { return e.key == entry.key; });
    if (first != entries.end()) {
      report(key_line, entry.path, fmt::format("duplicate key (first at line {})", first->line));
      continue;
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

std::optional<std::string> SchemaReader::scalar(const SchemaEntry& e, std::string_view expected) {
  if (e.value.IsScalar()) return e.value.Scalar();
  report(e.value_line, e.path, fmt::format("expected {}, got {}", expected, kind_of(e.value)));
  return std::nullopt;
}

void SchemaReader::read_string(const SchemaEntry& e, std::string& out, bool allow_empty) {
  auto text = scalar(e, "a string");
  if (!text) return;
  if (!allow_empty && text->empty()) {
    report(e.value_line, e.path, "must not be empty");
    return;
  }
  out = std::move(*text);
}

void SchemaReader::read_bool(const SchemaEntry& e, bool& out) {
  auto text = scalar(e, "true or false");
  if (!text) return;
  if (auto value = parse_bool(*text)) {
    out = *value;
  } else {
    report(e.value_line, e.path,
           fmt::format("expected true or false, got {}", shown(e.path, *text)));
  }
}

void SchemaReader::read_int(const SchemaEntry& e, std::int64_t min, std::int64_t max, int& out) {
  auto text = scalar(e, "an integer");
  if (!text) return;
  const auto value = parse_int(*text);
  if (!value) {
    report(e.value_line, e.path, fmt::format("expected an integer, got {}", shown(e.path, *text)));
  } else if (*value < min || *value > max) {
    report(e.value_line, e.path,
           fmt::format("must be between {} and {}, got {}", min, max, *value));
  } else {
    out = static_cast<int>(*value);
  }
}

void SchemaReader::read_bytes(const SchemaEntry& e, std::int64_t min, std::int64_t max,
                              std::int64_t& out) {
  auto text = scalar(e, "a size in bytes");
  if (!text) return;
  const auto value = parse_bytes(*text);
  if (!value) {
    report(e.value_line, e.path,
           fmt::format("expected a size in bytes such as 1048576 or 1MiB, got {}",
                       shown(e.path, *text)));
  } else if (*value < min || *value > max) {
    report(e.value_line, e.path,
           fmt::format("must be between {} and {}", bytes_text(min), bytes_text(max)));
  } else {
    out = *value;
  }
}

void SchemaReader::read_duration(const SchemaEntry& e, bool allow_zero, Duration& out) {
  auto text = scalar(e, "a duration");
  if (!text) return;
  const auto value = parse_duration(*text);
  if (!value) {
    report(e.value_line, e.path,
           fmt::format("invalid duration {} (expected e.g. 500ms, 30s, 5m, 2h, 1m30s)",
                       shown(e.path, *text)));
  } else if (!allow_zero && value->count() == 0) {
    report(e.value_line, e.path, "must be longer than zero");
  } else {
    out = *value;
  }
}

void SchemaReader::read_choice(const SchemaEntry& e, Words choices, std::string& out) {
  auto text = scalar(e, "a string");
  if (!text) return;
  if (contains(choices, *text)) {
    out = std::move(*text);
  } else {
    report(
        e.value_line, e.path,
        fmt::format("invalid value {} (expected one of: {})", shown(e.path, *text), join(choices)));
  }
}

// A list of strings (null = empty), each with its line.
std::vector<std::pair<std::string, int>> SchemaReader::read_list(const SchemaEntry& e) {
  std::vector<std::pair<std::string, int>> items;
  if (e.value.IsNull()) return items;
  if (!e.value.IsSequence()) {
    report(e.value_line, e.path, "expected a list of strings, got " + kind_of(e.value));
    return items;
  }
  for (const auto& item : e.value) {
    const int line = line_of(item, e.value_line);
    if (!item.IsScalar()) {
      report(line, e.path, "expected a list of strings, got an item that is " + kind_of(item));
      continue;
    }
    items.emplace_back(item.Scalar(), line);
  }
  return items;
}

// A list of names ([A-Za-z0-9_-]+), each once.
std::vector<std::string> SchemaReader::read_names(const SchemaEntry& e, std::string_view what) {
  std::vector<std::string> names;
  for (auto& [name, line] : read_list(e)) {
    if (!valid_name(name)) {
      report(line, e.path,
             fmt::format("invalid {} name {} (expected [A-Za-z0-9_-]+)", what, quoted(name)));
    } else if (std::find(names.begin(), names.end(), name) != names.end()) {
      report(line, e.path, fmt::format("{} {} is listed twice", what, quoted(name)));
    } else {
      names.push_back(std::move(name));
    }
  }
  return names;
}

SettingsReader::SettingsReader(const YAML::Node& settings, std::string source_file, int line,
                               std::string path, const std::vector<std::string>& orgd_keys)
    : settings_(settings),
      line_(line),
      path_(std::move(path)),
      known_(orgd_keys.begin(), orgd_keys.end()),
      schema_(std::move(source_file)) {
  if (settings_ && !settings_.IsNull() && !settings_.IsMap()) {
    report(line_, "", "expected a map of settings");
  }
}

// The typed reads are the config loader's own (SchemaReader's), so a provider's settings get
// the same checks and the same messages as every other key of the file.
std::optional<SchemaEntry> SettingsReader::entry(const std::string& key) {
  known_.insert(key);
  const YAML::Node value = lookup(key);
  if (!value) return std::nullopt;
  SchemaEntry e;
  e.key = key;
  e.value = value;
  e.path = path_ + "." + key;
  e.line = line_of(value, line_);
  e.value_line = e.line;
  return e;
}

std::optional<std::string> SettingsReader::string(const std::string& key) {
  auto e = entry(key);
  if (!e) return std::nullopt;
  const std::size_t before = schema_.problem_count();
  std::string text;
  schema_.read_string(*e, text, /*allow_empty=*/false);
  if (schema_.problem_count() != before) return std::nullopt;
  return text;
}

std::string SettingsReader::required_string(const std::string& key) {
  const bool present = static_cast<bool>(lookup(key));
  auto value = string(key);
  if (!present) report(line_, key, "required key missing");
  return value.value_or("");
}

Duration SettingsReader::duration(const std::string& key, Duration fallback) {
  Duration out = fallback;
  if (auto e = entry(key)) schema_.read_duration(*e, /*allow_zero=*/true, out);
  return out;
}

bool SettingsReader::boolean(const std::string& key, bool fallback) {
  bool out = fallback;
  if (auto e = entry(key)) schema_.read_bool(*e, out);
  return out;
}

std::optional<std::vector<std::string>> SettingsReader::string_list(const std::string& key) {
  auto e = entry(key);
  if (!e) return std::nullopt;
  const std::size_t before = schema_.problem_count();
  std::vector<std::string> items;
  for (auto& [item, line] : schema_.read_list(*e)) {
    if (item.empty()) {
      schema_.report(line, e->path, "must not contain an empty string");
      continue;
    }
    items.push_back(std::move(item));
  }
  if (schema_.problem_count() != before) return std::nullopt;
  return items;
}

std::optional<std::map<std::string, std::string>> SettingsReader::string_map(
    const std::string& key) {
  auto e = entry(key);
  if (!e) return std::nullopt;
  const std::size_t before = schema_.problem_count();
  auto entries = schema_.mapping(e->value, e->path, e->value_line, Words{});
  if (!entries) return std::nullopt;
  std::map<std::string, std::string> out;
  for (const SchemaEntry& item : *entries) {
    std::string value;
    schema_.read_string(item, value);
    out[item.key] = std::move(value);
  }
  if (schema_.problem_count() != before) return std::nullopt;
  return out;
}

void SettingsReader::invalid(const std::string& key, std::string_view message) {
  const YAML::Node value = lookup(key);
  report(value ? line_of(value, line_) : line_, key, message);
}

void SettingsReader::finish() {
  if (settings_.IsMap()) {
    for (const auto& entry : settings_) {
      const auto key = entry.first.IsScalar() ? entry.first.Scalar() : std::string{"?"};
      if (known_.count(key) == 0) report(line_of(entry.first, line_), key, "unknown key");
    }
  }
  schema_.throw_if_problems();
}

YAML::Node SettingsReader::lookup(const std::string& key) const {
  if (!settings_.IsMap()) return YAML::Node{YAML::NodeType::Undefined};
  // A const lookup: a mutable operator[] would insert the key.
  const YAML::Node& map = settings_;
  return map[key];
}

void SettingsReader::report(int line, const std::string& key, std::string_view message) {
  schema_.report(line, key.empty() ? path_ : path_ + "." + key, message);
}

}  // namespace orgd
