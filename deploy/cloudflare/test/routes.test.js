// Routing and the container's environment, with plain Node (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import { HTTP_PORT, NATS_WEBSOCKET_PORT, containerEnv, route } from "../src/routes.js";

const request = (path, headers = {}) =>
  new Request("https://orgd.example.workers.dev" + path, { headers });

test("probes and webhooks go to orgd's HTTP port", () => {
  for (const path of ["/healthz", "/readyz", "/webhooks/github"]) {
    assert.deepEqual(route(request(path), {}), { port: HTTP_PORT }, path);
  }
});

test("NATS clients reach the websocket port, other requests to /nats are told how", () => {
  assert.deepEqual(route(request("/nats", { upgrade: "websocket" }), {}), {
    port: NATS_WEBSOCKET_PORT,
  });
  const plain = route(request("/nats"), {});
  assert.equal(plain.status, 426);
  assert.match(plain.body, /wss:\/\/orgd\.example\.workers\.dev\/nats/);
});

test("status and metrics need the admin token", () => {
  const env = { ADMIN_TOKEN: "admin-7c1e" };
  assert.equal(route(request("/status"), {}).status, 404, "no ADMIN_TOKEN: not served at all");
  assert.equal(route(request("/status"), env).status, 401);
  assert.equal(route(request("/metrics", { authorization: "Bearer admin-7c1f" }), env).status, 401);
  assert.equal(route(request("/metrics", { authorization: "admin-7c1e" }), env).status, 401);
  assert.deepEqual(route(request("/status", { authorization: "Bearer admin-7c1e" }), env), {
    port: HTTP_PORT,
  });
});

test("anything else is not found", () => {
  assert.equal(route(request("/"), {}).status, 404);
  assert.equal(route(request("/api/deploy"), {}).status, 404);
});

test("the container gets the named variables only", () => {
  const env = {
    ORGD_CONFIG_YAML: "org: acme\n",
    GITHUB_TOKEN: "ghp_canary",
    ADMIN_TOKEN: "stays-in-the-worker",
    ORGD: {},
    EMPTY: "",
    ORGD_MASTER_KEY: "",
  };
  assert.deepEqual(containerEnv(env), {
    ORGD_NATS_WEBSOCKET_PORT: String(NATS_WEBSOCKET_PORT),
    ORGD_CONFIG_YAML: "org: acme\n",
    GITHUB_TOKEN: "ghp_canary",
  });
});
