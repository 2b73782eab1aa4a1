#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct __natsMsg;

namespace orgd {

// A NATS message owned by orgd. nats.c's natsMsg is copied into this at once in the callback
// and destroyed there, so no nats.c object crosses into the daemon's executor.
struct BusMessage {
  std::string subject;
  std::string reply;
  std::string data;
  std::vector<std::pair<std::string, std::string>> headers;

  // First value of a header, matched case-insensitively.
  std::optional<std::string> header(std::string_view name) const;
  void set_header(std::string name, std::string value);

  // The bytes a server counts against its max_payload: the data and the encoded header block
  // ("NATS/1.0\r\n", a "key: value\r\n" line each, "\r\n").
  std::size_t wire_size() const;

  // Copies subject, reply, data and headers of a nats.c message (which stays owned by the caller).
  static BusMessage copy_from(__natsMsg* msg);
  // A nats.c message with the same content, owned by the caller; null if nats.c refuses it.
  __natsMsg* to_nats() const;
};

}  // namespace orgd
