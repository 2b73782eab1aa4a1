#include "plugins/local/local_provider.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

#include "daemon/core/state_files.hpp"
#include "daemon/core/timestamps.hpp"

namespace orgd {

namespace fs = std::filesystem;

namespace {

Result<fs::path> record_dir(const std::string& data_dir, const DeployContext& context) {
  for (const auto* part : {&context.repo, &context.env, &context.deploy_id}) {
    if (!safe_path_component(*part)) {
      return permanent(
          invalid_argument("local provider: unusable repo, env or deploy id '" + *part + "'"));
    }
  }
  return fs::path{data_dir} / "local" / context.repo / context.env;
}

}  // namespace

LocalDeployTarget::LocalDeployTarget(Settings settings, std::string data_dir,
                                     std::shared_ptr<const Clock> clock)
    : settings_(settings), data_dir_(std::move(data_dir)), clock_(std::move(clock)) {}

Result<std::string> LocalDeployTarget::write_record(const DeployContext& context, int phase) {
  auto dir = record_dir(data_dir_, context);
  if (!dir) return dir.error();
  const auto started = clock_->now();
  const nlohmann::json record = {
      {"repo", context.repo},
      {"env", context.env},
      {"ref", context.ref},
      {"deploy_id", context.deploy_id},
      {"attempt", context.attempt},
      {"phase", phase},
      {"started_at", format_rfc3339(started)},
      {"started_at_ms",
       std::chrono::duration_cast<std::chrono::milliseconds>(started.time_since_epoch()).count()},
  };
  const fs::path path = dir.value() / (context.deploy_id + ".json");
  if (auto written = write_file_atomically(path, record.dump(2) + "\n"); !written) {
    return written.error();
  }
  return path.string();
}

Result<DeployProgress> LocalDeployTarget::start(const DeployContext& context, const LogSink& log) {
  auto path = write_record(context, 0);
  if (!path) return path.error();
  const fs::path dir = fs::path{path.value()}.parent_path();
  // After the record: a line here means the deploy happened, so a count across a restart never
  // includes a start that died before its record existed (recover() would rightly re-run it).
  const nlohmann::json execution = {{"deploy_id", context.deploy_id},
                                    {"attempt", context.attempt},
                                    {"started_at", format_rfc3339(clock_->now())}};
  if (auto appended = append_line(dir / "executions.log", execution.dump() + "\n"); !appended) {
    return appended.error();
  }
  ++executions_;
  if (log) {
    log("local deploy of " + context.repo + "@" + context.ref + " to " + context.env +
        " recorded in " + path.value());
  }
  // An instant deploy (duration 0s) is done at once: no poll round trip.
  DeployContext started = context;
  started.handle = context.deploy_id;
  if (settings_.duration.count() == 0) return poll(started);
  DeployProgress progress{DeployStatus::running, context.deploy_id, {}};
  progress.url = "file://" + path.value();
  return progress;
}

Result<DeployProgress> LocalDeployTarget::poll(const DeployContext& context) {
  const std::string& handle = context.handle.empty() ? context.deploy_id : context.handle;
  DeployContext of_handle = context;
  of_handle.deploy_id = handle;
  auto dir = record_dir(data_dir_, of_handle);
  if (!dir) return dir.error();
  const fs::path path = dir.value() / (handle + ".json");
  std::ifstream in{path, std::ios::binary};
  // Gone for good: asking again will not bring it back.
  if (!in) return permanent(not_found("local provider: no release record " + path.string()));
  const auto record = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!record.is_object() || !record.contains("started_at_ms") ||
      !record["started_at_ms"].is_number_integer()) {
    return permanent(internal_error("local provider: unreadable release record " + path.string()));
  }
  const int phase = record.contains("phase") && record["phase"].is_number_integer()
                        ? record["phase"].get<int>()
                        : 0;
  const Clock::time_point started{std::chrono::duration_cast<Clock::time_point::duration>(
      std::chrono::milliseconds{record["started_at_ms"].get<std::int64_t>()})};
  const int steps = static_cast<int>(settings_.steps.size());
  const int percent = settings_.steps[static_cast<std::size_t>(std::clamp(phase, 0, steps - 1))];
  DeployProgress progress{DeployStatus::running, handle, {}};
  progress.url = "file://" + path.string();
  if (steps > 1) progress.detail = std::to_string(percent) + "% of traffic";
  if (clock_->now() - started < settings_.duration) return progress;
  if (settings_.fail) {
    progress.status = DeployStatus::failed;
    progress.error = "failed as configured (fail: true)";
    return progress;
  }
  if (phase + 1 < steps) {
    progress.status = DeployStatus::phase_done;
    progress.phase = phase + 1;
    return progress;
  }
  progress.status = DeployStatus::succeeded;
  return progress;
}

