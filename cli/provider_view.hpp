#pragma once

// `orgctl providers`: the table of P.api.providers.

#include <chrono>
#include <string>

#include "orgd/v1/providers.pb.h"

namespace orgd::cli {

// NAME, TYPE, CAPABILITIES, PROBE (ok / failed / -), RATE LIMIT (remaining/limit, reset age),
// CIRCUIT, CHECKED, and the probe's detail or last error; "no providers" when there are none.
std::string render_provider_list(const v1::ProviderList& list,
                                 std::chrono::system_clock::time_point now);

}  // namespace orgd::cli
