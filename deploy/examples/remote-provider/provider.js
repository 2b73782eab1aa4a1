#!/usr/bin/env node
// An example orgd remote provider (docs/remote-providers.md): it answers every op of
// proto/orgd/v1/plugin.proto on <subject>.<op> over NATS request-reply, keeps deploys and
// secrets in memory, and issues credentials. Secret values arrive sealed to this process's key
// (crypto_box_seal) and are opened here; issued credentials go back sealed to orgd's key. No
// value is ever printed.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const { connect, StringCodec, headers } = require('nats');
const sodium = require('libsodium-wrappers');

const NAME = 'example-remote-provider';
const VERSION = require('./package.json').version;

const HELP = `usage: provider.js [options]

An example orgd remote provider over NATS (P.plugin.<name>.<op>).

options:
  --server URL       NATS URL (env NATS_URL; default nats://127.0.0.1:4222)
  --subject SUBJECT  the provider's subject, as in orgd's providers.<name>.subject
                     (env ORGD_PLUGIN_SUBJECT; default org.demo.plugin.example)
  --creds FILE       NATS credentials file (env NATS_CREDS_FILE)
  --polls N          polls a deploy (or each of its phases) stays running (default 2);
                     a target's settings may say otherwise ({polls: N})
  --fail-repo REPO   deploys of REPO fail (repeatable; a target's {fail: true} does too)
  --state-file FILE  write what the provider holds, as JSON, after every change: secret
                     names with a keyed BLAKE2b hash of each value (key: hex in env
                     ORGD_EXAMPLE_HASH_KEY, else random), deploys, issued credentials.
                     Never the values.
  --help             this text

Target settings it understands (repos.<repo>.deploy.<env> with provider: <name>):
  polls: N, fail: true|false, steps: [10, 100] (gated phases), service: NAME
Secret target settings: store: NAME (secrets are kept per repo and store).
`;

function parseArgs(argv) {
  const opts = {
    server: process.env.NATS_URL || 'nats://127.0.0.1:4222',
    subject: process.env.ORGD_PLUGIN_SUBJECT || 'org.demo.plugin.example',
    creds: process.env.NATS_CREDS_FILE || '',
    polls: 2,
    failRepos: new Set(),
    stateFile: '',
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--help': case '-h': opts.help = true; break;
      case '--server': opts.server = value(); break;
      case '--subject': opts.subject = value(); break;
      case '--creds': opts.creds = value(); break;
      case '--polls': {
        const n = Number(value());
        if (!Number.isInteger(n) || n < 0) throw new Error('--polls must be a whole number >= 0');
        opts.polls = n;
        break;
      }
      case '--fail-repo': opts.failRepos.add(value()); break;
      case '--state-file': opts.stateFile = value(); break;
      default: throw new Error(`unknown argument ${arg} (see --help)`);
    }
  }
  if (!/^[^\s*>.]+(\.[^\s*>.]+)*$/.test(opts.subject)) {
    throw new Error(`--subject ${JSON.stringify(opts.subject)} is not a NATS subject`);
  }
  return opts;
}

// An op's failure: the error body of plugin.proto's PluginErrorReply.
class OpError extends Error {
  constructor(code, message, retryAfterMs) {
    super(message);
    this.code = code;
    this.retryAfterMs = retryAfterMs || 0;
  }
}
const invalid = (message) => new OpError('invalid_argument', message);
const notFound = (message) => new OpError('not_found', message);

const STATUS = { error: 'Nats-Service-Error', code: 'Nats-Service-Error-Code' };
const HTTP_CODES = { invalid_argument: 400, not_found: 404, conflict: 409, unavailable: 503,
                     rate_limited: 429, internal: 500 };

