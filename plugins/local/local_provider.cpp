#include "plugins/local/local_provider.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

#include "daemon/core/logging.hpp"
#include "daemon/core/timestamps.hpp"
#include "daemon/core/unique_fd.hpp"

namespace orgd {

namespace fs = std::filesystem;

bool safe_path_component(const std::string& part) {
  return !part.empty() && part != "." && part != ".." && part.find('/') == std::string::npos &&
         part.find('\0') == std::string::npos;
}

Result<Ok> write_file_atomically(const fs::path& path, const std::string& content) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return unavailable("cannot create " + path.parent_path().string() + ": " + ec.message());
  // Unique per writer, so two threads writing the same path never share a temporary file.
  static std::atomic<std::uint64_t> sequence{0};
  const fs::path temporary = path.string() + ".tmp." + std::to_string(::getpid()) + "." +
                             std::to_string(sequence.fetch_add(1));
  {
    std::ofstream out{temporary, std::ios::binary | std::ios::trunc};
    out << content;
    out.flush();
    if (!out) {
      fs::remove(temporary, ec);
      return unavailable("cannot write " + temporary.string());
    }
  }
  fs::rename(temporary, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    return unavailable("cannot rename to " + path.string() + ": " + ec.message());
  }
  return Ok{};
}

namespace {

Result<fs::path> record_dir(const std::string& data_dir, const DeployContext& context) {
  for (const auto* part : {&context.repo, &context.env, &context.deploy_id}) {
    if (!safe_path_component(*part)) {
      return invalid_argument("local provider: unusable repo, env or deploy id '" + *part + "'");
    }
  }
  return fs::path{data_dir} / "local" / context.repo / context.env;
}

// One line in one write() on an O_APPEND descriptor: the kernel places each such write at the
// end of the file as a whole, so lines from concurrent starts (or processes) never interleave.
Result<Ok> append_line(const fs::path& path, const std::string& line) {
  UniqueFd fd{::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)};
  if (fd.get() < 0) {
    return unavailable("cannot open " + path.string() + ": " + std::strerror(errno));
  }
  const ssize_t written = ::write(fd.get(), line.data(), line.size());
  if (written != static_cast<ssize_t>(line.size())) {
    return unavailable("cannot append to " + path.string() + ": " +
                       (written < 0 ? std::strerror(errno) : "short write"));
  }
  return Ok{};
}

}  // namespace

LocalDeployTarget::LocalDeployTarget(Settings settings, std::string data_dir,
                                     std::shared_ptr<const Clock> clock)
    : settings_(settings), data_dir_(std::move(data_dir)), clock_(std::move(clock)) {}

Result<DeployProgress> LocalDeployTarget::start(const DeployContext& context, const LogSink& log) {
  auto dir = record_dir(data_dir_, context);
  if (!dir) return dir.error();
  const auto started = clock_->now();
  const nlohmann::json record = {
      {"repo", context.repo},
      {"env", context.env},
      {"ref", context.ref},
      {"deploy_id", context.deploy_id},
      {"attempt", context.attempt},
      {"started_at", format_rfc3339(started)},
      {"started_at_ms",
       std::chrono::duration_cast<std::chrono::milliseconds>(started.time_since_epoch()).count()},
  };
  const fs::path path = dir.value() / (context.deploy_id + ".json");
  if (auto written = write_file_atomically(path, record.dump(2) + "\n"); !written) {
    return written.error();
  }
  // After the record: a line here means the deploy happened, so a count across a restart never
  // includes a start that died before its record existed (recover() would rightly re-run it).
  const nlohmann::json execution = {{"deploy_id", context.deploy_id},
                                    {"attempt", context.attempt},
                                    {"started_at", record["started_at"]}};
  if (auto appended = append_line(dir.value() / "executions.log", execution.dump() + "\n");
      !appended) {
    return appended.error();
  }
  ++executions_;
  if (log) {
    log("local deploy of " + context.repo + "@" + context.ref + " to " + context.env +
        " recorded in " + path.string());
  }
  // An instant deploy (duration 0s) is done at once: no poll round trip.
  if (settings_.duration.count() == 0) return poll(context, context.deploy_id);
  return DeployProgress{DeployStatus::running, context.deploy_id, {}};
}

Result<DeployProgress> LocalDeployTarget::poll(const DeployContext& context,
                                               const std::string& handle) {
  DeployContext of_handle = context;
  of_handle.deploy_id = handle;
  auto dir = record_dir(data_dir_, of_handle);
  if (!dir) return dir.error();
  const fs::path path = dir.value() / (handle + ".json");
  std::ifstream in{path, std::ios::binary};
  if (!in) return not_found("local provider: no release record " + path.string());
  const auto record = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!record.is_object() || !record.contains("started_at_ms") ||
      !record["started_at_ms"].is_number_integer()) {
    return internal_error("local provider: unreadable release record " + path.string());
  }
  const Clock::time_point started{std::chrono::duration_cast<Clock::time_point::duration>(
      std::chrono::milliseconds{record["started_at_ms"].get<std::int64_t>()})};
  if (clock_->now() - started < settings_.duration) {
    return DeployProgress{DeployStatus::running, handle, {}};
  }
  if (settings_.fail) {
    return DeployProgress{DeployStatus::failed, handle, "failed as configured (fail: true)"};
  }
  return DeployProgress{DeployStatus::succeeded, handle, {}};
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
  return poll(context, context.deploy_id);
}

LocalProvider::LocalProvider(std::string name, std::string data_dir,
                             std::shared_ptr<const Clock> clock)
    : Provider(std::move(name), "local"),
      data_dir_(std::move(data_dir)),
      clock_(std::move(clock)) {}

std::unique_ptr<DeployTarget> LocalProvider::make_deploy_target(const DeployTargetConfig& target,
                                                                const std::string& source_file) {
  SettingsReader reader = SettingsReader::for_target(target, source_file);
  LocalDeployTarget::Settings settings;
  settings.duration = reader.duration("duration", settings.duration);
  settings.fail = reader.boolean("fail", settings.fail);
  reader.finish();
  return std::make_unique<LocalDeployTarget>(settings, data_dir_, clock_);
}

std::unique_ptr<Provider> make_local_provider(const ProviderConfig& config,
                                              const ProviderEnvironment& env,
                                              const std::string& source_file) {
  SettingsReader reader = SettingsReader::for_provider(config, source_file);
  reader.finish();
  if (env.data_dir.empty()) {
    throw ConfigError({source_file + ": providers." + config.name +
                       ": the local provider needs a data directory"});
  }
  logging::get("plugin.local")
      ->debug("provider {} writes under {}/local", config.name, env.data_dir);
  return std::make_unique<LocalProvider>(config.name, env.data_dir, env.clock);
}

}  // namespace orgd
