#pragma once

// AWS Signature Version 4 for R2's S3 API (cloud-apis.md §2.6: service s3, region auto), as
// AWS documents it for S3 ("Signature Calculations for the Authorization Header: Transferring
// Payload in a Single Chunk"): the canonical request (the path encoded once — S3 paths are not
// double-encoded —, the query sorted by encoded name, the signed headers lower-cased, trimmed
// and sorted, the payload's SHA-256 hex), the string to sign, the HMAC-SHA256 key chain
// (AWS4<secret> → date → region → service → aws4_request) and the Authorization header.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/core/secret.hpp"
#include "daemon/net/http_transport.hpp"

namespace orgd::cloudflare::sigv4 {

inline constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";
// x-amz-content-sha256 of a request without a body.
inline constexpr std::string_view kEmptySha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters (A-Z a-z 0-9 - _ . ~)
// as they are, every other byte %XX in upper case; '/' kept when `keep_slash` (object keys in
// paths).
std::string uri_encode(std::string_view text, bool keep_slash);

// Lower-case hex SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);

struct Request {
  std::string method = "GET";
  // The path as it goes on the wire, already encoded once (uri_encode(…, true)); "/" for the
  // root. It is signed as it is: never encoded again.
  std::string encoded_path = "/";
  // Query parameters, not encoded (the signer encodes and sorts them); a name without a value
  // has "".
  std::vector<std::pair<std::string, std::string>> query;
  // The Host header's value (host[:port] as the client writes it) and the other headers to sign
  // (x-amz-content-sha256 and x-amz-date are added from below; content-type, range …).
  std::string host;
  std::vector<HttpHeader> headers;
  std::string payload_sha256 = std::string{kEmptySha256};
  std::string amz_date;  // YYYYMMDDTHHMMSSZ
  std::string region = "auto";
  std::string service = "s3";
};

struct Signature {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signed_headers;    // "host;x-amz-content-sha256;x-amz-date"
  std::string credential_scope;  // "20130524/auto/s3/aws4_request"
  // "AWS4-HMAC-SHA256 Credential=<id>/<scope>, SignedHeaders=…, Signature=<hex>": handed to the
  // transport as the request's authorization, which is never logged.
  Secret authorization;
  std::string signature_hex() const;  // the hex after "Signature=" (tests)
};

// The canonical query string: each name and value uri_encode()d ('/' too), sorted by name then
// value, joined name=value with '&'.
std::string canonical_query(const std::vector<std::pair<std::string, std::string>>& query);

// Signs `request` with the key pair. The derived keys live in Secrets and are wiped.
Signature sign(const Request& request, std::string_view access_key_id,
               const Secret& secret_access_key);

// The headers to put on the wire for `request` besides Host: its own, x-amz-content-sha256 and
// x-amz-date (the signed set).
std::vector<HttpHeader> wire_headers(const Request& request);

}  // namespace orgd::cloudflare::sigv4
