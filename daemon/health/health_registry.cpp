#include "daemon/health/health_registry.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "daemon/core/timestamps.hpp"
#include "daemon/events/codec.hpp"

namespace orgd {

using v1::Health;

HealthRegistry::HealthRegistry(const Clock& clock) : clock_(clock) {}

void HealthRegistry::configure(const std::vector<RepoHealthSpec>& repos) {
  std::lock_guard lock(mutex_);
  std::map<std::string, Repo, std::less<>> next;
  for (const auto& spec : repos) {
    Repo repo;
    if (auto it = repos_.find(spec.name); it != repos_.end()) repo = std::move(it->second);
    repo.spec = spec;
    for (const auto& service : spec.services) repo.services.try_emplace(service);
    // Services neither configured any more nor ever heard from are dropped.
    std::erase_if(repo.services, [&](const auto& kv) {
      return !kv.second.reported &&
             std::find(spec.services.begin(), spec.services.end(), kv.first) == spec.services.end();
    });
    repo.health = derive(repo);
    next.emplace(spec.name, std::move(repo));
  }
  repos_ = std::move(next);
  // Repos and services may have gone: the index is rebuilt with the picture (a reload is rare).
  deadlines_.clear();
  for (auto& [name, repo] : repos_) {
    for (auto& [service, s] : repo.services) {
      s.deadline.reset();
      rearm_locked(name, service, s);
    }
  }
}

void HealthRegistry::rearm_locked(const std::string& repo, const std::string& service,
                                  Service& s) {
  const bool fresh = s.reported && !s.stale;
  if (!s.deadline) {
    if (fresh) s.deadline = deadlines_.emplace(s.fresh_until, std::pair{repo, service});
    return;
  }
  if (!fresh) {
    deadlines_.erase(*s.deadline);
    s.deadline.reset();
    return;
  }
  if ((*s.deadline)->first == s.fresh_until) return;
  auto node = deadlines_.extract(*s.deadline);
  node.key() = s.fresh_until;
  s.deadline = deadlines_.insert(std::move(node));
}

Health::Status HealthRegistry::derive(const Repo& repo) {
  bool any = false, any_unknown = false, any_degraded = false, any_down = false;
  for (const auto& [name, s] : repo.services) {
    if (!s.reported) {
      any_unknown = true;
      continue;
    }
    any = true;
    if (s.stale || s.status == Health::down) any_down = true;
    if (s.status == Health::degraded) any_degraded = true;
  }
  if (!any) return Health::unknown;
  if (any_down) return Health::down;
  if (any_degraded || any_unknown) return Health::degraded;
  return Health::ok;
}

v1::ServiceHealth HealthRegistry::to_state(const std::string& repo, const std::string& name,
                                           const Service& s) {
  v1::ServiceHealth out;
  out.set_repo(repo);
  out.set_service(name);
  out.set_status(s.status);
  out.set_version(s.version);
  out.set_detail(s.detail);
  out.set_ttl_seconds(s.ttl_seconds);
  if (s.reported) *out.mutable_last_report_at() = to_timestamp(s.last_report_at);
  out.set_stale(s.stale);
  return out;
}

std::optional<v1::HealthChanged> HealthRegistry::rederive(Repo& repo, const std::string& cause) {
  auto next = derive(repo);
  if (next == repo.health) return std::nullopt;
  v1::HealthChanged change;
  change.set_repo(repo.spec.name);
  change.set_previous(repo.health);
  change.set_health(next);
  change.set_service(cause);
  *change.mutable_at() = to_timestamp(clock_.now());
  repo.health = next;
  return change;
}

Result<HealthRegistry::Update> HealthRegistry::report(std::string_view repo_name,
                                                      std::string_view service_name,
                                                      const v1::HealthReport& report) {
  if (!valid_subject_token(service_name)) {
    return invalid_argument(fmt::format("invalid service name '{}'", service_name));
  }
  if (report.status() != Health::ok && report.status() != Health::degraded &&
      report.status() != Health::down) {
    return invalid_argument("status is required: ok, degraded or down");
  }
  if (report.ttl_seconds() < 0 || report.ttl_seconds() > kMaxTtlSeconds) {
    return invalid_argument(
        fmt::format("ttlSeconds must be between 0 and {}", kMaxTtlSeconds));
  }
  if (report.version().size() > 128) return invalid_argument("version is longer than 128 bytes");
  if (report.detail().size() > 1024) return invalid_argument("detail is longer than 1024 bytes");

  std::lock_guard lock(mutex_);
  auto it = repos_.find(repo_name);
  if (it == repos_.end()) return not_found(fmt::format("unknown repo '{}'", repo_name));
  Repo& repo = it->second;
  auto sit = repo.services.find(service_name);
  if (sit == repo.services.end()) {
    if (repo.services.size() >= kMaxServicesPerRepo) {
      return invalid_argument(fmt::format("repo '{}' already has {} services", repo_name,
                                          kMaxServicesPerRepo));
    }
    sit = repo.services.emplace(std::string(service_name), Service{}).first;
  }
  Service& s = sit->second;
  auto now = clock_.now();
  int ttl = report.ttl_seconds() > 0
                ? report.ttl_seconds()
                : static_cast<int>(
                      std::chrono::duration_cast<std::chrono::seconds>(repo.spec.ttl).count());
  bool changed = !s.reported || s.stale || s.status != report.status() ||
                 s.version != report.version() || s.detail != report.detail() ||
                 s.ttl_seconds != ttl;
  s.status = report.status();
  s.version = report.version();
  s.detail = report.detail();
  s.ttl_seconds = ttl;
  s.last_report_at = now;
  s.fresh_until = now + std::chrono::seconds(ttl);
  s.stale = false;
  s.reported = true;
  rearm_locked(repo.spec.name, sit->first, s);

  Update update;
  if (changed) update.service = to_state(repo.spec.name, sit->first, s);
  update.repo_change = rederive(repo, sit->first);
  return update;
}

std::vector<HealthRegistry::Update> HealthRegistry::sweep() {
  std::vector<Update> updates;
  auto now = clock_.now();
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::string, std::string>> due;
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    due.push_back(std::move(deadlines_.begin()->second));
    deadlines_.erase(deadlines_.begin());
  }
  services_examined_ += due.size();
  // In name order, as a walk over every repo would find them: when two services of one repo
  // expire together, the first by name is the cause of the repo's change.
  std::sort(due.begin(), due.end());
  for (const auto& [name, service] : due) {
    auto rit = repos_.find(name);
    if (rit == repos_.end()) continue;  // cannot happen: configure() rebuilds the index
    Repo& repo = rit->second;
    auto sit = repo.services.find(service);
    if (sit == repo.services.end()) continue;
    Service& s = sit->second;
    s.deadline.reset();
    s.stale = true;
    Update update;
    update.service = to_state(name, service, s);
    update.repo_change = rederive(repo, service);
    updates.push_back(std::move(update));
  }
  return updates;
}

