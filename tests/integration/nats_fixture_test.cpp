// The test support itself: waiting, temp dirs, child processes, and the real nats-server
// fixtures every integration and e2e test stands on.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/nats_server.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd::testing {
namespace {

namespace fs = std::filesystem;

nlohmann::json request_json(natsConnection* conn, const std::string& subject,
                            const std::string& payload = "") {
  const auto reply = request(conn, subject, payload, 5000ms);
  if (!reply) return nlohmann::json{{"error", "no reply"}};
  return nlohmann::json::parse(*reply);
}

// A file stream on `subjects`, through the JetStream JSON API (what every client does).
void create_stream(natsConnection* conn, const std::string& name, const std::string& subject,
                   int replicas = 1) {
  const auto config = nlohmann::json{
      {"name", name}, {"subjects", {subject}}, {"storage", "file"}, {"num_replicas", replicas}};
  const auto reply = request_json(conn, "$JS.API.STREAM.CREATE." + name, config.dump());
  ASSERT_FALSE(reply.contains("error")) << reply.dump();
}

std::uint64_t stream_messages(natsConnection* conn, const std::string& name) {
  const auto info = request_json(conn, "$JS.API.STREAM.INFO." + name);
  if (info.contains("error")) return 0;
  return info["state"]["messages"].get<std::uint64_t>();
}

bool process_exists(pid_t pid) { return ::kill(pid, 0) == 0; }

// ---------------------------------------------------------------------------------------------
// wait_until, TempDir

TEST(WaitUntil, ReturnsAsSoonAsTheConditionHolds) {
  int calls = 0;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(wait_until([&] { return ++calls == 3; }, 5000ms, 1ms));
  EXPECT_EQ(calls, 3);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1000ms);
}

TEST(WaitUntil, GivesUpAtTheDeadline) {
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(wait_until([] { return false; }, 50ms, 5ms));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 50ms);
  EXPECT_LT(took, 2000ms);
}

TEST(TempDirTest, CreatedFreshAndRemovedWithItsContent) {
  fs::path kept;
  {
    TempDir dir("orgd-tempdir-test");
    kept = dir.path();
    EXPECT_TRUE(fs::is_directory(kept));
    write_file(dir / "a/b/c.txt", "hello");
    EXPECT_EQ(read_file(dir / "a/b/c.txt"), "hello");
    TempDir other("orgd-tempdir-test");
    EXPECT_NE(other.path(), dir.path());
  }
  EXPECT_FALSE(fs::exists(kept));
}

// ---------------------------------------------------------------------------------------------
// Subprocess

TEST(SubprocessTest, CapturesOutputAndExitCode) {
  Subprocess p({"sh", "-c", "echo out; echo err >&2; echo \"$ORGD_X\"; exit 3"},
               {{"ORGD_X", "from-env"}});
  EXPECT_EQ(p.wait_for_exit(10s), 3);
  EXPECT_EQ(p.stdout_text(), "out\nfrom-env\n");
  EXPECT_EQ(p.stderr_text(), "err\n");
  EXPECT_FALSE(p.running());
  EXPECT_FALSE(p.signal(SIGTERM));  // never signals a reaped pid
}

TEST(SubprocessTest, OutputIsReadableWhileRunning) {
  Subprocess p({"sh", "-c", "echo ready; exec sleep 30"});
  EXPECT_TRUE(wait_until([&] { return p.stdout_text() == "ready\n"; }, 10s));
  EXPECT_TRUE(p.running());
  EXPECT_EQ(p.wait_for_exit(20ms), std::nullopt);
}

TEST(SubprocessTest, ReportsSignalsDistinctly) {
  Subprocess p({"sleep", "30"});
  EXPECT_TRUE(p.signal(SIGTERM));
  const auto status = p.wait_for_exit(10s);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, -SIGTERM);
  EXPECT_EQ(describe_exit(*status).rfind("signal 15", 0), 0u) << describe_exit(*status);
  EXPECT_EQ(describe_exit(0), "exit code 0");
}

TEST(SubprocessTest, UnsetEnvAndWorkingDirectory) {
  TempDir dir;
  SubprocessOptions options;
  options.argv = {"sh", "-c", "pwd; echo \"${HOME-unset}\""};
  options.unset_env = {"HOME"};
  options.cwd = dir.path();
  Subprocess p(options);
  ASSERT_EQ(p.wait_for_exit(10s), 0);
  EXPECT_EQ(p.stdout_text(), fs::canonical(dir.path()).string() + "\nunset\n");
}