// The next step after a gated phase: the record is written again at that phase (and its time),
// so the step runs for `duration` from now. Asked again for a phase already started (orgd
// stopped between the two), it leaves the record as it is.
Result<DeployProgress> LocalDeployTarget::advance(const DeployContext& context) {
  const int steps = static_cast<int>(settings_.steps.size());
  if (context.phases_passed < 1 || context.phases_passed >= steps) {
    return permanent(invalid_argument("local provider: no step after phase " +
                                      std::to_string(context.phases_passed)));
  }
  auto current = poll(context);
  if (!current) return current.error();
  if (current.value().status == DeployStatus::phase_done &&
      current.value().phase == context.phases_passed) {
    DeployContext of_deploy = context;
    if (!context.handle.empty()) of_deploy.deploy_id = context.handle;
    if (auto written = write_record(of_deploy, context.phases_passed); !written) {
      return written.error();
    }
  }
  return poll(context);
}

Result<DeployProgress> LocalDeployTarget::rollback(const DeployContext& context,
                                                   const LogSink& log) {
  auto dir = record_dir(data_dir_, context);
  if (!dir) return dir.error();
  const fs::path path = dir.value() / (context.deploy_id + ".rolled_back");
  if (auto written = write_file_atomically(path, format_rfc3339(clock_->now()) + "\n"); !written) {
    return written.error();
  }
  if (log) log("local deploy " + context.deploy_id + " rolled back");
  return DeployProgress{DeployStatus::succeeded, context.deploy_id, {}};
}

Result<DeployProgress> LocalDeployTarget::recover(const DeployContext& context) {
  auto dir = record_dir(data_dir_, context);
  if (!dir) return dir.error();
  const fs::path path = dir.value() / (context.deploy_id + ".json");
  std::ifstream in{path, std::ios::binary};
  if (!in) return not_found("local provider: deploy " + context.deploy_id + " never started");
  const auto record = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!record.is_object() || !record.contains("attempt") ||
      !record["attempt"].is_number_integer()) {
    return internal_error("local provider: unreadable release record " + path.string());
  }
  if (record["attempt"].get<int>() != context.attempt) {
    return not_found("local provider: attempt " + std::to_string(context.attempt) + " of " +
                     context.deploy_id + " never started");
  }
  DeployContext own = context;
  own.handle = context.deploy_id;
  return poll(own);
}

LocalProvider::LocalProvider(std::string name, std::string data_dir,
                             std::shared_ptr<const Clock> clock)
    : Provider(std::move(name), "local"),
      data_dir_(std::move(data_dir)),
      clock_(std::move(clock)) {}

std::unique_ptr<DeployTarget> LocalProvider::make_deploy_target(const DeployTargetConfig& target,
                                                                const std::string& source_file) {
  SettingsReader reader = target_settings(target, source_file);
  LocalDeployTarget::Settings settings;
  settings.duration = reader.duration("duration", settings.duration);
  settings.fail = reader.boolean("fail", settings.fail);
  if (auto steps = reader.string_list("steps")) {
    settings.steps.clear();
    for (const auto& step : *steps) {
      int percent = 0;
      const auto [end, ec] = std::from_chars(step.data(), step.data() + step.size(), percent);
      if (ec != std::errc{} || end != step.data() + step.size() || percent < 1 || percent > 100 ||
          (!settings.steps.empty() && percent <= settings.steps.back())) {
        reader.invalid("steps", "expected rising percentages from 1 to 100, e.g. [10, 100]");
        settings.steps = {100};
        break;
      }
      settings.steps.push_back(percent);
    }
    if (settings.steps.empty() || settings.steps.back() != 100) {
      reader.invalid("steps", "the last step must be 100");
      settings.steps = {100};
    }
  }
  reader.finish();
  return std::make_unique<LocalDeployTarget>(settings, data_dir_, clock_);
}

std::unique_ptr<Provider> make_local_provider(const ProviderConfig& config,
                                              const ProviderServices& services,
                                              const std::string& source_file) {
  SettingsReader reader = provider_settings(config, source_file);
  reader.finish();
  if (services.data_dir.empty()) {
    throw ConfigError({source_file + ": providers." + config.name +
                       ": the local provider needs a data directory"});
  }
  services.log->debug("provider {} writes under {}", config.name, services.state_dir);
  return std::make_unique<LocalProvider>(config.name, services.data_dir, services.clock);
}

}  // namespace orgd
