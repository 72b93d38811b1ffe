// The test identity provider: panva's oidc-provider (a certified OpenID Connect implementation),
// configured for orgwarden's tests. Nothing here implements OpenID Connect; it only configures it.
//
//   node server.mjs            environment: IDP_PORT, IDP_CLIENTS (JSON list of client metadata)
//
// Listens on 127.0.0.1 only and prints "READY <issuer>" once it accepts connections.
// Sign-in uses the provider's own development login form (devInteractions): any login, any password;
// the login is the account id, and the account's claims come from the accounts the test registers.
// Test-only endpoints (under /__test/) let a test register accounts, deactivate one
// ({"login": ..., "disabled": true}: the provider no longer finds it, so its refresh tokens get
// invalid_grant, as Okta, Entra and Keycloak answer for a deactivated user), make the token endpoint
// fail ({"mode": "down"} drops the connection, {"mode": "error"} answers 503, {"mode": null} heals it),
// and have the NEXT token response's ID token tampered with (signed by an unpublished key, expired, for
// another audience, ...), which is how the refusals of bad ID tokens are exercised end to end.
//
// Refresh tokens: a client allowed the refresh_token grant gets one with every code exchange (as
// Keycloak does, and Okta with offline_access; the provider would otherwise drop offline_access unless
// prompt=consent is sent), it does not end with the provider's browser session (an offline grant), and
// every use rotates it (as Okta's rotation does): a client that does not keep the new one is refused.
import { generateKeyPair, exportJWK, decodeJwt, decodeProtectedHeader, SignJWT } from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT || 0);
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.IDP_CLIENTS || '[]');

const accounts = new Map(); // login -> { email, email_verified, name, groups, disabled }
let nextTamper = null;
let outage = null; // null | 'down' | 'error': what the token endpoint does

const signing = await generateKeyPair('RS256', { extractable: true });
const forger = await generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await exportJWK(signing.privateKey)), kid: 'test-key-1', alg: 'RS256', use: 'sig' };

const configuration = {
  clients,
  jwks: { keys: [jwk] },
  cookies: { keys: ['orgwarden-test-idp-cookie-key-not-secret'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  conformIdTokenClaims: false, // claims in the ID token, as Okta, Google and Keycloak send them
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  expiresWithSession: async () => false,
  rotateRefreshToken: true,
  // First-party clients: no consent screen (the grant is made on sign-in).
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(ctx.oidc.requestParamScopes ? [...ctx.oidc.requestParamScopes].join(' ') : 'openid email profile groups');
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'groups']);
    await grant.save();
    return grant;
  },
  findAccount: async (ctx, id) => {
    const known = accounts.get(id) || {};
    if (known.disabled) return undefined; // deactivated: sign-in and refresh grants are refused
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: known.email ?? id,
          email_verified: known.email_verified ?? true,
          name: known.name ?? id,
          groups: known.groups ?? [],
        };
      },
    };
  },
  ttl: {
    AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 86400,
    RefreshToken: 86400,
  },
  renderError: async (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, err) => console.error('server_error', err));

async function tamper(idToken, mode) {
  const claims = decodeJwt(idToken);
  const header = decodeProtectedHeader(idToken);
  const now = Math.floor(Date.now() / 1000);
  let key = signing.privateKey;
  switch (mode) {
    case 'forged': key = forger.privateKey; break; // same kid, a key the JWKS does not have
    case 'expired': claims.iat = now - 7200; claims.exp = now - 3600; break;
    case 'wrong_audience': claims.aud = 'some-other-client'; break;
    case 'wrong_issuer': claims.iss = 'http://127.0.0.1:1/elsewhere'; break;
    case 'wrong_nonce': claims.nonce = 'not-the-nonce-you-sent'; break;
    case 'unsigned': {
      const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
      return `${enc({ alg: 'none', typ: 'JWT' })}.${enc(claims)}.`;
    }
    case 'bad_signature': {
      const [h, p, s] = idToken.split('.');
      const flipped = (s[0] === 'A' ? 'B' : 'A') + s.slice(1);
      return `${h}.${p}.${flipped}`;
    }
    default: throw new Error(`unknown tamper mode ${mode}`);
  }
  return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: header.kid }).sign(key);
}

provider.use(async (ctx, next) => {
  if (ctx.path.startsWith('/__test/') && ctx.method === 'POST') {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
    if (ctx.path === '/__test/accounts') {
      accounts.set(body.login, { ...(accounts.get(body.login) || {}), ...body });
    } else if (ctx.path === '/__test/outage') {
      outage = body.mode || null;
    } else if (ctx.path === '/__test/tamper') {
      nextTamper = body.mode || null;
    } else {
      ctx.status = 404;
      return;
    }
    ctx.status = 204;
    return;
  }
  if (ctx.path === '/token' && outage === 'down') {
    ctx.req.socket.destroy(); // as if the provider were unreachable: no answer at all
    return;
  }
  if (ctx.path === '/token' && outage === 'error') {
    ctx.status = 503;
    ctx.type = 'text/plain';
    ctx.body = 'service unavailable';
    return;
  }
  await next();
  if (ctx.path === '/token' && nextTamper && ctx.body && ctx.body.id_token) {
    const mode = nextTamper;
    nextTamper = null;
    ctx.body = { ...ctx.body, id_token: await tamper(ctx.body.id_token, mode) };
  }
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
