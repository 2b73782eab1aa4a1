// The scripted deploy target the deploy tests drive: scripts run in order per repo and call, then
// fall back; a hung call waits for the test, and only the calls hung when it releases them go.
#include "tests/support/scripted_target.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/deploy/inventory.hpp"
#include "tests/support/wait.hpp"

namespace orgd::testing {
namespace {

using Call = ScriptedTarget::Call;

// The context of a call about the deploy `handle` names (poll, cancel, advance).
DeployContext with_handle(DeployContext context, const std::string& handle) {
  context.handle = handle;
  return context;
}

DeployContext context(const std::string& repo, int attempt = 1) {
  return DeployContext{repo, "dev", "abc", "d1", attempt};
}

TEST(ScriptedTarget, ScriptsRunInOrderPerRepoThenFallBack) {
  ScriptedTarget target;
  target.on_poll("api", {Outcome::running().times(2), Outcome::failed("boom", "h1")});
  target.on_recover("web", {Outcome::interrupted("orgd died")});
  auto status = [&](const std::string& repo) {
    auto polled = target.poll(with_handle(context(repo), "h"));
    EXPECT_TRUE(polled) << polled.error().message;
    return polled ? polled.value().status : DeployStatus::running;
  };
  EXPECT_EQ(status("api"), DeployStatus::running);
  EXPECT_EQ(status("web"), DeployStatus::succeeded) << "web's poll has no script";
  EXPECT_EQ(status("api"), DeployStatus::running);
  auto failed = target.poll(with_handle(context("api"), "h"));
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed.value().status, DeployStatus::failed);
  EXPECT_EQ(failed.value().error, "boom");
  EXPECT_EQ(failed.value().handle, "h1");
  EXPECT_EQ(status("api"), DeployStatus::succeeded) << "the script has run out";

  auto recovered = target.recover(context("web"));
  ASSERT_TRUE(recovered);
  EXPECT_EQ(recovered.value().status, DeployStatus::interrupted);
  auto unknown = target.recover(context("web"));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ErrorCode::not_found);

  target.fallback("api", Call::start, Outcome::error(unavailable("provider down")));
  auto started = target.start(context("api"), {});
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().code, ErrorCode::unavailable);
  EXPECT_EQ(target.count("api", Call::poll), 4);
  EXPECT_EQ(target.calls("api", Call::poll).front().handle, "h");
  EXPECT_EQ(target.calls().size(), 8u);
}

TEST(ScriptedTarget, AStartWithoutAHandleReportsTheDeployIdAndWritesItsLog) {
  ScriptedTarget target;
  target.on_start("api", {Outcome::running().log("started api")});
  std::vector<std::string> lines;
  auto started =
      target.start(context("api"), [&](std::string_view line) { lines.emplace_back(line); });
  ASSERT_TRUE(started);
  EXPECT_EQ(started.value().status, DeployStatus::running);
  EXPECT_EQ(started.value().handle, "d1");
  EXPECT_EQ(lines, (std::vector<std::string>{"started api"}));
}

TEST(ScriptedTarget, AHungCallWaitsUntilReleasedAndLaterHangsBlockAgain) {
  ScriptedTarget target;
  target.on_start("api", {Outcome::running("h1").hang(), Outcome::succeeded().hang()});
  std::optional<Result<DeployProgress>> first;
  std::thread caller([&] { first = target.start(context("api"), {}); });
  ASSERT_TRUE(wait_until([&] { return target.hung("api") == 1; }, 10s));
  EXPECT_EQ(target.hung("web"), 0);
  target.release("web");
  EXPECT_EQ(target.hung(), 1) << "releasing another repo lets nothing go";
  target.release("api");
  caller.join();
  ASSERT_TRUE(first && first->ok());
  EXPECT_EQ(first->value().handle, "h1");

  std::thread second([&] { (void)target.start(context("api", 2), {}); });
  ASSERT_TRUE(wait_until([&] { return target.hung() == 1; }, 10s))
      << "a release lets go only of the calls hung at the time";
  target.release_all();
  second.join();
  EXPECT_EQ(target.hung(), 0);
  target.on_start("api", {Outcome::succeeded().hang()});
  EXPECT_TRUE(target.start(context("api", 3), {})) << "after release_all() hangs return at once";
  EXPECT_EQ(target.calls("api", Call::start).back().context.attempt, 3);
}

TEST(ScriptedTarget, AnInventoryDeploysThroughItWithTheScriptedProvider) {
  auto target = std::make_shared<ScriptedTarget>();
  target->set_can_rollback(false);
  target->on_start("web", {Outcome::failed("web is broken")});
  ProviderRegistry registry;
  registry.add_factory("remote", scripted_provider_factory(target));
  const Config config = load_config_string(
      "org: acme\n"
      "providers:\n  scripted: {type: remote}\n"
      "repos:\n"
      "  api:\n    deploy:\n      dev: {provider: scripted}\n"
      "  web:\n    deploy:\n      dev: {provider: scripted}\n",
      "test.yaml", Environment());
  const auto inventory = deploy::Inventory::build(config, registry, ProviderEnvironment{});
  const auto* api = inventory->target("api", "dev");
  const auto* web = inventory->target("web", "dev");
  ASSERT_TRUE(api && web);
  EXPECT_FALSE(web->target->can_rollback());
  EXPECT_EQ(api->target->start(context("api"), {}).value().status, DeployStatus::succeeded);
  EXPECT_EQ(web->target->start(context("web"), {}).value().status, DeployStatus::failed);
  EXPECT_EQ(target->count("web", Call::start), 1);
}

}  // namespace
}  // namespace orgd::testing
