#pragma once

// The Cloudflare v4 API calls of one provider instance (cloud-apis.md §2.1): the API root and
// the bearer token on every request; the envelope {success, errors[], messages[], result,
// result_info} read from every answer, `success: false` a failure whatever the HTTP status, the
// errors' codes and messages in the Error's message; result_info pagination in its three
// shapes (pages, cursor, cursors.after); 429s and other failures turned into Errors with their
// retry kind; and a count of the calls made. The HTTP client under it (RateLimitHeaders::
// cloudflare) reads the Ratelimit headers and holds requests back during a 429's block.

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/net/http_transport.hpp"
#include "plugins/cloudflare/cloudflare_settings.hpp"

namespace orgd::cloudflare {

// One entry of errors[] or messages[].
struct ApiMessage {
  std::int64_t code = 0;  // 0 when Cloudflare gave none (or not a number)
  std::string message;
};

// An answer read as Cloudflare's envelope.
struct Envelope {
  int status = 0;
  bool success = false;
  std::vector<ApiMessage> errors;
  std::vector<ApiMessage> messages;
  nlohmann::json result;       // null when absent
  nlohmann::json result_info;  // null when absent
  // With a 429: how long Cloudflare said to wait (Retry-After, else its Ratelimit reset).
  std::optional<std::chrono::milliseconds> retry_after;
  bool has_error(std::int64_t code) const;
};

// The envelope of `response`; an error (naming `what` and the status, the retry kind by the
// status) when the body is not one: not JSON, not an object, no boolean `success`. Hostile
// shapes inside (errors that are not a list, codes that are not numbers) are tolerated.
Result<Envelope> read_envelope(const std::string& what, const HttpResponse& response);

// The Error of a failed answer: "<what>: Cloudflare answered <status>: [<code>] <message>; …".
// 429 is rate_limited (Retry-After, else the Ratelimit reset, else five minutes: the block
// Cloudflare documents); 5xx and a 2xx with success:false retryable; 404 not_found, 409
// conflict, other 4xx invalid_argument, all permanent.
Error envelope_error(const std::string& what, const Envelope& envelope);

// How the next page of a list is asked for, from the last page's result_info.
struct NextPage {
  std::optional<int> page;        // page-based: {page, per_page, count, total_count, total_pages}
  std::optional<std::string> cursor;  // cursor-based: {cursor} or {cursors: {after}}
};
// nullopt when the list is complete. `items_on_page` is the last page's size.
std::optional<NextPage> next_page(const nlohmann::json& result_info, int requested_page,
                                  std::size_t items_on_page, int per_page);

class RestClient {
 public:
  using Deadline = std::optional<std::chrono::steady_clock::time_point>;
  // The transport, made on first use (a ca_file that cannot be read is the first call's error).
  using TransportFactory = std::function<Result<std::shared_ptr<HttpTransport>>()>;
  // The API token, read on first use (a missing variable is the first call's error).
  using TokenGetter = std::function<Result<std::shared_ptr<const Secret>>()>;

  RestClient(Settings settings, TransportFactory make_transport, TokenGetter token,
             std::shared_ptr<const Clock> clock);

  struct Request {
    std::string method = "GET";
    std::string path;  // from the API root: "/accounts/<id>/workers/scripts/<name>/versions"
    std::string body;
    std::string content_type = "application/json";  // when there is a body
    Deadline deadline;
    std::optional<bool> idempotent;
  };

  // The answer as it came; an error is no answer.
  Result<HttpResponse> send(const Request& request);
  // The answer's envelope, whatever `success` says (a caller that reads an error's code, as a
  // rollback does with 10220).
  Result<Envelope> exchange(const std::string& what, const Request& request);
  // The envelope of a successful answer; a failed one as envelope_error().
  Result<Envelope> call(const std::string& what, const Request& request);
  // Every item of a list, following result_info: `key` names the array inside `result` ("" when
  // `result` is the array, "items" for versions, "deployments" ...). At most max_pages pages;
  // an error past max_items (a runaway listing).
  Result<std::vector<nlohmann::json>> list(const std::string& what, const std::string& path,
                                           const std::string& key, Deadline deadline = {},
                                           int per_page = 50, int max_pages = 100,
                                           std::size_t max_items = 10'000);

  Result<std::shared_ptr<HttpTransport>> transport();
  Result<std::shared_ptr<const Secret>> token() { return token_(); }

  const Settings& settings() const { return settings_; }
  const Clock& clock() const { return *clock_; }
  // "/accounts/<account_id>"
  std::string account_path() const { return "/accounts/" + settings_.account_id; }
  // HTTP requests made so far (retries inside the transport not counted).
  std::uint64_t calls() const { return calls_.load(); }

 private:
  Settings settings_;
  TransportFactory make_transport_;
  TokenGetter token_;
  std::shared_ptr<const Clock> clock_;
  std::mutex mutex_;  // guards transport_
  std::shared_ptr<HttpTransport> transport_;
  std::atomic<std::uint64_t> calls_{0};
};

// A path segment (a script or secret name, an id) as it goes into a URL.
std::string path_segment(std::string_view text);

// A string field of a JSON object ("" when absent or not a string; a number as its digits).
std::string string_field(const nlohmann::json& json, const char* key);

}  // namespace orgd::cloudflare
