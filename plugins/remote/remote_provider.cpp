#include "plugins/remote/remote_provider.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "daemon/core/config_values.hpp"

namespace orgd::remote {

namespace {

// Bounds on what a provider's answers may hold.
constexpr std::size_t kMaxSecrets = 10'000;
constexpr std::size_t kMaxHandle = 1024;
constexpr std::int64_t kMaxPollAfterMs = 60LL * 60 * 1000;

Clock::time_point from_timestamp(const google::protobuf::Timestamp& t) {
  return Clock::time_point{std::chrono::duration_cast<Clock::time_point::duration>(
      std::chrono::seconds{t.seconds()} + std::chrono::nanoseconds{t.nanos()})};
}

google::protobuf::Struct checked_settings(const YAML::Node& settings, const std::string& path,
                                          int line, const std::vector<std::string>& orgd_keys,
                                          const std::string& source_file) {
  std::vector<SettingsProblem> problems;
  auto out = settings_struct(settings, path, line, orgd_keys, problems);
  if (!problems.empty()) {
    std::vector<std::string> lines;
    for (const auto& p : problems) {
      lines.push_back(fmt::format("{}:{}: {}: {}", source_file, p.line, p.path, p.message));
    }
    throw ConfigError(std::move(lines));
  }
  return out;
}

}  // namespace

TargetValidation::TargetValidation(std::shared_ptr<RemoteClient> client,
                                   v1::PluginValidateRequest request, std::string what)
    : client_(std::move(client)), request_(std::move(request)), what_(std::move(what)) {}

Result<Ok> TargetValidation::ensure(RemoteClient::SteadyTime deadline) {
  {
    std::lock_guard lock(mutex_);
    if (accepted_) return Ok{};
  }
  v1::PluginValidateReply reply;
  auto called = client_->call("validate", request_, reply, deadline);
  if (!called) return called.error();
  if (reply.problems_size() > 0) {
    std::string text;
    int shown = 0;
    for (const auto& p : reply.problems()) {
      if (shown++ == 10) {
        text += fmt::format("; and {} more", reply.problems_size() - 10);
        break;
      }
      if (!text.empty()) text += "; ";
      text += p.key().empty() ? printable(p.message(), 200)
                              : printable(p.key(), 64) + ": " + printable(p.message(), 200);
    }
    return permanent(invalid_argument(fmt::format("{}: the provider refuses the settings of {}: {}",
                                                  client_->who("validate"), what_, text)));
  }
  std::lock_guard lock(mutex_);
  accepted_ = true;
  return Ok{};
}

// --- deploys -------------------------------------------------------------------------------

RemoteDeployTarget::RemoteDeployTarget(std::shared_ptr<RemoteClient> client,
                                       const DeployTargetConfig& target,
                                       google::protobuf::Struct settings)
    : client_(client),
      settings_(settings),
      validation_(
          client,
          [&] {
            v1::PluginValidateRequest request;
            request.set_kind("deploy_target");
            request.set_repo(target.repo);
            request.set_env(target.env);
            *request.mutable_settings() = settings;
            return request;
          }(),
          "deploy target " + target.repo + "/" + target.env) {}

Result<DeployProgress> RemoteDeployTarget::deploy_op(const std::string& op,
                                                     const DeployContext& context,
                                                     bool needs_handle) {
  if (auto described = client_->described(context.deadline); !described) {
    return described.error();
  }
  if (auto valid = validation_.ensure(context.deadline); !valid) return valid.error();

  v1::PluginDeployRequest request;
  request.set_repo(context.repo);
  request.set_env(context.env);
  request.set_ref(context.ref);
  request.set_deploy_id(context.deploy_id);
  request.set_attempt(context.attempt);
  request.set_handle(context.handle);
  request.set_phases_passed(context.phases_passed);
  if (context.previous) {
    auto* previous = request.mutable_previous();
    previous->set_deploy_id(context.previous->deploy_id);
    previous->set_ref(context.previous->ref);
    previous->set_handle(context.previous->handle);
  }
  *request.mutable_settings() = settings_;
  Duration timeout = client_->settings().timeout;
  if (context.deadline != RemoteClient::kNoDeadline) {
    timeout = std::min(timeout, std::chrono::duration_cast<Duration>(
                                    context.deadline - std::chrono::steady_clock::now()));
  }
  request.set_timeout_ms(std::max<std::int64_t>(timeout.count(), 0));

  v1::PluginDeployReply reply;
  if (auto called = client_->call(op, request, reply, context.deadline); !called) {
    return called.error();
  }
  DeployProgress progress;
  switch (reply.status()) {
    case v1::PluginDeployReply::running:
      progress.status = DeployStatus::running;
      break;
    case v1::PluginDeployReply::succeeded:
      progress.status = DeployStatus::succeeded;
      break;
    case v1::PluginDeployReply::failed:
      progress.status = DeployStatus::failed;
      break;
    case v1::PluginDeployReply::interrupted:
      progress.status = DeployStatus::interrupted;
      break;
    case v1::PluginDeployReply::phase_done:
      progress.status = DeployStatus::phase_done;
      break;
    default:
      return client_->malformed_reply(
          op, "no status (running, succeeded, failed, interrupted or phase_done)");
  }
  if (reply.handle().size() > kMaxHandle) {
    return client_->malformed_reply(op, fmt::format("a handle longer than {} bytes", kMaxHandle));
  }
  progress.handle = reply.handle().empty() ? context.handle : reply.handle();
  if (needs_handle && progress.handle.empty() && progress.status != DeployStatus::failed) {
    return client_->malformed_reply(op, "no handle for the deploy it started");
  }
  progress.error = printable(reply.error(), 500);
  if (progress.status == DeployStatus::failed && progress.error.empty()) {
    progress.error = "the remote provider reports the deploy failed";
  }
  progress.url = printable(reply.url(), 500);
  progress.detail = printable(reply.detail(), 200);
  if (reply.next_poll_after_ms() > 0) {
    progress.next_poll_after = Duration{std::min(reply.next_poll_after_ms(), kMaxPollAfterMs)};
  }
  progress.phase = reply.phase();
  if (progress.status == DeployStatus::phase_done && progress.phase <= 0) {
    // A provider that does not count its phases: the one after those passed.
    progress.phase = context.phases_passed + 1;
  }
  return progress;
}

Result<DeployProgress> RemoteDeployTarget::start(const DeployContext& context, const LogSink& log) {
  auto progress = deploy_op("deploy.start", context, /*needs_handle=*/true);
  if (progress && log) {
    log(fmt::format("remote provider {}: started {} ({})", client_->settings().name,
                    progress.value().handle, status_name(progress.value().status)));
  }
  return progress;
}

Result<DeployProgress> RemoteDeployTarget::poll(const DeployContext& context) {
  return deploy_op("deploy.poll", context, /*needs_handle=*/false);
}

Result<DeployProgress> RemoteDeployTarget::cancel(const DeployContext& context) {
  return deploy_op("deploy.cancel", context, /*needs_handle=*/false);
}

Result<DeployProgress> RemoteDeployTarget::advance(const DeployContext& context) {
  return deploy_op("deploy.advance", context, /*needs_handle=*/false);
}

Result<DeployProgress> RemoteDeployTarget::rollback(const DeployContext& context,
                                                    const LogSink& log) {
  auto progress = deploy_op("deploy.rollback", context, /*needs_handle=*/true);
  if (progress && log) {
    log(fmt::format("remote provider {}: rollback {} ({})", client_->settings().name,
                    progress.value().handle, status_name(progress.value().status)));
  }
  return progress;
}

// --- secrets -------------------------------------------------------------------------------

RemoteSecretTarget::RemoteSecretTarget(std::shared_ptr<RemoteClient> client,
                                       const SecretTargetConfig& target,
                                       google::protobuf::Struct settings)
    : client_(client),
      description_(target.organization
                       ? "remote " + client->settings().name + " (org)"
                       : "remote " + client->settings().name + " (repo " + target.repo + ")"),
      validation_(
          client,
          [&] {
            v1::PluginValidateRequest request;
            request.set_kind("secret_target");
            request.set_repo(target.repo);
            *request.mutable_settings() = settings;
            return request;
          }(),
          target.organization
              ? "the org's secret target"
              : "secret target " + std::to_string(target.index) + " of " + target.repo) {
  ref_.set_repo(target.repo);
  ref_.set_organization(target.organization);
  *ref_.mutable_settings() = std::move(settings);
}

Result<std::vector<SecretInfo>> RemoteSecretTarget::list() {
  if (auto valid = validation_.ensure(RemoteClient::kNoDeadline); !valid) return valid.error();
  v1::PluginSecretListRequest request;
  *request.mutable_target() = ref_;
  v1::PluginSecretListReply reply;
  if (auto called = client_->call("secret.list", request, reply); !called) return called.error();
  if (static_cast<std::size_t>(reply.secrets_size()) > kMaxSecrets) {
    return client_->malformed_reply("secret.list",
                                    fmt::format("more than {} secrets", kMaxSecrets));
  }
  std::vector<SecretInfo> out;
  out.reserve(reply.secrets_size());
  for (const auto& entry : reply.secrets()) {
    if (entry.name().empty() || entry.name().size() > 256) {
      return client_->malformed_reply("secret.list", "a secret without a name (or a too long one)");
    }
    SecretInfo info;
    info.name = entry.name();
    if (entry.has_updated_at()) info.updated_at = from_timestamp(entry.updated_at());
    out.push_back(std::move(info));
  }
  return out;
}

Result<Ok> RemoteSecretTarget::put(const std::string& name, const Secret& value) {
  auto described = client_->described();
  if (!described) return described.error();
  if (auto valid = validation_.ensure(RemoteClient::kNoDeadline); !valid) return valid.error();
  auto sealed = client_->seal_for_provider(described.value(), value);
  if (!sealed) return sealed.error();
  v1::PluginSecretPutRequest request;
  *request.mutable_target() = ref_;
  request.set_name(name);
  request.set_sealed_value(std::move(sealed).value());
  request.set_public_key(described.value().public_key_base64);
  v1::PluginSecretPutReply reply;
  auto called = client_->call("secret.put", request, reply);
  if (!called) {
    if (called.error().code == ErrorCode::conflict) {
      // The provider's key changed: describe again before the next put, which may then pass.
      client_->forget_described();
      Error e = called.error();
      e.retry = Retry::retryable;
      return e;
    }
    return called.error();
  }
  return Ok{};
}

Result<Ok> RemoteSecretTarget::remove(const std::string& name) {
  if (auto valid = validation_.ensure(RemoteClient::kNoDeadline); !valid) return valid.error();
  v1::PluginSecretDeleteRequest request;
  *request.mutable_target() = ref_;
  request.set_name(name);
  v1::PluginSecretDeleteReply reply;
  if (auto called = client_->call("secret.delete", request, reply); !called) {
    return called.error();
  }
  return Ok{};
}

// --- credentials ---------------------------------------------------------------------------

Result<IssuedCredential> RemoteCredentialIssuer::issue(const std::string& name) {
  if (auto described = client_->described(); !described) return described.error();
  v1::PluginIssueRequest request;
  request.set_name(name);
  request.set_orgd_public_key(client_->orgd_public_key());
  v1::PluginIssueReply reply;
  if (auto called = client_->call("issue", request, reply); !called) return called.error();
  if (reply.id().empty() || reply.id().size() > kMaxHandle) {
    return client_->malformed_reply("issue", "no id for the credential (or a too long one)");
  }
  if (reply.sealed_value().empty()) {
    return client_->malformed_reply("issue", "no sealed_value");
  }
  auto value = client_->open_from_provider(reply.sealed_value(), "issue");
  if (!value) return client_->malformed_reply("issue", value.error().message);
  IssuedCredential out;
  out.id = reply.id();
  out.value = std::move(value).value();
  if (reply.has_expires_at()) out.expires_at = from_timestamp(reply.expires_at());
  return out;
}

Result<Ok> RemoteCredentialIssuer::revoke(const std::string& id) {
  v1::PluginRevokeRequest request;
  request.set_id(id);
  v1::PluginRevokeReply reply;
  if (auto called = client_->call("revoke", request, reply); !called) return called.error();
  return Ok{};
}

// --- health --------------------------------------------------------------------------------

Result<ProbeResult> RemoteHealthProbe::probe() {
  const auto failed = [&](const Error& error) {
    ProbeResult r;
    r.ok = false;
    r.detail = error.message;
    r.last_error = error.message;
    return r;
  };
  auto described = client_->described();
  if (!described) return failed(described.error());
  v1::PluginHealthRequest request;
  v1::PluginHealthReply reply;
  if (auto called = client_->call("health", request, reply); !called) {
    return failed(called.error());
  }
  ProbeResult r;
  r.ok = reply.ok();
  r.detail = fmt::format("{} {}: {}", printable(described.value().name, 64),
                         printable(described.value().version, 32),
                         reply.detail().empty() ? std::string{reply.ok() ? "ok" : "not ok"}
                                                : printable(reply.detail(), 200));
  if (reply.has_rate_limit_remaining()) r.rate_limit_remaining = reply.rate_limit_remaining();
  if (reply.has_rate_limit_limit()) r.rate_limit_limit = reply.rate_limit_limit();
  if (reply.has_rate_limit_reset()) r.rate_limit_reset = from_timestamp(reply.rate_limit_reset());
  r.last_error = client_->last_error();
  return r;
}

// --- the provider --------------------------------------------------------------------------

RemoteProvider::RemoteProvider(Settings settings, const ProviderServices& services)
    : Provider(settings.name, "remote"),
      client_(std::make_shared<RemoteClient>(std::move(settings), services.nats, services.log)),
      issuer_(client_),
      probe_(client_) {}

std::unique_ptr<DeployTarget> RemoteProvider::make_deploy_target(const DeployTargetConfig& target,
                                                                 const std::string& source_file) {
  return std::make_unique<RemoteDeployTarget>(
      client_, target,
      checked_settings(target.settings, "deploy." + target.env, target.line, reserved_target_keys(),
                       source_file));
}

std::unique_ptr<SecretTarget> RemoteProvider::make_secret_target(const SecretTargetConfig& target,
                                                                 const std::string& source_file) {
  const std::string path =
      target.organization ? fmt::format("secrets.org_targets[{}]", target.index)
                          : fmt::format("repos.{}.secret_targets[{}]", target.repo, target.index);
  return std::make_unique<RemoteSecretTarget>(
      client_, target,
      checked_settings(target.settings, path, target.line, reserved_secret_target_keys(),
                       source_file));
}

std::unique_ptr<Provider> make_remote_provider(const ProviderConfig& config,
                                               const ProviderServices& services,
                                               const std::string& source_file) {
  return std::make_unique<RemoteProvider>(
      parse_settings(config, source_file, services.subject_prefix, services.org), services);
}

}  // namespace orgd::remote
