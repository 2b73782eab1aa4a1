// Backups in an object store (daemon/secrets/vault_backup.hpp): named as the files are, two in
// one second kept apart, listed oldest first, pruned to `keep` leaving other objects alone, and
// a store's failure returned as the error.
#include <gtest/gtest.h>

#include <map>

#include "daemon/secrets/vault_backup.hpp"

namespace orgd::secrets {
namespace {

class MemoryStore final : public ObjectStore {
 public:
  std::string describe() const override { return "memory /"; }
  Result<Ok> ensure() override {
    ++ensures;
    return Ok{};
  }
  Result<Ok> put(const std::string& key, std::string_view bytes) override {
    if (fail_puts) return unavailable("R2 PUT: R2 answered 503: SlowDown");
    objects[key] = std::string{bytes};
    return Ok{};
  }
  Result<std::string> get(const std::string& key) override {
    const auto it = objects.find(key);
    if (it == objects.end()) return not_found(key);
    return it->second;
  }
  Result<std::vector<StoredObject>> list(const std::string& prefix) override {
    std::vector<StoredObject> out;
    for (const auto& [key, bytes] : objects) {
      if (key.rfind(prefix, 0) == 0) out.push_back({key, bytes.size(), std::nullopt});
    }
    return out;
  }
  Result<Ok> remove(const std::string& key) override {
    objects.erase(key);
    return Ok{};
  }
  std::map<std::string, std::string> objects;
  int ensures = 0;
  bool fail_puts = false;
};

const auto kNoon = std::chrono::system_clock::from_time_t(1'796'299'200);  // 2026-12-03T12:00:00Z

TEST(StoreBackups, TwoInOneSecondKeepTheirOwnNames) {
  MemoryStore store;
  auto first = write_store_backup(store, "one", kNoon);
  auto second = write_store_backup(store, "two", kNoon);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first.value(), "orgd-vault-20261203T120000Z.bak");
  EXPECT_EQ(second.value(), "orgd-vault-20261203T120000Z-2.bak");
  EXPECT_EQ(store.objects.at(first.value()), "one");
  EXPECT_EQ(store.objects.at(second.value()), "two");
  EXPECT_EQ(store.ensures, 2);
}

TEST(StoreBackups, PruneKeepsTheNewestAndLeavesOtherObjects) {
  MemoryStore store;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(write_store_backup(store, "b", kNoon + std::chrono::hours{24 * i}));
  }
  store.objects["notes.txt"] = "x";
  store.objects["orgd-vault-nested/x.bak"] = "x";
  auto removed = prune_store_backups(store, 2);
  ASSERT_TRUE(removed);
  EXPECT_EQ(removed.value(), (std::vector<std::string>{"orgd-vault-20261203T120000Z.bak",
                                                       "orgd-vault-20261204T120000Z.bak",
                                                       "orgd-vault-20261205T120000Z.bak"}));
  auto left = store_backups(store);
  ASSERT_TRUE(left);
  ASSERT_EQ(left.value().size(), 2u);
  EXPECT_EQ(left.value()[0].key, "orgd-vault-20261206T120000Z.bak");
  EXPECT_EQ(left.value()[1].key, "orgd-vault-20261207T120000Z.bak");
  EXPECT_EQ(store.objects.count("notes.txt"), 1u);
  EXPECT_EQ(store.objects.count("orgd-vault-nested/x.bak"), 1u);
}

TEST(StoreBackups, AFailedPutIsTheError) {
  MemoryStore store;
  store.fail_puts = true;
  auto written = write_store_backup(store, "b", kNoon);
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().message, "R2 PUT: R2 answered 503: SlowDown");
  EXPECT_TRUE(store.objects.empty());
}

}  // namespace
}  // namespace orgd::secrets
