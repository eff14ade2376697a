// A real OpenID Provider for the gateway's black-box tests: panva's certified `oidc-provider`
// (pinned in package-lock.json, installed by `make test-deps`), run by the machine's Node.js.
//
// It listens on an ephemeral loopback port and prints one JSON line on stdout when it is
// ready, `{"issuer":"http://127.0.0.1:PORT"}`; the harness (tests/gateway/support/oidc.rs)
// waits for that line. It exits when its stdin closes, so a test process that dies cannot
// leave it behind.
//
// What it serves, all under the issuer:
// - discovery (`/.well-known/openid-configuration`), the JWKS, the token endpoint with the
//   client_credentials grant, introspection (RFC 7662) and revocation (RFC 7009);
// - resource indicators (RFC 8707): each resource below mints JWT access tokens (RFC 9068,
//   RS256) or opaque ones, with its own audience and lifetime;
// - a test-only admin surface under `/test-admin/`: `POST /test-admin/rotate` makes a new
//   signing key (a new `kid`) the current signer while the old ones stay published, and
//   `GET /test-admin/counts` tells how many introspection and JWKS requests were served.
//
// Key rotation: oidc-provider takes its keys when it is constructed, so a rotation builds a
// new Provider with the new key set and puts it behind the same HTTP server. Tokens survive
// it: the shipped memory adapter keeps its store at module level, shared by every instance.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

// The clients the tests use; their secrets are test constants, mirrored in support/oidc.rs.
const CLIENTS = [
  {
    // A service that gets tokens for itself (client_credentials) and revokes them.
    client_id: 'orders-service',
    client_secret: 'orders-service-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'orders:read orders:write',
  },
  {
    // The gateway: a protected resource that only introspects (no grants of its own).
    client_id: 'portcullis',
    client_secret: 'portcullis-introspection-secret',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  },
];

const SCOPES = 'orders:read orders:write';

// Resource indicator -> the resource server's tokens.
const RESOURCES = {
  // JWT access tokens for the orders API.
  'api://orders': { audience: 'api://orders', accessTokenFormat: 'jwt', accessTokenTTL: 300 },
  // The same audience, but a token that expires after one second (for expiry tests).
  'api://orders/brief': { audience: 'api://orders', accessTokenFormat: 'jwt', accessTokenTTL: 1 },
  // JWTs for another API: right issuer and keys, wrong audience for the orders API.
  'api://billing': { audience: 'api://billing', accessTokenFormat: 'jwt', accessTokenTTL: 300 },
  // Opaque access tokens for the orders API, validated by introspection.
  'api://orders/opaque': { audience: 'api://orders', accessTokenFormat: 'opaque', accessTokenTTL: 300 },
};

let kids = 0;

/// A fresh RSA signing key as a private JWK with a new `kid`.
function signingKey() {
  kids += 1;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `key-${kids}`, alg: 'RS256', use: 'sig' };
}

function configuration(keys) {
  return {
    clients: CLIENTS,
    scopes: ['openid', 'offline_access', ...SCOPES.split(' ')],
    jwks: { keys },
    // Sessions and interactions are never used; fixed cookie keys keep the provider quiet.
    cookies: { keys: [randomBytes(32).toString('hex')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // A client_credentials request must name its resource.
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo(ctx, resourceIndicator) {
          const server = RESOURCES[resourceIndicator];
          if (!server) {
            throw new errors.InvalidTarget();
          }
          return {
            scope: SCOPES,
            ...server,
            ...(server.accessTokenFormat === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
          };
        },
      },
    },
  };
}

// Newest key first: oidc-provider signs with the first key that fits the algorithm.
let keys = [signingKey()];
let issuer;
let handler;
const counts = { introspection: 0, jwks: 0 };

function build() {
  const provider = new Provider(issuer, configuration(keys));
  handler = provider.callback();
}

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function admin(req, res) {
  if (req.url === '/test-admin/rotate' && req.method === 'POST') {
    keys = [signingKey(), ...keys];
    build();
    json(res, 200, { kid: keys[0].kid, published: keys.map((k) => k.kid) });
  } else if (req.url === '/test-admin/counts' && req.method === 'GET') {
    json(res, 200, counts);
  } else {
    json(res, 404, { error: 'not_found' });
  }
}

const server = createServer((req, res) => {
  const path = (req.url || '').split('?')[0];
  if (path.startsWith('/test-admin/')) {
    admin(req, res);
    return;
  }
  if (path === '/token/introspection') counts.introspection += 1;
  if (path === '/jwks') counts.jwks += 1;
  handler(req, res);
});

server.listen(0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  build();
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// The harness holds our stdin open; when it closes (the test ended, or died), so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
