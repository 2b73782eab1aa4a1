#include "daemon/core/duration.hpp"

#include <gtest/gtest.h>

#include <limits>

namespace orgd {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

TEST(ParseDuration, SingleUnits) {
  EXPECT_EQ(parse_duration("500ms"), milliseconds{500});
  EXPECT_EQ(parse_duration("30s"), seconds{30});
  EXPECT_EQ(parse_duration("5m"), minutes{5});
  EXPECT_EQ(parse_duration("2h"), hours{2});
  EXPECT_EQ(parse_duration("30d"), hours{24 * 30});
  EXPECT_EQ(parse_duration("1d12h"), hours{36});
  EXPECT_EQ(parse_duration("12h1d"), std::nullopt);
  EXPECT_EQ(parse_duration("0s"), milliseconds{0});
  EXPECT_EQ(parse_duration("0"), milliseconds{0});
  EXPECT_EQ(parse_duration("0ms"), milliseconds{0});
}

TEST(ParseDuration, CombinedUnitsLargestFirst) {
  EXPECT_EQ(parse_duration("1m30s"), seconds{90});
  EXPECT_EQ(parse_duration("1h30m"), minutes{90});
  EXPECT_EQ(parse_duration("1h2m3s4ms"), hours{1} + minutes{2} + seconds{3} + milliseconds{4});
  EXPECT_EQ(parse_duration("1s500ms"), milliseconds{1500});
}

TEST(ParseDuration, Fractions) {
  EXPECT_EQ(parse_duration("1.5s"), milliseconds{1500});
  EXPECT_EQ(parse_duration("0.5m"), seconds{30});
  EXPECT_EQ(parse_duration("0.001s"), milliseconds{1});
  EXPECT_EQ(parse_duration("1.25h"), minutes{75});
  EXPECT_EQ(parse_duration("2.0000000000s"), seconds{2});
  // Not a whole number of milliseconds.
  EXPECT_EQ(parse_duration("0.0001s"), std::nullopt);
  EXPECT_EQ(parse_duration("1.5ms"), std::nullopt);
  EXPECT_EQ(parse_duration("1.0000000001s"), std::nullopt);
}

TEST(ParseDuration, RejectsGarbage) {
  for (const char* text :
       {"",    "5",    "s",    "ms",     "5x",   "5 s",   " 5s",  "5s ",     "-5s",   "+5s",
        "5S",  "5sec", "1e3s", "1.s",    ".5s",  "1..5s", "5m5m", "30s1m",   "1ms1s", "1h1h",
        "5s5", "1s2",  "abc",  "5m ago", "\x01", "0x10s", "1,5s", "1_000ms", "∞s"}) {
    EXPECT_EQ(parse_duration(text), std::nullopt) << "accepted: \"" << text << "\"";
  }
}

TEST(ParseDuration, RejectsOverflow) {
  constexpr auto max = std::numeric_limits<Duration::rep>::max();
  EXPECT_EQ(parse_duration(std::to_string(max) + "ms"), milliseconds{max});
  EXPECT_EQ(parse_duration("9223372036854775808ms"), std::nullopt);
  EXPECT_EQ(parse_duration("99999999999999999999999s"), std::nullopt);
  EXPECT_EQ(parse_duration("2562047788016h"), std::nullopt);
  EXPECT_EQ(parse_duration("2562047788015h"), hours{2562047788015});
  // Each part fits, the sum does not.
  EXPECT_EQ(parse_duration("2562047788015h12m55s807ms"), milliseconds{max});
  EXPECT_EQ(parse_duration("2562047788015h12m55s808ms"), std::nullopt);
  EXPECT_EQ(parse_duration(std::string(5000, '9') + "s"), std::nullopt);
}

TEST(FormatDuration, ShortestForm) {
  EXPECT_EQ(format_duration(milliseconds{0}), "0s");
  EXPECT_EQ(format_duration(milliseconds{1500}), "1500ms");
  EXPECT_EQ(format_duration(seconds{90}), "90s");
  EXPECT_EQ(format_duration(seconds{30}), "30s");
  EXPECT_EQ(format_duration(minutes{5}), "5m");
  EXPECT_EQ(format_duration(hours{2}), "2h");
  EXPECT_EQ(format_duration(minutes{90}), "90m");
  EXPECT_EQ(format_duration(milliseconds{1}), "1ms");
  EXPECT_EQ(format_duration(hours{1} + milliseconds{1}), "1h1ms");
  EXPECT_EQ(format_duration(hours{1} + seconds{1}), "1h1s");
}

TEST(FormatDuration, RoundTrips) {
  constexpr auto max = std::numeric_limits<Duration::rep>::max();
  for (Duration::rep ms :
       {Duration::rep{1}, Duration::rep{999}, Duration::rep{1000}, Duration::rep{1001},
        Duration::rep{59'999}, Duration::rep{60'000}, Duration::rep{61'000},
        Duration::rep{3'599'999}, Duration::rep{3'600'000}, Duration::rep{86'400'000},
        Duration::rep{90'061'001}, max, max - 1}) {
    const std::string text = format_duration(milliseconds{ms});
    EXPECT_EQ(parse_duration(text), milliseconds{ms}) << text;
  }
}

TEST(FormatDuration, NegativeIsReadable) {
  EXPECT_EQ(format_duration(milliseconds{-1500}), "-1500ms");
  EXPECT_FALSE(format_duration(milliseconds{std::numeric_limits<Duration::rep>::min()}).empty());
}

}  // namespace
}  // namespace orgd
