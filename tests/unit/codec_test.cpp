#include "daemon/events/codec.hpp"

#include <gtest/gtest.h>

#include "orgd/v1/deploy.pb.h"
#include "orgd/v1/error.pb.h"
#include "orgd/v1/health.pb.h"
#include "orgd/v1/status.pb.h"

namespace orgd {
namespace {

using v1::Health;

TEST(Codec, DecodesHealthReportJsonWithLowerCaseStates) {
  v1::HealthReport r;
  auto res = decode(R"({"status":"degraded","version":"1.4.2","detail":"slow","ttlSeconds":30})",
                    Encoding::json, r, 1024);
  ASSERT_TRUE(res.ok()) << res.error().message;
  EXPECT_EQ(r.status(), Health::degraded);
  EXPECT_EQ(r.version(), "1.4.2");
  EXPECT_EQ(r.detail(), "slow");
  EXPECT_EQ(r.ttl_seconds(), 30);
}

TEST(Codec, EncodesLowerCaseStatesAndDefaults) {
  v1::RepoStatus s;
  s.set_name("api");
  auto* svc = s.add_services();
  svc->set_name("http");
  svc->set_status(Health::ok);
  std::string json = encode(s, Encoding::json);
  EXPECT_NE(json.find(R"("health":"unknown")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("status":"ok")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("stale":false)"), std::string::npos) << json;
  EXPECT_EQ(json.find("last_report_at"), std::string::npos) << json;
}

TEST(Codec, DeployStatesAreLowerCase) {
  v1::DeployRecord d;
  d.set_deploy_id("d1");
  d.set_state(v1::DeployRecord::rolled_back);
  auto* step = d.add_steps();
  step->set_repo("api");
  step->set_state(v1::DeployStep::succeeded);
  std::string json = encode(d, Encoding::json);
  EXPECT_NE(json.find(R"("state":"rolled_back")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("state":"succeeded")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("deployId":"d1")"), std::string::npos) << json;
}

TEST(Codec, WavesAreNestedArrays) {
  v1::DeployAccepted a;
  a.set_deploy_id("x");
  auto* w1 = a.add_waves();
  w1->add_values()->set_string_value("api");
  auto* w2 = a.add_waves();
  w2->add_values()->set_string_value("web");
  w2->add_values()->set_string_value("worker");
  std::string json = encode(a, Encoding::json);
  EXPECT_NE(json.find(R"("waves":[["api"],["web","worker"]])"), std::string::npos) << json;
}

TEST(Codec, TimestampsAreRfc3339) {
  v1::ServiceStatus s;
  s.mutable_last_report_at()->set_seconds(1'700'000'000);
  std::string json = encode(s, Encoding::json);
  EXPECT_NE(json.find(R"("lastReportAt":"2023-11-14T22:13:20Z")"), std::string::npos) << json;
}

TEST(Codec, BinaryRoundTrip) {
  v1::HealthReport r;
  r.set_status(Health::down);
  r.set_version("2.0");
  std::string bytes = encode(r, Encoding::protobuf);
  v1::HealthReport back;
  ASSERT_TRUE(decode(bytes, Encoding::protobuf, back, 1024).ok());
  EXPECT_EQ(back.status(), Health::down);
  EXPECT_EQ(back.version(), "2.0");
}

TEST(Codec, EmptyPayloadIsDefaults) {
  v1::RepoStatusRequest r;
  r.set_repo("left over");
  ASSERT_TRUE(decode("", Encoding::json, r, 1024).ok());
  EXPECT_EQ(r.repo(), "");
}

struct BadInput {
  const char* name;
  std::string payload;
  const char* expect;
};

class CodecRejects : public ::testing::TestWithParam<BadInput> {};

TEST_P(CodecRejects, WithInvalidArgument) {
  v1::HealthReport r;
  auto res = decode(GetParam().payload, Encoding::json, r, 64);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(res.error().message.find(GetParam().expect), std::string::npos)
      << res.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, CodecRejects,
    ::testing::Values(
        BadInput{"malformed", R"({"status":"ok")", "invalid HealthReport JSON"},
        BadInput{"wrong_type", R"({"ttlSeconds":"soon"})", "invalid HealthReport JSON"},
        BadInput{"unknown_field", R"({"stauts":"ok"})", "invalid HealthReport JSON"},
        BadInput{"unknown_enum", R"({"status":"OK"})", "invalid HealthReport JSON"},
        BadInput{"binary", std::string("\xff\xfe\x00\x01", 4), "not UTF-8"},
        BadInput{"nul", std::string("{\"a\0\":1}", 8), "not UTF-8"},
        BadInput{"oversized", std::string(65, ' '), "exceeds the limit of 64 bytes"},
        BadInput{"array", "[1,2,3]", "invalid HealthReport JSON"}),
    [](const auto& info) { return std::string(info.param.name); });

// Error replies are read by people: plain sentences naming the field, never protobuf's
// internals (type URLs, "Cannot find field", enum type names).
struct PlainError {
  const char* name;
  std::string payload;
  const char* expect;
};

class CodecPlainErrors : public ::testing::TestWithParam<PlainError> {};

TEST_P(CodecPlainErrors, NameTheProblemInPlainWords) {
  v1::DeployRequest r;
  auto res = decode(GetParam().payload, Encoding::json, r, 1 << 20);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code, ErrorCode::invalid_argument);
  const std::string& message = res.error().message;
  EXPECT_NE(message.find(GetParam().expect), std::string::npos) << message;
  for (const char* internal : {"type.googleapis.com", "Cannot find field", "INVALID_ARGUMENT",
                               "TYPE_", "orgd.v1", "google.protobuf", "Expected : between"}) {
    EXPECT_EQ(message.find(internal), std::string::npos) << message;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, CodecPlainErrors,
    ::testing::Values(
        PlainError{"unknown_field", R"({"repos":["api"],"foo":1})", R"(unknown field "foo")"},
        PlainError{"repos_not_a_list", R"({"repos":"api"})",
                   R"(field "repos": expected a list of strings)"},
        PlainError{"repos_of_numbers", R"({"repos":[42]})",
                   R"(field "repos": expected a list of strings)"},
        PlainError{"env_not_a_string", R"({"env":7})", R"(field "env": expected a string)"},
        PlainError{"all_not_a_bool", R"({"all":"yes"})", R"(field "all": expected true or false)"},
        PlainError{"malformed", R"({"repos":["api"])", "malformed JSON"},
        PlainError{"not_an_object", R"([1,2])", "expected a JSON object"},
        PlainError{"any_type_url", R"({"@type":"type.googleapis.com/x"})",
                   R"(unknown field "@type")"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Codec, PlainErrorsNameNestedFieldsAndEnumValues) {
  v1::HealthReport health;
  auto bad_enum = decode(R"({"status":"OK"})", Encoding::json, health, 1024);
  ASSERT_FALSE(bad_enum.ok());
  EXPECT_NE(bad_enum.error().message.find(R"(field "status": unknown value "OK")"),
            std::string::npos)
      << bad_enum.error().message;
  v1::DeployListRequest list;
  auto bad_number = decode(R"({"limit":"many"})", Encoding::json, list, 1024);
  ASSERT_FALSE(bad_number.ok());
  EXPECT_NE(bad_number.error().message.find(R"(field "limit": expected a whole number)"),
            std::string::npos)
      << bad_number.error().message;
}

TEST(Codec, RejectsMalformedBinary) {
  v1::HealthReport r;
  auto res = decode(std::string("\x0a\xff\xff\xff\xff\xff", 6), Encoding::protobuf, r, 1024);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message.find("binary HealthReport"), std::string::npos);
}

TEST(Codec, ContentTypeSelectsEncoding) {
  EXPECT_EQ(encoding_from_content_type("application/protobuf"), Encoding::protobuf);
  EXPECT_EQ(encoding_from_content_type("Application/Protobuf; proto=orgd.v1.HealthReport"),
            Encoding::protobuf);
  EXPECT_EQ(encoding_from_content_type("application/json"), Encoding::json);
  EXPECT_EQ(encoding_from_content_type(""), Encoding::json);
  EXPECT_EQ(encoding_from_content_type("text/plain"), Encoding::json);
}

TEST(Codec, ErrorBodyShape) {
  EXPECT_EQ(encode_error(not_found("unknown repo 'x'"), Encoding::json),
            R"({"error":{"code":"not_found","message":"unknown repo 'x'"}})");
  v1::ErrorReply back;
  ASSERT_TRUE(decode(encode_error(conflict("held"), Encoding::protobuf), Encoding::protobuf, back,
                     1024)
                  .ok());
  EXPECT_EQ(back.error().code(), "conflict");
  EXPECT_EQ(back.error().message(), "held");
}

TEST(Codec, ErrorBodyWithInvalidUtf8StaysValid) {
  std::string body = encode_error(invalid_argument("bad \xff byte"), Encoding::json);
  EXPECT_TRUE(valid_utf8(body)) << body;
  EXPECT_NE(body.find("invalid_argument"), std::string::npos);
}

TEST(Codec, Utf8Validation) {
  EXPECT_TRUE(valid_utf8("plain"));
  EXPECT_TRUE(valid_utf8("gr\xc3\xbc\xc3\x9f"));            // grüß
  EXPECT_TRUE(valid_utf8("\xf0\x9f\x9a\x80"));              // rocket
  EXPECT_FALSE(valid_utf8("\xc0\xaf"));                      // overlong '/'
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80"));                  // surrogate
  EXPECT_FALSE(valid_utf8("\xe2\x82"));                      // truncated
  EXPECT_FALSE(valid_utf8(std::string_view("a\0b", 3)));     // NUL
}

TEST(Codec, SubjectTokens) {
  EXPECT_TRUE(valid_subject_token("api-v2_x"));
  EXPECT_FALSE(valid_subject_token(""));
  EXPECT_FALSE(valid_subject_token("a.b"));
  EXPECT_FALSE(valid_subject_token("*"));
  EXPECT_FALSE(valid_subject_token(">"));
  EXPECT_FALSE(valid_subject_token("a b"));
  EXPECT_FALSE(valid_subject_token(std::string(129, 'a')));
}

}  // namespace
}  // namespace orgd
