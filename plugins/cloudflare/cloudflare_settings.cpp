#include "plugins/cloudflare/cloudflare_settings.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <string_view>

#include "daemon/core/yaml_schema.hpp"
#include "daemon/net/url.hpp"

namespace orgd::cloudflare {

namespace {

bool valid_env_name(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0])) != 0) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
  });
}

bool hex32(std::string_view id) {
  return id.size() == 32 && std::all_of(id.begin(), id.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c)) != 0;
         });
}

// YYYY-MM-DD.
bool valid_date(std::string_view v) {
  if (v.size() != 10 || v[4] != '-' || v[7] != '-') return false;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i == 4 || i == 7) continue;
    if (std::isdigit(static_cast<unsigned char>(v[i])) == 0) return false;
  }
  return true;
}

std::optional<int> to_int(std::string_view text) {
  int v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// A list of percentages: increasing, each within [min, 100], the last 100. Problems reported
// on `key`; nullopt when there were some.
std::optional<std::vector<int>> read_steps(SettingsReader& reader, const std::string& key,
                                           int min) {
  const auto items = reader.string_list(key);
  if (!items) return std::nullopt;
  std::vector<int> steps;
  for (const auto& item : *items) {
    const auto p = to_int(item);
    if (!p || *p < min || *p > 100) {
      reader.invalid(key, fmt::format("each step is a percentage from {} to 100 (got {})", min,
                                      item));
      return std::nullopt;
    }
    if (!steps.empty() && *p <= steps.back()) {
      reader.invalid(key, "steps must increase (e.g. [10, 50, 100])");
      return std::nullopt;
    }
    steps.push_back(*p);
  }
  if (steps.empty() || steps.back() != 100) {
    reader.invalid(key, "the last step must be 100 (all traffic on the new version)");
    return std::nullopt;
  }
  return steps;
}

}  // namespace

bool valid_script_name(const std::string& name) {
  return !name.empty() && name.size() <= 63 && name.front() != '-' &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
         });
}

