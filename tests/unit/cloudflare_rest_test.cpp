// The cloudflare REST client's reading of answers: the envelope (success:false a failure at any
// HTTP status, the errors' codes and messages in the message, hostile shapes tolerated), the
// retry kind of each failure, result_info pagination in its three shapes, the token on every
// request; and the pieces a deploy is made of: the multipart upload's shape, the handles.
#include "plugins/cloudflare/rest_client.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "plugins/cloudflare/containers_deploys.hpp"
#include "plugins/cloudflare/multipart.hpp"
#include "plugins/cloudflare/worker_secrets.hpp"
#include "plugins/cloudflare/workers_deploys.hpp"
#include "tests/fakes/fake_cloudflare.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd::cloudflare {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kToken = "cf-unit-test-token-canary-0123456789";

// Answers from a script, in order; remembers the requests.
class ScriptedTransport final : public HttpTransport {
 public:
  void push(int status, std::string body, std::vector<HttpHeader> headers = {}) {
    std::lock_guard lock(mutex_);
    answers_.push_back({status, std::move(headers), std::move(body)});
  }
  Result<HttpResponse> send(HttpRequest request) override {
    std::lock_guard lock(mutex_);
    requests.push_back(request);
    if (answers_.empty()) return unavailable("no answer scripted");
    HttpResponse r = answers_.front();
    answers_.pop_front();
    return r;
  }
  std::vector<HttpRequest> requests;

 private:
  std::mutex mutex_;
  std::deque<HttpResponse> answers_;
};

Settings settings() {
  Settings s;
  s.name = "cf";
  s.api_url = "http://127.0.0.1:1/client/v4";
  s.token_env = "CF_TOKEN";
  s.account_id = "0123456789abcdef0123456789abcdef";
  return s;
}

struct Rig {
  std::shared_ptr<ScriptedTransport> transport = std::make_shared<ScriptedTransport>();
  std::shared_ptr<RestClient> api = std::make_shared<RestClient>(
      settings(),
      [t = transport]() -> Result<std::shared_ptr<HttpTransport>> { return std::shared_ptr<HttpTransport>(t); },
      []() -> Result<std::shared_ptr<const Secret>> {
        return std::make_shared<const Secret>(Secret::from(std::string("Bearer ") + kToken));
      },
      nullptr);
};

HttpResponse response(int status, std::string body, std::vector<HttpHeader> headers = {}) {
  return {status, std::move(headers), std::move(body)};
}

TEST(CloudflareEnvelopeTest, ASuccessfulEnvelopeIsRead) {
  auto e = read_envelope("x", response(200, R"({"success":true,"errors":[],"messages":[{"code":1,"message":"hi"}],
      "result":{"id":"abc"},"result_info":{"page":1}})"));
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_TRUE(e.value().success);
  EXPECT_EQ(e.value().result["id"], "abc");
  EXPECT_EQ(e.value().result_info["page"], 1);
  ASSERT_EQ(e.value().messages.size(), 1u);
  EXPECT_EQ(e.value().messages[0].message, "hi");
}

TEST(CloudflareEnvelopeTest, SuccessFalseAtHttp200IsAFailureWithItsErrors) {
  Rig rig;
  rig.transport->push(200, R"({"success":false,"errors":[{"code":10013,"message":"internal trouble"},
      {"code":10001,"message":"second"}],"messages":[],"result":null})");
  RestClient::Request request;
  request.path = "/accounts/x/workers/scripts/w/deployments";
  auto answer = rig.api->call("listing deployments", request);
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().message,
            "listing deployments: Cloudflare answered 200 with success: false: [10013] internal "
            "trouble; [10001] second");
  EXPECT_EQ(answer.error().retry, Retry::retryable);
}

