#include "tests/support/nats_server.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "daemon/core/config_values.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/wait.hpp"

namespace orgd::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds remaining(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return std::max(left, std::chrono::milliseconds{0});
}

std::string unique_server_name() {
  static std::atomic<int> counter{0};
  return "orgd-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

// Distinct free loopback ports, for the cluster's routes which every node must know up front.
// They are held open together so none repeats; a node that still loses its port to someone else
// fails to start and the cluster is retried on new ports.
std::vector<std::uint16_t> reserve_ports(std::size_t count) {
  std::vector<int> sockets;
  std::vector<std::uint16_t> ports;
  for (std::size_t i = 0; i < count; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      if (fd >= 0) ::close(fd);
      for (int s : sockets) ::close(s);
      throw std::runtime_error("cannot reserve a loopback port");
    }
    sockets.push_back(fd);
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int s : sockets) ::close(s);
  return ports;
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

std::string cluster_block(const std::string& name, std::uint16_t listen,
                          const std::vector<std::uint16_t>& route_ports) {
  std::string block = "cluster {\n  name: " + quoted(name) +
                      "\n  listen: " + quoted("127.0.0.1:" + std::to_string(listen)) +
                      "\n  routes: [\n";
  for (auto p : route_ports) {
    block += "    " + quoted("nats-route://127.0.0.1:" + std::to_string(p)) + "\n";
  }
  return block + "  ]\n}\n";
}

bool reply_ok(const std::optional<std::string>& reply) {
  if (!reply) return false;
  const auto json = nlohmann::json::parse(*reply, nullptr, false);
  return json.is_object() && !json.contains("error");
}

}  // namespace

std::string nats_server_binary() {
  const char* env = std::getenv("ORGD_TEST_NATS_SERVER");
  return env != nullptr && *env != '\0' ? env : "nats-server";
}

// ---------------------------------------------------------------------------------------------
// NatsServer

NatsServer::NatsServer() : NatsServer(Options{}) {}

NatsServer::NatsServer(Options options) : dir_("orgd-nats"), options_(std::move(options)) {
  if (options_.server_name.empty()) options_.server_name = unique_server_name();
  port_ = options_.port;
  start();
}

NatsServer::~NatsServer() { kill(); }

std::string NatsServer::url() const { return "nats://127.0.0.1:" + std::to_string(port_); }

std::string NatsServer::store_dir() const { return (dir_ / "store").string(); }

std::string NatsServer::log_text() const {
  const std::filesystem::path log = dir_ / "store" / "nats-server.log";
  return read_file(std::filesystem::path(log) += ".1") + read_file(log);
}

std::string NatsServer::config_text() const {
  return read_file(dir_ / "store" / "nats-server.conf");
}

pid_t NatsServer::pid() const { return server_ ? server_->pid() : 0; }

bool NatsServer::running() { return server_ && server_->running(); }

void NatsServer::start() {
  if (running()) return;
  EmbeddedServerSettings settings;
  settings.binary = nats_server_binary();
  settings.host = "127.0.0.1";
  settings.port = port_;  // the first start picks one; restarts keep it
  settings.store_dir = store_dir();
  settings.ready_timeout = options_.ready_timeout;
  settings.server_name = options_.server_name;
  settings.jetstream = options_.jetstream;
  settings.wait_for_jetstream = options_.wait_for_jetstream;
  settings.extra_config = options_.extra_config;
  server_ = std::make_unique<EmbeddedNatsServer>(std::move(settings));
  server_->start();
  port_ = server_->port();
}

void NatsServer::stop() {
  if (server_) server_->stop();
}

void NatsServer::restart() {
  stop();
  start();
}

void NatsServer::kill() {
  if (server_) server_->kill();
}

bool NatsServer::wait_for_jetstream(std::chrono::milliseconds deadline) const {
  return wait_until([&] { return jetstream_answers(url(), 500ms); }, deadline, 50ms);
}

// ---------------------------------------------------------------------------------------------
// NatsCluster

NatsCluster::NatsCluster() : NatsCluster(Options{}) {}

