//! The YAML file format, exactly as a user writes it.
//!
//! Every struct denies unknown fields: a misspelt key is an error, never a silently ignored
//! setting. Nothing here is used on the hot path; `config::compile` turns these into runtime
//! structures once, at start-up.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    pub listeners: Vec<ListenerSection>,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub access_log: AccessLogSection,
    #[serde(default)]
    pub identity_providers: BTreeMap<String, ProviderSection>,
    /// Proxies in front of the gateway whose `X-Forwarded-For` entries are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Additions to (and exceptions from) the identity namespace the gateway owns.
    #[serde(default)]
    pub identity_headers: IdentityHeadersSection,
    /// API keys: the consumers file and where keys are read.
    pub api_keys: Option<ApiKeysSection>,
    /// Rate limits: the backend, consumer tiers and a global limit.
    pub rate_limits: Option<RateLimitsSection>,
    /// Revoked tokens and subjects, and the admin API that feeds them.
    pub revocation: Option<RevocationSection>,
    /// HMAC-signed requests (RFC 9421): the keys, the window and the nonce store.
    pub request_signing: Option<RequestSigningSection>,
    /// How a verified client certificate (mTLS) names the caller, and how its facts are
    /// forwarded.
    #[serde(default)]
    pub client_certificates: ClientCertificatesSection,
    pub upstreams: BTreeMap<String, UpstreamSection>,
    pub routes: Vec<RouteSection>,
    /// CORS for every route that has no `cors` of its own.
    pub cors: Option<CorsSection>,
    /// Auth services that decide requests (`auth: { forward_auth: NAME }`), by name.
    #[serde(default)]
    pub forward_auth: BTreeMap<String, ForwardAuthSection>,
    /// OPA servers whose decisions routes take (`auth: { opa: NAME }`), by name.
    #[serde(default)]
    pub opa: BTreeMap<String, OpaSection>,
}

/// An OPA server: the Data API address of the document that decides, and how it is called.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpaSection {
    /// `http(s)://HOST/v1/data/PACKAGE/RULE`, POSTed `{"input": ...}`.
    pub url: String,
    /// Per call, and the longest wait for a free slot (default 1s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Request headers the input document carries (never `Authorization`).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Headers an allowing result (`{"allow": true, "headers": {...}}`) may add to the
    /// upstream request; all in the identity namespace.
    #[serde(default)]
    pub result_headers: Vec<String>,
    /// Keep decisions per input; off when absent.
    pub cache: Option<OpaCacheSection>,
    /// Calls in flight at most (default 64).
    pub max_concurrent: Option<usize>,
    /// Of those, at most this many for one client address (default a quarter).
    pub max_concurrent_per_client: Option<usize>,
    #[serde(default)]
    pub breaker: BreakerSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpaCacheSection {
    /// How long a decision is reused (1s to 1h).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Entries kept at most (default 10000).
    pub capacity: Option<u64>,
}

/// A ForwardAuth service: where it is, and which headers go to it and come back from it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthSection {
    /// `http://` or `https://` URL the gateway sends its `GET` to.
    pub url: String,
    /// Per call, and the longest wait for a free slot (default 1s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Client request headers the service sees (e.g. `Authorization`, `Cookie`).
    #[serde(default)]
    pub request_headers: Vec<String>,
    /// The service's response headers copied to the upstream request on a 2xx; all in the
    /// identity namespace.
    #[serde(default)]
    pub response_headers: Vec<String>,
    /// The response header whose value names the caller (one of `response_headers`).
    pub subject_header: Option<String>,
    /// The response header (one of `response_headers`) whose comma-separated values are the
    /// caller's roles, which route requirements (`roles`) then check.
    pub roles_header: Option<String>,
    /// Calls in flight at most (default 64).
    pub max_concurrent: Option<usize>,
    /// Of those, at most this many for one client address (default a quarter).
    pub max_concurrent_per_client: Option<usize>,
    #[serde(default)]
    pub breaker: BreakerSection,
}

/// CORS for browser clients: the origins whose pages may read the responses, and what a
/// preflight allows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// `https://app.example.com` exactly, `https://*.example.com` (any subdomain), or `*`.
    pub allowed_origins: Vec<String>,
    /// Default: the route's methods, or GET, HEAD and POST for a route that takes any.
    pub allowed_methods: Option<Vec<String>>,
    /// Request headers a page may send (`Authorization`, `Content-Type`, ...).
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers a page may read besides the CORS-safelisted ones.
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    /// Let pages send cookies and HTTP authentication (`credentials: "include"`).
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer (default 10m, at most 24h).
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

