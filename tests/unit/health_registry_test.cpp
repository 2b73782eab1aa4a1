#include "daemon/health/health_registry.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace orgd {
namespace {

using namespace std::chrono_literals;
using v1::Health;

v1::HealthReport report(Health::Status s, int ttl = 0, std::string version = "") {
  v1::HealthReport r;
  r.set_status(s);
  r.set_ttl_seconds(ttl);
  r.set_version(std::move(version));
  return r;
}

class HealthRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry.configure({{"api", {}, {"dev"}, {"http"}, 30s},
                        {"web", {"api"}, {"dev"}, {"http", "edge"}, 30s},
                        {"worker", {"api"}, {}, {}, 10s}});
  }
  ManualClock clock;
  HealthRegistry registry{clock};
};

TEST_F(HealthRegistryTest, EveryConfiguredRepoAppearsUnknownBeforeReports) {
  auto status = registry.org_status("demo");
  ASSERT_EQ(status.repos_size(), 3);
  for (const auto& r : status.repos()) EXPECT_EQ(r.health(), Health::unknown) << r.name();
  EXPECT_EQ(status.org(), "demo");
  auto web = registry.repo_status("web");
  ASSERT_TRUE(web.ok());
  ASSERT_EQ(web.value().services_size(), 2);
  EXPECT_EQ(web.value().services(0).status(), Health::unknown);
}

TEST_F(HealthRegistryTest, FirstReportPersistsStateAndAnnouncesChange) {
  auto u = registry.report("api", "http", report(Health::ok, 0, "1.4.2"));
  ASSERT_TRUE(u.ok());
  ASSERT_TRUE(u.value().service.has_value());
  EXPECT_EQ(u.value().service->version(), "1.4.2");
  EXPECT_EQ(u.value().service->ttl_seconds(), 30);  // the repo default
  ASSERT_TRUE(u.value().repo_change.has_value());
  EXPECT_EQ(u.value().repo_change->previous(), Health::unknown);
  EXPECT_EQ(u.value().repo_change->health(), Health::ok);
  EXPECT_EQ(u.value().repo_change->service(), "http");
}

TEST_F(HealthRegistryTest, HeartbeatsWithoutChangePersistNothing) {
  ASSERT_TRUE(registry.report("api", "http", report(Health::ok)).ok());
  clock.advance(5s);
  auto u = registry.report("api", "http", report(Health::ok));
  ASSERT_TRUE(u.ok());
  EXPECT_FALSE(u.value().service.has_value());
  EXPECT_FALSE(u.value().repo_change.has_value());
}

TEST_F(HealthRegistryTest, RepoHealthIsDerivedFromServices) {
  ASSERT_TRUE(registry.report("web", "http", report(Health::ok)).ok());
  // "edge" is configured but silent: degraded, not ok.
  EXPECT_EQ(registry.repo_status("web").value().health(), Health::degraded);
  ASSERT_TRUE(registry.report("web", "edge", report(Health::ok)).ok());
  EXPECT_EQ(registry.repo_status("web").value().health(), Health::ok);
  ASSERT_TRUE(registry.report("web", "edge", report(Health::degraded)).ok());
  EXPECT_EQ(registry.repo_status("web").value().health(), Health::degraded);
  ASSERT_TRUE(registry.report("web", "http", report(Health::down)).ok());
  EXPECT_EQ(registry.repo_status("web").value().health(), Health::down);
}

TEST_F(HealthRegistryTest, UnconfiguredServicesAreAddedOnReport) {
  ASSERT_TRUE(registry.report("worker", "queue", report(Health::ok)).ok());
  auto s = registry.repo_status("worker").value();
  ASSERT_EQ(s.services_size(), 1);
  EXPECT_EQ(s.services(0).name(), "queue");
  EXPECT_EQ(s.health(), Health::ok);
}

