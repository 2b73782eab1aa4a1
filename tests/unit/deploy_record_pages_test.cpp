// The deploy API's pages of a record's steps: every step once in order whatever the page size,
// filters by state, the rest of the record on every page, bad cursors refused.
#include "daemon/deploy/record_pages.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace orgd::deploy {
namespace {

using v1::DeployStep;

v1::DeployRecord record_of(int steps) {
  v1::DeployRecord record;
  record.set_deploy_id("d-1");
  record.set_env("prod");
  record.set_state(v1::DeployRecord::running);
  for (int i = 0; i < steps; ++i) {
    auto* step = record.add_steps();
    step->set_repo("repo-" + std::to_string(i));
    step->set_state(i % 7 == 3 ? DeployStep::failed
                    : i % 2 == 0 ? DeployStep::succeeded
                                 : DeployStep::running);
  }
  return record;
}

std::vector<std::string> walk(const v1::DeployRecord& record, v1::DeployGetRequest request) {
  std::vector<std::string> repos;
  for (int pages = 0; pages < 10000; ++pages) {
    auto page = record_page(record, request);
    EXPECT_TRUE(page.ok()) << page.error().message;
    if (!page.ok()) break;
    EXPECT_EQ(page.value().deploy_id(), "d-1") << "the record's summary is on every page";
    EXPECT_EQ(page.value().env(), "prod");
    EXPECT_EQ(page.value().total_steps(), record.steps_size());
    if (request.page_size() > 0) EXPECT_LE(page.value().steps_size(), request.page_size());
    for (const auto& step : page.value().steps()) repos.push_back(step.repo());
    if (page.value().next_cursor().empty()) break;
    request.set_cursor(page.value().next_cursor());
  }
  return repos;
}

TEST(DeployRecordPages, EveryStepOnceInOrderWhateverThePageSize) {
  const auto record = record_of(1234);
  std::vector<std::string> all;
  for (const auto& step : record.steps()) all.push_back(step.repo());
  for (const int size : {0, 1, 7, 500, 1234, 5000}) {
    v1::DeployGetRequest request;
    request.set_page_size(size);
    EXPECT_EQ(walk(record, request), all) << "page size " << size;
  }
  auto first = record_page(record, v1::DeployGetRequest{});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first.value().steps_size(), 500) << "500 steps by default";
  EXPECT_EQ(first.value().next_cursor(), "500");
}

TEST(DeployRecordPages, StatesFilterTheSteps) {
  const auto record = record_of(300);
  std::vector<std::string> failed;
  for (const auto& step : record.steps()) {
    if (step.state() == DeployStep::failed) failed.push_back(step.repo());
  }
  ASSERT_FALSE(failed.empty());
  v1::DeployGetRequest request;
  request.add_states(DeployStep::failed);
  request.set_page_size(3);
  EXPECT_EQ(walk(record, request), failed);
  // The last page says there is nothing after it, even when unmatched steps follow.
  request.set_page_size(static_cast<int>(failed.size()));
  auto one = record_page(record, request);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one.value().steps_size(), static_cast<int>(failed.size()));
  EXPECT_EQ(one.value().next_cursor(), "");
}

TEST(DeployRecordPages, ASmallRecordIsOnePage) {
  auto page = record_page(record_of(3), v1::DeployGetRequest{});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page.value().steps_size(), 3);
  EXPECT_EQ(page.value().next_cursor(), "");
  EXPECT_EQ(page.value().total_steps(), 3);
}

TEST(DeployRecordPages, BadCursorsAndSizesAreRefused) {
  const auto record = record_of(10);
  for (const std::string cursor : {"x", "-1", "11", "3x", " 3", "99999999999999999999"}) {
    v1::DeployGetRequest request;
    request.set_cursor(cursor);
    auto page = record_page(record, request);
    ASSERT_FALSE(page.ok()) << cursor;
    EXPECT_EQ(page.error().code, ErrorCode::invalid_argument);
  }
  v1::DeployGetRequest request;
  request.set_page_size(-4);
  EXPECT_FALSE(record_page(record, request).ok());
  request.set_page_size(5001);
  EXPECT_FALSE(record_page(record, request).ok());
}

TEST(DeployRecordPages, AListCarriesTheFirstStepsAndHowManyThereAre) {
  auto record = record_of(25);
  trim_for_list(record);
  EXPECT_EQ(record.steps_size(), kListedSteps);
  EXPECT_EQ(record.total_steps(), 25);
  EXPECT_EQ(record.steps(0).repo(), "repo-0");
  auto small = record_of(2);
  trim_for_list(small);
  EXPECT_EQ(small.steps_size(), 2);
  EXPECT_EQ(small.total_steps(), 2);
  EXPECT_EQ(small.next_cursor(), "");
}

}  // namespace
}  // namespace orgd::deploy
