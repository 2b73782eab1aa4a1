#pragma once

// `orgctl providers`: the table of P.api.providers.

#include <chrono>
#include <string>

#include "orgd/v1/providers.pb.h"

namespace orgd::cli {

// NAME, TYPE, CAPABILITIES, PROBE (ok / failed / -), RATE LIMIT (remaining/limit, reset age),
// CIRCUIT, CHECKED, and the probe's detail or last error; "no providers" when there are none.
// Then, when a probe read any, a second table of the accounts' quotas: PROVIDER, QUOTA, USED,
// LIMIT (bytes in KiB/MiB/GiB; "unlimited" when no limit is shown).
std::string render_provider_list(const v1::ProviderList& list,
                                 std::chrono::system_clock::time_point now);

}  // namespace orgd::cli
