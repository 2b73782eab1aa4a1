#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/clock.hpp"
#include "daemon/core/duration.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/paging.hpp"
#include "orgd/v1/health.pb.h"
#include "orgd/v1/status.pb.h"

namespace orgd {

struct RepoHealthSpec {
  std::string name;
  std::vector<std::string> depends_on;
  std::vector<std::string> envs;
  std::vector<std::string> services;  // configured services
  Duration ttl{std::chrono::seconds{30}};
};

// The org's health picture: the last report of every service, staleness, and each repo's health
// derived from its services. Pure logic over an injected clock; thread-safe.
//
// Derivation: a repo with no known service is `unknown`; any service down or stale makes it
// `down`; otherwise any degraded service, or a configured service never heard from next to
// reporting ones, makes it `degraded`; all services ok makes it `ok`.
class HealthRegistry {
 public:
  static constexpr std::size_t kMaxServicesPerRepo = 256;
  static constexpr int kMaxTtlSeconds = 7 * 24 * 3600;

  explicit HealthRegistry(const Clock& clock);

  // Sets the configured repos. States of services of repos that stay are kept.
  void configure(const std::vector<RepoHealthSpec>& repos);

  // What one input changed: the service state to persist (P.state.health.<repo>.<service>) when
  // it changed, and the repo health change to announce.
  struct Update {
    std::optional<v1::ServiceHealth> service;
    std::optional<v1::HealthChanged> repo_change;
  };

  // A HealthReport from P.health.<repo>.<service>. not_found for unknown repos,
  // invalid_argument for invalid reports.
  Result<Update> report(std::string_view repo, std::string_view service,
                        const v1::HealthReport& report);

  // Services whose last report is older than their ttl become stale (and count as down), in
  // repo then service name order. Touches only the services whose deadline has passed: the
  // fresh ones wait in a deadline-ordered index (O(log n) per report), so a sweep with nothing
  // to do costs the same at 30,000 services as at 3.
  std::vector<Update> sweep();

  // Restores a persisted state on start (no events). A restored service that was fresh keeps its
  // state for one more ttl from now, so a restart does not flap every repo to down.
  void restore(const v1::ServiceHealth& state);
  // The same for many states at once (the rebuild from ORGD_HEALTH): one lock, and each touched
  // repo's health derived once, however many of its services come back.
  void restore(const std::vector<v1::ServiceHealth>& states);

  // Services the sweeps looked at since construction (each one that was due): what makes "a
  // sweep touches only what expires" checkable without a clock.
  std::uint64_t services_examined() const;
  // Fresh services waiting for their deadline.
  std::size_t pending_deadlines() const;

  // Every repo (HTTP /status), or one page of them (P.api.status), sorted by name.
  v1::OrgStatus org_status(const std::string& org) const;
  v1::OrgStatus org_status(const std::string& org, const PageRequest& page) const;
  Result<v1::RepoStatus> repo_status(std::string_view repo) const;
  v1::RepoList repo_list(const PageRequest& page) const;
  bool has_repo(std::string_view repo) const;
  std::size_t service_count() const;

 private:
  // Fresh services by the time they turn stale; the value names the service. A service is in it
  // exactly when it is reported and not stale.
  using Deadlines =
      std::multimap<Clock::time_point, std::pair<std::string, std::string>>;  // repo, service
  struct Service {
    v1::Health::Status status = v1::Health::unknown;
    std::string version;
    std::string detail;
    int ttl_seconds = 0;
    Clock::time_point last_report_at{};
    Clock::time_point fresh_until{};  // last report (or restore) + ttl
    bool stale = false;
    bool reported = false;
    std::optional<Deadlines::iterator> deadline;  // set when in deadlines_
  };
  struct Repo {
    RepoHealthSpec spec;
    std::map<std::string, Service, std::less<>> services;
    v1::Health::Status health = v1::Health::unknown;
  };
  static v1::Health::Status derive(const Repo& repo);
  static v1::ServiceHealth to_state(const std::string& repo, const std::string& name,
                                    const Service& s);
  v1::RepoStatus to_status(const Repo& repo) const;
  // Puts the service in deadlines_ at its fresh_until when reported and not stale, and takes
  // it out otherwise; reuses its node, so a heartbeat allocates nothing.
  void rearm_locked(const std::string& repo, const std::string& service, Service& s);
  void restore_locked(const v1::ServiceHealth& state, std::vector<Repo*>* touched);
  // Recomputes repo health; returns the change to announce, if any.
  std::optional<v1::HealthChanged> rederive(Repo& repo, const std::string& cause);

  const Clock& clock_;
  mutable std::mutex mutex_;  // guards repos_
  std::map<std::string, Repo, std::less<>> repos_;
  Deadlines deadlines_;                 // guarded by mutex_
  std::uint64_t services_examined_ = 0;  // guarded by mutex_
};

}  // namespace orgd
