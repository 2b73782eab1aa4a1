#include "daemon/secrets/rotation.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "daemon/core/config_values.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/secrets/value_generator.hpp"

namespace orgd::secrets {
namespace {

using nlohmann::json;

constexpr std::string_view kPrefix = "rotation.";

std::int64_t millis(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
Clock::time_point from_millis(std::int64_t ms) {
  return Clock::time_point{std::chrono::milliseconds{ms}};
}

constexpr std::pair<RotationRecord::Phase, std::string_view> kPhases[] = {
    {RotationRecord::Phase::requested, "requested"}, {RotationRecord::Phase::pushing, "pushing"},
    {RotationRecord::Phase::active, "active"},       {RotationRecord::Phase::retired, "retired"},
    {RotationRecord::Phase::failed, "failed"}};

std::string new_rotation_id() {
  unsigned char bytes[8];
  randombytes_buf(bytes, sizeof bytes);
  std::string id = "r-";
  for (const unsigned char b : bytes) id += fmt::format("{:02x}", b);
  return id;
}

}  // namespace

std::string phase_name(RotationRecord::Phase phase) {
  for (const auto& [p, name] : kPhases) {
    if (p == phase) return std::string{name};
  }
  return "requested";
}

std::string encode_rotation(const RotationRecord& r) {
  json j{{"id", r.id},
         {"name", r.name},
         {"scope", r.scope},
         {"phase", phase_name(r.phase)},
         {"actor", r.actor},
         {"reason", r.reason},
         {"requestId", r.request_id},
         {"oldVersion", r.old_version},
         {"newVersion", r.new_version},
         {"issuedId", r.issued_id},
         {"oldIssuedId", r.old_issued_id},
         {"behind", r.behind},
         {"error", r.error},
         {"attempts", r.attempts},
         {"pushed", r.pushed},
         {"requestedAt", millis(r.requested_at)},
         {"nextAttemptAt", millis(r.next_attempt_at)},
         {"activatedAt", millis(r.activated_at)},
         {"retireAt", millis(r.retire_at)},
         {"finishedAt", millis(r.finished_at)}};
  return j.dump();
}

Result<RotationRecord> decode_rotation(const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return invalid_argument("rotation record: not a JSON object");
  try {
    RotationRecord r;
    r.id = j.at("id").get<std::string>();
    r.name = j.at("name").get<std::string>();
    r.scope = j.at("scope").get<std::string>();
    const auto phase = j.at("phase").get<std::string>();
    bool known = false;
    for (const auto& [p, name] : kPhases) {
      if (name == phase) {
        r.phase = p;
        known = true;
      }
    }
    if (!known) return invalid_argument("rotation record: unknown phase " + phase);
    r.actor = j.value("actor", "");
    r.reason = j.value("reason", "");
    r.request_id = j.value("requestId", "");
    r.old_version = j.value("oldVersion", std::uint64_t{0});
    r.new_version = j.value("newVersion", std::uint64_t{0});
    r.issued_id = j.value("issuedId", "");
    r.old_issued_id = j.value("oldIssuedId", "");
    r.behind = j.value("behind", std::vector<std::string>{});
    r.error = j.value("error", "");
    r.attempts = j.value("attempts", 0);
    r.pushed = j.value("pushed", false);
    r.requested_at = from_millis(j.value("requestedAt", std::int64_t{0}));
    r.next_attempt_at = from_millis(j.value("nextAttemptAt", std::int64_t{0}));
    r.activated_at = from_millis(j.value("activatedAt", std::int64_t{0}));
    r.retire_at = from_millis(j.value("retireAt", std::int64_t{0}));
    r.finished_at = from_millis(j.value("finishedAt", std::int64_t{0}));
    return r;
  } catch (const json::exception& e) {
    return invalid_argument(std::string{"rotation record: "} + e.what());
  }
}

RotationEngine::RotationEngine(Parts parts, Options options)
    : parts_(std::move(parts)), options_(options) {}

std::string RotationEngine::key_of(const std::string& scope, const std::string& name) const {
  return std::string{kPrefix} + scope + "." + name;
}

Result<std::string> RotationEngine::default_scope(const std::string& name) {
  auto org = parts_.vault->active("org", name);
  if (!org) return org.error();
  if (org.value()) return std::string{"org"};
  const auto it = parts_.repos_of_name.find(name);
  if (it != parts_.repos_of_name.end()) {
    for (const auto& repo : it->second) {
      auto own = parts_.vault->active(repo, name);
      if (!own) return own.error();
      if (own.value()) return repo;
    }
  }
  return std::string{"org"};
}

Result<std::optional<RotationRecord>> RotationEngine::get(const std::string& scope,
                                                          const std::string& name) {
  auto entry = parts_.state->get(key_of(scope, name));
  if (!entry) return entry.error();
  if (!entry.value()) return std::optional<RotationRecord>{};
  auto record = decode_rotation(entry.value()->value);
  if (!record) return record.error();
  return std::optional<RotationRecord>{std::move(record.value())};
}

Result<RotationRecord> RotationEngine::request(const RotationRequest& request) {
  std::lock_guard lock(mutex_);
  if (parts_.policies.count(request.name) == 0) {
    return not_found("secret " + request.name + " has no rotation policy (secrets.rotation)");
  }
  std::string scope = request.scope;
  if (scope.empty()) {
    auto found = default_scope(request.name);
    if (!found) return found.error();
    scope = found.value();
  } else if (scope != "org" && !valid_name(scope)) {
    return invalid_argument("scope is org or a repo's name");
  }
  const std::string key = key_of(scope, request.name);
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto entry = parts_.state->get(key);
    if (!entry) return entry.error();
    std::optional<RotationRecord> previous;
    if (entry.value()) {
      auto decoded = decode_rotation(entry.value()->value);
      if (!decoded) return decoded.error();
      previous = std::move(decoded.value());
      // A rotation in progress answers every request; so does a finished one for a repeated
      // request id (a redelivered command).
      if (!previous->finished() ||
          (!request.request_id.empty() && previous->request_id == request.request_id)) {
        return *previous;
      }
    }
    auto active = parts_.vault->active(scope, request.name);
    if (!active) return active.error();
    RotationRecord record;
    record.id = new_rotation_id();
    record.name = request.name;
    record.scope = scope;
    record.actor = request.actor;
    record.reason = request.reason;
    record.request_id = request.request_id;
    record.old_version = active.value() ? active.value()->version : 0;
    // The credential the last rotation issued is the one this one revokes.
    if (previous && previous->phase == RotationRecord::Phase::retired) {
      record.old_issued_id = previous->issued_id;
    }
    record.requested_at = parts_.clock->now();
    const std::string text = encode_rotation(record);
    auto written = entry.value() ? parts_.state->update(key, text, entry.value()->revision)
                                 : parts_.state->create(key, text);
    if (written) {
      emit(record, "requested");
      return record;
    }
    if (written.error().code != ErrorCode::conflict) return written.error();
  }
  return conflict("rotation of " + request.name + " is being changed by another orgd; try again");
}

std::size_t RotationEngine::tick() {
  request_due();
  auto keys = parts_.state->keys(std::string{kPrefix} + ">");
  if (!keys) {
    logging::get("secrets")->warn("rotations: cannot list: {}", keys.error().message);
    return 0;
  }
  std::size_t advanced = 0;
  for (const auto& key : keys.value()) {
    const auto rest = key.substr(kPrefix.size());
    const auto dot = rest.find('.');
    if (dot == std::string::npos) continue;
    auto record = advance(rest.substr(0, dot), rest.substr(dot + 1));
    if (record && !record.value().finished()) ++advanced;
  }
  return advanced;
}

void RotationEngine::request_due() {
  const auto now = parts_.clock->now();
  for (const auto& [name, policy] : parts_.policies) {
    if (policy.max_age <= Duration::zero()) continue;
    auto scope = default_scope(name);
    if (!scope) continue;
    auto active = parts_.vault->active(scope.value(), name);
    if (!active || !active.value()) continue;  // nothing to rotate yet
    if (now - active.value()->since < policy.max_age) continue;
    auto current = get(scope.value(), name);
    if (!current) continue;
    if (current.value() && !current.value()->finished()) continue;
    RotationRequest due;
    due.name = name;
    due.scope = scope.value();
    due.actor = "orgd:schedule";
    due.reason = "older than max_age " + format_duration(policy.max_age);
    (void)request(due);
  }
}

Result<RotationRecord> RotationEngine::advance(const std::string& scope, const std::string& name) {
  std::lock_guard lock(mutex_);
  auto entry = parts_.state->get(key_of(scope, name));
  if (!entry) return entry.error();
  if (!entry.value()) return not_found("no rotation of " + scope + "/" + name);
  auto decoded = decode_rotation(entry.value()->value);
  if (!decoded) return decoded.error();
  RotationRecord record = std::move(decoded.value());
  std::uint64_t revision = entry.value()->revision;
  for (int steps = 0; steps < 8 && !record.finished(); ++steps) {
    auto more = step(record, revision);
    if (!more) return more.error();
    if (!more.value()) break;
  }
  return record;
}

Result<Ok> RotationEngine::save(RotationRecord& record, std::uint64_t& revision) {
  auto written =
      parts_.state->update(key_of(record.scope, record.name), encode_rotation(record), revision);
  if (!written) return written.error();
  revision = written.value();
  return Ok{};
}

Result<bool> RotationEngine::step(RotationRecord& record, std::uint64_t& revision) {
  switch (record.phase) {
    case RotationRecord::Phase::requested: return generate(record, revision);
    case RotationRecord::Phase::pushing: return push(record, revision);
    case RotationRecord::Phase::active: return retire(record, revision);
    case RotationRecord::Phase::retired:
    case RotationRecord::Phase::failed: return false;
  }
  return false;
}

Result<bool> RotationEngine::generate(RotationRecord& record, std::uint64_t& revision) {
  const auto log = logging::get("secrets");
  if (parts_.clock->now() < record.next_attempt_at) return false;
  const RotationPolicyConfig& policy = parts_.policies.at(record.name);
  Secret value;
  if (policy.issuer.empty()) {
    auto made = generate_value(policy.length, policy.alphabet);
    if (!made) {
      give_up(record, revision, made.error().message);
      return false;
    }
    value = std::move(made.value());
  } else {
    const auto it = parts_.issuers.find(policy.issuer);
    if (it == parts_.issuers.end() || it->second == nullptr) {
      give_up(record, revision, "provider " + policy.issuer + " issues no credentials");
      return false;
    }
    // A credential issued before a crash whose value was never stored cannot be used: revoke
    // it before issuing the next.
    if (!record.issued_id.empty()) {
      if (auto revoked = it->second->revoke(record.issued_id); !revoked) {
        log->warn("rotation {} of {}: revoking the unused credential {}: {}", record.id,
                  record.name, record.issued_id, revoked.error().message);
      }
      record.issued_id.clear();
    }
    auto issued = it->second->issue(record.name);
    if (!issued) {
      if (issued.error().retry == Retry::permanent) {
        give_up(record, revision, issued.error().message);
        return false;
      }
      record.error = issued.error().message;
      record.next_attempt_at =
          parts_.clock->now() + backoff(++record.attempts, issued.error().retry_after);
      (void)save(record, revision);
      return false;
    }
    record.issued_id = issued.value().id;
    // Saved before the value is stored, so a crash in between revokes it (above).
    if (auto saved = save(record, revision); !saved) return saved.error();
    value = std::move(issued.value().value);
  }
  auto version = parts_.vault->put_pending(record.scope, record.name, std::move(value));
  if (!version) return version.error();
  record.new_version = version.value();
  record.phase = RotationRecord::Phase::pushing;
  record.error.clear();
  if (auto saved = save(record, revision); !saved) return saved.error();
  emit(record, "generated");
  return true;
}

Result<bool> RotationEngine::push(RotationRecord& record, std::uint64_t& revision) {
  const auto now = parts_.clock->now();
  if (now < record.next_attempt_at) return false;
  auto outcome = parts_.push(record.scope, record.name);
  if (outcome && outcome.value().behind.empty()) {
    if (!record.pushed) {
      // Every target took the value; the next push lists each target again and sees it there.
      record.pushed = true;
      record.behind.clear();
      record.error.clear();
      if (auto saved = save(record, revision); !saved) return saved.error();
      emit(record, "pushed", outcome.value().targets);
      return true;
    }
    if (auto activated = parts_.vault->activate(record.scope, record.name, record.new_version);
        !activated) {
      return activated.error();
    }
    const RotationPolicyConfig& policy = parts_.policies.at(record.name);
    record.phase = RotationRecord::Phase::active;
    record.activated_at = now;
    record.retire_at = now + policy.overlap;
    if (auto saved = save(record, revision); !saved) return saved.error();
    emit(record, "active", outcome.value().targets);
    return true;
  }
  // Some target lacks the new value: the old one stays active; try again later.
  std::chrono::milliseconds at_least{0};
  if (outcome) {
    record.behind = outcome.value().behind;
    record.error = outcome.value().error;
    at_least = outcome.value().retry_after;
  } else {
    record.error = outcome.error().message;
    at_least = outcome.error().retry_after;
  }
  record.pushed = false;
  ++record.attempts;
  if (now - record.requested_at >= options_.give_up_after) {
    give_up(record, revision, "targets still behind after " +
                                  format_duration(std::chrono::duration_cast<Duration>(
                                      options_.give_up_after)) +
                                  ": " + record.error);
    return false;
  }
  record.next_attempt_at = now + backoff(record.attempts, at_least);
  if (auto saved = save(record, revision); !saved) return saved.error();
  emit(record, "behind", record.behind);
  return false;
}

Result<bool> RotationEngine::retire(RotationRecord& record, std::uint64_t& revision) {
  const auto now = parts_.clock->now();
  if (now < record.retire_at || now < record.next_attempt_at) return false;
  if (record.old_version != 0) {
    if (auto retired = parts_.vault->retire(record.scope, record.name, record.old_version);
        !retired) {
      return retired.error();
    }
  }
  if (!record.old_issued_id.empty()) {
    const auto& policy = parts_.policies.at(record.name);
    const auto it = parts_.issuers.find(policy.issuer);
    if (it != parts_.issuers.end() && it->second != nullptr) {
      if (auto revoked = it->second->revoke(record.old_issued_id); !revoked) {
        if (revoked.error().code != ErrorCode::not_found) {
          record.error = revoked.error().message;
          record.next_attempt_at = now + backoff(++record.attempts, revoked.error().retry_after);
          (void)save(record, revision);
          return false;
        }
      }
    }
  }
  record.phase = RotationRecord::Phase::retired;
  record.finished_at = now;
  record.error.clear();
  if (auto saved = save(record, revision); !saved) return saved.error();
  emit(record, "retired");
  return false;
}

void RotationEngine::give_up(RotationRecord& record, std::uint64_t& revision, std::string why) {
  // The old value stays active; the new one is dropped so a sync puts the old one back where
  // the new one got to, and an issued credential is revoked.
  if (record.new_version != 0) {
    (void)parts_.vault->retire(record.scope, record.name, record.new_version);
  }
  if (!record.issued_id.empty()) {
    const auto& policy = parts_.policies.at(record.name);
    const auto it = parts_.issuers.find(policy.issuer);
    if (it != parts_.issuers.end() && it->second != nullptr) {
      (void)it->second->revoke(record.issued_id);
    }
  }
  record.phase = RotationRecord::Phase::failed;
  record.error = std::move(why);
  record.finished_at = parts_.clock->now();
  (void)save(record, revision);
  logging::get("secrets")->warn("rotation {} of {}/{} failed: {}", record.id, record.scope,
                                record.name, record.error);
  emit(record, "failed", record.behind);
}

std::chrono::milliseconds RotationEngine::backoff(int attempts,
                                                  std::chrono::milliseconds at_least) const {
  auto wait = options_.first_backoff;
  for (int i = 1; i < attempts && wait < options_.max_backoff; ++i) wait *= 2;
  return std::max(std::min(wait, options_.max_backoff), at_least);
}

void RotationEngine::emit(const RotationRecord& record, const std::string& kind,
                          std::vector<std::string> targets) {
  if (!parts_.events) return;
  RotationEvent event;
  event.kind = kind;
  event.name = record.name;
  event.scope = record.scope;
  event.rotation_id = record.id;
  event.actor = record.actor;
  event.version = record.new_version != 0 ? record.new_version : record.old_version;
  event.targets = std::move(targets);
  event.error = record.error;
  parts_.events(event);
}

}  // namespace orgd::secrets
