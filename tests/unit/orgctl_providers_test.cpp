// `orgctl providers`: the table of P.api.providers.
#include <gtest/gtest.h>

#include "cli/provider_view.hpp"
#include "daemon/core/timestamps.hpp"

namespace orgd::cli {
namespace {

using namespace std::chrono_literals;

const auto kNoon = std::chrono::system_clock::time_point{std::chrono::seconds{1'700'000'000}};

TEST(OrgctlProviders, OneRowPerProviderWithProbeRateLimitAndCircuit) {
  v1::ProviderList list;
  auto* gh = list.add_providers();
  gh->set_name("github");
  gh->set_type("github");
  gh->add_capabilities("deploy_target");
  gh->add_capabilities("secret_target");
  gh->set_probed(true);
  gh->set_ok(true);
  gh->set_detail("token of acme-bot");
  gh->set_rate_limit_remaining(4990);
  gh->set_rate_limit_limit(5000);
  *gh->mutable_rate_limit_reset() = to_timestamp(kNoon + 90s);
  gh->set_circuit("closed");
  *gh->mutable_checked_at() = to_timestamp(kNoon - 12s);
  auto* cf = list.add_providers();
  cf->set_name("cf");
  cf->set_type("cloudflare");
  cf->set_probed(true);
  cf->set_ok(false);
  cf->set_detail("token verify");
  cf->set_last_error("401: \x1b[31mInvalid API Token");
  cf->set_circuit("open");
  *cf->mutable_checked_at() = to_timestamp(kNoon - 5s);
  auto* files = list.add_providers();
  files->set_name("files");
  files->set_type("local");
  files->add_capabilities("deploy_target");

  const std::string text = render_provider_list(list, kNoon);
  EXPECT_EQ(text,
            "NAME    TYPE        CAPABILITIES                 PROBE   RATE LIMIT                   "
            "CIRCUIT  CHECKED  DETAIL\n"
            "github  github      deploy_target,secret_target  ok      4990/5000 (resets in 1m30s)  "
            "closed   12s ago  token of acme-bot\n"
            "cf      cloudflare  -                            failed  -                            "
            "open     5s ago   401: Invalid API Token\n"
            "files   local       deploy_target                -       -                            "
            "-        -        -\n")
      << text;
  EXPECT_EQ(render_provider_list(v1::ProviderList{}, kNoon), "no providers\n");
}

}  // namespace
}  // namespace orgd::cli
