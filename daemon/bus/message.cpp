#include "daemon/bus/message.hpp"

#include <nats/nats.h>

#include <strings.h>

namespace orgd {

std::optional<std::string> BusMessage::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key.size() == name.size() && strncasecmp(key.data(), name.data(), name.size()) == 0) {
      return value;
    }
  }
  return std::nullopt;
}

void BusMessage::set_header(std::string name, std::string value) {
  for (auto& [key, v] : headers) {
    if (key.size() == name.size() && strncasecmp(key.data(), name.data(), name.size()) == 0) {
      v = std::move(value);
      return;
    }
  }
  headers.emplace_back(std::move(name), std::move(value));
}

std::size_t BusMessage::wire_size() const {
  if (headers.empty()) return data.size();
  std::size_t size = data.size() + std::string_view("NATS/1.0\r\n\r\n").size();
  for (const auto& [k, v] : headers) size += k.size() + v.size() + 4;
  return size;
}

BusMessage BusMessage::copy_from(natsMsg* msg) {
  BusMessage out;
  if (const char* s = natsMsg_GetSubject(msg)) out.subject = s;
  if (const char* r = natsMsg_GetReply(msg)) out.reply = r;
  if (const char* d = natsMsg_GetData(msg)) {
    out.data.assign(d, static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
  }
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(msg, &keys, &count) == NATS_OK) {
    for (int i = 0; i < count; ++i) {
      const char** values = nullptr;
      int nvalues = 0;
      if (natsMsgHeader_Values(msg, keys[i], &values, &nvalues) == NATS_OK) {
        for (int j = 0; j < nvalues; ++j) out.headers.emplace_back(keys[i], values[j]);
        free(static_cast<void*>(values));
      }
    }
    free(static_cast<void*>(keys));
  }
  return out;
}

natsMsg* BusMessage::to_nats() const {
  natsMsg* msg = nullptr;
  if (natsMsg_Create(&msg, subject.c_str(), reply.empty() ? nullptr : reply.c_str(), data.data(),
                     static_cast<int>(data.size())) != NATS_OK) {
    return nullptr;
  }
  // A header nats.c refuses is left out rather than the message.
  for (const auto& [k, v] : headers) (void)natsMsgHeader_Add(msg, k.c_str(), v.c_str());
  return msg;
}

}  // namespace orgd
