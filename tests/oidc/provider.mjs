// Loopback OpenID Provider for docket's integration tests. TEST HARNESS ONLY.
//
// Built on oidc-provider 9 (the certified Node.js OP) with no HTML forms: every
// interaction completes automatically, so an HTTP client that follows
// redirects *with a cookie jar* signs in without parsing any page.
//
// Usage:
//   node tests/oidc/provider.mjs --port <P> --clients '<json>'
//     clients: [{ "client_id", "client_secret", "redirect_uris": [...],
//                 "post_logout_redirect_uris": [...] }, ...]
//   --port 0 picks a free port; the READY line tells which.
//
// Listens on 127.0.0.1:<P> only, plain HTTP. Issuer: http://127.0.0.1:<P>
// (no trailing slash). Discovery: /.well-known/openid-configuration.
// Prints exactly one stdout line, "READY http://127.0.0.1:<P>", once it
// accepts connections; everything else (oidc-provider notices, the Node 22
// warning) goes to stderr. Exits 0 on SIGTERM/SIGINT.
//
// Endpoints (oidc-provider's default paths, as discovery lists them):
// /auth, /token, /me (userinfo), /jwks, /session/end (end_session_endpoint).
// OP cookies: op_interaction, op_interaction_resume (10 minutes, path-scoped)
// and op_session (path /); all httpOnly, SameSite=Lax, not Secure, unsigned.
// (Renamed from oidc-provider's _session etc.: cookie jars match on host, not
// port, so the RP under test on 127.0.0.1 shares the jar with this OP.)
//
// Sign-in redirect chain (fresh cookie jar, scope "openid email profile groups"):
//   1. GET  /auth?client_id=..&redirect_uri=..&response_type=code&scope=..
//           &state=..&nonce=..&code_challenge=..&code_challenge_method=S256
//        -> 303 Location: /interaction/<uid>          (relative)
//           Set-Cookie: op_interaction=<uid>; path=/interaction/<uid>
//           Set-Cookie: op_interaction_resume=<uid>; path=/auth/<uid>
//   2. GET  /interaction/<uid>   (needs the op_interaction cookie)
//        -> 303 Location: http://127.0.0.1:<P>/auth/<uid>
//           logs in as the "next login" and grants every requested scope/claim
//   3. GET  /auth/<uid>          (needs the op_interaction_resume cookie)
//        -> 303 Location: <redirect_uri>?code=..&state=..&iss=http%3A%2F%2F127.0.0.1%3A<P>
//           Set-Cookie: op_session=<id>; path=/ (the OP's SSO session)
//   So: three redirects, the third one to the client. A later /auth with the
//   same jar, the same login (see /__test/next-login) and no new scopes goes
//   straight to step 3's result (one redirect). If the jar's session belongs
//   to another login than the next one, the OP first ends that session:
//   /auth -> /interaction/<uid> -> /auth/<uid> -> /__test/logout-confirm
//   -> /auth/<uid> -> redirect_uri (five redirects).
//
// RP-initiated logout chain:
//   GET /session/end?client_id=..&post_logout_redirect_uri=..&state=..
//       (or id_token_hint=..)                        -> 303 /__test/logout-confirm?xsrf=..
//   GET /__test/logout-confirm?xsrf=..               -> 303 <post_logout_redirect_uri>?state=..
//       (deletes op_session; without post_logout_redirect_uri -> /session/end/success)
//
// Test controls (JSON bodies, all answer 204; none exists in a real OP):
//   POST /__test/accounts    { "<login>": { "email", "name", "groups": [..] } }
//        merged into the account table. Any login name is accepted; unknown
//        logins get email = login (if it has '@') else login@smith-jones.test,
//        name = login, groups = [], email_verified = true. sub = login.
//   POST /__test/next-login  { "login": "alice" }   who the following
//        interactions log in as; sticky until changed; default "alice".
//   POST /__test/tamper      { "mode": null | "bad-signature" | "expired"
//        | "wrong-audience" | "wrong-nonce" | "wrong-issuer" | "future-iat"
//        | "iat-ahead-60s" | "pad-100k" | "pad-1m" | "unknown-kid" }
//        sticky until changed; rewrites id_token in every successful
//        authorization_code token response (see tamperIdToken below).
//   POST /__test/rotate-key  {}  a new signing key with a new kid: /jwks
//        lists only the new key from now on and ID tokens are signed with it.
//   GET  /__test/counts      -> 200 { "jwks": <requests to /jwks so far> }
//
// Clients are confidential; client_secret_basic and client_secret_post both
// work. PKCE S256 is optional but verified when a code_challenge was sent.
// ID tokens are RS256 and carry the claims of every granted scope.

