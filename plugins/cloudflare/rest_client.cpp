#include "plugins/cloudflare/rest_client.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <utility>

#include "daemon/net/rate_limits.hpp"

namespace orgd::cloudflare {

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// What an error message may carry of Cloudflare's texts: enough to act on, bounded whatever
// the API sends.
constexpr std::size_t kMaxMessages = 5;
constexpr std::size_t kMaxMessageChars = 300;
// Cloudflare blocks every call for five minutes past its limit (cloud-apis.md §2.3).
constexpr seconds kDefaultBlock{300};

std::string printable(std::string_view text, std::size_t max) {
  std::string out;
  for (const unsigned char c : text) {
    if (out.size() >= max) {
      out += "…";
      break;
    }
    out.push_back(c < 0x20 || c == 0x7f ? ' ' : static_cast<char>(c));
  }
  return out;
}

std::vector<ApiMessage> read_messages(const nlohmann::json& list) {
  std::vector<ApiMessage> out;
  if (!list.is_array()) return out;
  for (const auto& item : list) {
    if (out.size() >= 50) break;
    ApiMessage m;
    if (item.is_object()) {
      const auto code = item.find("code");
      if (code != item.end() && code->is_number_integer()) m.code = code->get<std::int64_t>();
      const auto message = item.find("message");
      if (message != item.end() && message->is_string()) {
        m.message = printable(message->get_ref<const std::string&>(), kMaxMessageChars);
      }
    } else if (item.is_string()) {
      m.message = printable(item.get_ref<const std::string&>(), kMaxMessageChars);
    }
    out.push_back(std::move(m));
  }
  return out;
}

std::string describe_errors(const std::vector<ApiMessage>& errors) {
  std::string out;
  for (std::size_t i = 0; i < errors.size() && i < kMaxMessages; ++i) {
    if (!out.empty()) out += "; ";
    if (errors[i].code != 0) out += fmt::format("[{}] ", errors[i].code);
    out += errors[i].message.empty() ? std::string{"(no message)"} : errors[i].message;
  }
  if (errors.size() > kMaxMessages) out += fmt::format("; and {} more", errors.size() - kMaxMessages);
  return out;
}

std::optional<milliseconds> wait_of(const HttpResponse& response) {
  const auto now = std::chrono::system_clock::now();
  auto wait = net::parse_retry_after(response.header("retry-after"), now);
  if (!wait) {
    const auto limit = net::read_rate_limit(RateLimitHeaders::cloudflare, response, now);
    if (limit.reset) wait = std::chrono::ceil<milliseconds>(*limit.reset - now);
  }
  return wait;
}

Error by_status(int status, std::string text, std::optional<milliseconds> wait) {
  if (status == 429) {
    return rate_limited(std::move(text), std::max<milliseconds>(wait.value_or(kDefaultBlock),
                                                                milliseconds{1000}));
  }
  if (status >= 500 || (status >= 200 && status < 300)) return unavailable(std::move(text));
  Error e;
  switch (status) {
    case 404: e = not_found(std::move(text)); break;
    case 409: e = conflict(std::move(text)); break;
    default: e = invalid_argument(std::move(text)); break;
  }
  return permanent(std::move(e));
}

std::string with_query(const std::string& path, const std::string& param) {
  return path + (path.find('?') == std::string::npos ? "?" : "&") + param;
}

}  // namespace

bool Envelope::has_error(std::int64_t code) const {
  return std::any_of(errors.begin(), errors.end(),
                     [code](const ApiMessage& m) { return m.code == code; });
}

Result<Envelope> read_envelope(const std::string& what, const HttpResponse& response) {
  auto json = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  const auto success = json.is_object() ? json.find("success") : json.end();
  if (json.is_discarded() || !json.is_object() || success == json.end() ||
      !success->is_boolean()) {
    return by_status(response.status == 200 ? 502 : response.status,
                     fmt::format("{}: Cloudflare answered {} with a body that is not its "
                                 "envelope",
                                 what, response.status),
                     response.status == 429 ? wait_of(response) : std::nullopt);
  }
  Envelope e;
  e.status = response.status;
  e.success = success->get<bool>();
  if (response.status == 429) e.retry_after = wait_of(response);
  if (const auto it = json.find("errors"); it != json.end()) e.errors = read_messages(*it);
  if (const auto it = json.find("messages"); it != json.end()) e.messages = read_messages(*it);
  if (const auto it = json.find("result"); it != json.end()) e.result = std::move(*it);
  if (const auto it = json.find("result_info"); it != json.end()) e.result_info = std::move(*it);
  return e;
}

Error envelope_error(const std::string& what, const Envelope& envelope) {
  const std::string errors = describe_errors(envelope.errors);
  std::string text = fmt::format("{}: Cloudflare answered {}", what, envelope.status);
  if (envelope.status >= 200 && envelope.status < 300) text += " with success: false";
  if (!errors.empty()) text += ": " + errors;
  return by_status(envelope.status, std::move(text), envelope.retry_after);
}

