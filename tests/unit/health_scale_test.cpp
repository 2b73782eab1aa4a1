// The health picture at 10,000 repos x 3 services: behaviour that shows the work follows the
// changes, not the size of the org (counted, never timed).
#include <gtest/gtest.h>
#include <google/protobuf/util/message_differencer.h>

#include <fmt/format.h>

#include <set>
#include <string>
#include <vector>

#include "daemon/core/timestamps.hpp"
#include "daemon/health/health_registry.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using v1::Health;

constexpr int kRepos = 10'000;
const std::vector<std::string> kServices = {"http", "worker", "cron"};

std::string repo_name(int i) { return fmt::format("repo-{:05}", i); }

std::vector<RepoHealthSpec> specs() {
  std::vector<RepoHealthSpec> out;
  out.reserve(kRepos);
  for (int i = 0; i < kRepos; ++i) out.push_back({repo_name(i), {}, {"prod"}, kServices, 30s});
  return out;
}

v1::HealthReport report(Health::Status s, int ttl) {
  v1::HealthReport r;
  r.set_status(s);
  r.set_ttl_seconds(ttl);
  r.set_version("1.0");
  return r;
}

// Every service reports ok; the services of every 100th repo with a ttl of 10 s, the others 60 s.
void report_all(HealthRegistry& registry) {
  for (int i = 0; i < kRepos; ++i) {
    for (const auto& service : kServices) {
      ASSERT_TRUE(registry.report(repo_name(i), service, report(Health::ok, i % 100 == 0 ? 10 : 60))
                      .ok());
    }
  }
}

v1::OrgStatus all_pages(const HealthRegistry& registry) {
  v1::OrgStatus all;
  PageRequest page{500, ""};
  while (true) {
    auto part = registry.org_status("acme", page);
    for (auto& repo : *part.mutable_repos()) *all.add_repos() = std::move(repo);
    if (part.next_cursor().empty()) break;
    page.after = part.next_cursor();
  }
  return all;
}

TEST(HealthScale, SweepAt30000ServicesTouchesOnlyTheServicesThatExpire) {
  ManualClock clock;
  HealthRegistry registry(clock);
  registry.configure(specs());
  report_all(registry);
  ASSERT_EQ(registry.service_count(), 30'000u);
  EXPECT_EQ(registry.pending_deadlines(), 30'000u);

  // Nine seconds of sweeps, one a second: nothing is due, nothing is looked at.
  for (int s = 0; s < 9; ++s) {
    clock.advance(1s);
    EXPECT_TRUE(registry.sweep().empty());
  }
  EXPECT_EQ(registry.services_examined(), 0u);

  // Repo 0's http reports in between: its deadline moves, so it is not among those that expire.
  ASSERT_TRUE(registry.report(repo_name(0), "http", report(Health::ok, 10)).ok());
  EXPECT_EQ(registry.pending_deadlines(), 30'000u) << "a heartbeat re-arms, it does not add";

  clock.advance(2s);  // 11 s: the 10 s services of every 100th repo, but repo 0's http
  auto updates = registry.sweep();
  std::set<std::string> stale;
  for (const auto& u : updates) {
    ASSERT_TRUE(u.service.has_value());
    EXPECT_TRUE(u.service->stale());
    stale.insert(u.service->repo() + "/" + u.service->service());
  }
  std::set<std::string> expected;
  for (int i = 0; i < kRepos; i += 100) {
    for (const auto& service : kServices) {
      if (i != 0 || service != "http") expected.insert(repo_name(i) + "/" + service);
    }
  }
  EXPECT_EQ(stale, expected);
  EXPECT_EQ(updates.size(), expected.size()) << "each stale service once";
  EXPECT_EQ(registry.services_examined(), expected.size()) << "the sweep looked at more";
  // The repo change names the first of its services by name, as a walk by name would.
  ASSERT_TRUE(updates[0].repo_change.has_value());
  EXPECT_EQ(updates[0].repo_change->repo(), repo_name(0));
  EXPECT_EQ(updates[0].repo_change->service(), "cron");
  EXPECT_EQ(updates[0].repo_change->health(), Health::down);
  EXPECT_EQ(registry.repo_status(repo_name(1)).value().health(), Health::ok);
  EXPECT_EQ(registry.repo_status(repo_name(100)).value().health(), Health::down);

  // Sweeping again looks at nothing; repo 0's http expires on its own deadline.
  EXPECT_TRUE(registry.sweep().empty());
  EXPECT_EQ(registry.services_examined(), expected.size());
  clock.advance(1s);  // 12 s: repo 0's http reported at 9 s with a 10 s ttl is due at 19 s
  EXPECT_TRUE(registry.sweep().empty());
  clock.advance(7s);
  auto late = registry.sweep();
  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0].service->repo(), repo_name(0));
  EXPECT_EQ(late[0].service->service(), "http");
  EXPECT_EQ(registry.services_examined(), expected.size() + 1);

  // A stale service that reports again waits for its new deadline.
  ASSERT_TRUE(registry.report(repo_name(100), "cron", report(Health::ok, 10)).ok());
  clock.advance(9s);
  EXPECT_TRUE(registry.sweep().empty());
  clock.advance(2s);
  auto again = registry.sweep();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].service->repo(), repo_name(100));
}

