#include "daemon/bus/service_discovery.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <regex>

namespace orgd {
namespace {

using nlohmann::json;

ServiceDiscovery make() {
  ServiceIdentity id;
  id.name = "orgd";
  id.version = "0.1.0";
  id.description = "test";
  id.metadata = {{"org", "demo"}};
  return ServiceDiscovery(
      id,
      [] {
        return std::vector<ServiceEndpoint>{
            {"status", "org.demo.api.status", "orgd", 4, 1, "404:unknown repo 'x'", 4000},
            {"status_repo", "org.demo.api.status.repo", "orgd", 0, 0, "", 0}};
      },
      std::chrono::system_clock::time_point{std::chrono::seconds{1'700'000'000}});
}

TEST(ServiceDiscovery, AnswersAllThreeSubjectFormsOfEachVerb) {
  auto sd = make();
  auto subjects = sd.subjects();
  ASSERT_EQ(subjects.size(), 9u);
  const std::string id = sd.identity().id;
  EXPECT_EQ(subjects[0], "$SRV.PING");
  EXPECT_EQ(subjects[1], "$SRV.PING.orgd");
  EXPECT_EQ(subjects[2], "$SRV.PING.orgd." + id);
  for (const auto& s : subjects) EXPECT_FALSE(sd.respond(s).empty()) << s;
  EXPECT_TRUE(sd.respond("$SRV.PING.other").empty());
  EXPECT_TRUE(sd.respond("$SRV.INFO.orgd.someoneelse").empty());
}

TEST(ServiceDiscovery, IdIsUniqueAndInTheNatsAlphabet) {
  auto a = ServiceDiscovery::new_id();
  auto b = ServiceDiscovery::new_id();
  EXPECT_NE(a, b);
  EXPECT_TRUE(std::regex_match(a, std::regex("[0-9A-Z]{22}"))) << a;
}

TEST(ServiceDiscovery, PingFollowsAdr32) {
  auto j = json::parse(make().respond("$SRV.PING"));
  EXPECT_EQ(j["type"], "io.nats.micro.v1.ping_response");
  EXPECT_EQ(j["name"], "orgd");
  EXPECT_EQ(j["version"], "0.1.0");
  EXPECT_EQ(j["metadata"]["org"], "demo");
  EXPECT_EQ(j["id"].get<std::string>().size(), 22u);
}

TEST(ServiceDiscovery, InfoListsEndpoints) {
  auto j = json::parse(make().respond("$SRV.INFO.orgd"));
  EXPECT_EQ(j["type"], "io.nats.micro.v1.info_response");
  EXPECT_EQ(j["description"], "test");
  ASSERT_EQ(j["endpoints"].size(), 2u);
  EXPECT_EQ(j["endpoints"][0]["name"], "status");
  EXPECT_EQ(j["endpoints"][0]["subject"], "org.demo.api.status");
  EXPECT_EQ(j["endpoints"][0]["queue_group"], "orgd");
  EXPECT_TRUE(j["endpoints"][0]["metadata"].is_object());
}

TEST(ServiceDiscovery, StatsCarryCountsAndTimesInNanoseconds) {
  auto j = json::parse(make().respond("$SRV.STATS"));
  EXPECT_EQ(j["type"], "io.nats.micro.v1.stats_response");
  EXPECT_EQ(j["started"], "2023-11-14T22:13:20.000Z");
  auto e = j["endpoints"][0];
  EXPECT_EQ(e["num_requests"], 4);
  EXPECT_EQ(e["num_errors"], 1);
  EXPECT_EQ(e["last_error"], "404:unknown repo 'x'");
  EXPECT_EQ(e["processing_time"], 4000);
  EXPECT_EQ(e["average_processing_time"], 1000);
  EXPECT_EQ(j["endpoints"][1]["average_processing_time"], 0);
}

}  // namespace
}  // namespace orgd