import * as http from 'node:http';
import { parseArgs } from 'node:util';

// Keep stdout for the READY line only: oidc-provider prints notices with
// console.info, send all of that to stderr.
for (const name of ['log', 'info', 'debug']) {
  console[name] = (...args) => console.error(...args);
}

const { default: Provider, interactionPolicy } = await import('oidc-provider');
const jose = await import('jose');

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    clients: { type: 'string' },
  },
});

if (args.port === undefined || args.clients === undefined) {
  console.error("usage: node provider.mjs --port <P> --clients '<json array>'");
  process.exit(2);
}

const HOST = '127.0.0.1';

const clients = JSON.parse(args.clients).map((c) => ({
  client_id: c.client_id,
  client_secret: c.client_secret,
  redirect_uris: c.redirect_uris,
  post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  // client_secret_post is accepted for client_secret_basic clients too.
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
}));

// Bind first so that --port 0 works; the issuer needs the real port.
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), HOST, resolve);
});
const { port } = server.address();
const ISSUER = `http://${HOST}:${port}`;

// ---- signing key -----------------------------------------------------------
const KID = 'docket-test-rs256';
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
const privateJwk = { ...(await jose.exportJWK(privateKey)), kid: KID, alg: 'RS256', use: 'sig' };

// ---- test state ------------------------------------------------------------
const accounts = new Map();
let nextLogin = 'alice';
let tamperMode = null;
const TAMPER_MODES = new Set([
  'bad-signature', 'expired', 'wrong-audience', 'wrong-nonce', 'wrong-issuer',
  'future-iat', 'iat-ahead-60s', 'pad-100k', 'pad-1m', 'unknown-kid',
]);
// After /__test/rotate-key: { privateKey, publicJwk } signing from then on.
let rotated = null;
let jwksRequests = 0;

function accountFor(login) {
  const def = accounts.get(login) ?? {};
  return {
    email: def.email ?? (login.includes('@') ? login : `${login}@smith-jones.test`),
    email_verified: def.email_verified ?? true,
    name: def.name ?? login,
    groups: def.groups ?? [],
  };
}

// ---- provider --------------------------------------------------------------
const policy = interactionPolicy.base();
// Re-authenticate when the jar's OP session belongs to someone other than the
// login the test asked for, so one cookie jar can switch users.
policy.get('login').checks.add(new interactionPolicy.Check(
  'test_next_login',
  'the test harness switched the next login',
  (ctx) => (ctx.oidc.session.accountId && ctx.oidc.session.accountId !== nextLogin
    ? interactionPolicy.Check.REQUEST_PROMPT
    : interactionPolicy.Check.NO_NEED_TO_PROMPT),
));

const provider = new Provider(ISSUER, {
  clients,
  jwks: { keys: [privateJwk] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: {
    acr: null,
    sid: null,
    auth_time: null,
    iss: null,
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put the claims of granted scopes into the ID token, not only userinfo.
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  pkce: { required: () => false },
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...accountFor(id) };
      },
    };
  },
  cookies: {
    names: {
      session: 'op_session',
      interaction: 'op_interaction',
      resume: 'op_interaction_resume',
    },
  },
  interactions: {
    policy,
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      // The form (with its xsrf secret) is turned into a redirect by
      // autoSubmitLogout below.
      async logoutSource(ctx, form) {
        ctx.body = form;
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'text';
        ctx.body = 'signed out\n';
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
    RefreshToken: 86400,
  },
});
provider.proxy = false;

