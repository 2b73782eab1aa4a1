// The controller's Worker: one Durable Object-backed container (OrgdController) running orgd and
// its embedded nats-server; requests routed by src/routes.js.
import { Container, getContainer, switchPort } from "@cloudflare/containers";

import { HTTP_PORT, NATS_WEBSOCKET_PORT, containerEnv, route } from "./routes.js";

export class OrgdController extends Container {
  defaultPort = HTTP_PORT;
  requiredPorts = [HTTP_PORT, NATS_WEBSOCKET_PORT];
  // The org's NATS must not sleep; the cron trigger below also renews the activity timer.
  sleepAfter = "24h";

  constructor(ctx, env) {
    super(ctx, env);
    this.envVars = containerEnv(env);
  }

  onStop(params) {
    console.log("orgd container stopped", JSON.stringify(params));
  }

  onError(error) {
    console.error("orgd container error:", String(error));
    throw error;
  }
}

function controller(env) {
  return getContainer(env.ORGD, "controller");
}

export default {
  async fetch(request, env) {
    const to = route(request, env);
    if (to.status) {
      return new Response(to.body, { status: to.status, headers: { "content-type": "text/plain" } });
    }
    return controller(env).fetch(switchPort(request, to.port));
  },

  // Starts the controller when it is not running and checks that orgd answers.
  async scheduled(_event, env) {
    const response = await controller(env).fetch(
      switchPort(new Request("http://controller/healthz"), HTTP_PORT),
    );
    if (!response.ok) console.error("orgd /healthz answered", response.status);
  },
};
