#pragma once

#include <chrono>
#include <functional>

namespace orgd::testing {

using namespace std::chrono_literals;

// Polls `pred` until it returns true or `deadline` has passed; returns the last answer. The one
// way tests wait for something: never sleep and hope. `pred` is always evaluated at least once,
// and once more at the deadline, so a slow poll never loses a condition that just became true.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds deadline,
                std::chrono::milliseconds poll = 10ms);

}  // namespace orgd::testing
