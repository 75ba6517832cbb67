//! Who may manage a world: admin tokens (HS256 JWTs) and the shard secret (spec section 4,
//! with the weaknesses of 7.3 fixed).
//!
//! - Admin requests carry a JWT signed with `AUTH_JWT_SECRET` (HS256 only; `alg: none` and
//!   every other algorithm are refused) as `Authorization: Bearer <token>` or in the
//!   `world-auth-token` query parameter. Its `worlds` claim must list the world id
//!   (`world-default`, the full room id) or `"*"`. `exp` is required unless configured
//!   otherwise; `nbf` is checked when present; `iss`/`aud` when configured.
//! - Shards carry `SHARD_SECRET` in `x-access-shard`, compared in constant time. The secret
//!   only vouches for shard traffic (stats, re-registration); it is not an admin credential.

use http::{HeaderMap, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use partyroom_room::RoomResponse;
use serde::{Deserialize, Serialize};

use crate::config::WorldConfig;

/// The query parameter that may carry an admin token (for WebSockets, which cannot set
/// headers from a browser).
pub const TOKEN_QUERY: &str = "world-auth-token";
/// The header shards put `SHARD_SECRET` in.
pub const SHARD_HEADER: &str = "x-access-shard";

/// The claims of an admin token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The worlds this token manages (`["world-default"]`, or `["*"]` for all).
    pub worlds: Vec<String>,
    /// Who the token is for (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Issue time, seconds since the epoch (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

impl Claims {
    /// Claims for `worlds`, valid for `ttl` from now.
    pub fn new(worlds: &[&str], ttl: std::time::Duration) -> Self {
        let now = now_secs();
        Self {
            worlds: worlds.iter().map(|w| (*w).to_owned()).collect(),
            sub: None,
            exp: Some(now + ttl.as_secs()),
            iat: Some(now),
            nbf: None,
        }
    }

    /// Whether the token manages `world_id`.
    pub fn grants(&self, world_id: &str) -> bool {
        self.worlds.iter().any(|w| w == "*" || w == world_id)
    }
}

/// Why a request was not allowed to manage the world.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token (and no shard secret where one is accepted).
    #[error("Missing credentials")]
    Missing,
    /// The token's `exp` has passed.
    #[error("Token has expired")]
    Expired,
    /// The token has no `exp` and tokens must expire.
    #[error("Token has no expiry")]
    NoExpiry,
    /// Not a valid HS256 token signed with the world's secret (bad format, signature,
    /// algorithm, claims).
    #[error("Invalid token: {0}")]
    Invalid(String),
    /// A valid token that does not list this world.
    #[error("Token does not grant world {0}")]
    WrongWorld(String),
    /// `x-access-shard` present but not the shard secret.
    #[error("Invalid shard credentials")]
    BadShardSecret,
    /// The world has no secret configured.
    #[error("World authentication is not configured")]
    NotConfigured,
}

impl AuthError {
    /// The HTTP status: 401 for missing or unusable credentials, 403 for valid ones that do
    /// not grant this world, 503 when the world has no secret.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::WrongWorld(_) | AuthError::BadShardSecret => StatusCode::FORBIDDEN,
            AuthError::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// `{"error": <reason>}` with [`AuthError::status`].
    pub fn response(&self) -> RoomResponse {
        RoomResponse::error(self.status(), &self.to_string())
    }
}

/// Sign admin claims with HS256 (header `{"typ":"JWT","alg":"HS256"}`), for tools and tests.
pub fn sign(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing with a byte key cannot fail")
}

/// Verify a token with the world's settings and return its claims.
pub fn verify(token: &str, config: &WorldConfig) -> Result<Claims, AuthError> {
    if config.jwt_secret.is_empty() {
        return Err(AuthError::NotConfigured);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = config.leeway_secs;
    validation.validate_nbf = true;
    validation.required_spec_claims.clear();
    if config.require_exp {
        validation.required_spec_claims.insert("exp".into());
    }
    match &config.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &config.issuer {
        validation.set_issuer(&[iss]);
    }
    let key = DecodingKey::from_secret(config.jwt_secret.as_bytes());
    match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::NoExpiry,
            ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::Invalid("unsupported algorithm".into())
            }
            ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet".into()),
            ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
            ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
            // Malformed parts, unknown `alg` values such as `none`, claims that do not fit.
            _ => AuthError::Invalid("malformed token".into()),
        }),
    }
}

/// The admin token of a request: `Authorization: Bearer <token>` (scheme case-insensitive),
/// else the `world-auth-token` query parameter. A raw token without `Bearer` is not accepted.
pub fn token_from<'a>(headers: &'a HeaderMap, query: &'a [(String, String)]) -> Option<&'a str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty());
    bearer.or_else(|| {
        query
            .iter()
            .find(|(k, _)| k == TOKEN_QUERY)
            .map(|(_, v)| v.as_str())
            .filter(|t| !t.is_empty())
    })
}

