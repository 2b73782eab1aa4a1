#pragma once

#include <map>
#include <optional>
#include <string>

namespace orgd {

// A snapshot of environment variables, passed explicitly so config loading is hermetic in tests.
class Environment {
 public:
  Environment() = default;
  explicit Environment(std::map<std::string, std::string> vars) : vars_(std::move(vars)) {}

  // The process environment (environ).
  static Environment current();

  std::optional<std::string> get(const std::string& name) const;
  void set(std::string name, std::string value) { vars_[std::move(name)] = std::move(value); }

 private:
  std::map<std::string, std::string> vars_;
};

}  // namespace orgd