class Provider {
  constructor(opts) {
    this.opts = opts;
    this.keys = sodium.crypto_box_keypair();
    this.publicKey = sodium.to_base64(this.keys.publicKey, sodium.base64_variants.ORIGINAL);
    const hex = process.env.ORGD_EXAMPLE_HASH_KEY || '';
    this.hashKey = /^[0-9a-fA-F]{64}$/.test(hex) ? sodium.from_hex(hex)
                                                 : sodium.randombytes_buf(32);
    this.deploys = new Map();     // handle -> deploy
    this.byAttempt = new Map();   // deployId/attempt -> handle (start is idempotent)
    this.secrets = new Map();     // store key -> Map(name -> {value, updatedAt})
    this.credentials = new Map(); // id -> {name, issuedAt, revoked}
    this.counter = 0;
  }

  // --- settings --------------------------------------------------------------------------

  deploySettings(settings) {
    const s = settings || {};
    const problems = [];
    for (const key of Object.keys(s)) {
      if (!['polls', 'fail', 'steps', 'service'].includes(key)) {
        problems.push({ key, message: 'unknown setting (known: polls, fail, steps, service)' });
      }
    }
    if (s.polls !== undefined && !(Number.isInteger(s.polls) && s.polls >= 0 && s.polls <= 1000)) {
      problems.push({ key: 'polls', message: 'must be a whole number from 0 to 1000' });
    }
    if (s.fail !== undefined && typeof s.fail !== 'boolean') {
      problems.push({ key: 'fail', message: 'must be true or false' });
    }
    if (s.steps !== undefined) {
      const ok = Array.isArray(s.steps) && s.steps.length > 0 &&
        s.steps.every((p, i) => Number.isInteger(p) && p > 0 && p <= 100 &&
                                (i === 0 || p > s.steps[i - 1])) &&
        s.steps[s.steps.length - 1] === 100;
      if (!ok) problems.push({ key: 'steps', message: 'rising percentages ending at 100' });
    }
    if (s.service !== undefined && typeof s.service !== 'string') {
      problems.push({ key: 'service', message: 'must be a string' });
    }
    return problems;
  }

  secretSettings(settings) {
    const s = settings || {};
    const problems = [];
    for (const key of Object.keys(s)) {
      if (key !== 'store') problems.push({ key, message: 'unknown setting (known: store)' });
    }
    if (s.store !== undefined && !(typeof s.store === 'string' && /^[A-Za-z0-9_-]+$/.test(s.store))) {
      problems.push({ key: 'store', message: 'must be a name ([A-Za-z0-9_-]+)' });
    }
    return problems;
  }

  storeOf(target) {
    if (!target) throw invalid('no target');
    const problems = this.secretSettings(target.settings);
    if (problems.length) throw invalid(`settings: ${problems.map((p) => `${p.key}: ${p.message}`).join('; ')}`);
    const where = target.organization ? 'org' : `repo:${target.repo || ''}`;
    const key = `${where}/${(target.settings && target.settings.store) || 'default'}`;
    if (!this.secrets.has(key)) this.secrets.set(key, new Map());
    return { key, map: this.secrets.get(key) };
  }

  // --- ops -------------------------------------------------------------------------------

  describe(req) {
    return {
      name: NAME,
      version: VERSION,
      capabilities: ['deploy_target', 'secret_target', 'credential_issuer', 'health_probe'],
      publicKey: this.publicKey,
      settingsSchema: {
        type: 'object',
        properties: {
          polls: { type: 'integer', minimum: 0 },
          fail: { type: 'boolean' },
          steps: { type: 'array', items: { type: 'integer' } },
          service: { type: 'string' },
          store: { type: 'string' },
        },
      },
    };
  }

  validate(req) {
    const problems = req.kind === 'secret_target' ? this.secretSettings(req.settings)
      : req.kind === 'deploy_target' ? this.deploySettings(req.settings)
      : [{ key: '', message: `unknown target kind ${JSON.stringify(req.kind)}` }];
    return { problems };
  }

