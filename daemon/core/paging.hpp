#pragma once

// Pages of the API's long lists (P.api.status, P.api.repos): sorted by name, each page starting
// after the cursor the previous one returned. A cursor is the last name of its page, which is
// opaque to clients and still right when names are added or removed between two pages.

#include <cstddef>
#include <cstdint>
#include <string>

#include "daemon/core/errors.hpp"

namespace orgd {

inline constexpr std::size_t kDefaultPageSize = 500;
inline constexpr std::size_t kMaxPageSize = 5000;
inline constexpr std::size_t kMaxCursorBytes = 256;

struct PageRequest {
  std::size_t size = kDefaultPageSize;
  std::string after;  // empty: from the first entry
};

// A request's page_size (0: the default) and cursor, checked.
Result<PageRequest> read_page(std::int64_t page_size, const std::string& cursor);

}  // namespace orgd