std::optional<NextPage> next_page(const nlohmann::json& info, int requested_page,
                                  std::size_t items_on_page, int per_page) {
  if (!info.is_object() || items_on_page == 0) return std::nullopt;
  auto number = [&](const char* key) -> std::optional<long> {
    const auto it = info.find(key);
    if (it == info.end() || !it->is_number_integer()) return std::nullopt;
    return it->get<long>();
  };
  // cursor-after: {cursors: {after}}; cursor-based: {cursor, per_page, count}.
  if (const auto cursors = info.find("cursors"); cursors != info.end() && cursors->is_object()) {
    const std::string after = string_field(*cursors, "after");
    if (after.empty()) return std::nullopt;
    return NextPage{std::nullopt, after};
  }
  if (const auto cursor = info.find("cursor"); cursor != info.end()) {
    const std::string next = cursor->is_string() ? cursor->get<std::string>() : std::string{};
    if (next.empty()) return std::nullopt;
    return NextPage{std::nullopt, next};
  }
  // page-based: {page, per_page, count, total_count[, total_pages]}.
  const long page = number("page").value_or(requested_page);
  if (const auto total_pages = number("total_pages")) {
    if (page >= *total_pages) return std::nullopt;
    return NextPage{static_cast<int>(page + 1), std::nullopt};
  }
  if (const auto total = number("total_count")) {
    const long size = number("per_page").value_or(per_page);
    if (size <= 0 || page * size >= *total) return std::nullopt;
    return NextPage{static_cast<int>(page + 1), std::nullopt};
  }
  // Neither: a short page is the last.
  if (static_cast<long>(items_on_page) < number("per_page").value_or(per_page)) return std::nullopt;
  return NextPage{static_cast<int>(page + 1), std::nullopt};
}

RestClient::RestClient(Settings settings, TransportFactory make_transport, TokenGetter token,
                       std::shared_ptr<const Clock> clock)
    : settings_(std::move(settings)),
      make_transport_(std::move(make_transport)),
      token_(std::move(token)),
      clock_(clock ? std::move(clock) : std::make_shared<SystemClock>()) {}

Result<std::shared_ptr<HttpTransport>> RestClient::transport() {
  std::lock_guard lock(mutex_);
  if (transport_) return transport_;
  auto made = make_transport_();
  if (!made) return made.error();
  transport_ = made.value();
  return transport_;
}

Result<HttpResponse> RestClient::send(const Request& r) {
  auto transport = this->transport();
  if (!transport) return transport.error();
  auto token = token_();
  if (!token) return token.error();
  HttpRequest request;
  request.method = r.method;
  request.url = settings_.api_url + r.path;
  request.headers = {{"Accept", "application/json"}};
  if (!r.body.empty() || r.method == "PUT" || r.method == "POST" || r.method == "PATCH") {
    request.headers.push_back({"Content-Type", r.content_type});
  }
  request.body = r.body;
  request.authorization = std::move(token).value();
  request.idempotent = r.idempotent;
  request.deadline = r.deadline;
  ++calls_;
  return transport.value()->send(std::move(request));
}

Result<Envelope> RestClient::exchange(const std::string& what, const Request& request) {
  auto response = send(request);
  if (!response) {
    Error e = response.error();
    e.message = what + ": " + e.message;
    return e;
  }
  return read_envelope(what, response.value());
}

Result<Envelope> RestClient::call(const std::string& what, const Request& request) {
  auto response = send(request);
  if (!response) {
    Error e = response.error();
    e.message = what + ": " + e.message;
    return e;
  }
  auto envelope = read_envelope(what, response.value());
  if (!envelope) return envelope.error();
  const bool ok_status = response.value().status >= 200 && response.value().status < 300;
  if (!envelope.value().success || !ok_status) {
    return envelope_error(what, envelope.value());
  }
  return envelope;
}

Result<std::vector<nlohmann::json>> RestClient::list(const std::string& what,
                                                     const std::string& path,
                                                     const std::string& key, Deadline deadline,
                                                     int per_page, int max_pages,
                                                     std::size_t max_items) {
  std::vector<nlohmann::json> items;
  NextPage next{1, std::nullopt};
  for (int pages = 0; pages < max_pages; ++pages) {
    std::string page_path = with_query(path, "per_page=" + std::to_string(per_page));
    if (next.cursor) {
      page_path = with_query(page_path, "cursor=" + path_segment(*next.cursor));
    } else if (next.page && *next.page > 1) {
      page_path = with_query(page_path, "page=" + std::to_string(*next.page));
    }
    Request request;
    request.path = page_path;
    request.deadline = deadline;
    auto envelope = call(what, request);
    if (!envelope) return envelope.error();
    nlohmann::json& result = envelope.value().result;
    nlohmann::json* array = &result;
    if (!key.empty()) {
      const auto it = result.is_object() ? result.find(key) : result.end();
      array = it == result.end() ? nullptr : &*it;
    }
    if (array == nullptr || !array->is_array()) {
      return unavailable(what + ": Cloudflare's result has no " +
                         (key.empty() ? std::string{"list"} : key + " list"));
    }
    const std::size_t on_page = array->size();
    for (auto& item : *array) {
      if (items.size() >= max_items) {
        return unavailable(fmt::format("{}: more than {} items", what, max_items));
      }
      items.push_back(std::move(item));
    }
    const auto following =
        next_page(envelope.value().result_info, next.page.value_or(1), on_page, per_page);
    if (!following) return items;
    // A cursor that does not move would loop for ever.
    if (following->cursor && next.cursor && *following->cursor == *next.cursor) return items;
    next = *following;
  }
  return items;
}

std::string path_segment(std::string_view text) {
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

std::string string_field(const nlohmann::json& json, const char* key) {
  if (!json.is_object()) return {};
  const auto it = json.find(key);
  if (it == json.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<std::int64_t>());
  return {};
}

}  // namespace orgd::cloudflare
