#pragma once

#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/core/yaml_schema.hpp"

namespace orgd {

// DESIGN.md §7: the names the org already uses for NATS (NATS_URL, NATS_URLS, NATS_CREDS_FILE,
// NATS_NKEY_FILE, NATS_JWT + NATS_NKEY_SEED, NATS_TLS_*; a URL also turns the embedded server
// off), and ORGD_HTTP_LISTEN. Applied over what the file says; a variable that is set but
// invalid is reported to `schema` as "environment: <variable>: <problem>" and changes nothing.
void apply_environment(const Environment& env, Config& config, SchemaReader& schema);

}  // namespace orgd
