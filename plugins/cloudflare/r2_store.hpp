#pragma once

// R2 as an ObjectStore (cloud-apis.md §2.6): the bucket ensured through the Cloudflare API
// (POST /accounts/{id}/r2/buckets), objects put, got, listed and removed through R2's S3 API
// with SigV4 signing (service s3, region auto). The S3 key pair is derived from the API token as
// Cloudflare documents it: the access key id is the token's id (GET /user/tokens/verify), the
// secret access key the SHA-256 hex of the token's value.

#include <functional>
#include <memory>
#include <string>

#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/net/http_transport.hpp"
#include "daemon/plugin/provider.hpp"

namespace orgd::cloudflare {

struct R2Settings {
  std::string account_id;
  std::string api_url;  // the Cloudflare API root, no trailing slash (bucket API, token verify)
  // The S3 endpoint, no trailing slash; empty: https://<account_id>.r2.cloudflarestorage.com
  // (https://<account_id>.<jurisdiction>.r2.cloudflarestorage.com with a jurisdiction).
  std::string s3_url;
  std::string jurisdiction;  // "" (default) | eu | fedramp | us
  ObjectStoreConfig store;   // bucket and prefix
  int max_keys = 1000;       // ListObjectsV2 page size asked for (R2 answers at most 1,000)
};

// The API token, read when first needed (a missing token is the first call's error).
using TokenGetter = std::function<Result<std::shared_ptr<const Secret>>()>;

std::unique_ptr<ObjectStore> make_r2_store(R2Settings settings,
                                           std::shared_ptr<HttpTransport> transport,
                                           TokenGetter token,
                                           std::shared_ptr<const Clock> clock);

}  // namespace orgd::cloudflare
