// The ports file orgd writes for whoever started it on port 0 (--ports-file).
#include "daemon/app/ports_file.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/ports.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;

TEST(PortsFile, NamesTheHttpPortAndTheNatsUrlAndReplacesAnOlderFile) {
  testing::TempDir dir("orgd-ports");
  const auto file = dir / "run" / "ports.json";
  ASSERT_TRUE(write_ports_file(file, {8123, "nats://127.0.0.1:4999"}));
  ASSERT_TRUE(write_ports_file(file, {41234, "nats://127.0.0.1:45678"}));
  const auto j = nlohmann::json::parse(testing::read_file(file));
  EXPECT_EQ(j, (nlohmann::json{{"http", 41234}, {"nats", "nats://127.0.0.1:45678"}}));
  // What the tests read it with.
  const auto ports = testing::wait_for_ports_file(file, 1s, [] { return true; });
  ASSERT_TRUE(ports.has_value());
  EXPECT_EQ(ports->http, 41234);
  EXPECT_EQ(ports->nats, "nats://127.0.0.1:45678");
  // Written through a temporary file and renamed: nothing else is left in the directory.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir / "run")) ++entries;
  EXPECT_EQ(entries, 1);
}

TEST(PortsFile, HttpIsNullWhenHttpIsOff) {
  testing::TempDir dir("orgd-ports");
  ASSERT_TRUE(write_ports_file(dir / "ports.json", {0, "nats://127.0.0.1:4222"}));
  const auto j = nlohmann::json::parse(testing::read_file(dir / "ports.json"));
  EXPECT_TRUE(j.at("http").is_null()) << j.dump();
  const auto ports = testing::wait_for_ports_file(dir / "ports.json", 1s, [] { return true; });
  ASSERT_TRUE(ports.has_value());
  EXPECT_EQ(ports->http, 0);
}

TEST(PortsFile, ReaderGivesUpWhenTheProcessIsGone) {
  testing::TempDir dir("orgd-ports");
  EXPECT_FALSE(testing::wait_for_ports_file(dir / "never.json", 30s, [] { return false; }));
}

}  // namespace
}  // namespace orgd