void HealthRegistry::restore(const v1::ServiceHealth& state) {
  std::lock_guard lock(mutex_);
  std::vector<Repo*> touched;
  restore_locked(state, &touched);
  for (Repo* repo : touched) repo->health = derive(*repo);
}

void HealthRegistry::restore(const std::vector<v1::ServiceHealth>& states) {
  std::lock_guard lock(mutex_);
  std::vector<Repo*> touched;
  touched.reserve(states.size());
  for (const auto& state : states) restore_locked(state, &touched);
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  for (Repo* repo : touched) repo->health = derive(*repo);
}

void HealthRegistry::restore_locked(const v1::ServiceHealth& state, std::vector<Repo*>* touched) {
  auto it = repos_.find(state.repo());
  if (it == repos_.end() || !valid_subject_token(state.service())) return;
  Repo& repo = it->second;
  if (repo.services.size() >= kMaxServicesPerRepo && !repo.services.contains(state.service())) {
    return;
  }
  auto [sit, inserted] = repo.services.try_emplace(state.service());
  Service& s = sit->second;
  s.status = state.status();
  s.version = state.version();
  s.detail = state.detail();
  s.ttl_seconds = state.ttl_seconds() > 0 ? state.ttl_seconds() : 30;
  s.last_report_at = from_timestamp(state.last_report_at());
  s.stale = state.stale();
  s.reported = state.has_last_report_at();
  auto grace = std::max(s.last_report_at, clock_.now());
  s.fresh_until = grace + std::chrono::seconds(s.ttl_seconds);
  rearm_locked(repo.spec.name, sit->first, s);
  touched->push_back(&repo);
}

