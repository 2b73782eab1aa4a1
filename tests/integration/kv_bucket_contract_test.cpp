// The KvBucket contract, one set of cases for both implementations: JetStreamKvBucket on a real
// nats-server and MemoryKvBucket, so the memory buckets unit tests run on behave as orgd's do.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/bus/memory_kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::wait_until;

// Where the buckets of one test live, and how time passes and the store is lost there.
class KvWorld {
 public:
  virtual ~KvWorld() = default;
  virtual std::unique_ptr<KvBucket> open(const BucketSpec& spec) = 0;
  // Lets `ttl` pass for what was written so far (memory: the clock moves; JetStream: it passes).
  virtual void pass(Duration ttl) = 0;
  // How long an entry past its ttl may take to disappear.
  virtual std::chrono::milliseconds expiry_deadline() const = 0;
  // NATS lost: every call fails from now on.
  virtual void lose_connection() = 0;
};

class MemoryWorld final : public KvWorld {
 public:
  std::unique_ptr<KvBucket> open(const BucketSpec& spec) override {
    auto bucket = kv_.open(spec);
    EXPECT_TRUE(bucket) << bucket.error().message;
    return std::move(bucket.value());
  }
  void pass(Duration ttl) override { clock_.advance(ttl); }
  std::chrono::milliseconds expiry_deadline() const override { return 0ms; }
  void lose_connection() override { kv_.set_unavailable(true); }

 private:
  ManualClock clock_;
  MemoryKvStore kv_{clock_};
};

class JetStreamWorld final : public KvWorld {
 public:
  JetStreamWorld() { EXPECT_EQ(natsConnection_JetStream(&js_, client_.get(), nullptr), NATS_OK); }
  ~JetStreamWorld() override { jsCtx_Destroy(js_); }
  std::unique_ptr<KvBucket> open(const BucketSpec& spec) override {
    auto bucket = KvBucket::open(js_, spec);
    EXPECT_TRUE(bucket) << bucket.error().message;
    return std::move(bucket.value());
  }
  void pass(Duration) override {}
  // The server expires entries on its own schedule; generous for a loaded machine.
  std::chrono::milliseconds expiry_deadline() const override { return 30s; }
  void lose_connection() override { server_.stop(); }

 private:
  testing::NatsServer server_;
  testing::NatsConnectionPtr client_ = testing::connect_client(server_.url());
  jsCtx* js_ = nullptr;
};

struct Implementation {
  std::string name;
  std::function<std::unique_ptr<KvWorld>()> make;
};

// For gtest's names of the cases.
void PrintTo(const Implementation& implementation, std::ostream* out) {
  *out << implementation.name;
}

class KvBucketContract : public ::testing::TestWithParam<Implementation> {
 protected:
  KvBucketContract() : world_(GetParam().make()) {}

  std::unique_ptr<KvBucket> open(Duration ttl = Duration{0}) {
    return world_->open({"orgd_contract", "contract test", ttl, 1, 1});
  }

  std::unique_ptr<KvWorld> world_;
};

TEST_P(KvBucketContract, RevisionsIncreaseAcrossTheBucketsKeys) {
  auto bucket = open();
  ASSERT_TRUE(bucket);
  EXPECT_EQ(bucket->name(), "orgd_contract");
  auto a = bucket->put("a", "1");
  auto b = bucket->create("b", "2");
  ASSERT_TRUE(a && b);
  EXPECT_GT(b.value(), a.value());
  auto a2 = bucket->update("a", "3", a.value());
  ASSERT_TRUE(a2) << a2.error().message;
  EXPECT_GT(a2.value(), b.value());
  auto got = bucket->get("a");
  ASSERT_TRUE(got && got.value());
  EXPECT_EQ(got.value()->key, "a");
  EXPECT_EQ(got.value()->value, "3");
  EXPECT_EQ(got.value()->revision, a2.value());
  EXPECT_GT(got.value()->created.time_since_epoch().count(), 0);
}

TEST_P(KvBucketContract, AnAbsentKeyReadsAsNothing) {
  auto bucket = open();
  auto got = bucket->get("missing");
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_FALSE(got.value().has_value());
}

TEST_P(KvBucketContract, CreateOfAPresentKeyIsAConflict) {
  auto bucket = open();
  ASSERT_TRUE(bucket->create("lock", "first"));
  auto again = bucket->create("lock", "second");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::conflict) << again.error().message;
  EXPECT_EQ(bucket->get("lock").value()->value, "first");
}

TEST_P(KvBucketContract, UpdateAtAnOldRevisionIsAConflict) {
  auto bucket = open();
  auto first = bucket->create("record", "v1");
  ASSERT_TRUE(first);
  ASSERT_TRUE(bucket->update("record", "v2", first.value()));
  auto stale = bucket->update("record", "v3", first.value());
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::conflict) << stale.error().message;
  EXPECT_EQ(bucket->get("record").value()->value, "v2");
}

TEST_P(KvBucketContract, ADeletedKeyIsGoneAndCanBeCreatedAgain) {
  auto bucket = open();
  auto first = bucket->create("lock", "d1");
  ASSERT_TRUE(first);
  ASSERT_TRUE(bucket->remove("lock"));
  auto got = bucket->get("lock");
  ASSERT_TRUE(got);
  EXPECT_FALSE(got.value().has_value());
  // The delete marker takes a revision: updating at the old one is a conflict.
  auto stale = bucket->update("lock", "d0", first.value());
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::conflict);
  auto again = bucket->create("lock", "d2");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_GT(again.value(), first.value() + 1);
  EXPECT_EQ(bucket->get("lock").value()->value, "d2");
}

