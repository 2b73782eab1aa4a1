#include "plugins/github/rest_client.hpp"

#include <fmt/format.h>

#include <cctype>
#include <utility>

namespace orgd::github {

namespace {

bool is_success(int status) { return status >= 200 && status < 300; }

// "https://api.github.com" of "https://api.github.com/repos/x?page=2": what a Link must start with.
std::string origin_of(const std::string& url) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  const auto slash = url.find('/', scheme + 3);
  return slash == std::string::npos ? url : url.substr(0, slash);
}

}  // namespace

RestClient::RestClient(Settings settings, ClientFactory make_client,
                       std::shared_ptr<const Clock> clock)
    : settings_(std::move(settings)),
      make_client_(std::move(make_client)),
      clock_(clock ? std::move(clock) : std::make_shared<SystemClock>()) {}

Result<RestClient::Client> RestClient::client() {
  std::lock_guard lock(mutex_);
  if (client_) return *client_;
  auto made = make_client_();
  if (!made) return made.error();
  client_ = made.value();
  return *client_;
}

Result<HttpResponse> RestClient::send(const std::string& method, const std::string& path,
                                      std::string body, Deadline deadline,
                                      std::optional<bool> idempotent) {
  const bool absolute = path.rfind("http://", 0) == 0 || path.rfind("https://", 0) == 0;
  if (absolute && origin_of(path) != origin_of(settings_.api_url)) {
    // The credential goes to the API's host only, whatever a Link says.
    return permanent(internal_error("GitHub sent a link to another host: " + origin_of(path)));
  }
  auto made = client();
  if (!made) return made.error();
  const Client& c = made.value();
  for (int tries = 0;; ++tries) {
    auto authorization = c.auth->authorization();
    if (!authorization) return authorization.error();
    HttpRequest request;
    request.method = method;
    request.url = absolute ? path : settings_.api_url + path;
    request.headers = {{"Accept", "application/vnd.github+json"},
                       {"X-GitHub-Api-Version", settings_.api_version}};
    if (!body.empty() || method == "PUT" || method == "POST" || method == "PATCH") {
      request.headers.push_back({"Content-Type", "application/json"});
    }
    request.body = body;
    request.authorization = authorization.value();
    request.idempotent = idempotent;
    request.deadline = deadline;
    ++calls_;
    auto response = c.transport->send(std::move(request));
    if (!response) return response.error();
    // An App token can be refused before its time (revoked, rotated): one fresh try.
    if (response.value().status == 401 && tries == 0) {
      c.auth->invalidate();
      continue;
    }
    return response;
  }
}

Result<nlohmann::json> RestClient::call(const std::string& what, const std::string& method,
                                        const std::string& path, std::string body,
                                        Deadline deadline, std::optional<bool> idempotent) {
  auto response = send(method, path, std::move(body), deadline, idempotent);
  if (!response) {
    Error e = response.error();
    e.message = what + ": " + e.message;
    return e;
  }
  if (!is_success(response.value().status)) {
    return github_error(what, response.value(), clock_->now());
  }
  if (response.value().body.empty()) return nlohmann::json{};
  auto json = nlohmann::json::parse(response.value().body, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return unavailable(fmt::format("{}: GitHub answered {} with a body that is not JSON", what,
                                   response.value().status));
  }
  return json;
}

Result<std::vector<nlohmann::json>> RestClient::list(const std::string& what,
                                                     const std::string& path,
                                                     const std::string& key, Deadline deadline,
                                                     std::size_t max_items) {
  std::vector<nlohmann::json> items;
  std::string next = path + (path.find('?') == std::string::npos ? "?" : "&") + "per_page=100";
  while (!next.empty()) {
    auto response = send("GET", next, {}, deadline);
    if (!response) {
      Error e = response.error();
      e.message = what + ": " + e.message;
      return e;
    }
    if (!is_success(response.value().status)) {
      return github_error(what, response.value(), clock_->now());
    }
    auto page = nlohmann::json::parse(response.value().body, nullptr, /*allow_exceptions=*/false);
    const auto array = page.is_object() ? page.find(key) : page.end();
    if (array == page.end() || !array->is_array()) {
      return unavailable(what + ": GitHub's page has no " + key + " list");
    }
    for (auto& item : *array) {
      if (items.size() >= max_items) {
        return unavailable(fmt::format("{}: more than {} items", what, max_items));
      }
      items.push_back(std::move(item));
    }
    next = next_link(response.value().header("link")).value_or(std::string{});
  }
  return items;
}

std::optional<std::string> next_link(std::string_view link) {
  // <https://api.github.com/...&page=2>; rel="next", <...>; rel="last"
  std::size_t at = 0;
  while (at < link.size()) {
    const auto open = link.find('<', at);
    if (open == std::string_view::npos) return std::nullopt;
    const auto close = link.find('>', open);
    if (close == std::string_view::npos) return std::nullopt;
    const auto end = link.find(',', close);
    const std::string_view params =
        link.substr(close + 1, (end == std::string_view::npos ? link.size() : end) - close - 1);
    if (params.find("rel=\"next\"") != std::string_view::npos) {
      return std::string{link.substr(open + 1, close - open - 1)};
    }
    if (end == std::string_view::npos) return std::nullopt;
    at = end + 1;
  }
  return std::nullopt;
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

}  // namespace orgd::github
