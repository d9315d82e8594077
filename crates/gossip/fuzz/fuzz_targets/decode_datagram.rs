//! Feeds arbitrary bytes to the datagram decoder, as any host that can reach the gossip port
//! could. The decoder must refuse garbage with an error and never panic, both on a plaintext
//! cluster and on one whose datagrams are sealed with a key ring.
#![no_main]

use std::sync::LazyLock;

use fechter_gossip::crypto::KeyRing;
use libfuzzer_sys::fuzz_target;

/// A fixed two-key ring, built once: the decoder must try both keys and refuse without panicking.
static KEYS: LazyLock<KeyRing> = LazyLock::new(|| {
    KeyRing::new(vec![[0x5A; 32], [0xA5; 32]]).expect("a ring of two keys is never empty")
});

fuzz_target!(|datagram: &[u8]| {
    // Only panics and hangs matter here; an error is the expected answer to most inputs.
    let _ = fechter_gossip::decode_datagram(datagram, "fuzz-cluster", None);
    let _ = fechter_gossip::decode_datagram(datagram, "fuzz-cluster", Some(&KEYS));
});