/// A JWT issuer whose tokens the gateway accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// Compared exactly with the token's `iss`.
    pub issuer: String,
    /// The token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Exact algorithm names (RS256, PS256, ES256, EdDSA, HS256, ...); `none` never.
    /// Needed with `keys`.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Where the keys that verify its JWTs come from; absent for a provider whose tokens
    /// are only introspected.
    pub keys: Option<KeySourceSection>,
    /// Its OAuth2 introspection endpoint (RFC 7662), for opaque tokens.
    pub introspection: Option<IntrospectionSection>,
    #[serde(default, with = "humantime_serde")]
    pub leeway: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max_token_age: Option<Duration>,
    pub require_exp: Option<bool>,
    /// Required `typ` header, e.g. `at+jwt` (RFC 9068).
    pub typ: Option<String>,
    /// Largest accepted token in bytes (default 8192).
    pub max_token_bytes: Option<usize>,
    #[serde(default)]
    pub claims: ClaimsSection,
    #[serde(default)]
    pub cache: TokenCacheSection,
    #[serde(default)]
    pub jwks: JwksSection,
}

/// A provider's token introspection endpoint and how it is called.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionSection {
    /// The endpoint (https; http only to a loopback address).
    pub endpoint: Option<String>,
    /// Find `introspection_endpoint` in `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    pub client_id: String,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    pub client_auth: Option<ClientAuthSection>,
    /// Sent as `token_type_hint` (default `access_token`; empty: not sent).
    pub token_type_hint: Option<String>,
    /// Per call, and the longest wait for a free slot (default 1s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Calls in flight at most (default 64).
    pub max_concurrent: Option<usize>,
    /// Also introspect JWTs that verified locally (catches their revocation).
    #[serde(default)]
    pub introspect_jwts: bool,
    #[serde(default)]
    pub cache: IntrospectionCacheSection,
    #[serde(default)]
    pub breaker: BreakerSection,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthSection {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionCacheSection {
    /// Entries kept at most (default 100000).
    pub capacity: Option<u64>,
    /// Longest an active answer is reused (default 2m); never past the token's `exp`.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// How long an inactive answer is reused (default 10s).
    #[serde(default, with = "humantime_serde")]
    pub inactive_ttl: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Consecutive failed calls that open the circuit (default 5).
    pub failures: Option<u32>,
    /// How long it stays open before one probe call is let through (default 10s).
    #[serde(default, with = "humantime_serde")]
    pub open_for: Option<Duration>,
}

/// The revocation list and its admin API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationSection {
    /// The bearer token of `POST/GET/DELETE /admin/revocations` (read from this file).
    pub admin_token_file: Option<String>,
    /// Where a gateway without Redis keeps the list across restarts.
    pub state_file: Option<String>,
    /// Share the list with every gateway using this Redis.
    pub redis: Option<RedisStoreSection>,
    /// How long a `jti` or token entry posted without `expires_at` is kept (default 24h).
    #[serde(default, with = "humantime_serde")]
    pub default_ttl: Option<Duration>,
    /// Entries at most (default 100000).
    pub max_entries: Option<usize>,
}

/// A Redis that holds shared state: the revocation list, or signed requests' nonces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisStoreSection {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of the keys (and of the revocation channel); default `portcullis:`.
    pub key_prefix: Option<String>,
    /// Per command (default 250ms for the revocation list, 100ms for nonces).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// How a `jwks_uri` is fetched.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksSection {
    /// Refresh interval without `Cache-Control: max-age` (default 5m).
    #[serde(default, with = "humantime_serde")]
    pub refresh: Option<Duration>,
    /// `max-age` is honoured between these (defaults 30s and 1h).
    #[serde(default, with = "humantime_serde")]
    pub min_refresh: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max_refresh: Option<Duration>,
    /// Least time between fetches triggered by unknown `kid`s (default 10s).
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
    /// How long the last good keys serve while fetching fails (default 1h).
    #[serde(default, with = "humantime_serde")]
    pub max_stale: Option<Duration>,
    /// Per fetch (default 5s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Largest accepted document (default 1 MiB).
    pub max_bytes: Option<usize>,
}

