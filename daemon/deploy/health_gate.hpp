#pragma once

// The health gate of a deploy step (DESIGN.md §8): after its provider reports success, a step
// waits until the repo's services report ok, newer than the step's end, held for `soak`;
// otherwise it fails at `timeout`. The health picture is the daemon's (HealthGateSource); the
// StepRunner checks the gate every poll interval on its timer and writes what it waits for.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "daemon/core/clock.hpp"
#include "daemon/core/config.hpp"

namespace orgd::deploy {

// What the health gate asks of the health picture.
struct GateCheck {
  bool healthy = false;                // every service of the repo reports ok, newer than `since`
  bool no_services = false;            // the repo has no services to wait for
  std::string detail;                  // what is missing, for the error when the gate times out
  std::vector<std::string> unhealthy;  // the services not yet healthy ("http"), for operators
};

class HealthGateSource {
 public:
  virtual ~HealthGateSource() = default;
  virtual GateCheck check(const std::string& repo, Clock::time_point since) const = 0;
};

// One step's gate: when it opened, how long the repo has been healthy, what it waits for.
class HealthGate {
 public:
  // What one check says: the step passed, or what it waits for now (to be written to the step)
  // and, once the gate's timeout has passed, the step's error.
  struct Verdict {
    bool passed = false;
    std::string waiting_for;
    std::optional<std::string> failed;
  };

  HealthGate() = default;
  HealthGate(const HealthGateConfig& config, Clock::time_point since, std::string waiting_for,
             std::chrono::steady_clock::time_point now);

  Clock::time_point since() const { return since_; }
  // As last written to the record.
  const std::string& waiting_for() const { return waiting_for_; }
  void set_waiting_for(std::string what) { waiting_for_ = std::move(what); }

  Verdict judge(const std::string& repo, const GateCheck& check,
                std::chrono::steady_clock::time_point now);

 private:
  HealthGateConfig config_;
  Clock::time_point since_;
  std::chrono::steady_clock::time_point deadline_;
  std::optional<std::chrono::steady_clock::time_point> healthy_since_;
  std::string detail_ = "no report yet";
  std::string waiting_for_;
};

}  // namespace orgd::deploy
