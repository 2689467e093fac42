//! The server's secrets (`--secrets-file`): peppers by version, which key every stored
//! hash of a bearer secret (and, later, passwords), and the key that encrypts signing
//! keys at rest. Without a file a development default is used, and said loudly.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

const MIN_SECRET_BYTES: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    /// Version -> hex.
    peppers: BTreeMap<String, String>,
    current_pepper: i32,
    key_encryption_key: String,
}

/// Loaded secrets. `Debug` prints no secret.
#[derive(Clone)]
pub struct Secrets {
    peppers: BTreeMap<i32, Vec<u8>>,
    current: i32,
    key_encryption_key: Vec<u8>,
    pub development: bool,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("pepper_versions", &self.peppers.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .field("development", &self.development)
            .finish()
    }
}

impl Secrets {
    /// Reads `path`, or the development default (logged at WARN) when there is none.
    pub fn load(path: Option<&Path>) -> Result<Secrets> {
        let Some(path) = path else {
            tracing::warn!(
                "no --secrets-file: using the DEVELOPMENT secrets, which are public; every hash and key made now is worthless in production"
            );
            return Ok(Secrets::development());
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the secrets file {}", path.display()))?;
        Secrets::parse(&text).with_context(|| format!("the secrets file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Secrets> {
        let file: SecretsFile = serde_json::from_str(text).map_err(|e| anyhow!("is not valid: {e}"))?;
        let mut peppers = BTreeMap::new();
        for (version, hex_value) in file.peppers {
            let v: i32 = version.parse().map_err(|_| anyhow!("pepper version `{version}` is not an integer"))?;
            peppers.insert(v, decode_secret(&format!("peppers.{version}"), &hex_value)?);
        }
        if !peppers.contains_key(&file.current_pepper) {
            bail!("current_pepper {} is not one of the peppers", file.current_pepper);
        }
        let key_encryption_key = decode_secret("key_encryption_key", &file.key_encryption_key)?;
        Ok(Secrets { peppers, current: file.current_pepper, key_encryption_key, development: false })
    }

    fn development() -> Secrets {
        let mut peppers = BTreeMap::new();
        peppers.insert(0, b"arbiter development pepper, not a secret".to_vec());
        Secrets { peppers, current: 0, key_encryption_key: vec![0; 32], development: true }
    }

    /// The key that encrypts signing keys at rest.
    pub fn key_encryption_key(&self) -> &[u8] {
        &self.key_encryption_key
    }

    /// The pepper version new hashes use.
    pub fn current_pepper(&self) -> i32 {
        self.current
    }

    /// The AES-256-GCM key for secrets kept at rest for delivery (the outbox), derived
    /// from the key-encryption key.
    fn sealing_key(&self) -> Option<ring::aead::LessSafeKey> {
        use sha2::Digest;
        let mut h = Sha256::new();
        h.update(&self.key_encryption_key);
        h.update(b"arbiter-admin sealed secrets v1");
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &h.finalize()).ok()?;
        Some(ring::aead::LessSafeKey::new(key))
    }

    /// Encrypts `secret` (bound to `context`, such as the row's id): a random nonce and
    /// the ciphertext with its tag.
    pub fn seal(&self, context: &[u8], secret: &[u8]) -> Option<Vec<u8>> {
        use rand::RngCore;
        let key = self.sealing_key()?;
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut buf = secret.to_vec();
        key.seal_in_place_append_tag(ring::aead::Nonce::assume_unique_for_key(nonce), ring::aead::Aad::from(context), &mut buf).ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Some(out)
    }

    /// Decrypts what [`Secrets::seal`] made for `context` (None: tampered, or another key).
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < ring::aead::NONCE_LEN {
            return None;
        }
        let key = self.sealing_key()?;
        let (nonce, body) = sealed.split_at(ring::aead::NONCE_LEN);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = body.to_vec();
        let plain = key.open_in_place(nonce, ring::aead::Aad::from(context), &mut buf).ok()?;
        Some(plain.to_vec())
    }

    /// HMAC-SHA-256 of `secret` under the pepper of `version` (None: unknown version).
    pub fn hash(&self, version: i32, secret: &[u8]) -> Option<Vec<u8>> {
        let pepper = self.peppers.get(&version)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(pepper).ok()?;
        mac.update(secret);
        Some(mac.finalize().into_bytes().to_vec())
    }

    /// Does `secret` hash to `expected` under `version`? Constant time in the hash.
    pub fn verify(&self, version: i32, secret: &[u8], expected: &[u8]) -> bool {
        let Some(pepper) = self.peppers.get(&version) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(pepper) else {
            return false;
        };
        mac.update(secret);
        mac.verify_slice(expected).is_ok()
    }
}

fn decode_secret(what: &str, value: &str) -> Result<Vec<u8>> {
    let bytes = hex::decode(value.trim()).map_err(|_| anyhow!("{what} is not hex"))?;
    if bytes.len() < MIN_SECRET_BYTES {
        bail!("{what} has {} bytes; at least {MIN_SECRET_BYTES} are needed", bytes.len());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn sealed_secrets_open_only_with_their_context_and_key() {
        let s = Secrets::development();
        let sealed = s.seal(b"row-1", b"the invitation link").unwrap();
        assert_eq!(s.open(b"row-1", &sealed).unwrap(), b"the invitation link");
        assert!(s.open(b"row-2", &sealed).is_none(), "another row's context");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(s.open(b"row-1", &tampered).is_none());
        let other = Secrets::parse(r#"{"peppers": {"1": "0101010101010101010101010101010101010101010101010101010101010101"}, "current_pepper": 1,
            "key_encryption_key": "0202020202020202020202020202020202020202020202020202020202020202"}"#).unwrap();
        assert!(other.open(b"row-1", &sealed).is_none(), "another key");
        assert_ne!(s.seal(b"row-1", b"x"), s.seal(b"row-1", b"x"), "a fresh nonce each time");
    }

    #[test]
    fn a_secrets_file_is_parsed_and_hashes_verify_by_version() {
        let s = Secrets::parse(&format!(
            r#"{{"peppers": {{"1": "{KEY}", "2": "{}"}}, "current_pepper": 2, "key_encryption_key": "{KEY}"}}"#,
            KEY.replace('0', "f")
        ))
        .unwrap();
        assert_eq!(s.current_pepper(), 2);
        let h1 = s.hash(1, b"secret").unwrap();
        let h2 = s.hash(2, b"secret").unwrap();
        assert_ne!(h1, h2);
        assert!(s.verify(1, b"secret", &h1) && s.verify(2, b"secret", &h2));
        assert!(!s.verify(2, b"secret", &h1) && !s.verify(1, b"other", &h1) && !s.verify(3, b"secret", &h1));
        assert!(!format!("{s:?}").contains("0011"));
    }

    #[test]
    fn bad_secrets_files_name_the_problem() {
        for (text, needle) in [
            ("{", "is not valid"),
            (r#"{"peppers": {}, "current_pepper": 1, "key_encryption_key": ""}"#, "current_pepper 1"),
            (&format!(r#"{{"peppers": {{"1": "abcd"}}, "current_pepper": 1, "key_encryption_key": "{KEY}"}}"#), "peppers.1 has 2 bytes"),
            (&format!(r#"{{"peppers": {{"x": "{KEY}"}}, "current_pepper": 1, "key_encryption_key": "{KEY}"}}"#), "`x`"),
            (&format!(r#"{{"peppers": {{"1": "{KEY}"}}, "current_pepper": 1, "key_encryption_key": "zz"}}"#), "key_encryption_key is not hex"),
            (&format!(r#"{{"peppers": {{"1": "{KEY}"}}, "current_pepper": 1, "key_encryption_key": "{KEY}", "extra": 1}}"#), "unknown field"),
        ] {
            let err = format!("{:#}", Secrets::parse(text).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
