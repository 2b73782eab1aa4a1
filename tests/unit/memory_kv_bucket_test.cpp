// What only the memory buckets have (the contract they share with JetStream is in
// tests/integration/kv_bucket_contract_test.cpp): time that moves on a manual clock, a store
// that comes back empty, compare-and-set under concurrent writers, subject filters.
#include "daemon/bus/memory_kv_bucket.hpp"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "daemon/core/clock.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;

TEST(MemoryKvBucket, AnEntryExpiresOnlyOnceItsTtlHasPassedSinceItsLastWrite) {
  ManualClock clock;
  MemoryKvStore kv{clock};
  auto bucket = kv.open({"leases", "", 10s, 1, 1});
  ASSERT_TRUE(bucket);
  auto first = bucket.value()->create("lease", "me");
  ASSERT_TRUE(first);
  clock.advance(9s);
  auto renewed = bucket.value()->update("lease", "me", first.value());
  ASSERT_TRUE(renewed);
  clock.advance(9s);
  EXPECT_TRUE(bucket.value()->get("lease").value().has_value());
  clock.advance(1s);
  EXPECT_FALSE(bucket.value()->get("lease").value().has_value());
}

TEST(MemoryKvBucket, ALostStoreIsUnavailableUntilItsBucketIsOpenedAgain) {
  ManualClock clock;
  MemoryKvStore kv{clock};
  auto bucket = kv.open({"locks", "", Duration{0}, 1, 1});
  ASSERT_TRUE(bucket);
  ASSERT_TRUE(bucket.value()->put("api.dev", "d1"));
  kv.lose_data();
  auto lost = bucket.value()->get("api.dev");
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().code, ErrorCode::unavailable);
  ASSERT_TRUE(kv.open({"locks", "", Duration{0}, 1, 1}));
  // The old handle reaches the new, empty bucket, as a JetStream handle does after re-creation.
  auto got = bucket.value()->get("api.dev");
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_FALSE(got.value().has_value());
  kv.set_unavailable(true);
  EXPECT_FALSE(kv.open({"locks", "", Duration{0}, 1, 1}));
  kv.set_unavailable(false);
  EXPECT_TRUE(bucket.value()->put("api.dev", "d2"));
}

TEST(MemoryKvBucket, ConcurrentCompareAndSetLosesNoUpdate) {
  ManualClock clock;
  MemoryKvStore kv{clock};
  auto opened = kv.open({"counters", "", Duration{0}, 1, 1});
  ASSERT_TRUE(opened);
  KvBucket& bucket = *opened.value();
  ASSERT_TRUE(bucket.create("n", "0"));
  constexpr int kThreads = 4;
  constexpr int kIncrements = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements;) {
        auto current = bucket.get("n");
        if (!current || !current.value()) continue;
        const int n = std::stoi(current.value()->value);
        if (bucket.update("n", std::to_string(n + 1), current.value()->revision)) ++i;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(bucket.get("n").value()->value, std::to_string(kThreads * kIncrements));
}

TEST(SubjectMatches, TokensWildcardsAndTails) {
  EXPECT_TRUE(subject_matches("deploy.*", "deploy.x"));
  EXPECT_FALSE(subject_matches("deploy.*", "deploy"));
  EXPECT_FALSE(subject_matches("deploy.*", "deploy.x.y"));
  EXPECT_TRUE(subject_matches("a.>", "a.b.c"));
  EXPECT_FALSE(subject_matches("a.>", "a"));
  EXPECT_TRUE(subject_matches(">", "a"));
  EXPECT_TRUE(subject_matches("a.*.c", "a.b.c"));
  EXPECT_FALSE(subject_matches("a.*.c", "a.b.d"));
  EXPECT_FALSE(subject_matches("deploy.x", "deploy.xy"));
}

}  // namespace
}  // namespace orgd