TEST_P(KvBucketContract, KeysMatchSubjectFiltersAndSkipDeletedOnes) {
  auto bucket = open();
  for (const char* key : {"deploy.a", "deploy.b", "deploy.b.x", "active.a", "request.r1"}) {
    ASSERT_TRUE(bucket->put(key, "v"));
  }
  ASSERT_TRUE(bucket->remove("deploy.a"));
  auto sorted = [&](const std::string& filter) {
    auto keys = bucket->keys(filter);
    EXPECT_TRUE(keys) << keys.error().message;
    std::vector<std::string> out = keys ? keys.value() : std::vector<std::string>{};
    std::sort(out.begin(), out.end());
    return out;
  };
  using Keys = std::vector<std::string>;
  EXPECT_EQ(sorted("deploy.*"), (Keys{"deploy.b"}));
  EXPECT_EQ(sorted("deploy.>"), (Keys{"deploy.b", "deploy.b.x"}));
  EXPECT_EQ(sorted(">"), (Keys{"active.a", "deploy.b", "deploy.b.x", "request.r1"}));
  EXPECT_EQ(sorted("*.a"), (Keys{"active.a"}));
  EXPECT_EQ(sorted("nothing.*"), Keys{});
}

TEST_P(KvBucketContract, EntriesCarryTheCurrentValueAndRevisionOfEachMatchingKey) {
  auto bucket = open();
  ASSERT_TRUE(bucket->put("deploy.d.step.0", "first"));
  auto second = bucket->put("deploy.d.step.0", "second");
  ASSERT_TRUE(second);
  auto other = bucket->put("deploy.d.step.1", std::string("\0bin\xff", 5));
  ASSERT_TRUE(other);
  ASSERT_TRUE(bucket->put("deploy.d.step.2", "gone"));
  ASSERT_TRUE(bucket->remove("deploy.d.step.2"));
  ASSERT_TRUE(bucket->put("deploy.d", "header"));
  ASSERT_TRUE(bucket->put("deploy.e.step.0", "another deploy's"));
  auto entries = bucket->entries("deploy.d.step.*");
  ASSERT_TRUE(entries) << entries.error().message;
  std::sort(entries.value().begin(), entries.value().end(),
            [](const KvEntry& a, const KvEntry& b) { return a.key < b.key; });
  ASSERT_EQ(entries.value().size(), 2u);
  EXPECT_EQ(entries.value()[0].key, "deploy.d.step.0");
  EXPECT_EQ(entries.value()[0].value, "second");
  EXPECT_EQ(entries.value()[0].revision, second.value());
  EXPECT_EQ(entries.value()[1].key, "deploy.d.step.1");
  EXPECT_EQ(entries.value()[1].value, std::string("\0bin\xff", 5));
  EXPECT_EQ(entries.value()[1].revision, other.value());
  auto none = bucket->entries("nothing.*");
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_TRUE(none.value().empty());
}

// A listing made while its keys are deleted (a deploy's active key cleared as the scheduler
// sweeps) answers with what is there and never waits out its deadline: with a history of one,
// a delete replaces the put the listing may have counted as pending.
TEST_P(KvBucketContract, KeysListedWhileTheyAreDeletedAnswer) {
  auto bucket = open();
  auto writer_bucket = open();
  int failed = 0;
  std::string last_error;
  for (int i = 0; i < 100; ++i) {
    const std::string key = "active." + std::to_string(i);
    ASSERT_TRUE(writer_bucket->put(key, "x"));
    std::thread deleter([&] { (void)writer_bucket->remove(key); });
    auto keys = bucket->keys("active.*");
    deleter.join();
    if (!keys) {
      ++failed;
      last_error = keys.error().message;
      continue;
    }
    for (const auto& listed : keys.value()) EXPECT_EQ(listed, key);
  }
  EXPECT_EQ(failed, 0) << last_error;
}

TEST_P(KvBucketContract, EntriesOfABucketWithATtlExpire) {
  const Duration ttl = 2s;
  auto bucket = open(ttl);
  ASSERT_TRUE(bucket->create("lease", "holder"));
  ASSERT_TRUE(bucket->get("lease").value().has_value());
  world_->pass(ttl);
  EXPECT_TRUE(wait_until(
      [&] {
        auto got = bucket->get("lease");
        return got && !got.value().has_value();
      },
      world_->expiry_deadline(), 100ms));
  // Expired, the key is free to be created again.
  EXPECT_TRUE(bucket->create("lease", "next"));
}

TEST_P(KvBucketContract, LostStoreMakesEveryCallUnavailable) {
  auto bucket = open();
  auto first = bucket->put("key", "v");
  ASSERT_TRUE(first);
  world_->lose_connection();
  auto expect_unavailable = [](const auto& result, const char* call) {
    ASSERT_FALSE(result) << call;
    EXPECT_EQ(result.error().code, ErrorCode::unavailable)
        << call << ": " << result.error().message;
  };
  expect_unavailable(bucket->get("key"), "get");
  expect_unavailable(bucket->create("other", "v"), "create");
  expect_unavailable(bucket->update("key", "v2", first.value()), "update");
  expect_unavailable(bucket->put("key", "v3"), "put");
  expect_unavailable(bucket->remove("key"), "remove");
  expect_unavailable(bucket->keys(">"), "keys");
  expect_unavailable(bucket->entries(">"), "entries");
}

INSTANTIATE_TEST_SUITE_P(
    KvBucket, KvBucketContract,
    ::testing::Values(Implementation{"Memory", [] { return std::make_unique<MemoryWorld>(); }},
                      Implementation{"JetStream",
                                     [] { return std::make_unique<JetStreamWorld>(); }}),
    [](const ::testing::TestParamInfo<Implementation>& info) { return info.param.name; });

}  // namespace
}  // namespace orgd