TEST(CloudflareEnvelopeTest, FailuresGetTheirRetryKindByStatus) {
  auto error_of = [](int status, std::vector<HttpHeader> headers = {}) {
    auto e = read_envelope("call", response(status, R"({"success":false,"errors":[{"code":7,"message":"m"}]})",
                                            std::move(headers)));
    EXPECT_TRUE(e);
    return envelope_error("call", e.value());
  };
  EXPECT_EQ(error_of(404).code, ErrorCode::not_found);
  EXPECT_EQ(error_of(404).retry, Retry::permanent);
  EXPECT_EQ(error_of(409).code, ErrorCode::conflict);
  EXPECT_EQ(error_of(400).code, ErrorCode::invalid_argument);
  EXPECT_EQ(error_of(403).retry, Retry::permanent);
  EXPECT_EQ(error_of(503).retry, Retry::retryable);
  const Error limited = error_of(429, {{"Retry-After", "240"}});
  EXPECT_EQ(limited.retry, Retry::rate_limited);
  EXPECT_EQ(limited.retry_after, std::chrono::seconds{240});
  const Error by_reset = error_of(429, {{"Ratelimit", "\"default\";r=0;t=120"}});
  EXPECT_EQ(by_reset.retry, Retry::rate_limited);
  EXPECT_GE(by_reset.retry_after, std::chrono::seconds{119});
  EXPECT_LE(by_reset.retry_after, std::chrono::seconds{120});
  EXPECT_EQ(error_of(429).retry_after, std::chrono::minutes{5}) << "Cloudflare's documented block";
}

TEST(CloudflareEnvelopeTest, HostileBodiesGiveClearErrorsNotCrashes) {
  for (const std::string& body : std::vector<std::string>{"", "<html>502 Bad Gateway</html>", "[]", "null", R"({"success":"yes"})", R"({"result":{}})",
        "{\"success\":true,", std::string(1, '\0')}) {
    auto e = read_envelope("reading", response(200, body));
    ASSERT_FALSE(e) << body;
    EXPECT_THAT(e.error().message, HasSubstr("reading: Cloudflare answered 200 with a body that is not its envelope"));
    EXPECT_EQ(e.error().retry, Retry::retryable);
  }
  // Wrong types inside an envelope are tolerated.
  auto odd = read_envelope("x", response(400, R"({"success":false,"errors":[12,"text",{"code":"7","message":5},
      {"code":9,"message":"a\nb\u0007c"}],"messages":{"a":1}})"));
  ASSERT_TRUE(odd);
  const Error e = envelope_error("x", odd.value());
  EXPECT_EQ(e.message, "x: Cloudflare answered 400: (no message); text; (no message); [9] a b c");
  // Many long errors are bounded.
  std::string many = R"({"success":false,"errors":[)";
  for (int i = 0; i < 200; ++i) many += std::string(i ? "," : "") + R"({"code":1,"message":")" + std::string(5000, 'x') + "\"}";
  many += "]}";
  auto big = read_envelope("x", response(400, many));
  ASSERT_TRUE(big);
  EXPECT_LT(envelope_error("x", big.value()).message.size(), 2000u);
}

TEST(CloudflareRestTest, EveryRequestCarriesTheTokenAndIsCounted) {
  Rig rig;
  rig.transport->push(200, R"({"success":true,"errors":[],"messages":[],"result":{}})");
  RestClient::Request request;
  request.method = "POST";
  request.path = "/accounts/a/x";
  request.body = "{}";
  ASSERT_TRUE(rig.api->call("x", request));
  ASSERT_EQ(rig.transport->requests.size(), 1u);
  const auto& sent = rig.transport->requests[0];
  EXPECT_EQ(sent.url, "http://127.0.0.1:1/client/v4/accounts/a/x");
  ASSERT_TRUE(sent.authorization);
  EXPECT_EQ(sent.authorization->expose(), std::string("Bearer ") + kToken);
  for (const auto& h : sent.headers) EXPECT_THAT(h.value, Not(HasSubstr(kToken)));
  EXPECT_EQ(rig.api->calls(), 1u);
}

TEST(CloudflareRestTest, PagesAreFollowedByPageNumbers) {
  Rig rig;
  rig.transport->push(200, R"({"success":true,"result":{"items":[{"id":"a"},{"id":"b"}]},
      "result_info":{"page":1,"per_page":2,"count":2,"total_count":5}})");
  rig.transport->push(200, R"({"success":true,"result":{"items":[{"id":"c"},{"id":"d"}]},
      "result_info":{"page":2,"per_page":2,"count":2,"total_count":5}})");
  rig.transport->push(200, R"({"success":true,"result":{"items":[{"id":"e"}]},
      "result_info":{"page":3,"per_page":2,"count":1,"total_count":5}})");
  auto items = rig.api->list("versions", "/v", "items", {}, 2);
  ASSERT_TRUE(items) << items.error().message;
  ASSERT_EQ(items.value().size(), 5u);
  EXPECT_EQ(items.value()[4]["id"], "e");
  ASSERT_EQ(rig.transport->requests.size(), 3u);
  EXPECT_THAT(rig.transport->requests[0].url, HasSubstr("/v?per_page=2"));
  EXPECT_THAT(rig.transport->requests[2].url, HasSubstr("/v?per_page=2&page=3"));
}

