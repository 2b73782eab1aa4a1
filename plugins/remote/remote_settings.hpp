#pragma once

// The settings of `providers.<name>: {type: remote, ...}` (DESIGN.md §8): where the provider is
// served on the bus, how long orgd waits for it, and which capabilities it offers. These are
// known at config load, when orgd is not yet connected, so they are declared here and checked
// against the provider's own describe when it first answers.

#include <chrono>
#include <string>

#include "daemon/core/config.hpp"
#include "daemon/core/duration.hpp"
#include "daemon/plugin/provider.hpp"

namespace orgd::remote {

struct Settings {
  std::string name;  // the provider instance (providers.<name>)
  std::string org;   // `org:` of the config
  // Requests go to <subject>.<op>; default "<P>.plugin.<name>".
  std::string subject;
  // The longest orgd waits for one reply; every call is bounded by min(timeout, the caller's
  // deadline).
  Duration timeout = std::chrono::seconds{30};
  // Default: deploy_target and health_probe.
  Capabilities capabilities{.deploy_target = true, .health_probe = true};
  // Replies larger than this are refused (a provider cannot make orgd buffer without bound).
  std::size_t max_reply_bytes = 1024 * 1024;
};

// Reads and checks `providers.<config.name>`; `subject_prefix` is P (empty: none). Throws
// ConfigError with every problem, each "<file>:<line>: providers.<name>.<key>: <problem>".
Settings parse_settings(const ProviderConfig& config, const std::string& source_file,
                        const std::string& subject_prefix, const std::string& org);

// A subject orgd may publish requests under: dot-separated non-empty tokens without spaces or
// wildcards (`*`, `>`).
bool valid_request_subject(const std::string& subject);

}  // namespace orgd::remote
