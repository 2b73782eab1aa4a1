// /status at the size of a large org: served with chunked encoding, piece by piece, and the
// same document as the P.api.status pages put together, against a real nats-server.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <nlohmann/json.hpp>

#include "daemon/app/daemon.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::NatsServer;
using testing::wait_until;

constexpr int kRepos = 3000;

std::string repo_name(int i) { return fmt::format("repo-{:05}", i); }

std::string config_yaml(const std::string& url) {
  std::string yaml = "org: acme\nnats:\n  urls: [" + url +
                     "]\n  connect_timeout: 2s\n  reconnect_wait: 100ms\n"
                     "http:\n  listen: 127.0.0.1:0\nlog:\n  level: warn\nrepos:\n";
  for (int i = 0; i < kRepos; ++i) {
    yaml += "  " + repo_name(i) + ":\n    health: {services: [http, worker], ttl: 1h}\n";
  }
  return yaml;
}

nlohmann::json request(natsConnection* conn, const std::string& subject,
                       const std::string& data) {
  natsMsg* reply = nullptr;
  if (natsConnection_Request(&reply, conn, subject.c_str(), data.data(),
                             static_cast<int>(data.size()), 10000) != NATS_OK) {
    return nlohmann::json();
  }
  auto out = nlohmann::json::parse(
      std::string(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply))),
      nullptr, false);
  natsMsg_Destroy(reply);
  return out;
}

// Every repo of P.api.status, walked page by page; `pages` counts the pages.
nlohmann::json walk_pages(natsConnection* conn, int* pages) {
  nlohmann::json repos = nlohmann::json::array();
  std::string cursor;
  *pages = 0;
  for (;;) {
    const auto page = request(conn, "org.acme.api.status",
                              cursor.empty() ? R"({"pageSize":700})"
                                             : R"({"pageSize":700,"cursor":")" + cursor + "\"}");
    if (!page.is_object() || !page.contains("repos")) return nlohmann::json();
    ++*pages;
    for (const auto& repo : page["repos"]) repos.push_back(repo);
    cursor = page.value("nextCursor", "");
    if (cursor.empty() || *pages > kRepos) return repos;
  }
}

TEST(StatusStream, StatusOfThousandsOfReposIsChunkedAndEqualsThePagesTogether) {
  NatsServer server;
  auto config = load_config_string(config_yaml(server.url()), "test.yaml", Environment());
  auto daemon = std::make_unique<Daemon>(config, DaemonOptions{}, Environment());
  daemon->start();
  ASSERT_TRUE(wait_until([&] { return daemon->ready(); }, 30s));

  // Half the repos reported, some degraded, so the document carries versions and times.
  auto client = testing::connect_client(server.url());
  for (int i = 0; i < kRepos; i += 2) {
    const std::string subject = fmt::format("org.acme.health.{}.http", repo_name(i));
    const std::string body =
        fmt::format(R"({{"status":"{}","version":"1.{}","ttlSeconds":3600}})",
                    i % 10 == 0 ? "degraded" : "ok", i % 7);
    ASSERT_EQ(natsConnection_Publish(client.get(), subject.c_str(), body.data(),
                                     static_cast<int>(body.size())),
              NATS_OK);
  }
  ASSERT_EQ(natsConnection_Flush(client.get()), NATS_OK);
  const std::string last = repo_name(kRepos - 2);
  ASSERT_TRUE(wait_until(
      [&] {
        const auto one = request(client.get(), "org.acme.api.status.repo",
                                 R"({"repo":")" + last + "\"}");
        return one.is_object() && one.dump().find("\"1.") != std::string::npos;
      },
      20s));

  auto http = testing::http_request("127.0.0.1", daemon->http_port(), "GET", "/status", "", 30s);
  ASSERT_TRUE(http.has_value());
  EXPECT_EQ(http->status, 200);
  EXPECT_EQ(http->header("Transfer-Encoding"), "chunked");
  EXPECT_EQ(http->header("Content-Length"), "");
  const auto document = nlohmann::json::parse(http->body, nullptr, false);
  ASSERT_TRUE(document.is_object()) << http->body.substr(0, 300);
  EXPECT_EQ(document.value("totalRepos", 0), kRepos);
  EXPECT_TRUE(document.contains("generatedAt"));
  ASSERT_EQ(document["repos"].size(), static_cast<std::size_t>(kRepos));

  int pages = 0;
  const auto paged = walk_pages(client.get(), &pages);
  ASSERT_TRUE(paged.is_array());
  EXPECT_GT(pages, 1);
  // Nothing was reported in between: the stream and the pages show the same repos, each the
  // same, in the same order.
  ASSERT_EQ(paged.size(), document["repos"].size());
  for (std::size_t i = 0; i < paged.size(); ++i) {
    ASSERT_EQ(document["repos"][i], paged[i]) << "repo " << i;
  }
  EXPECT_EQ(document["repos"][0]["name"], repo_name(0));
  EXPECT_EQ(document["repos"][kRepos - 1]["name"], repo_name(kRepos - 1));

  daemon->stop();
}

}  // namespace
}  // namespace orgd
