#include "plugins/cloudflare/worker_secrets.hpp"

#include <nlohmann/json.hpp>
#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <utility>

#include "daemon/core/ascii.hpp"

namespace orgd::cloudflare {

namespace {

bool valid_name(const std::string& name) {
  return !name.empty() && name.size() <= 256 &&
         std::isdigit(static_cast<unsigned char>(name[0])) == 0 &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
         });
}

// `text` as a JSON string, appended to `out` (no temporary copy of a secret's value).
void append_json_string(std::string& out, std::string_view text) {
  static const char* const kHex = "0123456789abcdef";
  out.push_back('"');
  for (const unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xf]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

}  // namespace

bool latest_version_not_deployed(const Envelope& envelope) {
  return std::any_of(envelope.errors.begin(), envelope.errors.end(), [](const ApiMessage& m) {
    return icontains(m.message, "isn't currently deployed") ||
           icontains(m.message, "is not currently deployed") ||
           icontains(m.message, "latest version of your worker isn");
  });
}

WorkerSecretTarget::WorkerSecretTarget(std::shared_ptr<RestClient> api, std::string script)
    : api_(std::move(api)), script_(std::move(script)) {}

std::string WorkerSecretTarget::describe() const { return "cloudflare Worker " + script_; }

std::string WorkerSecretTarget::base() const {
  return api_->account_path() + "/workers/scripts/" + path_segment(script_) + "/secrets";
}

Result<std::vector<SecretInfo>> WorkerSecretTarget::list() {
  // One page, no pagination (cloud-apis.md §2.5): result is the list.
  RestClient::Request request;
  request.path = base();
  auto answer = api_->call("listing the secrets of " + describe(), request);
  if (!answer) return answer.error();
  const auto& result = answer.value().result;
  if (!result.is_array()) {
    return unavailable("listing the secrets of " + describe() + ": Cloudflare's result is not a list");
  }
  std::vector<SecretInfo> out;
  for (const auto& item : result) {
    const std::string name = string_field(item, "name");
    if (name.empty()) continue;
    // Cloudflare shows no time of change: drift is found by the engine's own records.
    out.push_back({name, std::nullopt});
  }
  return out;
}

Result<Ok> WorkerSecretTarget::check(const std::string& what, Result<Envelope> answer) {
  if (!answer) return answer.error();
  const Envelope& e = answer.value();
  if (e.success && e.status / 100 == 2) return Ok{};
  if (latest_version_not_deployed(e)) {
    // A gradual deploy is between its steps: the edit would deploy a version at 100% over it.
    return unavailable(what + ": Cloudflare refuses secret edits while the Worker's latest "
                       "version is not deployed (a gradual deploy in progress); the next sync "
                       "tries again");
  }
  return envelope_error(what, e);
}

Result<Ok> WorkerSecretTarget::put(const std::string& name, const Secret& value) {
  if (!valid_name(name)) {
    return permanent(invalid_argument("secret name " + name +
                                      " is not a Worker secret name (letters, digits, _)"));
  }
  if (value.size() > kMaxWorkerSecretBytes) {
    return permanent(invalid_argument("secret " + name + " is larger than Cloudflare's 5 KiB"));
  }
  // The body holds the value: built in one buffer reserved for its worst case (every byte
  // escaped), so no reallocation leaves a copy behind, and wiped after the call.
  const std::string head = nlohmann::json({{"name", name}, {"type", "secret_text"}}).dump();
  RestClient::Request request;
  request.method = "PUT";
  request.path = base();
  request.body.reserve(head.size() + value.size() * 6 + 16);
  request.body.append(head, 0, head.size() - 1).append(",\"text\":");
  append_json_string(request.body, value.expose());
  request.body.append("}");
  auto answer = api_->exchange("putting " + name + " to " + describe(), request);
  sodium_memzero(request.body.data(), request.body.size());
  return check("putting " + name + " to " + describe(), std::move(answer));
}

Result<Ok> WorkerSecretTarget::remove(const std::string& name) {
  RestClient::Request request;
  request.method = "DELETE";
  request.path = base() + "/" + path_segment(name);
  auto answer = api_->exchange("deleting " + name + " from " + describe(), request);
  // 404 for the secret, not for the Worker (10007: no such Worker).
  if (answer && answer.value().status == 404 && !answer.value().has_error(10007)) {
    return permanent(not_found("secret " + name + " is not set on " + describe()));
  }
  return check("deleting " + name + " from " + describe(), std::move(answer));
}

}  // namespace orgd::cloudflare
