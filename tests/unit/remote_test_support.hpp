#pragma once

// For the remote provider's unit tests: a NatsRequester that answers from a script in the test
// (no bus) and records what it was sent, and a provider key pair whose holder opens what orgd
// sealed to it.

#include <sodium.h>

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/plugin/provider_services.hpp"
#include "plugins/remote/plugin_messages.hpp"

namespace orgd::testing {

struct SentRequest {
  std::string subject;
  std::string payload;
  Duration timeout{0};
};

class ScriptedRequester final : public NatsRequester {
 public:
  // op ("deploy.start", the subject after the provider's) and payload -> the reply or an error.
  using Script = std::function<Result<std::string>(const std::string& op, const std::string&)>;

  ScriptedRequester(std::string subject, Script script)
      : subject_(std::move(subject)), script_(std::move(script)) {}

  Result<std::string> request(const std::string& subject, std::string_view payload,
                              Duration timeout) override {
    {
      std::lock_guard lock(mutex_);
      sent_.push_back({subject, std::string(payload), timeout});
    }
    if (subject.rfind(subject_ + ".", 0) != 0) return unavailable("no responders on " + subject);
    return script_(subject.substr(subject_.size() + 1), std::string(payload));
  }

  std::vector<SentRequest> sent() {
    std::lock_guard lock(mutex_);
    return sent_;
  }
  std::vector<SentRequest> sent(const std::string& op) {
    std::vector<SentRequest> out;
    for (auto& s : sent()) {
      if (s.subject == subject_ + "." + op) out.push_back(s);
    }
    return out;
  }

 private:
  std::string subject_;
  Script script_;
  std::mutex mutex_;  // guards sent_
  std::vector<SentRequest> sent_;
};

// An X25519 key pair as a remote provider holds it.
struct ProviderKeys {
  unsigned char pk[crypto_box_PUBLICKEYBYTES];
  unsigned char sk[crypto_box_SECRETKEYBYTES];

  ProviderKeys() {
    if (sodium_init() < 0) throw std::runtime_error("sodium_init");
    crypto_box_keypair(pk, sk);
  }
  std::string public_base64() const {
    return remote::to_base64({reinterpret_cast<const char*>(pk), sizeof pk});
  }
  // Opens base64 crypto_box_seal output; nullopt when it does not open.
  std::optional<std::string> open(const std::string& sealed_base64) const {
    auto sealed = remote::from_base64(sealed_base64);
    if (!sealed || sealed->size() < crypto_box_SEALBYTES) return std::nullopt;
    std::string clear(sealed->size() - crypto_box_SEALBYTES, '\0');
    if (crypto_box_seal_open(reinterpret_cast<unsigned char*>(clear.data()),
                             reinterpret_cast<const unsigned char*>(sealed->data()), sealed->size(),
                             pk, sk) != 0) {
      return std::nullopt;
    }
    return clear;
  }
};

// `value` sealed to a base64 public key, base64: what a provider sends back to orgd.
inline std::string seal_to_base64_key(const std::string& public_base64, const std::string& value) {
  auto key = remote::from_base64(public_base64);
  std::string sealed(value.size() + crypto_box_SEALBYTES, '\0');
  crypto_box_seal(reinterpret_cast<unsigned char*>(sealed.data()),
                  reinterpret_cast<const unsigned char*>(value.data()), value.size(),
                  reinterpret_cast<const unsigned char*>(key->data()));
  return remote::to_base64(sealed);
}

}  // namespace orgd::testing