TEST_F(HealthRegistryTest, StaleAfterTtlCountsAsDown) {
  ASSERT_TRUE(registry.report("api", "http", report(Health::ok, 10)).ok());
  clock.advance(9s);
  EXPECT_TRUE(registry.sweep().empty());
  clock.advance(2s);
  auto updates = registry.sweep();
  ASSERT_EQ(updates.size(), 1u);
  ASSERT_TRUE(updates[0].service.has_value());
  EXPECT_TRUE(updates[0].service->stale());
  ASSERT_TRUE(updates[0].repo_change.has_value());
  EXPECT_EQ(updates[0].repo_change->health(), Health::down);
  auto api = registry.repo_status("api").value();
  EXPECT_TRUE(api.services(0).stale());
  EXPECT_EQ(api.services(0).status(), Health::ok);  // last reported, flagged stale
  EXPECT_EQ(api.health(), Health::down);
  // Sweeping again changes nothing; a new report makes it fresh again.
  EXPECT_TRUE(registry.sweep().empty());
  auto u = registry.report("api", "http", report(Health::ok, 10));
  ASSERT_TRUE(u.ok());
  ASSERT_TRUE(u.value().service.has_value());
  EXPECT_FALSE(u.value().service->stale());
  EXPECT_EQ(u.value().repo_change->health(), Health::ok);
}

TEST_F(HealthRegistryTest, RejectsBadInput) {
  auto unknown = registry.report("nope", "http", report(Health::ok));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::not_found);
  EXPECT_NE(unknown.error().message.find("unknown repo 'nope'"), std::string::npos);

  auto no_status = registry.report("api", "http", report(Health::unknown));
  ASSERT_FALSE(no_status.ok());
  EXPECT_EQ(no_status.error().code, ErrorCode::invalid_argument);

  auto bad_ttl = registry.report("api", "http", report(Health::ok, -1));
  ASSERT_FALSE(bad_ttl.ok());
  auto long_ttl = registry.report("api", "http", report(Health::ok, 8 * 24 * 3600));
  ASSERT_FALSE(long_ttl.ok());
  auto bad_service = registry.report("api", "a*b", report(Health::ok));
  ASSERT_FALSE(bad_service.ok());
  // Nothing of the bad input stuck.
  EXPECT_EQ(registry.repo_status("api").value().health(), Health::unknown);
}

TEST_F(HealthRegistryTest, BoundsServicesPerRepo) {
  for (std::size_t i = 0; i < HealthRegistry::kMaxServicesPerRepo; ++i) {
    ASSERT_TRUE(registry.report("worker", "s" + std::to_string(i), report(Health::ok)).ok());
  }
  EXPECT_FALSE(registry.report("worker", "one-too-many", report(Health::ok)).ok());
}

TEST_F(HealthRegistryTest, RestoreRebuildsWithoutFlapping) {
  v1::ServiceHealth state;
  state.set_repo("api");
  state.set_service("http");
  state.set_status(Health::ok);
  state.set_version("1.0");
  state.set_ttl_seconds(30);
  // Persisted an hour ago (state is written on change, not per heartbeat).
  state.mutable_last_report_at()->set_seconds(
      std::chrono::duration_cast<std::chrono::seconds>(
          (clock.now() - 1h).time_since_epoch()).count());
  registry.restore(state);
  auto api = registry.repo_status("api").value();
  EXPECT_EQ(api.health(), Health::ok);
  EXPECT_EQ(api.services(0).version(), "1.0");
  // Fresh for one more ttl from the restart, then stale if nothing comes.
  clock.advance(29s);
  EXPECT_TRUE(registry.sweep().empty());
  clock.advance(2s);
  EXPECT_EQ(registry.sweep().size(), 1u);
}

TEST_F(HealthRegistryTest, RestoreIgnoresUnknownRepos) {
  v1::ServiceHealth state;
  state.set_repo("gone");
  state.set_service("http");
  state.set_status(Health::down);
  registry.restore(state);
  EXPECT_FALSE(registry.repo_status("gone").ok());
}