async function readJson(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

// provider.use() middlewares run before oidc-provider's own routes, in order.

// 1. Test controls.
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/__test/')) return next();

  if (ctx.method === 'GET' && ctx.path === '/__test/logout-confirm') {
    // Browsers would auto-submit a POST form to /session/end/confirm; do that
    // POST on the client's behalf, with its cookies, and relay the answer.
    const res = await fetch(`${ISSUER}/session/end/confirm`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        ...(ctx.get('cookie') ? { cookie: ctx.get('cookie') } : {}),
      },
      body: new URLSearchParams({ xsrf: String(ctx.query.xsrf ?? ''), logout: 'yes' }).toString(),
      redirect: 'manual',
    });
    for (const cookie of res.headers.getSetCookie()) ctx.append('Set-Cookie', cookie);
    ctx.status = res.status;
    if (res.headers.get('location')) ctx.set('Location', res.headers.get('location'));
    if (res.headers.get('content-type')) ctx.type = res.headers.get('content-type');
    ctx.set('Cache-Control', 'no-store');
    ctx.body = await res.text();
    return undefined;
  }

  if (ctx.method === 'GET' && ctx.path === '/__test/counts') {
    ctx.type = 'json';
    ctx.body = { jwks: jwksRequests };
    return undefined;
  }

  if (ctx.method !== 'POST') {
    ctx.status = 405;
    return undefined;
  }

  let body;
  try {
    body = await readJson(ctx);
  } catch {
    ctx.status = 400;
    ctx.body = { error: 'invalid JSON' };
    return undefined;
  }

  switch (ctx.path) {
    case '/__test/accounts':
      for (const [login, def] of Object.entries(body)) {
        accounts.set(login, { ...(accounts.get(login) ?? {}), ...def });
      }
      break;
    case '/__test/next-login':
      if (typeof body.login !== 'string' || !body.login) {
        ctx.status = 400;
        ctx.body = { error: 'login must be a non-empty string' };
        return undefined;
      }
      nextLogin = body.login;
      break;
    case '/__test/tamper':
      if (body.mode !== null && body.mode !== undefined && !TAMPER_MODES.has(body.mode)) {
        ctx.status = 400;
        ctx.body = { error: `unknown mode ${JSON.stringify(body.mode)}` };
        return undefined;
      }
      tamperMode = body.mode ?? null;
      break;
    case '/__test/rotate-key': {
      const pair = await jose.generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
      const kid = `docket-test-rotated-${Date.now()}`;
      const publicJwk = { ...(await jose.exportJWK(pair.publicKey)), kid, alg: 'RS256', use: 'sig' };
      rotated = { privateKey: pair.privateKey, publicJwk };
      break;
    }
    default:
      ctx.status = 404;
      return undefined;
  }
  ctx.status = 204;
  return undefined;
});

// 2. Automatic interactions: log in as nextLogin and grant everything asked.
provider.use(async (ctx, next) => {
  if (ctx.method !== 'GET' || !/^\/interaction\/[^/]+$/.test(ctx.path)) return next();

  ctx.set('Cache-Control', 'no-store');
  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch (err) {
    ctx.status = 400;
    ctx.body = {
      error: err.error ?? 'invalid_request',
      error_description: `${err.error_description ?? err.message} (does the client keep cookies?)`,
    };
    return undefined;
  }

  const { prompt, params, session } = details;
  const result = {};
  let accountId = session?.accountId;
  let grant;
  if (prompt.name === 'login' || !accountId) {
    accountId = nextLogin;
    result.login = { accountId };
  } else if (details.grantId) {
    grant = await provider.Grant.find(details.grantId);
  }
  grant ??= new provider.Grant({ accountId, clientId: params.client_id });

  if (params.scope) grant.addOIDCScope(params.scope);
  const claims = new Set(prompt.details.missingOIDCClaims ?? []);
  if (params.claims) {
    try {
      const requested = JSON.parse(params.claims);
      for (const part of ['id_token', 'userinfo']) {
        for (const claim of Object.keys(requested[part] ?? {})) claims.add(claim);
      }
    } catch { /* oidc-provider has already rejected malformed claims */ }
  }
  if (claims.size) grant.addOIDCClaims([...claims]);
  for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  result.consent = { grantId: await grant.save() };

  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: false,
  });
  ctx.status = 303;
  ctx.redirect(returnTo);
  return undefined;
});

