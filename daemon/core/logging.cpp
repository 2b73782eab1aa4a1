#include "daemon/core/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <mutex>

namespace orgd::logging {
namespace {

// JSON lines: the message is escaped by a custom flag so quotes and control characters in a
// message cannot break the line.
class JsonEscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (char c : msg.payload) {
      switch (c) {
        case '"': dest.append(std::string_view("\\\"")); break;
        case '\\': dest.append(std::string_view("\\\\")); break;
        case '\n': dest.append(std::string_view("\\n")); break;
        case '\r': dest.append(std::string_view("\\r")); break;
        case '\t': dest.append(std::string_view("\\t")); break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            const char esc[] = {'\\', 'u', '0', '0', kHex[(c >> 4) & 0xf], kHex[c & 0xf]};
            dest.append(esc, esc + sizeof esc);
          } else {
            dest.push_back(c);
          }
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscapedMessage>();
  }
};

// Every logger writes to one fan-out sink: stderr, and what add_sink() adds.
std::shared_ptr<spdlog::sinks::dist_sink_mt> make_fan_out() {
  auto fan_out = std::make_shared<spdlog::sinks::dist_sink_mt>();
  fan_out->add_sink(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  return fan_out;
}

struct State {
  std::mutex mutex;
  std::shared_ptr<spdlog::sinks::dist_sink_mt> sink = make_fan_out();
  spdlog::level::level_enum level = spdlog::level::info;
  bool json = false;
};

State& state() {
  static State s;
  return s;
}

std::unique_ptr<spdlog::formatter> make_formatter(bool json) {
  if (json) {
    const std::string pattern =
        R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","logger":"%n","msg":"%*"})";
    auto f = std::make_unique<spdlog::pattern_formatter>(pattern, spdlog::pattern_time_type::utc);
    f->add_flag<JsonEscapedMessage>('*').set_pattern(pattern);
    return f;
  }
  return std::make_unique<spdlog::pattern_formatter>("%Y-%m-%dT%H:%M:%S.%eZ %^%-5l%$ [%n] %v",
                                                     spdlog::pattern_time_type::utc);
}

}  // namespace

bool valid_level(const std::string& level) {
  return level == "trace" || level == "debug" || level == "info" || level == "warn" ||
         level == "error" || level == "critical" || level == "off";
}

void setup(const LogConfig& config) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  s.level = spdlog::level::from_str(config.level);
  s.json = config.format == "json";
  s.sink->set_formatter(make_formatter(s.json));
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) { l->set_level(s.level); });
}

void add_sink(spdlog::sink_ptr sink) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  sink->set_formatter(make_formatter(s.json));
  s.sink->add_sink(std::move(sink));
}

void remove_sink(const spdlog::sink_ptr& sink) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  s.sink->remove_sink(sink);
}

std::shared_ptr<spdlog::logger> get(const std::string& name) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = std::make_shared<spdlog::logger>(name, s.sink);
  logger->set_level(s.level);
  logger->flush_on(spdlog::level::warn);
  spdlog::register_logger(logger);
  return logger;
}

}  // namespace orgd::logging
