#include "daemon/core/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string_view>

namespace orgd {
namespace {

static_assert(std::atomic<double>::is_always_lock_free,
              "Histogram::observe relies on lock-free atomic<double>");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

bool valid_name(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    const bool digit = c >= '0' && c <= '9';
    if (!alpha && !(digit && i > 0)) return false;
  }
  return true;
}

void check_metric_name(const std::string& name) {
  if (!valid_name(name, /*allow_colon=*/true)) {
    throw std::invalid_argument("invalid metric name '" + name + "'");
  }
}

// Label sets are kept sorted by label name, so the same set passed in another order is the same
// series and renders the same way (as the Prometheus client libraries do).
Labels normalized(const std::string& metric, Labels labels, bool histogram) {
  std::sort(labels.begin(), labels.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const std::string& key = labels[i].first;
    if (!valid_name(key, /*allow_colon=*/false) || key.starts_with("__")) {
      throw std::invalid_argument("metric '" + metric + "': invalid label name '" + key + "'");
    }
    if (histogram && key == "le") {
      throw std::invalid_argument("histogram '" + metric + "': label 'le' is reserved");
    }
    if (i > 0 && labels[i - 1].first == key) {
      throw std::invalid_argument("metric '" + metric + "': duplicate label '" + key + "'");
    }
  }
  return labels;
}

// Prometheus numbers: integers without exponent or decimal point, other values in the shortest
// form that reads back exactly (%g style, as Go's strconv.FormatFloat(v, 'g', -1, 64)).
std::string format_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::trunc(v) && std::fabs(v) < 9.0e18) {
    return std::to_string(static_cast<long long>(v));
  }
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  return std::string(buf, result.ptr);
}

void append_escaped_help(std::string& out, std::string_view text) {
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void append_escaped_label_value(std::string& out, std::string_view text) {
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// `{k="v",...}` with an optional trailing `le`; nothing when there are no labels at all.
void append_labels(std::string& out, const Labels& labels, const std::string* le = nullptr) {
  if (labels.empty() && le == nullptr) return;
  out += '{';
  bool first = true;
  for (const auto& [key, value] : labels) {
    if (!first) out += ',';
    first = false;
    out += key;
    out += "=\"";
    append_escaped_label_value(out, value);
    out += '"';
  }
  if (le != nullptr) {
    if (!first) out += ',';
    out += "le=\"";
    out += *le;
    out += '"';
  }
  out += '}';
}

void append_sample(std::string& out, const std::string& name, const Labels& labels,
                   const std::string& value, const std::string* le = nullptr) {
  out += name;
  append_labels(out, labels, le);
  out += ' ';
  out += value;
  out += '\n';
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  for (double b : bounds_) {
    if (std::isnan(b)) throw std::invalid_argument("histogram bound is NaN");
  }
  std::sort(bounds_.begin(), bounds_.end());
  bounds_.erase(std::unique(bounds_.begin(), bounds_.end()), bounds_.end());
  // +Inf is always the last bucket; an explicit one would render twice.
  while (!bounds_.empty() && std::isinf(bounds_.back()) && bounds_.back() > 0) bounds_.pop_back();
  buckets_ = std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1);
}

void Histogram::observe(double v) {
  // A bucket counts observations <= its bound; NaN belongs to no finite bucket.
  const std::size_t index =
      std::isnan(v) ? bounds_.size()
                    : static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                               bounds_.begin());
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  s.cumulative.reserve(bounds_.size() + 1);
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

const char* MetricsRegistry::kind_name(Kind kind) {
  switch (kind) {
    case Kind::counter:
      return "counter";
    case Kind::gauge:
      return "gauge";
    case Kind::histogram:
      return "histogram";
  }
  return "untyped";
}

MetricsRegistry::Family& MetricsRegistry::family(const std::string& name, const std::string& help,
                                                 Kind kind) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(name, Family{kind, help, {}, {}, {}}).first;
  } else if (it->second.kind != kind) {
    throw std::logic_error("metric '" + name + "' is already registered as a " +
                           kind_name(it->second.kind) + ", not a " + kind_name(kind));
  }
  return it->second;
}

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help,
                                  const Labels& labels) {
  check_metric_name(name);
  Labels key = normalized(name, labels, false);
  std::lock_guard lock(mutex_);
  auto& slot = family(name, help, Kind::counter).counters[std::move(key)];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& MetricsRegistry::gauge(const std::string& name, const std::string& help,
                              const Labels& labels) {
  check_metric_name(name);
  Labels key = normalized(name, labels, false);
  std::lock_guard lock(mutex_);
  auto& slot = family(name, help, Kind::gauge).gauges[std::move(key)];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                      const std::vector<double>& bounds, const Labels& labels) {
  check_metric_name(name);
  Labels key = normalized(name, labels, true);
  auto fresh = std::make_unique<Histogram>(bounds);  // validates and normalizes the bounds
  std::lock_guard lock(mutex_);
  auto& series = family(name, help, Kind::histogram).histograms;
  auto it = series.find(key);
  if (it != series.end()) {
    if (it->second->snapshot().bounds != fresh->snapshot().bounds) {
      throw std::logic_error("histogram '" + name + "' is already registered with other bounds");
    }
    return *it->second;
  }
  return *series.emplace(std::move(key), std::move(fresh)).first->second;
}

std::string MetricsRegistry::render() const {
  std::string out;
  std::lock_guard lock(mutex_);
  for (const auto& [name, f] : families_) {
    if (f.counters.empty() && f.gauges.empty() && f.histograms.empty()) continue;
    out += "# HELP ";
    out += name;
    out += ' ';
    append_escaped_help(out, f.help);
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += kind_name(f.kind);
    out += '\n';
    switch (f.kind) {
      case Kind::counter:
        for (const auto& [labels, c] : f.counters) {
          append_sample(out, name, labels, format_number(c->value()));
        }
        break;
      case Kind::gauge:
        for (const auto& [labels, g] : f.gauges) {
          append_sample(out, name, labels, format_number(g->value()));
        }
        break;
      case Kind::histogram:
        for (const auto& [labels, h] : f.histograms) {
          const Histogram::Snapshot s = h->snapshot();
          const std::string bucket = name + "_bucket";
          for (std::size_t i = 0; i < s.cumulative.size(); ++i) {
            const std::string le =
                i < s.bounds.size() ? format_number(s.bounds[i]) : std::string("+Inf");
            append_sample(out, bucket, labels, std::to_string(s.cumulative[i]), &le);
          }
          append_sample(out, name + "_sum", labels, format_number(s.sum));
          append_sample(out, name + "_count", labels, std::to_string(s.count));
        }
        break;
    }
  }
  return out;
}

std::vector<double> MetricsRegistry::latency_bounds() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
}

}  // namespace orgd
