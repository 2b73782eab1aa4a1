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

TEST(OrgctlProviders, QuotasFollowInTheirOwnTable) {
  v1::ProviderList list;
  auto* syn = list.add_providers();
  syn->set_name("syn");
  syn->set_type("synadia");
  syn->set_probed(true);
  syn->set_ok(true);
  syn->set_detail("system prod account deployers");
  *syn->mutable_checked_at() = to_timestamp(kNoon - 1s);
  auto* storage = syn->add_quotas();
  storage->set_name("jetstream_storage_bytes");
  storage->set_used(5 << 20);
  storage->set_limit(1 << 30);
  auto* streams = syn->add_quotas();
  streams->set_name("jetstream_streams");
  streams->set_used(3);
  auto* consumers = syn->add_quotas();
  consumers->set_name("jetstream_consumers");
  consumers->set_limit(100);

  const std::string text = render_provider_list(list, kNoon);
  const auto quotas = text.find("\nPROVIDER");
  ASSERT_NE(quotas, std::string::npos) << text;
  EXPECT_EQ(text.substr(quotas + 1),
            "PROVIDER  QUOTA                    USED     LIMIT\n"
            "syn       jetstream_storage_bytes  5.0 MiB  1.0 GiB\n"
            "syn       jetstream_streams        3        unlimited\n"
            "syn       jetstream_consumers      -        100\n")
      << text;
  // No quotas: no second table.
  syn->clear_quotas();
  EXPECT_EQ(render_provider_list(list, kNoon).find("PROVIDER"), std::string::npos);
}

}  // namespace
}  // namespace orgd::cli
