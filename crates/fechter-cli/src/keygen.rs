//! Cluster keys for fechterd's `--cluster-key-file`: 32 random bytes, written as one line of standard
//! base64 with padding. The key file holds one key per line; the first encrypts and every line
//! decrypts, so a new key printed here can be rolled out before it is moved to the top.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::TryRngCore;
use rand::rand_core::OsError;
use rand::rngs::OsRng;

/// The length of a cluster key in bytes.
pub const CLUSTER_KEY_BYTES: usize = 32;

/// A new cluster key from the operating system's random number generator, base64-encoded.
pub fn new_cluster_key() -> Result<String, OsError> {
    let mut key = [0_u8; CLUSTER_KEY_BYTES];
    // The OS generator directly rather than a user-space one seeded from it: a key is generated once
    // per process, and nothing should stand between the kernel's entropy and the cluster's secret.
    OsRng.try_fill_bytes(&mut key)?;
    Ok(encode_cluster_key(&key))
}

/// The key-file form of `key`.
pub fn encode_cluster_key(key: &[u8; CLUSTER_KEY_BYTES]) -> String {
    STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_standard_base64_of_32_bytes() {
        assert_eq!(encode_cluster_key(&[0; 32]), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(encode_cluster_key(&[0xff; 32]), "//////////////////////////////////////////8=");
        let key = new_cluster_key().unwrap();
        assert_eq!(STANDARD.decode(&key).unwrap().len(), CLUSTER_KEY_BYTES);
        assert_ne!(key, new_cluster_key().unwrap());
    }
}