/// Check that the request carries an admin token for `world_id`; returns its claims.
pub fn authorize_admin(
    config: &WorldConfig,
    world_id: &str,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<Claims, AuthError> {
    let token = token_from(headers, query).ok_or(AuthError::Missing)?;
    let claims = verify(token, config)?;
    if claims.grants(world_id) {
        Ok(claims)
    } else {
        Err(AuthError::WrongWorld(world_id.to_owned()))
    }
}

/// Whether the request carries the shard secret: `Ok(true)` if it does, `Ok(false)` if
/// `x-access-shard` is absent or empty, `Err` if present and wrong (a wrong secret is never
/// rescued by a token in the same request, as in the original).
pub fn shard_secret(config: &WorldConfig, headers: &HeaderMap) -> Result<bool, AuthError> {
    let Some(given) = headers.get(SHARD_HEADER).filter(|v| !v.is_empty()) else {
        return Ok(false);
    };
    if config.shard_secret.is_empty() {
        return Err(AuthError::NotConfigured);
    }
    if partyroom_server::constant_time_eq(config.shard_secret.as_bytes(), given.as_bytes()) {
        Ok(true)
    } else {
        Err(AuthError::BadShardSecret)
    }
}

/// Shard traffic (stats): the shard secret, or an admin token.
pub fn authorize_shard_or_admin(
    config: &WorldConfig,
    world_id: &str,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<(), AuthError> {
    if shard_secret(config, headers)? {
        return Ok(());
    }
    authorize_admin(config, world_id, headers, query).map(|_| ())
}

/// Shard identity only (re-registration): the shard secret.
pub fn authorize_shard(config: &WorldConfig, headers: &HeaderMap) -> Result<(), AuthError> {
    if shard_secret(config, headers)? {
        Ok(())
    } else {
        Err(AuthError::Missing)
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> WorldConfig {
        WorldConfig::new("jwt-secret", "shard-secret")
    }

    fn b64(s: &str) -> String {
        // base64url without padding, enough for the hand-made tokens below.
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, &x| (acc << 8) | u32::from(x))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn valid_tokens_grant_their_worlds() {
        let c = config();
        let t = sign(
            &Claims::new(&["world-eu"], Duration::from_secs(60)),
            "jwt-secret",
        );
        let claims = verify(&t, &c).unwrap();
        assert!(claims.grants("world-eu") && !claims.grants("world-default"));
        let h = headers(&format!("Bearer {t}"));
        assert!(authorize_admin(&c, "world-eu", &h, &[]).is_ok());
        assert_eq!(
            authorize_admin(&c, "world-default", &h, &[]),
            Err(AuthError::WrongWorld("world-default".into()))
        );
        let star = sign(&Claims::new(&["*"], Duration::from_secs(60)), "jwt-secret");
        let q = vec![(TOKEN_QUERY.to_owned(), star)];
        assert!(authorize_admin(&c, "world-x", &HeaderMap::new(), &q).is_ok());
        assert!(authorize_admin(&c, "world-x", &headers("bearer  "), &q).is_ok());
    }

    #[test]
    fn refusals() {
        let mut c = config();
        assert_eq!(
            authorize_admin(&c, "world-eu", &HeaderMap::new(), &[]),
            Err(AuthError::Missing)
        );
        // Raw token without the Bearer scheme.
        let t = sign(&Claims::new(&["*"], Duration::from_secs(60)), "jwt-secret");
        assert_eq!(
            authorize_admin(&c, "world-eu", &headers(&t), &[]),
            Err(AuthError::Missing)
        );
        // Wrong secret.
        let other = sign(&Claims::new(&["*"], Duration::from_secs(60)), "other");
        assert!(matches!(verify(&other, &c), Err(AuthError::Invalid(_))));
        // Expired.
        let mut old = Claims::new(&["*"], Duration::ZERO);
        old.exp = Some(now_secs() - 10);
        assert_eq!(
            verify(&sign(&old, "jwt-secret"), &c),
            Err(AuthError::Expired)
        );
        // No exp.
        let mut forever = Claims::new(&["*"], Duration::ZERO);
        forever.exp = None;
        let forever = sign(&forever, "jwt-secret");
        assert_eq!(verify(&forever, &c), Err(AuthError::NoExpiry));
        c.require_exp = false;
        assert!(verify(&forever, &c).is_ok());
        c.require_exp = true;
        // alg none.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"worlds":["*"],"exp":9999999999}"#)
        );
        assert!(matches!(verify(&none, &c), Err(AuthError::Invalid(_))));
        // HS512 with the right secret is still refused.
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims::new(&["*"], Duration::from_secs(60)),
            &EncodingKey::from_secret(b"jwt-secret"),
        )
        .unwrap();
        assert!(matches!(verify(&hs512, &c), Err(AuthError::Invalid(_))));
        // `worlds` as a string, or missing.
        let payload = b64(r#"{"worlds":"*","exp":9999999999}"#);
        let fake = format!("{}.{payload}.x", b64(r#"{"alg":"HS256"}"#));
        assert!(verify(&fake, &c).is_err());
        // Not yet valid.
        let mut later = Claims::new(&["*"], Duration::from_secs(600));
        later.nbf = Some(now_secs() + 300);
        assert!(matches!(
            verify(&sign(&later, "jwt-secret"), &c),
            Err(AuthError::Invalid(_))
        ));
        // No secret configured.
        assert_eq!(
            verify(&t, &WorldConfig::default()),
            Err(AuthError::NotConfigured)
        );
    }

    #[test]
    fn shard_secret_is_exact_and_decisive() {
        let c = config();
        let mut h = HeaderMap::new();
        assert_eq!(shard_secret(&c, &h), Ok(false));
        h.insert(SHARD_HEADER, "shard-secret".parse().unwrap());
        assert_eq!(shard_secret(&c, &h), Ok(true));
        h.insert(SHARD_HEADER, "shard-secreT".parse().unwrap());
        let t = sign(&Claims::new(&["*"], Duration::from_secs(60)), "jwt-secret");
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        assert_eq!(
            authorize_shard_or_admin(&c, "world-eu", &h, &[]),
            Err(AuthError::BadShardSecret)
        );
        h.remove(SHARD_HEADER);
        assert_eq!(authorize_shard_or_admin(&c, "world-eu", &h, &[]), Ok(()));
        assert_eq!(authorize_shard(&c, &h), Err(AuthError::Missing));
    }
}