TEST(CloudflareRestTest, CursorsAreFollowedInBothShapes) {
  Rig rig;
  rig.transport->push(200, R"({"success":true,"result":[1,2],"result_info":{"cursor":"c/1","per_page":2}})");
  rig.transport->push(200, R"({"success":true,"result":[3],"result_info":{"cursors":{"after":"z"}}})");
  rig.transport->push(200, R"({"success":true,"result":[4],"result_info":{"cursor":""}})");
  auto items = rig.api->list("things", "/t?x=1", "", {}, 2);
  ASSERT_TRUE(items) << items.error().message;
  EXPECT_EQ(items.value().size(), 4u);
  EXPECT_THAT(rig.transport->requests[1].url, HasSubstr("/t?x=1&per_page=2&cursor=c%2F1"));
  EXPECT_THAT(rig.transport->requests[2].url, HasSubstr("cursor=z"));
}

TEST(CloudflareRestTest, AListWhoseResultIsNotAListIsAnError) {
  Rig rig;
  rig.transport->push(200, R"({"success":true,"result":{"items":"nope"}})");
  auto items = rig.api->list("versions", "/v", "items");
  ASSERT_FALSE(items);
  EXPECT_EQ(items.error().message, "versions: Cloudflare's result has no items list");
}

TEST(CloudflareRestTest, NextPageStopsWhereTheListEnds) {
  EXPECT_FALSE(next_page(nlohmann::json{{"page", 2}, {"total_pages", 2}}, 2, 10, 10));
  EXPECT_EQ(next_page(nlohmann::json{{"page", 1}, {"total_pages", 3}}, 1, 10, 10)->page, 2);
  EXPECT_FALSE(next_page(nlohmann::json{{"page", 1}, {"per_page", 10}}, 1, 4, 10)) << "short page";
  EXPECT_FALSE(next_page(nlohmann::json{{"page", 3}}, 3, 0, 10)) << "empty page";
  EXPECT_FALSE(next_page(nlohmann::json(nullptr), 1, 10, 10));
}

TEST(CloudflareMultipartTest, TheUploadIsMetadataFirstThenEachModuleWithItsType) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.path() / "lib");
  std::filesystem::create_directories(dir.path() / ".cache");
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir.path() / name, std::ios::binary) << text;
  };
  write("index.js", "export default { fetch() { return new Response('hi') } }");
  write("lib/util.mjs", "export const x = 1;");
  write("add.wasm", std::string("\0asm\1\0\0\0", 8));
  write("index.js.map", "{}");
  write("README", "read me");
  write(".cache/junk.js", "x");
  auto modules = module_parts(dir.str());
  ASSERT_TRUE(modules) << modules.error().message;
  std::vector<FormPart> parts{{"metadata", "", "application/json", R"({"main_module":"index.js"})"}};
  for (auto& m : modules.value()) parts.push_back(m);
  const std::string boundary = choose_boundary(parts);
  const std::string body = multipart_body(parts, boundary);
  auto parsed = orgd::testing::parse_multipart(multipart_content_type(boundary), body);
  ASSERT_TRUE(parsed);
  std::vector<std::pair<std::string, std::string>> seen;
  for (const auto& p : *parsed) seen.emplace_back(p.name, p.content_type);
  EXPECT_EQ(seen, (std::vector<std::pair<std::string, std::string>>{
                      {"metadata", "application/json"},
                      {"README", "application/octet-stream"},
                      {"add.wasm", "application/wasm"},
                      {"index.js", "application/javascript+module"},
                      {"index.js.map", "application/source-map"},
                      {"lib/util.mjs", "application/javascript+module"}}));
  EXPECT_EQ((*parsed)[2].body, std::string("\0asm\1\0\0\0", 8)) << "binary modules kept byte for byte";
  EXPECT_EQ((*parsed)[3].filename, "index.js");
  EXPECT_EQ(body.rfind("--" + boundary + "--\r\n"), body.size() - boundary.size() - 6);
}

