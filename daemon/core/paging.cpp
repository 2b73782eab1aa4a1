#include "daemon/core/paging.hpp"

#include <fmt/format.h>

namespace orgd {

Result<PageRequest> read_page(std::int64_t page_size, const std::string& cursor) {
  if (page_size < 0 || page_size > static_cast<std::int64_t>(kMaxPageSize)) {
    return invalid_argument(
        fmt::format("page_size must be between 1 and {} (0: {}), not {}", kMaxPageSize,
                    kDefaultPageSize, page_size));
  }
  if (cursor.size() > kMaxCursorBytes) {
    return invalid_argument(fmt::format("cursor is longer than {} bytes: pass the next_cursor "
                                        "of the page before, as it came",
                                        kMaxCursorBytes));
  }
  for (const unsigned char c : cursor) {
    if (c < 0x20 || c == 0x7f) {
      return invalid_argument("cursor holds control characters: pass the next_cursor of the "
                              "page before, as it came");
    }
  }
  PageRequest page;
  if (page_size > 0) page.size = static_cast<std::size_t>(page_size);
  page.after = cursor;
  return page;
}

}  // namespace orgd
