#include "plugins/remote/remote_settings.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <string_view>

#include "daemon/core/config_values.hpp"

namespace orgd::remote {

namespace {

// The longest wait accepted: a remote call holds one of orgd's threads while it waits.
constexpr Duration kMaxTimeout = std::chrono::minutes{5};

}  // namespace

bool valid_request_subject(const std::string& subject) {
  if (subject.empty() || subject.size() > 256) return false;
  std::size_t token = 0;
  for (const char c : subject) {
    if (c == '.') {
      if (token == 0) return false;
      token = 0;
      continue;
    }
    const auto u = static_cast<unsigned char>(c);
    if (u <= ' ' || u == 0x7f || c == '*' || c == '>') return false;
    ++token;
  }
  return token != 0;
}

Settings parse_settings(const ProviderConfig& config, const std::string& source_file,
                        const std::string& subject_prefix, const std::string& org) {
  SettingsReader reader = provider_settings(config, source_file);
  Settings s;
  s.name = config.name;
  s.org = org;
  // Without a prefix (no org: tests, tools), the subject starts at "plugin".
  s.subject = reader.string("subject").value_or(
      (subject_prefix.empty() ? std::string{} : subject_prefix + ".") + "plugin." + config.name);
  if (!valid_request_subject(s.subject)) {
    reader.invalid("subject",
                   fmt::format("{} is not a NATS subject orgd can send requests to (dot-separated "
                               "tokens, no spaces, no * or >)",
                               quoted(s.subject)));
  }
  s.timeout = reader.duration("timeout", s.timeout);
  if (s.timeout < std::chrono::milliseconds{100} || s.timeout > kMaxTimeout) {
    reader.invalid("timeout", "must be between 100ms and 5m");
    s.timeout = std::chrono::seconds{30};
  }
  if (auto names = reader.string_list("capabilities")) {
    Capabilities caps;
    for (const std::string& name : *names) {
      if (name == "deploy_target") {
        caps.deploy_target = true;
      } else if (name == "secret_target") {
        caps.secret_target = true;
      } else if (name == "credential_issuer") {
        caps.credential_issuer = true;
      } else if (name == "health_probe") {
        caps.health_probe = true;
      } else {
        reader.invalid("capabilities",
                       fmt::format("unknown capability {} (known: deploy_target, secret_target, "
                                   "credential_issuer, health_probe)",
                                   quoted(name)));
      }
    }
    if (names->empty()) reader.invalid("capabilities", "must name at least one capability");
    s.capabilities = caps;
  }
  reader.finish();
  return s;
}

}  // namespace orgd::remote
