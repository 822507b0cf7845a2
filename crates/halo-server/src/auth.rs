//! Bearer-token auth. The token comes from a file or the environment (never a command-line
//! argument, which `ps` shows to every user), is kept only as a SHA-256 digest, and is compared
//! digest to digest in constant time, so neither its content nor its length leaks through
//! timing. Nothing here ever logs or formats the token.

use http::HeaderValue;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("the auth token is empty")]
    Empty,
    #[error("the auth token must be visible ASCII without spaces (it travels in an HTTP header)")]
    NotHeaderSafe,
    #[error("cannot read the auth token file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The expected token, as a digest.
#[derive(Clone)]
pub struct AuthToken {
    digest: [u8; 32],
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

impl AuthToken {
    pub fn new(token: &str) -> Result<AuthToken, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::NotHeaderSafe);
        }
        Ok(AuthToken {
            digest: digest(token.as_bytes()),
        })
    }

    /// Reads a token file; surrounding whitespace (a trailing newline) is not part of the token.
    pub fn from_file(path: &Path) -> Result<AuthToken, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        AuthToken::new(text.trim())
    }

    /// Whether an `authorization` header value carries this token (`Bearer <token>`, the scheme
    /// case-insensitive).
    pub fn accepts(&self, header: Option<&HeaderValue>) -> bool {
        let presented = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        // Hash something even when the header is absent so both paths cost the same.
        let d = digest(presented.unwrap_or("").as_bytes());
        constant_time_eq(&d, &self.digest) && presented.is_some()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares every byte whatever the first difference; `black_box` keeps the optimizer from
/// turning the fold into an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn accepts_only_the_right_bearer_token() {
        let t = AuthToken::new("s3cret-token").unwrap();
        assert!(t.accepts(Some(&hv("Bearer s3cret-token"))));
        assert!(t.accepts(Some(&hv("bearer s3cret-token"))));
        assert!(!t.accepts(Some(&hv("Bearer s3cret-tokem"))));
        assert!(!t.accepts(Some(&hv("Bearer s3cret-token2"))));
        assert!(!t.accepts(Some(&hv("Basic s3cret-token"))));
        assert!(!t.accepts(Some(&hv("s3cret-token"))));
        assert!(!t.accepts(Some(&hv("Bearer "))));
        assert!(!t.accepts(None));
    }

    #[test]
    fn rejects_unusable_tokens_and_never_prints_them() {
        assert!(matches!(AuthToken::new(""), Err(AuthError::Empty)));
        assert!(matches!(
            AuthToken::new("a b"),
            Err(AuthError::NotHeaderSafe)
        ));
        let t = AuthToken::new("visible").unwrap();
        assert!(!format!("{t:?}").contains("visible"));
    }

    #[test]
    fn file_token_is_trimmed() {
        let dir = std::env::temp_dir().join(format!("halo-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("token");
        std::fs::write(&p, "abc123\n").unwrap();
        let t = AuthToken::from_file(&p).unwrap();
        assert!(t.accepts(Some(&hv("Bearer abc123"))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
