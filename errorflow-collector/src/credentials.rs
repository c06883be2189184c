//! Ingest keys, management tokens and DSNs.
//!
//! Secrets are random 128-bit values shown once and stored only as their
//! SHA-256. A fast hash is right here (unlike for passwords): the secrets are
//! high-entropy, so they cannot be guessed from the hash, and ingest checks
//! them thousands of times a second.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// How many characters of a key are kept in clear to recognise it.
pub const PREFIX_LEN: usize = 8;

/// A new ingest key: 32 lowercase hex characters (the DSN's user part).
pub fn new_ingest_key() -> String {
    random_hex(16)
}

/// A new management token, prefixed so that it is recognisable in a secret scanner.
pub fn new_api_token() -> String {
    format!("eft_{}", random_hex(24))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// The stored form of a key or token.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn prefix(secret: &str) -> String {
    secret.chars().take(PREFIX_LEN).collect()
}

/// `http://KEY@HOST:PORT/PROJECT_ID`, from the collector's public URL.
pub fn dsn(public_url: &str, key: &str, project_id: i64) -> String {
    let url = public_url.trim_end_matches('/');
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{key}@{rest}/{project_id}"),
        None => format!("http://{key}@{url}/{project_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashes_stable() {
        let a = new_ingest_key();
        let b = new_ingest_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert!(new_api_token().starts_with("eft_"));
    }

    #[test]
    fn dsn_puts_the_key_in_the_user_part() {
        assert_eq!(
            dsn("http://127.0.0.1:8000/", "abc", 3),
            "http://abc@127.0.0.1:8000/3"
        );
        assert_eq!(
            dsn("https://errors.example.com", "k", 1),
            "https://k@errors.example.com/1"
        );
    }
}
