#pragma once

#include <google/protobuf/message.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "daemon/bus/nats_connection.hpp"
#include "orgd/v1/health.pb.h"

namespace orgd::cli {

// orgctl's exit codes.
enum class ExitCode : int {
  ok = 0,
  failed = 1,         // orgd answered with an error
  usage = 2,          // bad flags (CLI11 also uses 2... and above)
  unreachable = 3,    // NATS or orgd cannot be reached
  interrupted = 130,  // Ctrl-C (128 + SIGINT, as shells report it)
};

// The outcome of one API call, for callers that report problems themselves (a live view that
// owns the terminal must not have errors scribbled over it).
struct CallResult {
  ExitCode code = ExitCode::ok;
  std::string error;  // what went wrong, for stderr; empty when code is ok
  std::string body;   // the reply as received
  int service_code = 0;  // orgd's error number (Nats-Service-Error-Code), 0 when none
};

// orgd's answer to a page too large for the connection's max_payload.
inline constexpr int kTooLarge = 413;

// Connection flags shared by every orgctl command; NATS_* environment variables are the
// defaults, as for the rest of the org's tooling.
struct ClientOptions {
  std::string server;
  std::string creds;
  std::string nkey;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string org;
  std::string prefix;
  double timeout_seconds = 5;

  void add_flags(CLI::App& app);
};

class Client {
 public:
  explicit Client(ClientOptions options);
  ExitCode connect();
  const std::string& org() const { return org_; }

  // Calls P.api.<op>; on success decodes the reply into `reply` and, with print_json, prints the
  // reply body as received. Errors are printed to stderr.
  ExitCode call(const std::string& op, const google::protobuf::Message& request,
                google::protobuf::Message& reply, bool print_json);
  // The same without printing anything.
  CallResult call_quietly(const std::string& op, const google::protobuf::Message& request,
                          google::protobuf::Message& reply);

  // Subscribes to P.<suffix> (e.g. "events.deploy.d-1.>"); the handler runs on a nats.c thread.
  // Returns once the server has the interest, so a request sent afterwards cannot race it.
  std::unique_ptr<NatsConnection::Subscription> subscribe(const std::string& suffix,
                                                          NatsConnection::MessageHandler handler);

  ExitCode report_health(const std::string& repo, const std::string& service,
                         const v1::HealthReport& report);

 private:
  CallResult request(const std::string& subject, const std::string& body, const std::string& what);
  std::chrono::milliseconds timeout() const;

  ClientOptions options_;
  std::string org_;
  std::string prefix_;
  std::unique_ptr<NatsConnection> nats_;
};

}  // namespace orgd::cli
