#include "daemon/events/fast_json.hpp"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/events/codec.hpp"

namespace orgd {
namespace {

using google::protobuf::util::MessageDifferencer;
using v1::Health;

// What the full decoder makes of `json`, or nullopt when protobuf rejects it.
std::optional<v1::HealthReport> protobuf_decode(std::string_view json) {
  v1::HealthReport report;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  if (!google::protobuf::util::JsonStringToMessage(json, &report, options).ok()) {
    return std::nullopt;
  }
  return report;
}

void expect_decodes_like_protobuf(std::string_view json) {
  SCOPED_TRACE(std::string(json));
  auto fast = fast_decode_health_report(json);
  ASSERT_TRUE(fast.has_value());
  auto full = protobuf_decode(json);
  ASSERT_TRUE(full.has_value());
  EXPECT_TRUE(MessageDifferencer::Equals(*fast, *full))
      << fast->ShortDebugString() << " vs " << full->ShortDebugString();
}

TEST(FastJsonDecode, CommonReport) {
  auto report = fast_decode_health_report(
      R"({"status":"degraded","version":"1.4.2","detail":"slow db","ttlSeconds":30})");
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->status(), Health::degraded);
  EXPECT_EQ(report->version(), "1.4.2");
  EXPECT_EQ(report->detail(), "slow db");
  EXPECT_EQ(report->ttl_seconds(), 30);
}

TEST(FastJsonDecode, AcceptedFormsEqualProtobuf) {
  for (std::string_view json : {
           R"({"status":"ok","version":"1.4.2","detail":"x","ttlSeconds":30})",
           R"({"ttlSeconds":30,"detail":"x","version":"1.4.2","status":"down"})",
           " \t\r\n{ \"status\" :\t\"unknown\" ,\n\"version\": \"\" } \n",
           R"({})",
           R"({"status":"ok"})",
           R"({"version":"v2 (build 7) <beta> & 'more'"})",
           R"({"ttl_seconds":5})",
           R"({"ttlSeconds":0})",
           R"({"ttlSeconds":-15})",
           R"({"ttlSeconds":2147483647})",
           R"({"ttlSeconds":-2147483648})",
           R"({"status":"degraded","detail":"/path?q=1#frag ~`!@$%^*() ;"})",
       }) {
    expect_decodes_like_protobuf(json);
  }
}

TEST(FastJsonDecode, EverythingOutsideTheSimpleSubsetIsLeftToTheFullDecoder) {
  for (std::string_view json : {
           "",
           " ",
           "[]",
           "null",
           R"({"status":"ok")",
           R"({"status":"ok",})",
           R"({,})",
           R"({"status":"ok"} x)",
           R"({"status":"ok"}{})",
           R"({"status" "ok"})",
           R"({"status":"ok" "version":"1"})",
           // escapes, control and non-ASCII bytes in strings
           R"({"version":"1\"2"})",
           R"({"version":"\u0031"})",
           R"({"detail":"a\nb"})",
           "{\"detail\":\"a\tb\"}",
           "{\"detail\":\"caf\xc3\xa9\"}",
           "{\"detail\":\"\xff\"}",
           "\xef\xbb\xbf{}",
           R"({"stat\u0075s":"ok"})",
           // unknown and repeated keys
           R"({"state":"ok"})",
           R"({"Status":"ok"})",
           R"({"status":"ok","status":"down"})",
           R"({"ttlSeconds":1,"ttl_seconds":2})",
           // nulls, wrong kinds, nested values
           R"({"status":null})",
           R"({"version":null})",
           R"({"status":1})",
           R"({"version":1})",
           R"({"version":true})",
           R"({"detail":{"a":1}})",
           R"({"detail":["a"]})",
           R"({"ttlSeconds":"30"})",
           R"({"ttlSeconds":true})",
           // numbers that are not plain int32
           R"({"ttlSeconds":30.0})",
           R"({"ttlSeconds":3e1})",
           R"({"ttlSeconds":030})",
           R"({"ttlSeconds":-0})",
           R"({"ttlSeconds":+30})",
           R"({"ttlSeconds":-})",
           R"({"ttlSeconds":2147483648})",
           R"({"ttlSeconds":-2147483649})",
           R"({"ttlSeconds":99999999999999999999})",
           R"({"ttlSeconds":Infinity})",
           // enum names other than the four
           R"({"status":"OK"})",
           R"({"status":"Ok"})",
           R"({"status":"ok "})",
           R"({"status":""})",
           R"({"status":"1"})",
       }) {
    EXPECT_FALSE(fast_decode_health_report(json).has_value()) << json;
  }
}