/// The verified-token cache of a provider.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheSection {
    /// Entries kept at most (default 100000); 0 turns the cache off.
    pub capacity: Option<u64>,
    /// Longest an entry lives (default 5m); never longer than the token's `exp`.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
}

/// Where a provider's keys come from: exactly one of these.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySourceSection {
    /// A PEM public key or certificate.
    pub pem_file: Option<String>,
    /// A JWKS document on disk.
    pub jwks_file: Option<String>,
    /// A JWKS served by the provider (https; http only on loopback).
    pub jwks_uri: Option<String>,
    /// Find `jwks_uri` in `{issuer}/.well-known/openid-configuration` (OIDC discovery).
    #[serde(default)]
    pub oidc_discovery: bool,
    /// An HMAC secret read from this file (trailing newline removed).
    pub hmac_secret_file: Option<String>,
    /// An HMAC secret read from this environment variable.
    pub hmac_secret_env: Option<String>,
    /// `kid` of a PEM key or HMAC secret (tokens without a kid use the only key).
    pub kid: Option<String>,
}

/// Where identity comes from in the token: dotted paths into the claims.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsSection {
    /// Default `sub`.
    pub subject: Option<String>,
    pub roles: Option<String>,
    /// Default: `scope` (space-delimited) and `scp` (array).
    pub scopes: Option<String>,
    pub permissions: Option<String>,
    pub tenant: Option<String>,
    pub email: Option<String>,
    pub client_id: Option<String>,
    /// Header name -> claim path, for anything else the backend needs.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsSection {
    /// `local` (default): in-process, shared by the worker threads.
    pub backend: Option<RateLimitBackend>,
    /// Most keys the local backend tracks at once (default 100000).
    pub max_keys: Option<u64>,
    /// The shared backend, for `backend: redis`.
    pub redis: Option<RedisSection>,
    /// Named limits a consumer can be given (`tier:` in the consumers file), counted per
    /// consumer; they replace a route's limit for that consumer.
    #[serde(default)]
    pub tiers: BTreeMap<String, LimitSection>,
    /// One limit over every request.
    pub global: Option<LimitSection>,
    /// Brute-force guard: too many failed authentications from one address block it.
    pub failed_auth: Option<FailedAuthSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedAuthSection {
    /// Failed authentications (401) allowed per address and window.
    pub failures: u64,
    pub per: Per,
    /// How long an address that went over is refused (429) on protected routes.
    #[serde(with = "humantime_serde")]
    pub block: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitBackend {
    Local,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://host:port/db`.
    pub url: String,
    /// Bound on every Redis call (default 20ms).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// When Redis does not answer: `fail_open` (default: count in the local limiter) or
    /// `fail_closed` (503).
    pub on_error: Option<OnRedisError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    FailOpen,
    FailClosed,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    Second,
    Minute,
    Hour,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    /// What it is counted per: consumer, api_key, subject, tenant, client_address, or
    /// `header:NAME` (default client_address; tiers are always per consumer).
    pub key: Option<String>,
    pub requests: u64,
    pub per: Per,
    /// Requests allowed at once (default: `requests`).
    pub burst: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysSection {
    /// YAML file of consumers and their key digests; reloaded on change and on SIGHUP.
    pub consumers_file: String,
    /// `live` (default) or `test`: keys of the other environment are refused.
    pub environment: Option<crate::auth::api_key::Environment>,
    /// Headers a key is read from (default `[X-API-Key]`).
    pub headers: Option<Vec<String>>,
    /// Also read keys from this query parameter (off by default); it is removed before
    /// forwarding.
    pub query_param: Option<String>,
    /// A secret of at least 32 bytes: digests are then HMAC-SHA256 with it.
    pub pepper_file: Option<String>,
    /// How often the consumers file is checked for changes (default 1s).
    #[serde(default, with = "humantime_serde")]
    pub reload_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeadersSection {
    /// More prefixes the gateway owns, e.g. `X-Gw-`.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// More single header names the gateway owns.
    #[serde(default)]
    pub names: Vec<String>,
    /// Client headers inside the namespace that may pass (never the ones the gateway sets).
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `auth: public`, or a policy: credentials, requirements, networks, mode.
#[derive(Debug)]
pub enum RouteAuthSection {
    Public,
    Policy(Box<PolicySection>),
}

impl<'de> Deserialize<'de> for RouteAuthSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // A string or a mapping; decided by hand so that a mistyped key inside the mapping
        // is reported as such, not as "did not match any variant".
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) if s == "public" => Ok(Self::Public),
            serde_yaml::Value::String(s) => Err(D::Error::custom(format!(
                "\"{s}\" is not a policy: use `public` or a mapping such as `{{ jwt: PROVIDER }}`"
            ))),
            v @ serde_yaml::Value::Mapping(_) => PolicySection::deserialize(v)
                .map(|p| Self::Policy(Box::new(p)))
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "use `public` or a mapping such as `{ jwt: PROVIDER }`",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// `true`: no credential needed (network rules and `mode` still apply).
    #[serde(default)]
    pub public: bool,
    pub jwt: Option<String>,
    /// A bearer token the provider's introspection endpoint says is active.
    pub introspection: Option<String>,
    /// `true`: a key from the consumers file.
    #[serde(default)]
    pub api_key: bool,
    /// `true`: a verified client certificate (mTLS listener).
    #[serde(default)]
    pub mtls: bool,
    /// `true`: an HMAC-signed request (RFC 9421) with a key of the signing keys file.
    #[serde(default)]
    pub hmac: bool,
    /// This ForwardAuth service (top-level `forward_auth`) allows the request.
    pub forward_auth: Option<String>,
    pub any: Option<Vec<CredentialSection>>,
    pub all: Option<Vec<CredentialSection>>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Method -> the permission it needs on this route.
    #[serde(default)]
    pub method_permissions: BTreeMap<String, String>,
    pub networks: Option<NetworksSection>,
    /// When the route is open: weekdays and hours in a time zone.
    pub during: Option<TimeWindowSection>,
    /// A Rego policy whose rule decides, after the credential and the requirements.
    pub rego: Option<RegoSection>,
    /// This OPA server (top-level `opa`) decides, after the credential, the requirements
    /// and `rego`.
    pub opa: Option<String>,
    pub mode: Option<ModeSection>,
    #[serde(default)]
    pub keep_authorization: bool,
    /// Certificate identities the `mtls` credential accepts on this route (exact, or a
    /// prefix ending in `*`).
    #[serde(default)]
    pub client_subjects: Vec<String>,
    /// Bearer tokens must be bound to the client certificate (RFC 8705).
    #[serde(default)]
    pub bound_tokens: bool,
}

/// One credential inside `any` / `all`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSection {
    pub jwt: Option<String>,
    /// A provider's opaque tokens, checked by introspection.
    pub introspection: Option<String>,
    #[serde(default)]
    pub api_key: bool,
    #[serde(default)]
    pub mtls: bool,
    #[serde(default)]
    pub hmac: bool,
    pub forward_auth: Option<String>,
}

/// `rego: { policy: authz.rego, query: data.gateway.authz.allow }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegoSection {
    /// The `.rego` file.
    pub policy: String,
    /// The rule whose value decides, `data.PACKAGE.RULE`.
    pub query: String,
    /// A JSON file, the policy's `data`.
    pub data: Option<String>,
    /// Request headers the policy may read (`input.headers`, lower-case names).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Headers an allowing result (`{"allow": true, "headers": {...}}`) may add to the
    /// upstream request; all in the identity namespace.
    #[serde(default)]
    pub result_headers: Vec<String>,
}