  deployStart(req) {
    const problems = this.deploySettings(req.settings);
    if (problems.length) throw invalid(problems.map((p) => `${p.key}: ${p.message}`).join('; '));
    if (!req.deployId) throw invalid('no deployId');
    const attemptKey = `${req.deployId}/${req.attempt || 1}`;
    const known = this.byAttempt.get(attemptKey);
    if (known) return this.progress(this.deploys.get(known));  // a repeated start: the same deploy
    const settings = req.settings || {};
    const d = {
      handle: `example-${req.deployId}-${req.attempt || 1}`,
      kind: 'deploy',
      repo: req.repo, env: req.env, ref: req.ref, deployId: req.deployId,
      polls: 0,
      pollsNeeded: settings.polls !== undefined ? settings.polls : this.opts.polls,
      fail: settings.fail === true || this.opts.failRepos.has(req.repo),
      steps: settings.steps || [100],
      phase: 0,  // index into steps of the phase rolling out
      status: 'running',
      error: '',
    };
    this.deploys.set(d.handle, d);
    this.byAttempt.set(attemptKey, d.handle);
    log(`deploy.start ${d.repo}/${d.env} ref ${d.ref} -> ${d.handle}`);
    this.advanceIfDone(d);
    this.save();
    return this.progress(d);
  }

  find(req) {
    const d = this.deploys.get(req.handle || '');
    if (!d) throw notFound(`no deploy with handle ${JSON.stringify(req.handle || '')}`);
    return d;
  }

  deployPoll(req) {
    const d = this.find(req);
    if (d.status === 'running') {
      d.polls++;
      this.advanceIfDone(d);
      this.save();
    }
    return this.progress(d);
  }

  // A running phase ends after pollsNeeded polls: the last one succeeds (or fails), earlier
  // ones are gated phases.
  advanceIfDone(d) {
    if (d.status !== 'running' || d.polls < d.pollsNeeded) return;
    if (d.phase < d.steps.length - 1) {
      d.status = 'phase_done';
    } else if (d.fail) {
      d.status = 'failed';
      d.error = 'the example provider was told to fail this deploy';
    } else {
      d.status = 'succeeded';
    }
    log(`${d.kind} ${d.handle}: ${d.status}`);
  }

  deployAdvance(req) {
    const d = this.find(req);
    if (d.status !== 'phase_done') {
      throw invalid(`deploy ${d.handle} is ${d.status}, not at a gated phase`);
    }
    d.phase++;
    d.polls = 0;
    d.status = 'running';
    log(`deploy.advance ${d.handle}: phase ${d.phase + 1} of ${d.steps.length}`);
    this.advanceIfDone(d);
    this.save();
    return this.progress(d);
  }

  deployCancel(req) {
    const d = this.find(req);
    if (d.status === 'running' || d.status === 'phase_done') {
      d.status = 'failed';
      d.error = 'cancelled';
      log(`deploy.cancel ${d.handle}`);
      this.save();
    }
    return this.progress(d);
  }

  deployRollback(req) {
    const prev = req.previous;
    if (!prev || !prev.deployId) {
      throw invalid('no previous deploy to return to: this provider rolls back to a known deploy');
    }
    const handle = `rollback-${req.deployId}-${req.attempt || 1}`;
    if (this.deploys.has(handle)) return this.progress(this.deploys.get(handle));
    const d = {
      handle, kind: 'rollback', repo: req.repo, env: req.env, ref: prev.ref,
      deployId: req.deployId, rollbackTo: prev.deployId,
      polls: 0, pollsNeeded: this.opts.polls, fail: false, steps: [100], phase: 0,
      status: 'running', error: '',
    };
    this.deploys.set(handle, d);
    // The deploy being rolled back is stopped.
    const current = req.handle && this.deploys.get(req.handle);
    if (current && (current.status === 'running' || current.status === 'phase_done')) {
      current.status = 'failed';
      current.error = 'rolled back';
    }
    log(`deploy.rollback ${req.repo}/${req.env} to ${prev.deployId} -> ${handle}`);
    this.advanceIfDone(d);
    this.save();
    return this.progress(d);
  }

