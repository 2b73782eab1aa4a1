#include "tests/support/nats_auth.hpp"

namespace orgd::testing {

NatsConnectionSettings auth_settings(const std::string& url) {
  NatsConnectionSettings s;
  s.urls = {url};
  s.name = "orgd-auth-test";
  s.connect_timeout = std::chrono::milliseconds(2000);
  s.retry_on_failed_connect = false;
  s.max_reconnect = 0;
  return s;
}

NatsServerOptions server_with_config(std::string extra) {
  NatsServerOptions o;
  o.jetstream = false;
  o.wait_for_jetstream = false;
  o.extra_config = std::move(extra);
  return o;
}

bool connects(NatsConnectionSettings settings) {
  NatsConnection conn(std::move(settings));
  conn.connect();
  if (!conn.connected()) return false;
  auto sub = conn.subscribe("auth.echo", "", [&](BusMessage m) {
    BusMessage reply;
    reply.subject = m.reply;
    reply.data = m.data;
    (void)conn.publish(reply);
  });
  BusMessage req;
  req.subject = "auth.echo";
  req.data = "ping";
  auto r = conn.request(req, std::chrono::milliseconds(2000));
  sub.reset();
  conn.close();
  return r.ok() && r.value().data == "ping";
}

}  // namespace orgd::testing
