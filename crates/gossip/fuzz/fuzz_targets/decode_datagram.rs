//! Feeds arbitrary bytes to the datagram decoder, as any host that can reach the gossip port
//! could. The decoder must refuse garbage with an error and never panic, both on a plaintext
//! cluster and on one whose datagrams are sealed with a key ring.
//!
//! Raw bytes seldom get past the header and never past authentication, so the same input is
//! also offered as the body behind a valid header: once in the clear, and once sealed with the
//! ring, which drives the body decoder through the keyed path as a peer holding the key could.
#![no_main]

use std::sync::LazyLock;

use fechter_gossip::crypto::KeyRing;
use fechter_gossip::wire::{MAGIC, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

const CLUSTER_ID: &str = "fuzz-cluster";

/// Header flag bit 0 of the wire format: the body is sealed.
const FLAG_SEALED: u8 = 1;

/// A fixed two-key ring, built once: the decoder must try both keys and refuse without panicking.
static KEYS: LazyLock<KeyRing> =
    LazyLock::new(|| KeyRing::new(vec![[0x5A; 32], [0xA5; 32]]).expect("a ring of two keys is never empty"));

/// The header the wire module documents: magic, version, flags, big-endian id length, id.
fn header(flags: u8) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.push(PROTOCOL_VERSION);
    header.push(flags);
    header.extend_from_slice(&(CLUSTER_ID.len() as u16).to_be_bytes());
    header.extend_from_slice(CLUSTER_ID.as_bytes());
    header
}

fuzz_target!(|data: &[u8]| {
    // Only panics and hangs matter here; an error is the expected answer to most inputs.
    let _ = fechter_gossip::decode_datagram(data, CLUSTER_ID, None);
    let _ = fechter_gossip::decode_datagram(data, CLUSTER_ID, Some(&KEYS));

    let mut plain = header(0);
    plain.extend_from_slice(data);
    let _ = fechter_gossip::decode_datagram(&plain, CLUSTER_ID, None);

    let mut sealed = header(FLAG_SEALED);
    let body = KEYS.seal(&sealed, data);
    sealed.extend_from_slice(&body);
    let _ = fechter_gossip::decode_datagram(&sealed, CLUSTER_ID, Some(&KEYS));
});