// 3. Turn the OP's auto-submitting logout forms (RP-initiated logout and the
//    account switch during resume) into a redirect to /__test/logout-confirm.
provider.use(async (ctx, next) => {
  await next();
  if (typeof ctx.body !== 'string' || !ctx.body.includes('/session/end/confirm')) return;
  const action = /<form[^>]*action="[^"]*\/session\/end\/confirm"/.exec(ctx.body);
  const xsrf = /name="xsrf" value="([^"]*)"/.exec(ctx.body);
  if (!action || !xsrf) return;
  ctx.status = 303;
  ctx.redirect(`${ISSUER}/__test/logout-confirm?${new URLSearchParams({ xsrf: xsrf[1] })}`);
});

// 4. Tamper with ID tokens in authorization_code token responses.
function b64json(segment) {
  return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
}

async function tamperIdToken(idToken, mode) {
  const [h, p, s] = idToken.split('.');
  if (mode === null) {
    // Key rotation only: the same claims, signed with the rotated key.
    const header = { ...b64json(h), kid: rotated.publicJwk.kid };
    return new jose.CompactSign(Buffer.from(JSON.stringify(b64json(p))))
      .setProtectedHeader(header)
      .sign(rotated.privateKey);
  }
  if (mode === 'bad-signature') {
    const sig = Buffer.from(s, 'base64url');
    for (let i = 0; i < sig.length; i += 1) sig[i] ^= 0x5a;
    return `${h}.${p}.${sig.toString('base64url')}`;
  }
  const header = b64json(h);
  const payload = b64json(p);
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'expired':
      payload.iat = now - 2 * 3600;
      payload.exp = now - 2 * 3600 + 60;
      if (payload.auth_time !== undefined) payload.auth_time = payload.iat;
      break;
    case 'wrong-audience':
      payload.aud = 'someone-else';
      break;
    case 'wrong-nonce':
      payload.nonce = 'not-the-nonce';
      break;
    case 'wrong-issuer':
      payload.iss = 'http://127.0.0.1:1/evil';
      break;
    case 'future-iat':
      payload.iat = now + 10 * 365 * 86400;
      payload.exp = payload.iat + 3600;
      break;
    case 'iat-ahead-60s':
      payload.iat = now + 60;
      break;
    case 'pad-100k':
      payload.padding = 'x'.repeat(100 * 1024);
      break;
    case 'pad-1m':
      payload.padding = 'x'.repeat(1024 * 1024);
      break;
    case 'unknown-kid': {
      const stranger = await jose.generateKeyPair('RS256', { modulusLength: 2048 });
      return new jose.CompactSign(Buffer.from(JSON.stringify(payload)))
        .setProtectedHeader({ ...header, kid: 'nobody-knows-this-kid' })
        .sign(stranger.privateKey);
    }
    default:
      throw new Error(`unknown tamper mode ${mode}`);
  }
  // Same protected header (alg RS256, kid), same key: only the claims differ.
  const key = rotated ? rotated.privateKey : privateKey;
  if (rotated) header.kid = rotated.publicJwk.kid;
  return new jose.CompactSign(Buffer.from(JSON.stringify(payload)))
    .setProtectedHeader(header)
    .sign(key);
}

// The key set: counted, and after a rotation only the rotated key.
provider.use(async (ctx, next) => {
  if (ctx.method !== 'GET' || ctx.path !== '/jwks') return next();
  jwksRequests += 1;
  if (!rotated) return next();
  ctx.type = 'application/jwk-set+json';
  ctx.body = { keys: [{ kty: rotated.publicJwk.kty, n: rotated.publicJwk.n, e: rotated.publicJwk.e, kid: rotated.publicJwk.kid, alg: 'RS256', use: 'sig' }] };
  return undefined;
});

provider.use(async (ctx, next) => {
  await next();
  if (
    (tamperMode || rotated)
    && ctx.method === 'POST'
    && ctx.path === '/token'
    && ctx.status === 200
    && ctx.body
    && typeof ctx.body === 'object'
    && typeof ctx.body.id_token === 'string'
    && ctx.oidc?.params?.grant_type === 'authorization_code'
  ) {
    ctx.body = { ...ctx.body, id_token: await tamperIdToken(ctx.body.id_token, tamperMode) };
  }
});

provider.on('server_error', (_ctx, err) => console.error('server_error', err));

server.on('request', provider.callback());
process.stdout.write(`READY ${ISSUER}\n`);

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