std::uint64_t HealthRegistry::services_examined() const {
  std::lock_guard lock(mutex_);
  return services_examined_;
}

std::size_t HealthRegistry::pending_deadlines() const {
  std::lock_guard lock(mutex_);
  return deadlines_.size();
}

v1::RepoStatus HealthRegistry::to_status(const Repo& repo) const {
  v1::RepoStatus out;
  out.set_name(repo.spec.name);
  out.set_health(repo.health);
  for (const auto& [name, s] : repo.services) {
    auto* svc = out.add_services();
    svc->set_name(name);
    svc->set_status(s.reported ? s.status : Health::unknown);
    svc->set_version(s.version);
    if (s.reported) *svc->mutable_last_report_at() = to_timestamp(s.last_report_at);
    svc->set_stale(s.stale);
  }
  return out;
}

v1::OrgStatus HealthRegistry::org_status(const std::string& org) const {
  v1::OrgStatus out;
  out.set_org(org);
  {
    std::lock_guard lock(mutex_);
    out.mutable_repos()->Reserve(static_cast<int>(repos_.size()));
    for (const auto& [name, repo] : repos_) *out.add_repos() = to_status(repo);
  }
  out.set_total_repos(static_cast<std::int32_t>(out.repos_size()));
  *out.mutable_generated_at() = to_timestamp(clock_.now());
  return out;
}

v1::OrgStatus HealthRegistry::org_status(const std::string& org, const PageRequest& page) const {
  v1::OrgStatus out;
  out.set_org(org);
  {
    std::lock_guard lock(mutex_);
    out.set_total_repos(static_cast<std::int32_t>(repos_.size()));
    auto it = page.after.empty() ? repos_.begin() : repos_.upper_bound(page.after);
    for (; it != repos_.end() && static_cast<std::size_t>(out.repos_size()) < page.size; ++it) {
      *out.add_repos() = to_status(it->second);
    }
    if (it != repos_.end()) out.set_next_cursor(out.repos().rbegin()->name());
  }
  *out.mutable_generated_at() = to_timestamp(clock_.now());
  return out;
}

Result<v1::RepoStatus> HealthRegistry::repo_status(std::string_view name) const {
  std::lock_guard lock(mutex_);
  auto it = repos_.find(name);
  if (it == repos_.end()) return not_found(fmt::format("unknown repo '{}'", name));
  return to_status(it->second);
}

v1::RepoList HealthRegistry::repo_list(const PageRequest& page) const {
  v1::RepoList out;
  std::lock_guard lock(mutex_);
  out.set_total_repos(static_cast<std::int32_t>(repos_.size()));
  auto it = page.after.empty() ? repos_.begin() : repos_.upper_bound(page.after);
  for (; it != repos_.end() && static_cast<std::size_t>(out.repos_size()) < page.size; ++it) {
    const auto& [name, repo] = *it;
    auto* info = out.add_repos();
    info->set_name(name);
    for (const auto& d : repo.spec.depends_on) info->add_depends_on(d);
    for (const auto& e : repo.spec.envs) info->add_envs(e);
    for (const auto& [service, s] : repo.services) info->add_services(service);
  }
  if (it != repos_.end()) out.set_next_cursor(out.repos().rbegin()->name());
  return out;
}

bool HealthRegistry::has_repo(std::string_view repo) const {
  std::lock_guard lock(mutex_);
  return repos_.find(repo) != repos_.end();
}

std::size_t HealthRegistry::service_count() const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& [name, repo] : repos_) n += repo.services.size();
  return n;
}

}  // namespace orgd
