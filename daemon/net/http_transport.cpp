#include "daemon/net/http_transport.hpp"

#include "daemon/core/ascii.hpp"

namespace orgd {

std::string_view HttpResponse::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (iequals(h.name, name)) return h.value;
  }
  return {};
}

}  // namespace orgd
