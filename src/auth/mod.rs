//! Virtual keys: clients authenticate with `Authorization: Bearer ck-...`; the gateway
//! stores only SHA-256 hashes. Keys come from the config (declared hashed) and from the
//! key store (`crossroads keys create`), and carry a team, budgets and rate limits.

pub mod store;

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, RwLock};

use ring::rand::{SecureRandom, SystemRandom};

pub use crate::config::parse_hex;
use crate::config::{BudgetConfig, KeyConfig};
use crate::error::ApiError;

/// Prefix of generated keys, so they are recognizable in logs and secret scanners.
pub const KEY_PREFIX: &str = "ck-";

/// A key's SHA-256.
pub type KeyHash = [u8; 32];

/// What a valid key grants.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    pub id: String,
    pub team: Option<String>,
    pub budget: Option<BudgetConfig>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
}

impl From<&KeyConfig> for KeyInfo {
    fn from(k: &KeyConfig) -> Self {
        KeyInfo {
            id: k.id.clone(),
            team: k.team.clone(),
            budget: k.budget,
            rpm: k.rpm,
            tpm: k.tpm,
        }
    }
}

/// SHA-256 of a key.
pub fn hash_key(key: &str) -> KeyHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Lower-case hex of a hash, as configs and the store write it.
pub fn hex(hash: &KeyHash) -> String {
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The operating system's random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomFailed;

/// A new random key (32 bytes from the OS CSPRNG, hex).
pub fn generate_key() -> Result<String, RandomFailed> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomFailed)?;
    Ok(format!("{KEY_PREFIX}{}", hex(&bytes)))
}

/// The keys the gateway accepts: config keys plus the store's, swapped whole when
/// the store is re-read.
#[derive(Default)]
pub struct Keyring {
    keys: RwLock<Arc<HashMap<KeyHash, Arc<KeyInfo>>>>,
}

impl Keyring {
    /// Replaces every key.
    pub fn set(&self, keys: HashMap<KeyHash, Arc<KeyInfo>>) {
        if let Ok(mut guard) = self.keys.write() {
            *guard = Arc::new(keys);
        }
    }

    /// Every key, config and store alike.
    pub fn keys(&self) -> Vec<Arc<KeyInfo>> {
        self.keys
            .read()
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The key presented in `authorization` (`Bearer <key>`), if valid. `required`
    /// turns a missing key into an error; a wrong key is always one.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        required: bool,
    ) -> Result<Option<Arc<KeyInfo>>, ApiError> {
        self.authenticate_key(authorization.and_then(bearer), required)
    }

    /// Authenticates a key presented bare (as `x-api-key` carries it); `None` or an
    /// empty key is no key.
    pub fn authenticate_key(
        &self,
        presented: Option<&str>,
        required: bool,
    ) -> Result<Option<Arc<KeyInfo>>, ApiError> {
        let presented = presented.map(str::trim).filter(|k| !k.is_empty());
        let Some(presented) = presented else {
            return if required {
                Err(ApiError::Unauthorized {
                    message: "an API key is required: send Authorization: Bearer <key>".into(),
                })
            } else {
                Ok(None)
            };
        };
        let keys = self.keys.read().map(|k| k.clone()).unwrap_or_default();
        match keys.get(&hash_key(presented)) {
            Some(info) => Ok(Some(info.clone())),
            // Without required auth, SDK placeholder keys ("sk-...", "unused") pass as
            // anonymous; a key of ours that is unknown or revoked never does.
            None if !required && !presented.starts_with(KEY_PREFIX) => Ok(None),
            None => Err(ApiError::Unauthorized {
                message: "the API key is invalid or revoked".into(),
            }),
        }
    }
}

/// The key of an `Authorization: Bearer <key>` header value.
pub fn bearer(authorization: &str) -> Option<&str> {
    authorization.strip_prefix("Bearer ")
}

/// Every key of the config and the store, by hash.
pub fn collect(
    config_keys: &[KeyConfig],
    stored: Vec<(KeyHash, KeyInfo)>,
) -> HashMap<KeyHash, Arc<KeyInfo>> {
    let mut map: HashMap<KeyHash, Arc<KeyInfo>> = stored
        .into_iter()
        .map(|(hash, info)| (hash, Arc::new(info)))
        .collect();
    for k in config_keys {
        map.insert(k.sha256, Arc::new(KeyInfo::from(k)));
    }
    map
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_keys_hash_and_round_trip_through_hex() {
        let key = generate_key().unwrap();
        assert!(key.starts_with("ck-") && key.len() == 67);
        assert_ne!(key, generate_key().unwrap());
        let hash = hash_key(&key);
        assert_eq!(parse_hex(&hex(&hash)), Some(hash));
        assert_eq!(
            hex(&hash_key("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn authenticates_known_keys_only() {
        let ring = Keyring::default();
        let info = KeyInfo {
            id: "k1".into(),
            team: Some("search".into()),
            budget: None,
            rpm: None,
            tpm: None,
        };
        ring.set(HashMap::from([(hash_key("ck-good"), Arc::new(info))]));
        let ok = ring
            .authenticate(Some("Bearer ck-good"), true)
            .unwrap()
            .unwrap();
        assert_eq!(ok.id, "k1");
        assert!(ring.authenticate(Some("Bearer ck-bad"), true).is_err());
        assert!(ring.authenticate(None, true).is_err());
        assert_eq!(ring.authenticate(None, false).unwrap(), None);
        assert_eq!(
            ring.authenticate(Some("Bearer sk-placeholder"), false)
                .unwrap(),
            None
        );
        assert!(ring.authenticate(Some("Bearer ck-revoked"), false).is_err());
    }
}
