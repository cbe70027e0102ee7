//! Session tokens: 43-character CSPRNG tokens whose SHA-256 hash is the only thing ever
//! stored, and the Rocket.Chat tokens sealed with them.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A raw session token as handed to the client. Never stored, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// 32 bytes from the OS CSPRNG, base64url without padding: 43 characters of `[A-Za-z0-9_-]`.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Token(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn from_client(s: &str) -> Self {
        Token(s.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn sealing_key(&self) -> chacha20poly1305::Key {
        // Domain-separated from the lookup hash, so the stored hash does not yield the key.
        let digest = Sha256::digest(format!("authgate upstream token key\0{}", self.0).as_bytes());
        chacha20poly1305::Key::clone_from_slice(&digest)
    }

    /// Seals an upstream token so that only this (client) token can open it.
    pub fn seal(&self, upstream_user_id: &str, upstream_token: &str) -> UpstreamToken {
        use chacha20poly1305::aead::{Aead, AeadCore, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&self.sealing_key());
        let nonce = chacha20poly1305::ChaCha20Poly1305::generate_nonce(&mut rand::rngs::OsRng);
        let mut out = nonce.to_vec();
        out.extend(
            cipher
                .encrypt(&nonce, upstream_token.as_bytes())
                .expect("encryption of a short token cannot fail"),
        );
        UpstreamToken {
            user_id: upstream_user_id.to_string(),
            sealed: base64::engine::general_purpose::STANDARD.encode(out),
            obtained_ms: now_unix_ms(),
        }
    }

    /// Opens an upstream token sealed with this token; None when it was sealed with another.
    pub fn open(&self, sealed: &UpstreamToken) -> Option<String> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&sealed.sealed)
            .ok()?;
        if raw.len() < 12 {
            return None;
        }
        let (nonce, ciphertext) = raw.split_at(12);
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&self.sealing_key());
        let plain = cipher
            .decrypt(chacha20poly1305::Nonce::from_slice(nonce), ciphertext)
            .ok()?;
        String::from_utf8(plain).ok()
    }

    /// sha256(token): what the in-process cache keys on.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// What the store keys on: base64(sha256(token)), as Rocket.Chat stores `hashedToken`.
    pub fn hash(&self) -> TokenHash {
        TokenHash(base64::engine::general_purpose::STANDARD.encode(self.digest()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHash(pub String);

impl TokenHash {
    /// The sha256 digest this hash encodes, if it is one.
    pub fn digest(&self) -> Option<[u8; 32]> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.0)
            .ok()
            .and_then(|d| d.try_into().ok())
    }

    /// What operators see and type: a prefix of the hash, useless as a credential (it is a
    /// hash, and a partial one).
    pub fn id(&self) -> String {
        self.0
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect()
    }
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// store never holds a usable upstream credential, just as it never holds the client's token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamToken {
    /// The Rocket.Chat user id: what the client sends as `X-User-Id`.
    pub user_id: String,
    /// base64(nonce || ChaCha20-Poly1305 ciphertext).
    pub sealed: String,
    pub obtained_ms: u64,
}

impl std::fmt::Debug for UpstreamToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamToken")
            .field("user_id", &self.user_id)
            .field("obtained_ms", &self.obtained_ms)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    // Spelled from the crate root: `super` here is this file, not the session module.
    use crate::session::token::*;

    #[test]
    fn tokens_have_rocket_chat_shape() {
        let t = Token::generate();
        assert_eq!(t.as_str().len(), 43);
        assert!(t
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(t, Token::generate());
        let h = t.hash();
        assert_eq!(h.0.len(), 44);
        assert!(!h.0.contains(t.as_str()));
        assert!(!format!("{t:?}").contains(t.as_str()));
    }

    #[test]
    fn upstream_tokens_open_only_with_the_client_token_that_sealed_them() {
        let client = Token::generate();
        let sealed = client.seal("RcUser", "rc-token-123");
        assert!(!sealed.sealed.contains("rc-token-123"));
        assert_eq!(client.open(&sealed).as_deref(), Some("rc-token-123"));
        assert_eq!(Token::generate().open(&sealed), None);
        assert_ne!(
            client.seal("RcUser", "rc-token-123").sealed,
            sealed.sealed,
            "fresh nonce each time"
        );
        assert!(!format!("{sealed:?}").contains(&sealed.sealed));
    }

    #[test]
    fn hash_matches_rocket_chat_hashed_token() {
        // base64(sha256("abc")), as Meteor's Accounts._hashLoginToken computes it.
        assert_eq!(
            Token::from_client("abc").hash().0,
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }
}