TEST(FastJsonDecode, TruncationsOfAValidReportNeverReadPastTheEnd) {
  std::string json = R"({"status":"ok","version":"1.4.2","detail":"x","ttlSeconds":-30})";
  for (std::size_t n = 0; n < json.size(); ++n) {
    // A copy of exactly n bytes, so a sanitizer build catches any read past it.
    std::vector<char> prefix(json.begin(), json.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_FALSE(fast_decode_health_report(std::string_view(prefix.data(), n)).has_value()) << n;
  }
  expect_decodes_like_protobuf(json);
}

// ---------------------------------------------------------------------------------------------

void expect_same_json(const std::string& fast, const google::protobuf::Message& message) {
  std::string full = encode_generic_json(message);
  EXPECT_EQ(nlohmann::json::parse(fast), nlohmann::json::parse(full));
  EXPECT_EQ(fast, full);
}

void expect_same_json(const v1::OrgStatus& status) {
  expect_same_json(fast_encode_org_status(status), status);
}

void expect_same_json(const v1::RepoStatus& status) {
  expect_same_json(fast_encode_repo_status(status), status);
}

v1::OrgStatus big_org(int repos) {
  v1::OrgStatus org;
  org.set_org("acme");
  org.mutable_generated_at()->set_seconds(1700000000);
  org.mutable_generated_at()->set_nanos(123456789);
  for (int i = 0; i < repos; ++i) {
    auto* repo = org.add_repos();
    repo->set_name("repo-" + std::to_string(i));
    repo->set_health(static_cast<Health::Status>(i % 4));
    for (int s = 0; s < 3; ++s) {
      auto* service = repo->add_services();
      service->set_name("svc-" + std::to_string(s));
      service->set_status(static_cast<Health::Status>((i + s) % 4));
      service->set_version("1." + std::to_string(i) + "." + std::to_string(s));
      service->set_stale((i + s) % 5 == 0);
      if (s != 2) {
        service->mutable_last_report_at()->set_seconds(1700000000 + i);
        service->mutable_last_report_at()->set_nanos(s == 0 ? 0 : 1000 * i);
      }
    }
    for (const char* env : {"dev", "staging", "prod"}) {
      auto& deploy = (*repo->mutable_deploys())[env];
      deploy.set_deploy_id("d-" + std::to_string(i) + "-" + env);
      deploy.set_state(static_cast<v1::DeployRecord::State>(i % 6));
      deploy.set_ref("refs/tags/v" + std::to_string(i));
      if (i % 2 == 0) deploy.mutable_finished_at()->set_seconds(1600000000 + 86400LL * i);
    }
  }
  return org;
}

TEST(FastJsonEncode, PagingFieldsAreTheFullEncodersToo) {
  v1::OrgStatus page = big_org(3);
  page.set_next_cursor("repo-2\"x");
  page.set_total_repos(10000);
  expect_same_json(page);
  page.set_next_cursor("");
  expect_same_json(page);
}

TEST(FastJsonEncode, EmptyMessages) {
  expect_same_json(v1::OrgStatus{});
  expect_same_json(v1::RepoStatus{});
  EXPECT_EQ(fast_encode_org_status(v1::OrgStatus{}),
            R"({"org":"","repos":[],"nextCursor":"","totalRepos":0})");
  EXPECT_EQ(fast_encode_repo_status(v1::RepoStatus{}),
            R"({"name":"","health":"unknown","services":[],"deploys":{}})");
}

TEST(FastJsonEncode, ThousandReposWithServicesAndDeploys) {
  auto org = big_org(1000);
  expect_same_json(org);
  expect_same_json(org.repos(7));
}

TEST(FastJsonEncode, DefaultsAndSetButZeroTimestamps) {
  v1::RepoStatus repo;
  auto* service = repo.add_services();
  service->mutable_last_report_at();  // set, at the epoch
  service->set_stale(true);
  repo.add_services();
  (*repo.mutable_deploys())[""];
  (*repo.mutable_deploys())["prod"].mutable_finished_at();
  expect_same_json(repo);
  v1::OrgStatus org;
  org.mutable_generated_at();
  *org.add_repos() = repo;
  expect_same_json(org);
}

TEST(FastJsonEncode, StringsWithQuotesBackslashesControlsAndUnicode) {
  v1::RepoStatus repo;
  repo.set_name("a\"b\\c/d<e>f&g'h");
  auto* service = repo.add_services();
  service->set_name(std::string("nul\0tab\tnl\nbs\bff\fcr\rdel\x7f esc\x1b", 30));
  service->set_version(
      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80 \xe2\x80\xa8 \xc2\xad \xef\xbb\xbf");
  (*repo.mutable_deploys())["k\"ey\n\xe2\x80\x8b"].set_ref("\xf3\xa0\x80\x81");
  expect_same_json(repo);
}

// Every code point, 4,096 to a string, against protobuf's own escaping.
TEST(FastJsonEncode, EveryCodePointIsEscapedLikeProtobuf) {
  auto append_utf8 = [](std::string& s, std::uint32_t cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xc0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xe0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      s += static_cast<char>(0xf0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    }
  };
  for (std::uint32_t base = 0; base <= 0x10ffff; base += 0x1000) {
    std::string text;
    for (std::uint32_t cp = base; cp < base + 0x1000; ++cp) {
      if (cp < 0xd800 || cp > 0xdfff) append_utf8(text, cp);
    }
    v1::RepoStatus repo;
    repo.set_name(text);
    SCOPED_TRACE(base);
    EXPECT_EQ(fast_encode_repo_status(repo), encode_generic_json(repo));
  }
}

TEST(FastJsonEncode, TimestampsWithAndWithoutNanos) {
  struct Case {
    std::int64_t seconds;
    std::int32_t nanos;
  };
  for (auto [seconds, nanos] : std::vector<Case>{{0, 0},
                                                 {1700000000, 0},
                                                 {1700000000, 100000000},
                                                 {1700000000, 120000000},
                                                 {1700000000, 123000000},
                                                 {1700000000, 123400000},
                                                 {1700000000, 123456000},
                                                 {1700000000, 123456700},
                                                 {1700000000, 1},
                                                 {1700000000, 999999999},
                                                 {-1, 0},
                                                 {-86400, 500},
                                                 {-62135596800, 0},
                                                 {253402300799, 999999999},
                                                 {951782400, 0},
                                                 {951868799, 0},
                                                 {4107542400, 0},
                                                 {-2208988800, 0}}) {
    v1::OrgStatus org;
    org.mutable_generated_at()->set_seconds(seconds);
    org.mutable_generated_at()->set_nanos(nanos);
    SCOPED_TRACE(seconds);
    expect_same_json(org);
  }
  // One civil day after another across four centuries (leap years, 1900, 2000, 2100).
  for (std::int64_t day = -30000; day < 120000; day += 29) {
    v1::RepoStatus repo;
    (*repo.mutable_deploys())["e"].mutable_finished_at()->set_seconds(day * 86400 + 3723);
    ASSERT_EQ(fast_encode_repo_status(repo), encode_generic_json(repo)) << day;
  }
}

TEST(FastJsonEncode, EnumValuesWithoutANamePrintAsNumbers) {
  v1::RepoStatus repo;
  repo.set_health(static_cast<Health::Status>(7));
  repo.add_services()->set_status(static_cast<Health::Status>(-2));
  (*repo.mutable_deploys())["x"].set_state(static_cast<v1::DeployRecord::State>(42));
  expect_same_json(repo);
}

// What protobuf refuses to print is left to it, so the reply stays the same.
TEST(FastJsonEncode, UnprintableMessagesGoThroughTheFullEncoder) {
  v1::OrgStatus org;
  org.mutable_generated_at()->set_seconds(253402300800);
  EXPECT_EQ(fast_encode_org_status(org), encode_generic_json(org));
  org.mutable_generated_at()->set_seconds(0);
  org.mutable_generated_at()->set_nanos(-1);
  EXPECT_EQ(fast_encode_org_status(org), encode_generic_json(org));
  org.mutable_generated_at()->set_nanos(1000000000);
  EXPECT_EQ(fast_encode_org_status(org), encode_generic_json(org));

  v1::RepoStatus repo;
  repo.add_services()->set_version("\xc3");
  EXPECT_EQ(fast_encode_repo_status(repo), encode_generic_json(repo));
}

std::string in_pieces(const v1::OrgStatus& org) {
  std::string out;
  fast_append_org_status_head(out, org.org());
  bool first = true;
  for (const auto& repo : org.repos()) {
    fast_append_org_status_repo(out, repo, first);
    first = false;
  }
  fast_append_org_status_tail(out, org);
  return out;
}

TEST(FastJsonEncode, InPiecesIsTheWholeDocumentByteForByte) {
  auto org = big_org(1000);
  EXPECT_EQ(in_pieces(org), fast_encode_org_status(org));
  org.set_next_cursor("repo-2\"x");
  org.set_total_repos(10000);
  EXPECT_EQ(in_pieces(org), fast_encode_org_status(org));
  EXPECT_EQ(in_pieces(v1::OrgStatus{}), fast_encode_org_status(v1::OrgStatus{}));
  v1::OrgStatus one = big_org(1);
  one.clear_generated_at();
  one.set_org("quote\"and\\back");
  EXPECT_EQ(in_pieces(one), fast_encode_org_status(one));
}

}  // namespace
}  // namespace orgd