TEST(SubprocessTest, MissingBinaryThrows) {
  EXPECT_THROW(Subprocess({"orgd-no-such-binary-here"}), std::runtime_error);
  EXPECT_THROW(Subprocess({"/nonexistent/binary"}), std::runtime_error);
}

TEST(SubprocessTest, LeaksNoDescriptorsIntoTheChild) {
  // A descriptor without close-on-exec, as a careless library would leave one.
  const int leaky = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(leaky, 0);
  ASSERT_EQ(::dup2(leaky, 200), 200);
  ::close(leaky);
  Subprocess p({"sh", "-c", "ls /proc/self/fd"});
  ::close(200);
  ASSERT_EQ(p.wait_for_exit(10s), 0);
  // ls sees 0, 1, 2 and the directory it reads; nothing of the test's.
  EXPECT_EQ(p.stdout_text().find("200"), std::string::npos) << p.stdout_text();
}

TEST(SubprocessTest, DestructorKillsAndReaps) {
  pid_t pid = 0;
  {
    Subprocess p({"sleep", "30"});
    pid = p.pid();
    EXPECT_TRUE(process_exists(pid));
  }
  // Reaped: no zombie left, the pid is no longer our child.
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(SubprocessTest, KillIsImmediateAndIdempotent) {
  Subprocess p({"sleep", "30"});
  p.kill();
  EXPECT_EQ(p.exit_status(), -SIGKILL);
  p.kill();
  EXPECT_FALSE(p.running());
}

// ---------------------------------------------------------------------------------------------
// NatsServer

TEST(NatsServerTest, AcceptsClientsAndAnswersJetStream) {
  NatsServer server;
  EXPECT_GT(server.port(), 0);
  EXPECT_EQ(server.url(), "nats://127.0.0.1:" + std::to_string(server.port()));
  EXPECT_GT(server.pid(), 0);
  EXPECT_TRUE(fs::is_directory(server.store_dir()));

  auto conn = connect_client(server.url());
  const auto info = request_json(conn.get(), "$JS.API.INFO");
  EXPECT_FALSE(info.contains("error")) << info.dump();
  EXPECT_TRUE(jetstream_answers(server.url()));

  // Core request-reply works through it.
  natsSubscription* sub = nullptr;
  ASSERT_EQ(natsConnection_Subscribe(
                &sub, conn.get(), "echo",
                [](natsConnection* nc, natsSubscription*, natsMsg* msg, void*) {
                  natsConnection_Publish(nc, natsMsg_GetReply(msg), natsMsg_GetData(msg),
                                         natsMsg_GetDataLength(msg));
                  natsMsg_Destroy(msg);
                },
                nullptr),
            NATS_OK);
  EXPECT_EQ(request(conn.get(), "echo", "ping"), "ping");
  natsSubscription_Destroy(sub);
}

TEST(NatsServerTest, ServersGetDistinctPortsAndStores) {
  NatsServer a;
  NatsServer b;
  EXPECT_NE(a.port(), b.port());
  EXPECT_NE(a.store_dir(), b.store_dir());
  EXPECT_NE(a.config_text().find("server_name"), std::string::npos);
}

TEST(NatsServerTest, WithoutJetStream) {
  NatsServerOptions options;
  options.jetstream = false;
  NatsServer server(options);
  auto conn = connect_client(server.url());
  EXPECT_FALSE(jetstream_answers(server.url(), 300ms));
}

TEST(NatsServerTest, RestartKeepsPortAndStore) {
  NatsServer server;
  const auto port = server.port();
  {
    auto conn = connect_client(server.url());
    create_stream(conn.get(), "KEEP", "keep.>");
    const auto ack = request_json(conn.get(), "keep.1", "one");
    ASSERT_FALSE(ack.contains("error")) << ack.dump();
    ASSERT_EQ(stream_messages(conn.get(), "KEEP"), 1u);
  }
  const pid_t first = server.pid();
  server.restart();
  EXPECT_NE(server.pid(), first);
  EXPECT_EQ(server.port(), port);
  auto conn = connect_client(server.url());
  EXPECT_EQ(stream_messages(conn.get(), "KEEP"), 1u);
}

TEST(NatsServerTest, KillLosesNoAcknowledgedMessage) {
  NatsServer server;
  {
    auto conn = connect_client(server.url());
    create_stream(conn.get(), "CRASH", "crash.>");
    for (int i = 0; i < 10; ++i) {
      ASSERT_FALSE(request_json(conn.get(), "crash.x", "m").contains("error"));
    }
  }
  server.kill();
  EXPECT_FALSE(server.running());
  EXPECT_EQ(server.pid(), 0);
  server.start();
  auto conn = connect_client(server.url());
  EXPECT_EQ(stream_messages(conn.get(), "CRASH"), 10u);
}

TEST(NatsServerTest, StopEndsTheProcessAndFreesThePort) {
  NatsServer server;
  const pid_t pid = server.pid();
  server.stop();
  EXPECT_EQ(server.pid(), 0);
  EXPECT_FALSE(process_exists(pid));
  EXPECT_TRUE(port_bindable(server.port()));
  server.stop();  // idempotent
  EXPECT_THROW(connect_client(server.url(), 500ms), std::runtime_error);
}

TEST(NatsServerTest, DestructorRemovesProcessAndTempDir) {
  pid_t pid = 0;
  std::string store;
  {
    NatsServer server;
    pid = server.pid();
    store = server.store_dir();
  }
  EXPECT_FALSE(process_exists(pid));
  EXPECT_FALSE(fs::exists(store));
}

TEST(NatsServerTest, ExtraConfigIsApplied) {
  NatsServerOptions options;
  options.extra_config = "max_payload: 2048";
  NatsServer server(options);
  auto conn = connect_client(server.url());
  EXPECT_EQ(natsConnection_GetMaxPayload(conn.get()), 2048);
}

// ---------------------------------------------------------------------------------------------
// NatsCluster

TEST(NatsClusterTest, FormsWithMetaLeaderAndSurvivesANodeRestart) {
  NatsCluster cluster;
  ASSERT_EQ(cluster.url_list().size(), 3u);
  const std::string urls = cluster.urls();
  EXPECT_EQ(std::count(urls.begin(), urls.end(), ','), 2) << urls;
  for (std::size_t i = 0; i < cluster.size(); ++i) {
    EXPECT_TRUE(jetstream_answers(cluster.node(i).url())) << "node " << i;
    EXPECT_NE(cluster.node(i).config_text().find("routes"), std::string::npos);
  }

  // An R3 stream spans the three nodes; its data survives a node restart.
  auto conn = connect_client(cluster.urls());
  create_stream(conn.get(), "R3", "r3.>", 3);
  ASSERT_FALSE(request_json(conn.get(), "r3.a", "1").contains("error"));
  conn.reset();

  cluster.node(2).restart();
  EXPECT_TRUE(cluster.wait_for_meta_leader(20s));
  EXPECT_TRUE(cluster.wait_for_replicas(3, 30s));
  auto again = connect_client(cluster.node(2).url());
  EXPECT_TRUE(wait_until([&] { return stream_messages(again.get(), "R3") == 1u; }, 20s, 100ms));

  // With one node down, two of three still hold a quorum.
  cluster.node(0).stop();
  EXPECT_TRUE(cluster.wait_for_meta_leader(20s));
  auto remaining = connect_client(cluster.node(1).url());
  EXPECT_TRUE(wait_until(
      [&] { return !request_json(remaining.get(), "r3.b", "2").contains("error"); }, 20s, 200ms));
}

// ---------------------------------------------------------------------------------------------
// deploy/nats

#ifdef ORGD_SOURCE_DIR
TEST(DeployNatsConfigs, AreValidAndShapedLikeTheFixtures) {
  const fs::path dir = fs::path(ORGD_SOURCE_DIR) / "deploy" / "nats";
  for (const char* name :
       {"single.conf", "cluster-node1.conf", "cluster-node2.conf", "cluster-node3.conf"}) {
    Subprocess check({nats_server_binary(), "-t", "-c", (dir / name).string()});
    EXPECT_EQ(check.wait_for_exit(10s), 0) << name << ": " << check.describe();
    const std::string text = read_file(dir / name);
    EXPECT_NE(text.find("jetstream {"), std::string::npos) << name;
    EXPECT_NE(text.find("store_dir:"), std::string::npos) << name;
    EXPECT_NE(text.find("127.0.0.1"), std::string::npos) << name;
  }
  // NatsCluster generates the cluster block with the same keys.
  NatsCluster cluster;
  for (const char* key : {"cluster {", "name:", "listen:", "routes: ["}) {
    EXPECT_NE(read_file(dir / "cluster-node1.conf").find(key), std::string::npos) << key;
    EXPECT_NE(cluster.node(0).config_text().find(key), std::string::npos) << key;
  }
}
#endif

}  // namespace
}  // namespace orgd::testing
