//! A short corpus run of the decoder fuzz target in the ordinary test suite.
//!
//! `tests/fuzz-seeds/` holds sixty small inputs picked across the size range of a cargo-fuzz
//! corpus of `fuzz/fuzz_targets/decode_datagram.rs`. Each one goes through the same four paths
//! as the fuzz target: raw, with and without a key ring, and as the body behind a valid
//! plaintext header and a valid sealed header. The decoder must answer every one without
//! panicking; most answers are errors.

use std::path::Path;

use fechter_gossip::crypto::KeyRing;
use fechter_gossip::decode_datagram;
use fechter_gossip::wire::{MAGIC, PROTOCOL_VERSION};

const CLUSTER_ID: &str = "fuzz-cluster";

/// Header flag bit 0 of the wire format: the body is sealed.
const FLAG_SEALED: u8 = 1;

/// The header the wire module documents: magic, version, flags, big-endian id length, id.
fn header(flags: u8) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.push(PROTOCOL_VERSION);
    header.push(flags);
    header.extend_from_slice(&(CLUSTER_ID.len() as u16).to_be_bytes());
    header.extend_from_slice(CLUSTER_ID.as_bytes());
    header
}

#[test]
fn every_fuzz_seed_decodes_without_panicking() {
    let keys = KeyRing::new(vec![[0x5A; 32], [0xA5; 32]]).unwrap_or_else(|e| panic!("{e}"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-seeds");
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap_or_else(|e| panic!("{e}")).path())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 50, "only {} seeds in {}", seeds.len(), dir.display());
    for seed in &seeds {
        let data = std::fs::read(seed).unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
        let _ = decode_datagram(&data, CLUSTER_ID, None);
        let _ = decode_datagram(&data, CLUSTER_ID, Some(&keys));

        let mut plain = header(0);
        plain.extend_from_slice(&data);
        let _ = decode_datagram(&plain, CLUSTER_ID, None);

        let mut sealed = header(FLAG_SEALED);
        let body = keys.seal(&sealed, &data);
        sealed.extend_from_slice(&body);
        let _ = decode_datagram(&sealed, CLUSTER_ID, Some(&keys));
    }
}