TEST_F(HealthRegistryTest, ReconfigureKeepsStatesOfRemainingRepos) {
  ASSERT_TRUE(registry.report("api", "http", report(Health::ok)).ok());
  registry.configure({{"api", {}, {}, {"http"}, 30s}, {"billing", {}, {}, {}, 30s}});
  auto status = registry.org_status("demo");
  ASSERT_EQ(status.repos_size(), 2);
  EXPECT_EQ(registry.repo_status("api").value().health(), Health::ok);
  EXPECT_FALSE(registry.has_repo("web"));
  EXPECT_TRUE(registry.has_repo("billing"));
}

TEST_F(HealthRegistryTest, RepoListNamesDependenciesEnvsAndServices) {
  auto list = registry.repo_list(PageRequest{});
  ASSERT_EQ(list.repos_size(), 3);
  EXPECT_EQ(list.repos(1).name(), "web");
  ASSERT_EQ(list.repos(1).depends_on_size(), 1);
  EXPECT_EQ(list.repos(1).depends_on(0), "api");
  EXPECT_EQ(list.repos(1).envs(0), "dev");
  EXPECT_EQ(list.repos(1).services_size(), 2);
}

// Pages walk every repo once, in name order, whatever the page size; a repo added between two
// pages after the cursor is still met, one removed is not repeated.
TEST_F(HealthRegistryTest, PagesWalkEveryRepoOnceInNameOrder) {
  std::vector<RepoHealthSpec> specs;
  for (int i = 0; i < 25; ++i) {
    specs.push_back({"repo-" + std::string(i < 10 ? "0" : "") + std::to_string(i), {}, {}, {}, 30s});
  }
  registry.configure(specs);
  for (const std::size_t size : {std::size_t{1}, std::size_t{7}, std::size_t{25}, std::size_t{500}}) {
    std::vector<std::string> seen;
    std::vector<std::string> listed;
    PageRequest page{size, ""};
    for (int pages = 0; pages < 100; ++pages) {
      auto status = registry.org_status("demo", page);
      EXPECT_EQ(status.total_repos(), 25);
      EXPECT_LE(static_cast<std::size_t>(status.repos_size()), size);
      for (const auto& r : status.repos()) seen.push_back(r.name());
      auto list = registry.repo_list(page);
      EXPECT_EQ(list.next_cursor(), status.next_cursor());
      for (const auto& r : list.repos()) listed.push_back(r.name());
      if (status.next_cursor().empty()) break;
      page.after = status.next_cursor();
    }
    ASSERT_EQ(seen.size(), 25u) << "page size " << size;
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
    EXPECT_EQ(seen, listed);
  }
  auto first = registry.org_status("demo", PageRequest{10, ""});
  ASSERT_EQ(first.next_cursor(), "repo-09");
  specs.push_back({"repo-095", {}, {}, {}, 30s});  // sorts after the cursor: still met
  specs.erase(specs.begin() + 5);                   // before the cursor: not repeated
  registry.configure(specs);
  auto second = registry.org_status("demo", PageRequest{10, first.next_cursor()});
  ASSERT_GT(second.repos_size(), 0);
  EXPECT_EQ(second.repos(0).name(), "repo-095");
  EXPECT_EQ(second.total_repos(), 25);
}

TEST(Paging, PageSizeAndCursorAreChecked) {
  EXPECT_EQ(read_page(0, "").value().size, kDefaultPageSize);
  EXPECT_EQ(read_page(7, "api").value().after, "api");
  EXPECT_FALSE(read_page(-1, "").ok());
  EXPECT_FALSE(read_page(static_cast<std::int64_t>(kMaxPageSize) + 1, "").ok());
  EXPECT_FALSE(read_page(10, std::string(300, 'a')).ok());
  auto control = read_page(10, std::string("a\nb"));
  ASSERT_FALSE(control.ok());
  EXPECT_EQ(control.error().code, ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace orgd