  progress(d) {
    const out = {
      status: d.status,
      handle: d.handle,
      detail: d.status === 'phase_done' || (d.status === 'running' && d.steps.length > 1)
        ? `${d.steps[d.phase]}% of traffic` : `${d.kind} ${d.status} (${d.polls}/${d.pollsNeeded} polls)`,
      url: `https://example.invalid/deploys/${encodeURIComponent(d.handle)}`,
      nextPollAfterMs: 0,
    };
    if (d.error) out.error = d.error;
    if (d.status === 'phase_done') out.phase = d.phase + 1;
    return out;
  }

  secretList(req) {
    const { map } = this.storeOf(req.target);
    return {
      secrets: [...map.entries()].sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([name, s]) => ({ name, updatedAt: s.updatedAt })),
    };
  }

  secretPut(req) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(req.name || '')) throw invalid('invalid secret name');
    if (req.publicKey && req.publicKey !== this.publicKey) {
      throw new OpError('conflict', 'the value was sealed to a key that is not this provider\'s');
    }
    let value;
    try {
      const sealed = sodium.from_base64(req.sealedValue || '', sodium.base64_variants.ORIGINAL);
      value = sodium.crypto_box_seal_open(sealed, this.keys.publicKey, this.keys.privateKey);
    } catch (e) {
      throw invalid('sealedValue does not open with this provider\'s key');
    }
    const { key, map } = this.storeOf(req.target);
    map.set(req.name, { value, updatedAt: new Date().toISOString() });
    log(`secret.put ${key} ${req.name} (${value.length} bytes)`);
    this.save();
    return {};
  }

  secretDelete(req) {
    const { key, map } = this.storeOf(req.target);
    const old = map.get(req.name || '');
    if (!old) throw notFound(`no secret ${JSON.stringify(req.name || '')} in ${key}`);
    sodium.memzero(old.value);
    map.delete(req.name);
    log(`secret.delete ${key} ${req.name}`);
    this.save();
    return {};
  }

  issue(req) {
    if (!req.orgdPublicKey) throw invalid('no orgdPublicKey to seal the credential to');
    let orgdKey;
    try {
      orgdKey = sodium.from_base64(req.orgdPublicKey, sodium.base64_variants.ORIGINAL);
    } catch (e) {
      throw invalid('orgdPublicKey is not base64');
    }
    if (orgdKey.length !== sodium.crypto_box_PUBLICKEYBYTES) throw invalid('orgdPublicKey is not 32 bytes');
    const id = `cred-${++this.counter}-${crypto.randomBytes(4).toString('hex')}`;
    const value = sodium.from_string(`example-credential-${crypto.randomBytes(24).toString('hex')}`);
    const sealed = sodium.crypto_box_seal(value, orgdKey);
    this.credentials.set(id, { name: req.name, issuedAt: new Date().toISOString(), revoked: false,
                               hash: this.hash(value) });
    sodium.memzero(value);
    log(`issue ${req.name} -> ${id}`);
    this.save();
    return { id, sealedValue: sodium.to_base64(sealed, sodium.base64_variants.ORIGINAL),
             expiresAt: new Date(Date.now() + 30 * 24 * 3600 * 1000).toISOString() };
  }

  revoke(req) {
    const c = this.credentials.get(req.id || '');
    if (!c) throw notFound(`no credential ${JSON.stringify(req.id || '')}`);
    c.revoked = true;
    log(`revoke ${req.id}`);
    this.save();
    return {};
  }

  health() {
    let secrets = 0;
    for (const m of this.secrets.values()) secrets += m.size;
    return { ok: true, detail: `${this.deploys.size} deploys, ${secrets} secrets held`,
             rateLimitRemaining: 1000, rateLimitLimit: 1000 };
  }

  // --- state file (for tests: never values) ----------------------------------------------

  hash(value) {
    return sodium.to_hex(sodium.crypto_generichash(32, value, this.hashKey));
  }

  save() {
    if (!this.opts.stateFile) return;
    const secrets = {};
    for (const [store, map] of this.secrets) {
      secrets[store] = {};
      for (const [name, s] of map) secrets[store][name] = { hash: this.hash(s.value), updatedAt: s.updatedAt };
    }
    const deploys = [...this.deploys.values()].map((d) => ({
      handle: d.handle, kind: d.kind, repo: d.repo, env: d.env, ref: d.ref, deployId: d.deployId,
      status: d.status, polls: d.polls, phase: d.phase + 1,
    }));
    const credentials = Object.fromEntries(this.credentials);
    const tmp = `${this.opts.stateFile}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ secrets, deploys, credentials }, null, 2));
    fs.renameSync(tmp, this.opts.stateFile);  // readers never see half a file
  }
}

const OPS = {
  'describe': (p, r) => p.describe(r),
  'validate': (p, r) => p.validate(r),
  'deploy.start': (p, r) => p.deployStart(r),
  'deploy.poll': (p, r) => p.deployPoll(r),
  'deploy.cancel': (p, r) => p.deployCancel(r),
  'deploy.advance': (p, r) => p.deployAdvance(r),
  'deploy.rollback': (p, r) => p.deployRollback(r),
  'secret.list': (p, r) => p.secretList(r),
  'secret.put': (p, r) => p.secretPut(r),
  'secret.delete': (p, r) => p.secretDelete(r),
  'issue': (p, r) => p.issue(r),
  'revoke': (p, r) => p.revoke(r),
  'health': (p, r) => p.health(r),
};

function log(line) {
  process.stderr.write(`${new Date().toISOString()} ${NAME}: ${line}\n`);
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${NAME}: ${e.message}\n`);
    process.exit(2);
  }
  if (opts.help) {
    process.stdout.write(HELP);
    return;
  }
  await sodium.ready;
  const provider = new Provider(opts);
  const options = { servers: opts.server.split(','), name: NAME, maxReconnectAttempts: -1 };
  if (opts.creds) {
    const { credsAuthenticator } = require('nats');
    options.authenticator = credsAuthenticator(fs.readFileSync(opts.creds));
  }
  const nc = await connect(options);
  const sc = StringCodec();
  // One queue group: several copies of the provider share the requests.
  const sub = nc.subscribe(`${opts.subject}.>`, { queue: NAME });
  provider.save();
  log(`serving ${opts.subject}.> on ${opts.server}`);

  const stop = async () => {
    log('stopping');
    await nc.drain();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  for await (const m of sub) {
    const op = m.subject.slice(opts.subject.length + 1);
    let reply;
    let failure;
    try {
      const handler = OPS[op];
      if (!handler) throw invalid(`unknown op ${JSON.stringify(op)}`);
      let request = {};
      const text = sc.decode(m.data);
      if (text.trim() !== '') {
        try {
          request = JSON.parse(text);
        } catch (e) {
          throw invalid('the request is not JSON');
        }
      }
      if (request === null || typeof request !== 'object' || Array.isArray(request)) {
        throw invalid('the request is not a JSON object');
      }
      reply = handler(provider, request);
    } catch (e) {
      failure = e instanceof OpError ? e : new OpError('internal', String(e && e.message || e));
      if (!(e instanceof OpError)) log(`${op}: ${e && e.stack || e}`);
    }
    if (!m.reply) continue;
    if (failure) {
      const h = headers();
      h.set(STATUS.error, failure.message);
      h.set(STATUS.code, String(HTTP_CODES[failure.code] || 500));
      const error = { code: failure.code, message: failure.message };
      if (failure.retryAfterMs) error.retryAfterMs = failure.retryAfterMs;
      m.respond(sc.encode(JSON.stringify({ error })), { headers: h });
    } else {
      m.respond(sc.encode(JSON.stringify(reply)));
    }
  }
  log('stopped');
}

main().catch((e) => {
  process.stderr.write(`${NAME}: ${e && e.message || e}\n`);
  process.exit(1);
});
