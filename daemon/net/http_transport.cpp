#include "daemon/net/http_transport.hpp"

#include <algorithm>
#include <cctype>

namespace orgd {

std::string_view HttpResponse::header(std::string_view name) const {
  const auto same = [&](const std::string& candidate) {
    return std::equal(candidate.begin(), candidate.end(), name.begin(), name.end(),
                      [](char a, char b) {
                        return std::tolower(static_cast<unsigned char>(a)) ==
                               std::tolower(static_cast<unsigned char>(b));
                      });
  };
  for (const auto& h : headers) {
    if (same(h.name)) return h.value;
  }
  return {};
}

}  // namespace orgd