Settings parse_settings(const ProviderConfig& config, const std::string& source_file) {
  SettingsReader reader = provider_settings(config, source_file);
  Settings s;
  s.name = config.name;
  auto url_setting = [&](const char* key, std::string& out) {
    auto url = reader.string(key);
    if (!url) return;
    while (url->size() > 1 && url->back() == '/') url->pop_back();
    std::string why;
    if (!net::acceptable_api_url(*url, why)) {
      reader.invalid(key, why);
    } else {
      out = std::move(*url);
    }
  };
  url_setting("api_url", s.api_url);
  url_setting("r2_url", s.r2_url);
  s.token_env = reader.required_string("token_env");
  if (!s.token_env.empty() && !valid_env_name(s.token_env)) {
    reader.invalid("token_env", "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
  }
  s.account_id = reader.required_string("account_id");
  if (!s.account_id.empty() && !hex32(s.account_id)) {
    reader.invalid("account_id", "must be the account's id: 32 hexadecimal digits");
  }
  s.ca_file = reader.string("ca_file").value_or("");
  s.r2_jurisdiction = reader.string("r2_jurisdiction").value_or("");
  if (!s.r2_jurisdiction.empty() && s.r2_jurisdiction != "default" && s.r2_jurisdiction != "eu" &&
      s.r2_jurisdiction != "fedramp" && s.r2_jurisdiction != "us") {
    reader.invalid("r2_jurisdiction", "expected default, eu, fedramp or us");
  }
  if (s.r2_jurisdiction == "default") s.r2_jurisdiction.clear();
  reader.finish();
  return s;
}

DeployTargetSettings parse_deploy_target(const DeployTargetConfig& target,
                                         const std::string& source_file) {
  SettingsReader reader = target_settings(target, source_file);
  DeployTargetSettings out;
  const auto script = reader.string("script");
  const auto application = reader.string("application");
  if (application) {
    out.containers = true;
    ContainersTarget& app = out.app;
    app.application = *application;
    app.image = reader.required_string("image");
    for (const char* key : {"dir", "main_module", "compatibility_date"}) {
      if (reader.string(key)) reader.invalid(key, "a Containers target (application) has no " +
                                                      std::string(key));
    }
    if (const auto p = reader.string("step_percentage")) {
      const auto value = to_int(*p);
      const int allowed[] = {5, 10, 20, 25, 50, 100};
      if (!value || std::find(std::begin(allowed), std::end(allowed), *value) == std::end(allowed)) {
        reader.invalid("step_percentage", "one of 5, 10, 20, 25, 50, 100 (Cloudflare's choices)");
      } else {
        app.step_percentage = *value;
      }
    }
    if (auto steps = read_steps(reader, "steps", 10)) app.steps = std::move(*steps);
    if (app.step_percentage != 0 && !app.steps.empty()) {
      reader.invalid("steps", "step_percentage and steps are exclusive");
    }
    if (app.step_percentage == 0 && app.steps.empty()) app.step_percentage = 100;
    if (const auto kind = reader.string("kind")) {
      if (*kind != "full_auto" && *kind != "full_manual") {
        reader.invalid("kind", "expected full_auto or full_manual");
      } else {
        app.kind = *kind;
      }
    }
    app.poll_interval = std::chrono::duration_cast<std::chrono::milliseconds>(
        reader.duration("poll_interval", app.poll_interval));
    if (app.poll_interval < std::chrono::milliseconds{100}) {
      reader.invalid("poll_interval", "at least 100ms");
    }
    if (app.image.find_first_of("; \t") != std::string::npos) {
      reader.invalid("image", "must be an image reference (no spaces or ;)");
    }
    if (!application->empty() &&
        !std::all_of(application->begin(), application->end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
        })) {
      reader.invalid("application", "must be the application's id (letters, digits, - and _)");
    }
    if (script) reader.invalid("script", "a target is a Worker (script) or an application, not both");
  } else {
    WorkersTarget& w = out.workers;
    w.script = script.value_or("");
    if (!script) {
      reader.invalid("script", "required: the Worker's name (or application + image for Containers)");
    } else if (!valid_script_name(w.script)) {
      reader.invalid("script", "must be a Worker name: lower-case letters, digits, - and _");
    }
    if (reader.string("image")) reader.invalid("image", "only for a Containers target (application)");
    if (reader.string("step_percentage")) {
      reader.invalid("step_percentage", "only for a Containers target; a Worker has steps");
    }
    if (reader.string("kind")) reader.invalid("kind", "only for a Containers target");
    if (reader.string("poll_interval")) {
      reader.invalid("poll_interval", "only for a Containers target (a Worker's steps are immediate)");
    }
    w.dir = reader.required_string("dir");
    w.main_module = reader.string("main_module").value_or(w.main_module);
    w.compatibility_date = reader.string("compatibility_date").value_or("");
    if (!w.compatibility_date.empty() && !valid_date(w.compatibility_date)) {
      reader.invalid("compatibility_date", "must be a date YYYY-MM-DD");
    }
    if (auto steps = read_steps(reader, "steps", 1)) w.steps = std::move(*steps);
    // `dir` is a build's output: it may not exist yet when orgd loads its config, so it is
    // checked when a deploy starts.
    if (w.main_module.find("..") != std::string::npos || w.main_module.front() == '/') {
      reader.invalid("main_module", "must be a file name inside dir");
    }
  }
  reader.finish();
  return out;
}

std::string parse_secret_script(const SecretTargetConfig& target, const std::string& source_file) {
  SettingsReader reader = secret_target_settings(target, source_file);
  std::string script = reader.required_string("script");
  if (!script.empty() && !valid_script_name(script)) {
    reader.invalid("script", "must be a Worker name: lower-case letters, digits, - and _");
  }
  reader.finish();
  return script;
}

}  // namespace orgd::cloudflare
