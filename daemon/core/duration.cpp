#include "daemon/core/duration.hpp"

#include <array>
#include <cstdint>
#include <limits>

namespace orgd {
namespace {

struct Unit {
  std::string_view suffix;
  std::int64_t millis;
};

// Largest first: a duration's components must appear in this order, each at most once, so that
// typos such as "5m5m" or "30s1m" are rejected instead of silently summed.
constexpr std::array<Unit, 5> kUnits{
    {{"d", 86'400'000}, {"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}, {"ms", 1}}};

constexpr std::int64_t kMax = std::numeric_limits<Duration::rep>::max();

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Reads a unit suffix at the start of `text`; "ms" must win over "m".
const Unit* read_unit(std::string_view text, std::size_t& length) {
  if (text.starts_with("ms")) {
    length = 2;
    return &kUnits[4];
  }
  if (text.empty()) return nullptr;
  for (std::size_t i = 0; i < 4; ++i) {
    if (text.front() == kUnits[i].suffix.front()) {
      length = 1;
      return &kUnits[i];
    }
  }
  return nullptr;
}

bool checked_mul_add(std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t& out) {
  std::int64_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) return false;
  return !__builtin_add_overflow(product, c, &out);
}

}  // namespace

std::optional<Duration> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  if (text == "0") return Duration::zero();

  std::int64_t total = 0;
  std::size_t next_unit = 0;  // index into kUnits of the smallest unit still allowed
  std::size_t pos = 0;
  while (pos < text.size()) {
    // Integer part.
    std::int64_t whole = 0;
    std::size_t digits = 0;
    while (pos < text.size() && is_digit(text[pos])) {
      if (!checked_mul_add(whole, 10, text[pos] - '0', whole)) return std::nullopt;
      ++pos;
      ++digits;
    }
    // Optional fraction ("1.5s"); kept as numerator/denominator so no precision is lost.
    std::int64_t frac = 0;
    std::int64_t frac_scale = 1;
    std::size_t frac_digits = 0;
    if (pos < text.size() && text[pos] == '.') {
      ++pos;
      while (pos < text.size() && is_digit(text[pos])) {
        // Beyond 9 fractional digits nothing can still be a whole millisecond unless zero.
        if (frac_digits >= 9) {
          if (text[pos] != '0') return std::nullopt;
        } else {
          frac = frac * 10 + (text[pos] - '0');
          frac_scale *= 10;
        }
        ++pos;
        ++frac_digits;
      }
      if (frac_digits == 0) return std::nullopt;
    }
    if (digits == 0) return std::nullopt;

    std::size_t unit_length = 0;
    const Unit* unit = read_unit(text.substr(pos), unit_length);
    if (unit == nullptr) return std::nullopt;
    const auto index = static_cast<std::size_t>(unit - kUnits.data());
    if (index < next_unit) return std::nullopt;
    next_unit = index + 1;
    pos += unit_length;

    std::int64_t millis = 0;
    if (!checked_mul_add(whole, unit->millis, 0, millis)) return std::nullopt;
    if (frac != 0) {
      // frac / frac_scale of a unit must be a whole number of milliseconds.
      std::int64_t scaled = 0;
      if (!checked_mul_add(frac, unit->millis, 0, scaled)) return std::nullopt;
      if (scaled % frac_scale != 0) return std::nullopt;
      if (__builtin_add_overflow(millis, scaled / frac_scale, &millis)) return std::nullopt;
    }
    if (__builtin_add_overflow(total, millis, &total)) return std::nullopt;
  }
  if (total > kMax) return std::nullopt;
  return Duration{total};
}

std::string format_duration(Duration d) {
  std::int64_t value = d.count();
  if (value == 0) return "0s";
  if (value < 0) {
    // Not accepted back by parse_duration, but still readable in a log line.
    if (value == std::numeric_limits<std::int64_t>::min()) return "-" + std::to_string(value);
    return "-" + format_duration(Duration{-value});
  }
  // Try every combination of units (largest first, remainder carried down) and keep the shortest
  // text; ties go to the form with fewer components, e.g. "90s" rather than "1m30s".
  std::string best;
  int best_parts = 0;
  for (unsigned mask = 1; mask < (1u << kUnits.size()); ++mask) {
    std::string text;
    std::int64_t rest = value;
    int parts = 0;
    bool zero_part = false;
    for (std::size_t i = 0; i < kUnits.size(); ++i) {
      if ((mask & (1u << i)) == 0) continue;
      const std::int64_t count = rest / kUnits[i].millis;
      if (count == 0) {
        zero_part = true;
        break;
      }
      rest -= count * kUnits[i].millis;
      ++parts;
      text += std::to_string(count);
      text += kUnits[i].suffix;
    }
    if (zero_part || rest != 0) continue;
    if (best.empty() || text.size() < best.size() ||
        (text.size() == best.size() && parts < best_parts)) {
      best = std::move(text);
      best_parts = parts;
    }
  }
  return best;
}

}  // namespace orgd