TEST(CloudflareMultipartTest, TheBoundaryNeverOccursInAPart) {
  std::vector<FormPart> parts{{"a", "a", "text/plain", ""}};
  parts[0].body = "--" + choose_boundary(parts) + "--";
  const std::string boundary = choose_boundary(parts);
  EXPECT_EQ(parts[0].body.find(boundary), std::string::npos);
}

TEST(CloudflareMultipartTest, AMissingDirIsAPermanentError) {
  auto parts = module_parts("/nonexistent/orgd/worker");
  ASSERT_FALSE(parts);
  EXPECT_EQ(parts.error().retry, Retry::permanent);
}

TEST(CloudflareMetadataTest, AnnotationsNameTheDeployWithinCloudflaresLimits) {
  WorkersTarget target;
  target.compatibility_date = "2026-09-01";
  DeployContext context;
  context.deploy_id = "d-42";
  context.attempt = 2;
  context.repo = "web";
  context.env = "prod";
  context.ref = std::string(300, 'r');
  const auto metadata = version_metadata(target, context);
  EXPECT_EQ(metadata["main_module"], "index.js");
  EXPECT_EQ(metadata["compatibility_date"], "2026-09-01");
  EXPECT_EQ(metadata["keep_bindings"], nlohmann::json({"secret_text", "secret_key"}));
  const std::string message = metadata["annotations"]["workers/message"];
  EXPECT_EQ(message.rfind("orgd deploy d-42 attempt 2: web ", 0), 0u) << message;
  EXPECT_LE(message.size(), 1000u);
  EXPECT_EQ(metadata["annotations"]["workers/tag"].get<std::string>().size(), 100u);
}

TEST(CloudflareHandleTest, HandlesRoundTripAndForeignOnesAreRefused) {
  const WorkerHandle w{"0000000a-0076-4000-8000-000000013537", "b-1", 2};
  const auto back = parse_worker_handle(w.text());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->version, w.version);
  EXPECT_EQ(back->previous, "b-1");
  EXPECT_EQ(back->phase, 2);
  EXPECT_TRUE(parse_worker_handle("version=v1;previous=;phase=1"));
  EXPECT_FALSE(parse_worker_handle("run=12;deployment=3"));
  EXPECT_FALSE(parse_worker_handle("version=../x;previous=;phase=1"));
  EXPECT_FALSE(parse_worker_handle("previous=a"));
  EXPECT_FALSE(parse_worker_handle(""));

  const RolloutHandle r{"rollout000001", "registry.example/web:v2@sha256:ab", "web:v1"};
  const auto rb = parse_rollout_handle(r.text());
  ASSERT_TRUE(rb);
  EXPECT_EQ(rb->image, r.image);
  EXPECT_EQ(rb->previous, "web:v1");
  EXPECT_FALSE(parse_rollout_handle("version=v1;previous=;phase=1"));
  EXPECT_FALSE(parse_rollout_handle("rollout=../../x;image=i;previous="));
}

TEST(CloudflareSecretsTest, TheNotDeployedRefusalIsRecognisedByItsMessage) {
  Envelope e;
  e.errors.push_back({10215, "Secret edit failed. You attempted to modify a secret, but the latest "
                             "version of your Worker isn't currently deployed."});
  EXPECT_TRUE(latest_version_not_deployed(e));
  e.errors[0].message = "Authentication error";
  EXPECT_FALSE(latest_version_not_deployed(e));
}

TEST(CloudflareSecretsTest, APutSendsTheValueOnlyInItsBodyProperlyEscaped) {
  Rig rig;
  rig.transport->push(200, R"({"success":true,"errors":[],"messages":[],"result":{"name":"K","type":"secret_text"}})");
  WorkerSecretTarget target(rig.api, "acme-web");
  const std::string value = "canary \"quoted\" \\ back\nslash \x01 end";
  ASSERT_TRUE(target.put("K", Secret::from(value)));
  ASSERT_EQ(rig.transport->requests.size(), 1u);
  const auto& sent = rig.transport->requests[0];
  EXPECT_EQ(sent.method, "PUT");
  EXPECT_THAT(sent.url, HasSubstr("/workers/scripts/acme-web/secrets"));
  const auto body = nlohmann::json::parse(sent.body);
  EXPECT_EQ(body["name"], "K");
  EXPECT_EQ(body["type"], "secret_text");
  EXPECT_EQ(body["text"], value);
  EXPECT_THAT(sent.url, Not(HasSubstr("canary")));
}