/// `during: { timezone: Europe/Berlin, days: [mon-fri], from: "08:00", to: "18:00" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindowSection {
    /// An IANA time zone name (default `UTC`).
    pub timezone: Option<String>,
    /// Days (`mon`..`sun`) and ranges (`mon-fri`); default every day.
    pub days: Option<Vec<String>>,
    /// `HH:MM`, default `00:00`.
    pub from: Option<String>,
    /// `HH:MM` or `24:00`, default `24:00`; before `from`: the window runs overnight.
    pub to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworksSection {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeSection {
    Enforce,
    Report,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Worker threads of the proxy service.
    pub threads: Option<usize>,
    /// Let idle worker threads steal work from busy ones (Pingora's `work_stealing`); by
    /// default on with more than one thread, off with one.
    pub work_stealing: Option<bool>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub error_log: Option<String>,
    /// How long a terminating instance keeps accepting before it starts shutting down.
    #[serde(default, with = "humantime_serde")]
    pub grace_period: Option<Duration>,
    /// How long in-flight requests get to finish once shutdown has started.
    #[serde(default, with = "humantime_serde")]
    pub graceful_shutdown_timeout: Option<Duration>,
    /// How long a client connection may stay idle between requests (HTTP/1.1) or with no
    /// open stream (HTTP/2) before the gateway closes it.
    #[serde(default, with = "humantime_serde")]
    pub keepalive_timeout: Option<Duration>,
    /// Requests one client connection may carry before the gateway closes it.
    pub max_requests_per_connection: Option<u32>,
    /// How long a client has to send a whole request head (HTTP/2: the connection preface
    /// and first SETTINGS), counted from the connection's start for its first request and
    /// from the first byte for later ones.
    #[serde(default, with = "humantime_serde")]
    pub request_header_timeout: Option<Duration>,
    /// Most bytes of a request head (request line and header fields together).
    pub max_request_head_size: Option<usize>,
    /// Most bytes of one line of a request head (the request line or one header field).
    pub max_request_line_size: Option<usize>,
    /// How long a request body may wait for its first bytes, or stall between reads; the
    /// body also gets one more second for every `request_body_min_rate` bytes it delivers.
    #[serde(default, with = "humantime_serde")]
    pub request_body_timeout: Option<Duration>,
    /// Bytes per second a request body must average once `request_body_timeout` has passed.
    pub request_body_min_rate: Option<u64>,
    /// How long a client has to finish the TLS handshake.
    #[serde(default, with = "humantime_serde")]
    pub tls_handshake_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub address: String,
    pub tls: Option<ListenerTls>,
    /// Most client connections open at once on this listener.
    pub max_connections: Option<usize>,
    /// Bytes of the read buffer each connection gets below HTTP and TLS.
    pub read_buffer_size: Option<usize>,
    /// Accept HTTP/2 in cleartext by prior knowledge (h2c) beside HTTP/1.1; a TLS listener
    /// offers HTTP/2 by ALPN instead.
    #[serde(default)]
    pub h2c: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub certificate: String,
    pub key: String,
    /// Ask clients for a certificate (mTLS): `required` or `optional`.
    pub client_certificate: Option<ClientCertificateMode>,
    /// PEM bundle of the CAs client certificates must chain to.
    pub client_ca_file: Option<String>,
    /// Most certificates between the client's and a trusted CA (default 2).
    pub max_chain_depth: Option<u32>,
    /// PEM file of certificate revocation lists, reloaded when it changes.
    pub client_crl_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSigningSection {
    /// YAML file of key ids, their consumers and shared secrets; reloaded when it changes.
    pub keys_file: String,
    /// How far `created` may be from now, either way (default 300s).
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// Components every signature must cover (default `@method`, `@authority`, `@path`,
    /// `@query`, `content-digest`; the last only when there is a body).
    pub components: Option<Vec<String>>,
    #[serde(default)]
    pub nonces: NoncesSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoncesSection {
    /// Most nonces remembered in this process (default 1,000,000).
    pub max_entries: Option<usize>,
    /// Share the nonces with every gateway using this Redis.
    pub redis: Option<RedisStoreSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificatesSection {
    /// Which certificate value names the caller (default `san_uri`).
    pub identity: Option<crate::auth::mtls::IdentitySource>,
    /// `headers` (default) or `xfcc`.
    pub forward: Option<crate::auth::mtls::Forward>,
    /// Certificate identity -> consumer; when given, other identities are refused.
    #[serde(default)]
    pub consumers: Vec<CertConsumerSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertConsumerSection {
    /// The certificate's identity (per `identity`), e.g. `spiffe://acme/billing`.
    pub identity: String,
    /// Consumer name -> `X-Client-ID`.
    pub consumer: String,
    pub tenant: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    /// A rate-limit tier of `rate_limits.tiers`.
    pub tier: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertificateMode {
    /// The handshake fails without a valid certificate.
    Required,
    /// A certificate is asked for; without one the connection is made, with an invalid one
    /// the handshake fails.
    Optional,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(default = "default_admin_address")]
    pub address: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            address: default_admin_address(),
        }
    }
}

fn default_admin_address() -> String {
    "127.0.0.1:9901".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `-` (standard output, the default) or a file path, opened for appending.
    #[serde(default = "default_access_log_path")]
    pub path: String,
}

impl Default for AccessLogSection {
    fn default() -> Self {
        Self {
            enabled: true,
            path: default_access_log_path(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_access_log_path() -> String {
    "-".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub backends: Vec<BackendEntry>,
    #[serde(default)]
    pub selection: Selection,
    pub hash_key: Option<HashKeySection>,
    pub health_check: Option<HealthCheckSection>,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub write_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Further attempts on other healthy backends after a connection failure.
    pub retries: Option<usize>,
    pub tls: Option<UpstreamTls>,
    /// What the gateway speaks to the backends: `http1` (default), `h2` (over `tls`, by
    /// ALPN) or `h2c` (HTTP/2 in cleartext, by prior knowledge).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Attach a gateway-signed JWT with the verified identity to each request.
    pub identity_assertion: Option<AssertionSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionSection {
    /// PEM private key: Ed25519 (EdDSA) or P-256 (ES256).
    pub key_file: String,
    pub kid: String,
    /// Header that carries the assertion (default `X-Identity-Assertion`).
    pub header: Option<String>,
    /// `iss` of the assertion (default `portcullis`).
    pub issuer: Option<String>,
    /// `aud` of the assertion (default: the upstream's name).
    pub audience: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// Keys being rotated out: published in the JWKS, never used to sign.
    #[serde(default)]
    pub previous_keys: Vec<PreviousKeySection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousKeySection {
    pub kid: String,
    pub key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum BackendEntry {
    Address(String),
    Weighted(WeightedBackend),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedBackend {
    pub address: String,
    #[serde(default = "one")]
    pub weight: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2,
    H2c,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    #[default]
    RoundRobin,
    Random,
    ConsistentHash,
}

/// `hash_key: { header: X-Session-ID }` or `hash_key: client_address`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HashKeySection {
    /// Hash the value of this request header (requests without it hash the empty string).
    Header(HeaderHashKey),
    Named(NamedHashKey),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderHashKey {
    pub header: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedHashKey {
    /// Hash the client's IP address.
    ClientAddress,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    #[serde(rename = "type", default)]
    pub kind: HealthCheckKind,
    /// HTTP checks: the path requested (default `/`).
    pub path: Option<String>,
    /// HTTP checks: the Host header sent (default: the backend address).
    pub host: Option<String>,
    /// HTTP checks: the status that means healthy (default 200).
    pub expected_status: Option<u16>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Consecutive successes that bring an unhealthy backend back (default 1).
    pub healthy_threshold: Option<usize>,
    /// Consecutive failures that take a healthy backend out (default 1).
    pub unhealthy_threshold: Option<usize>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    #[default]
    Tcp,
    Http,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Server name sent in the TLS handshake and checked against the certificate.
    pub sni: String,
    /// Verify the backend's certificate chain and name (default true).
    #[serde(default = "yes")]
    pub verify: bool,
    /// PEM file of the CA certificates to trust for this pool (default: the system roots).
    pub ca_file: Option<String>,
    /// PEM certificate (chain) the gateway presents to the backend (mTLS upstream).
    pub client_certificate: Option<String>,
    /// PEM private key of `client_certificate`.
    pub client_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchSection,
    pub upstream: String,
    pub timeouts: Option<RouteTimeouts>,
    /// A rate limit for this route (a consumer's tier replaces it for that consumer).
    pub rate_limit: Option<LimitSection>,
    /// Required: `public`, or the credential the route needs. A route without it is an error.
    pub auth: Option<RouteAuthSection>,
    /// CORS for this route, replacing the top-level `cors`.
    pub cors: Option<CorsSection>,
    /// Let WebSocket (and other `Upgrade`) handshakes through: `true`, or the limits.
    pub websocket: Option<WebSocketSection>,
}

/// A route's `websocket`: `true` for the defaults, or the limits of its upgraded connections.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum WebSocketSection {
    On(bool),
    Limits(WebSocketLimits),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketLimits {
    /// Closed after this long with no byte either way (default 60s).
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Closed at the first frame after this long, however busy (default 1h).
    #[serde(default, with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeouts {
    #[serde(default, with = "humantime_serde")]
    pub connect: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub read: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub write: Option<Duration>,
}