NatsCluster::NatsCluster(Options options) {
  const auto deadline = Clock::now() + options.ready_timeout;
  constexpr int kAttempts = 5;
  for (int attempt = 1;; ++attempt) {
    const auto ports = reserve_ports(2 * kSize);
    const std::vector<std::uint16_t> route_ports(ports.begin() + kSize, ports.end());
    try {
      for (std::size_t i = 0; i < kSize; ++i) {
        NatsServer::Options node;
        node.port = ports[i];
        node.server_name = options.name + "-n" + std::to_string(i + 1);
        node.wait_for_jetstream = false;  // needs a meta leader, hence the other nodes
        node.ready_timeout = std::min<std::chrono::milliseconds>(remaining(deadline), 15000ms);
        node.extra_config =
            cluster_block(options.name, route_ports[i], route_ports) + options.extra_config;
        nodes_.push_back(std::make_unique<NatsServer>(std::move(node)));
      }
      break;
    } catch (const std::runtime_error& e) {
      nodes_.clear();
      const std::string what = e.what();
      if (attempt >= kAttempts || what.find("in use") == std::string::npos) throw;
    }
  }
  if (!wait_for_meta_leader(remaining(deadline)) ||
      !wait_for_replicas(static_cast<int>(kSize), remaining(deadline))) {
    std::string logs;
    for (std::size_t i = 0; i < kSize; ++i) {
      logs += "--- node " + std::to_string(i) + " ---\n" + last_lines(nodes_[i]->log_text(), 15);
    }
    throw std::runtime_error("NatsCluster: JetStream did not form within " +
                             std::to_string(options.ready_timeout.count()) + " ms\n" + logs);
  }
}

NatsCluster::~NatsCluster() {
  // SIGKILL, all at once: their stores are thrown away with them.
  for (auto& node : nodes_) node->kill();
}

std::vector<std::string> NatsCluster::url_list() const {
  std::vector<std::string> out;
  for (const auto& node : nodes_) out.push_back(node->url());
  return out;
}

std::string NatsCluster::urls() const {
  std::string out;
  for (const auto& url : url_list()) out += (out.empty() ? "" : ",") + url;
  return out;
}

NatsServer& NatsCluster::node(std::size_t i) { return *nodes_.at(i); }

bool NatsCluster::wait_for_meta_leader(std::chrono::milliseconds deadline) const {
  return wait_until(
      [&] {
        for (const auto& node : nodes_) {
          if (node->pid() != 0 && !jetstream_answers(node->url(), 500ms)) return false;
        }
        return true;
      },
      deadline, 50ms);
}

bool NatsCluster::wait_for_replicas(int replicas, std::chrono::milliseconds deadline) const {
  std::string urls;
  for (const auto& node : nodes_) {
    if (node->pid() != 0) urls += (urls.empty() ? "" : ",") + node->url();
  }
  const std::string name = "ORGD_TEST_PROBE";
  const std::string config = nlohmann::json{
      {"name", name},
      {"subjects", {"orgd.test.probe"}},
      {"num_replicas", replicas},
      {"storage", "memory"}}.dump();
  return wait_until(
      [&] {
        try {
          auto conn = connect_client(urls, 1000ms);
          auto reply = request(conn.get(), "$JS.API.STREAM.CREATE." + name, config, 2000ms);
          if (!reply_ok(reply)) return false;
          return reply_ok(request(conn.get(), "$JS.API.STREAM.DELETE." + name, "", 2000ms));
        } catch (const std::runtime_error&) {
          return false;
        }
      },
      deadline, 100ms);
}

// ---------------------------------------------------------------------------------------------
// Clients

void NatsConnectionDeleter::operator()(natsConnection* conn) const {
  if (conn == nullptr) return;
  natsConnection_Close(conn);
  natsConnection_Destroy(conn);
}

NatsConnectionPtr connect_client(const std::string& urls, std::chrono::milliseconds timeout) {
  const auto list = split_urls(urls);
  std::vector<const char*> servers;
  for (const auto& u : list) servers.push_back(u.c_str());
  natsOptions* opts = nullptr;
  if (natsOptions_Create(&opts) != NATS_OK) throw std::runtime_error("natsOptions_Create failed");
  natsOptions_SetServers(opts, servers.data(), static_cast<int>(servers.size()));
  natsOptions_SetTimeout(opts, static_cast<int64_t>(timeout.count()));
  natsOptions_SetAllowReconnect(opts, false);
  natsOptions_SetNoRandomize(opts, true);
  natsConnection* conn = nullptr;
  const natsStatus s = natsConnection_Connect(&conn, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) {
    throw std::runtime_error("cannot connect to " + urls + ": " + natsStatus_GetText(s));
  }
  return NatsConnectionPtr(conn);
}

std::optional<std::string> request(natsConnection* conn, const std::string& subject,
                                   const std::string& payload, std::chrono::milliseconds timeout) {
  natsMsg* reply = nullptr;
  const natsStatus s = natsConnection_Request(&reply, conn, subject.c_str(), payload.data(),
                                              static_cast<int>(payload.size()),
                                              static_cast<int64_t>(timeout.count()));
  if (s != NATS_OK) return std::nullopt;
  std::string data(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
  natsMsg_Destroy(reply);
  return data;
}

bool jetstream_answers(const std::string& url, std::chrono::milliseconds timeout) {
  try {
    auto conn = connect_client(url, timeout);
    return reply_ok(request(conn.get(), "$JS.API.INFO", "", timeout));
  } catch (const std::runtime_error&) {
    return false;
  }
}

}  // namespace orgd::testing