TEST(HealthScale, ReconfigureDropsTheDeadlinesOfRemovedRepos) {
  ManualClock clock;
  HealthRegistry registry(clock);
  registry.configure(specs());
  report_all(registry);
  auto fewer = specs();
  fewer.resize(kRepos / 2);
  registry.configure(fewer);
  EXPECT_EQ(registry.pending_deadlines(), 15'000u);
  clock.advance(11s);
  EXPECT_EQ(registry.sweep().size(), 3u * (kRepos / 2 / 100));
  EXPECT_EQ(registry.services_examined(), 3u * (kRepos / 2 / 100));
  // The kept services' deadlines still hold after the reload.
  clock.advance(50s);
  EXPECT_EQ(registry.sweep().size(), 15'000u - 3u * (kRepos / 2 / 100));
  EXPECT_EQ(registry.pending_deadlines(), 0u);
}

TEST(HealthScale, RebuildFrom30000StatesGivesThePictureOfTheLiveReports) {
  ManualClock clock;
  HealthRegistry live(clock);
  live.configure(specs());
  // A mix: some down, some degraded, some stale, one repo never heard from.
  std::vector<v1::ServiceHealth> stored;  // what ORGD_HEALTH holds: the last state per service
  for (int i = 1; i < kRepos; ++i) {
    for (const auto& service : kServices) {
      Health::Status status = i % 7 == 0 && service == "worker" ? Health::down
                              : i % 5 == 0 && service == "cron" ? Health::degraded
                                                                : Health::ok;
      auto u = live.report(repo_name(i), service, report(status, i % 3 == 0 ? 10 : 60));
      ASSERT_TRUE(u.ok());
      ASSERT_TRUE(u.value().service.has_value());
      stored.push_back(*u.value().service);
    }
  }
  clock.advance(11s);
  for (const auto& u : live.sweep()) stored.push_back(*u.service);  // stale, stored later

  HealthRegistry rebuilt(clock);
  rebuilt.configure(specs());
  rebuilt.restore(stored);

  const auto a = all_pages(live);
  const auto b = all_pages(rebuilt);
  ASSERT_EQ(a.repos_size(), kRepos);
  ASSERT_EQ(b.repos_size(), kRepos);
  for (int i = 0; i < kRepos; ++i) {
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(a.repos(i), b.repos(i)))
        << a.repos(i).DebugString() << "\nvs\n" << b.repos(i).DebugString();
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_EQ(b.repos(0).health(), Health::unknown);
  EXPECT_EQ(b.repos(7).health(), Health::down);
  EXPECT_EQ(b.repos(3).health(), Health::down) << "stale";

  // One at a time gives the same picture as the batch.
  HealthRegistry one_by_one(clock);
  one_by_one.configure(specs());
  for (const auto& state : stored) one_by_one.restore(state);
  const auto c = all_pages(one_by_one);
  for (int i = 0; i < kRepos; ++i) {
    ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(b.repos(i), c.repos(i)))
        << b.repos(i).DebugString();
  }
  // The restored fresh services expire like live ones: a ttl from the rebuild.
  EXPECT_EQ(rebuilt.pending_deadlines(), live.pending_deadlines());
  const std::size_t fresh = rebuilt.pending_deadlines();
  clock.advance(61s);
  EXPECT_EQ(rebuilt.sweep().size(), fresh);
  EXPECT_EQ(rebuilt.services_examined(), fresh);
  EXPECT_EQ(rebuilt.pending_deadlines(), 0u);
}

}  // namespace
}  // namespace orgd