TEST(CloudflareSecretsTest, BadNamesAndValuesNeverReachTheApi) {
  Rig rig;
  WorkerSecretTarget target(rig.api, "acme-web");
  auto bad_name = target.put("NOT-A-NAME", Secret::from("v"));
  ASSERT_FALSE(bad_name);
  EXPECT_EQ(bad_name.error().retry, Retry::permanent);
  auto too_big = target.put("BIG", Secret::from(std::string(6000, 'x')));
  ASSERT_FALSE(too_big);
  EXPECT_THAT(too_big.error().message, HasSubstr("5 KiB"));
  EXPECT_TRUE(rig.transport->requests.empty());
}

TEST(CloudflareSecretsTest, RemoveTellsAMissingSecretFromAMissingWorker) {
  Rig rig;
  rig.transport->push(404, R"({"success":false,"errors":[{"code":10056,"message":"secret not found"}]})");
  rig.transport->push(404, R"({"success":false,"errors":[{"code":10007,"message":"This Worker does not exist on your account."}]})");
  WorkerSecretTarget target(rig.api, "acme-web");
  auto missing = target.remove("GONE");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
  EXPECT_EQ(missing.error().message, "secret GONE is not set on cloudflare Worker acme-web");
  auto no_worker = target.remove("GONE");
  ASSERT_FALSE(no_worker);
  EXPECT_THAT(no_worker.error().message, HasSubstr("[10007] This Worker does not exist"));
  EXPECT_THAT(rig.transport->requests.at(0).url, HasSubstr("/workers/scripts/acme-web/secrets/GONE"));
}

TEST(CloudflareWorkersTest, DeploymentSharesAreReadToleratingOddShapes) {
  const auto d = nlohmann::json::parse(R"({"versions":[{"version_id":"a","percentage":10},
      {"version_id":"b","percentage":90},{"version_id":5,"percentage":100},{"percentage":"x"},7]})");
  EXPECT_EQ(main_version(d), "b");
  EXPECT_EQ(share_of(d, "a"), 10.0);
  EXPECT_FALSE(share_of(d, "c"));
  EXPECT_EQ(main_version(nlohmann::json::parse(R"({"versions":"none"})")), "");
  EXPECT_EQ(main_version(nlohmann::json(nullptr)), "");
  EXPECT_FALSE(share_of(nlohmann::json::array(), "a"));
}

TEST(CloudflareWorkersTest, HostileAnswersFailTheStartWithClearErrors) {
  testing::TempDir dir;
  std::ofstream(dir / "index.js") << "export default {}";
  WorkersTarget target;
  target.script = "acme-web";
  target.dir = dir.str();
  DeployContext context;
  context.deploy_id = "d-1";
  const std::string ok_versions = R"({"success":true,"result":{"items":[]},"result_info":{"page":1,"per_page":50}})";
  const std::string ok_deployments = R"({"success":true,"result":{"deployments":[]}})";
  struct Case {
    std::vector<std::string> answers;
    std::string error;
  };
  const std::vector<Case> cases = {
      {{R"({"success":true,"result":{"items":5}})"}, "Cloudflare's result has no items list"},
      {{ok_versions, R"({"success":true,"result":{"deployments":{"a":1}}})"},
       "Cloudflare's result has no deployments list"},
      {{ok_versions, ok_deployments, R"({"success":true,"result":{"number":3}})"},
       "uploading a version of Worker acme-web: Cloudflare's result has no version id"},
      {{ok_versions, ok_deployments, R"({"success":true,"result":{"id":"../../x"}})"},
       "Cloudflare's result has no version id"},
      {{ok_versions, ok_deployments, R"({"success":true,"result":{"id":"v1"}})",
        R"({"success":false,"errors":[{"code":10021,"message":"bad split"}]})"},
       "deploying version v1 of Worker acme-web: Cloudflare answered 200 with success: false: [10021] bad split"},
  };
  for (const auto& c : cases) {
    Rig rig;
    for (const auto& a : c.answers) rig.transport->push(200, a);
    WorkersDeployTarget t(rig.api, target);
    auto started = t.start(context, {});
    ASSERT_FALSE(started) << c.error;
    EXPECT_THAT(started.error().message, HasSubstr(c.error));
  }
}

}  // namespace
}  // namespace orgd::cloudflare
