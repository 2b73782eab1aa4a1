// Where a request to the controller's Worker goes: orgd's HTTP port in the container, the
// embedded nats-server's WebSocket port, or nowhere (the Worker answers it). Kept apart from
// index.js, which needs the Workers runtime, so `npm run check` tests it with plain Node.

export const HTTP_PORT = 8080;
export const NATS_WEBSOCKET_PORT = 8443;

// Open to the internet: probes, and GitHub's webhook deliveries (orgd verifies their HMAC).
const PUBLIC_PATHS = new Set(["/healthz", "/readyz", "/webhooks/github"]);
// The org's status and metrics name every repo: only with `Authorization: Bearer $ADMIN_TOKEN`.
const ADMIN_PATHS = new Set(["/status", "/metrics"]);

// What the container is started with: the config and the secrets the config names, taken from
// the Worker's vars and secrets by name. Nothing else of the Worker's environment goes in.
export const CONTAINER_VARIABLES = [
  "ORGD_CONFIG_YAML",
  "ORGD_LOG_LEVEL",
  "ORGD_NATS_TOKEN",
  "ORGD_MASTER_KEY",
  "GITHUB_TOKEN",
  "GITHUB_WEBHOOK_SECRET",
  "CLOUDFLARE_API_TOKEN",
  "SYNADIA_TOKEN",
];

export function containerEnv(env) {
  const out = { ORGD_NATS_WEBSOCKET_PORT: String(NATS_WEBSOCKET_PORT) };
  for (const name of CONTAINER_VARIABLES) {
    if (typeof env[name] === "string" && env[name] !== "") out[name] = env[name];
  }
  return out;
}

// Compares in time that depends on the lengths only, not on where the strings differ.
function sameSecret(given, expected) {
  const a = new TextEncoder().encode(given);
  const b = new TextEncoder().encode(expected);
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

function answer(status, text) {
  return { status, body: text + "\n" };
}

// {port} to forward to, or {status, body} to answer with.
export function route(request, env) {
  const url = new URL(request.url);
  if (url.pathname === "/nats") {
    const upgrade = (request.headers.get("upgrade") || "").toLowerCase();
    if (upgrade !== "websocket") {
      return answer(426, "NATS over WebSocket: point a NATS client at wss://" + url.host + "/nats");
    }
    return { port: NATS_WEBSOCKET_PORT };
  }
  if (PUBLIC_PATHS.has(url.pathname)) return { port: HTTP_PORT };
  if (ADMIN_PATHS.has(url.pathname)) {
    if (!env.ADMIN_TOKEN) return answer(404, "not found");
    const header = request.headers.get("authorization") || "";
    const token = header.startsWith("Bearer ") ? header.slice("Bearer ".length) : "";
    if (!token || !sameSecret(token, env.ADMIN_TOKEN)) return answer(401, "unauthorized");
    return { port: HTTP_PORT };
  }
  return answer(404, "not found");
}
