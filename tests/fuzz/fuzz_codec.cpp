// Fuzzes the wire codec: every input must decode to a message or a clean invalid_argument, and
// whatever decodes must encode and decode again to the same message.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>

#include <google/protobuf/util/message_differencer.h>

#include "daemon/events/codec.hpp"
#include "orgd/v1/deploy.pb.h"
#include "orgd/v1/error.pb.h"
#include "orgd/v1/health.pb.h"
#include "orgd/v1/secrets.pb.h"
#include "orgd/v1/status.pb.h"

namespace {

std::unique_ptr<google::protobuf::Message> make(unsigned selector) {
  switch (selector % 8) {
    case 0: return std::make_unique<orgd::v1::HealthReport>();
    case 1: return std::make_unique<orgd::v1::RepoStatusRequest>();
    case 2: return std::make_unique<orgd::v1::DeployRequest>();
    case 3: return std::make_unique<orgd::v1::DeployRecord>();
    case 4: return std::make_unique<orgd::v1::ServiceHealth>();
    case 5: return std::make_unique<orgd::v1::OrgStatus>();
    case 6: return std::make_unique<orgd::v1::SecretSyncRequest>();
    default: return std::make_unique<orgd::v1::DeployAccepted>();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // First byte: message type (low bits) and encoding (high bit). The rest is the payload.
  unsigned selector = data[0];
  auto encoding = (selector & 0x80) != 0 ? orgd::Encoding::protobuf : orgd::Encoding::json;
  std::string_view payload(reinterpret_cast<const char*>(data + 1), size - 1);

  (void)orgd::encoding_from_content_type(payload.substr(0, 64));
  (void)orgd::valid_subject_token(payload.substr(0, 200));

  auto message = make(selector);
  auto decoded = orgd::decode(payload, encoding, *message, 64 * 1024);
  if (!decoded.ok()) {
    if (decoded.error().code != orgd::ErrorCode::invalid_argument) std::abort();
    // Error replies built from the error must stay valid UTF-8 JSON.
    if (!orgd::valid_utf8(orgd::encode_error(decoded.error(), orgd::Encoding::json))) std::abort();
    return 0;
  }
  // Round trips: what decoded encodes, and decodes again to an equal message, in both
  // encodings. (Compared field by field: map order in binary output is not fixed.)
  using google::protobuf::util::MessageDifferencer;
  std::string binary = orgd::encode(*message, orgd::Encoding::protobuf);
  auto again = make(selector);
  if (!orgd::decode(binary, orgd::Encoding::protobuf, *again, 1 << 24).ok()) std::abort();
  if (!MessageDifferencer::Equals(*again, *message)) std::abort();
  std::string json = orgd::encode(*message, orgd::Encoding::json);
  if (!orgd::valid_utf8(json)) std::abort();
  auto from_json = make(selector);
  if (orgd::decode(json, orgd::Encoding::json, *from_json, 1 << 24).ok() &&
      !MessageDifferencer::Equals(*from_json, *message)) {
    std::abort();
  }
  return 0;
}
