#pragma once

#include <nats/nats.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/bus/embedded_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd::testing {

using namespace std::chrono_literals;

// The nats-server the tests run: $ORGD_TEST_NATS_SERVER, else `nats-server` on PATH.
std::string nats_server_binary();

struct NatsServerOptions {
  bool jetstream = true;
  // Empty: a unique name per server of the test process.
  std::string server_name;
  // Appended verbatim to the generated config: authorization, limits, cluster blocks.
  std::string extra_config;
  // 0: a free port picked by the server itself (race-free: `port: -1` and a ports file); the
  // port is then kept across restart().
  std::uint16_t port = 0;
  std::chrono::milliseconds ready_timeout{15000};
  // Ready also means "$JS.API.INFO answers" (off for cluster nodes, which need their peers).
  bool wait_for_jetstream = true;
};

// A real nats-server for one test: loopback, a free port, a fresh store in its own temp dir
// (removed with the object; the destructor SIGKILLs the server, its store being thrown away).
// Started by the constructor, which returns once the server accepts clients (and answers
// JetStream requests); throws std::runtime_error with the server's log otherwise. Runs on
// orgd::EmbeddedNatsServer, so the tests exercise the daemon's own start/stop code. The process
// gets SIGTERM if the test process dies, so a crashed test leaves none behind (it follows the
// creating thread: create servers from the test's own thread).
class NatsServer {
 public:
  using Options = NatsServerOptions;

  NatsServer();
  explicit NatsServer(Options options);
  ~NatsServer();
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  // nats://127.0.0.1:PORT (also while stopped).
  std::string url() const;
  std::uint16_t port() const { return port_; }
  // JetStream keeps its data in store_dir()/jetstream; the config and log sit in store_dir().
  std::string store_dir() const;
  std::string log_text() const;
  std::string config_text() const;
  // 0 while stopped.
  pid_t pid() const;
  bool running();

  // Starts a stopped server again, on the same port and store.
  void start();
  // SIGTERM, then SIGKILL after 5 s; the store is kept. Idempotent.
  void stop();
  // stop() + start(): "restart nats-server mid-run". The port is reused at once (the server
  // sets SO_REUSEADDR); in the rare case another process took it meanwhile, start() throws.
  void restart();
  // SIGKILL (a crash); the store is kept.
  void kill();

  // Waits until $JS.API.INFO answers without error to an anonymous client (so never with an
  // authorization block in extra_config).
  bool wait_for_jetstream(std::chrono::milliseconds deadline) const;

 private:
  TempDir dir_;
  Options options_;
  std::uint16_t port_ = 0;
  std::unique_ptr<EmbeddedNatsServer> server_;
};

struct NatsClusterOptions {
  std::string name = "orgd-test";
  // Appended to every node's config.
  std::string extra_config;
  // Bounds the whole start: every node accepting clients, a JetStream meta leader elected and
  // an R3 stream placeable.
  std::chrono::milliseconds ready_timeout{45000};
};

// Three nats-servers on loopback forming a JetStream cluster, shaped like
// deploy/nats/cluster-node*.conf (`cluster { name, listen, routes }` with every node's route,
// distinct server names and stores) but on free ports. The constructor returns once JetStream
// can place an R3 stream.
class NatsCluster {
 public:
  using Options = NatsClusterOptions;
  static constexpr std::size_t kSize = 3;

  NatsCluster();
  explicit NatsCluster(Options options);
  ~NatsCluster();
  NatsCluster(const NatsCluster&) = delete;
  NatsCluster& operator=(const NatsCluster&) = delete;

  // "nats://127.0.0.1:P1,nats://127.0.0.1:P2,nats://127.0.0.1:P3", what NATS_URLS takes.
  std::string urls() const;
  std::vector<std::string> url_list() const;
  std::size_t size() const { return kSize; }
  // Each node stops, restarts and is killed on its own; a restarted node rejoins the cluster.
  NatsServer& node(std::size_t i);

  // Every running node answers $JS.API.INFO: a meta leader is elected and known to all.
  bool wait_for_meta_leader(std::chrono::milliseconds deadline) const;
  // A probe stream with `replicas` replicas can be created (and is deleted again): enough peers
  // have joined the meta group to place it.
  bool wait_for_replicas(int replicas, std::chrono::milliseconds deadline) const;

 private:
  std::vector<std::unique_ptr<NatsServer>> nodes_;
};

// RAII for the nats.c connections tests open themselves.
struct NatsConnectionDeleter {
  void operator()(natsConnection* conn) const;
};
using NatsConnectionPtr = std::unique_ptr<natsConnection, NatsConnectionDeleter>;

// Connects a plain client (no reconnect); throws std::runtime_error naming the nats.c error.
// `urls` may be comma-separated.
NatsConnectionPtr connect_client(const std::string& urls,
                                 std::chrono::milliseconds timeout = 2000ms);

// A request's reply payload, or nullopt on timeout / no responders.
std::optional<std::string> request(natsConnection* conn, const std::string& subject,
                                   const std::string& payload,
                                   std::chrono::milliseconds timeout = 2000ms);

// True if $JS.API.INFO on the server at `url` answers without an error.
bool jetstream_answers(const std::string& url, std::chrono::milliseconds timeout = 1000ms);

}  // namespace orgd::testing
