//! Authenticated encryption of gossip datagrams and replay protection.
//!
//! # Sealing
//!
//! A [`KeyRing`] seals datagrams with XChaCha20-Poly1305, a vetted AEAD from the RustCrypto
//! `chacha20poly1305` crate. Every sealed datagram is `nonce (24 bytes) || ciphertext || tag
//! (16 bytes)`, so sealing adds [`SEAL_OVERHEAD`] bytes. The nonce is drawn fresh from the
//! operating system's random source for every datagram. Random nonces are safe here because they
//! are 192 bits long: a cluster can seal far more than 2^64 datagrams under one long-lived key
//! before a repeated nonce becomes likely, whereas the 96-bit random nonces of AES-GCM reach
//! the usual 2^-32 collision bound after about 2^32 messages, which a busy gossip cluster
//! with a key that is never rotated could approach. No nonce counter has to survive restarts.
//!
//! Callers pass associated data (for fechter: the cluster id and the wire header), which is
//! authenticated but not encrypted, so a datagram sealed for one cluster does not open in another
//! cluster that happens to share the key.
//!
//! # Key rotation without an outage
//!
//! The first key of a ring seals; every key of the ring opens. A key file holds one key per line
//! (see [`KeyRing::from_base64_lines`]). To replace key `old` by key `new`:
//!
//! 1. On every node, add `new` as the *second* line (`old`, `new`) and reload. Nodes still seal
//!    with `old`, but all of them can already open `new`.
//! 2. Once every node has step 1, move `new` to the *first* line (`new`, `old`) and reload.
//!    Nodes now seal with `new`; nodes not yet reloaded still open it thanks to step 1, and
//!    reloaded nodes still open the `old` datagrams of the stragglers.
//! 3. Once every node has step 2, remove `old` (`new` alone) and reload.
//!
//! Each step only needs to be complete on all nodes before the next one starts; at no point does
//! a node receive a datagram that it cannot open.
//!
//! # Replay protection
//!
//! Authentication alone lets an attacker resend a captured datagram. [`ReplayWindow`] is the
//! sliding-window check that IPsec uses (RFC 4303, section 3.4.3): the sender numbers its
//! datagrams, and the receiver accepts each sequence number at most once, tolerating reordering
//! within the last [`REPLAY_WINDOW_SIZE`] numbers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use zeroize::{Zeroize as _, Zeroizing};

/// Length of the random nonce that starts every sealed datagram.
const NONCE_LEN: usize = 24;

/// Length of the Poly1305 authentication tag that ends every sealed datagram.
const TAG_LEN: usize = 16;

/// Length of one key in bytes (XChaCha20-Poly1305 uses 256-bit keys).
pub const KEY_LEN: usize = 32;

/// How many bytes [`KeyRing::seal`] adds to a plaintext: a 24-byte nonce and a 16-byte tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Why a key ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// The ring would hold no key, so nothing could be sealed.
    #[error("the key ring holds no key")]
    Empty,
    /// A line is not standard (padded) base64. The message never echoes the line, because it
    /// may be a slightly mistyped key.
    #[error("line {line}: not valid standard base64")]
    InvalidBase64 {
        /// The 1-based line number in the key text.
        line: usize,
    },
    /// A line decodes to a number of bytes other than [`KEY_LEN`].
    #[error("line {line}: key is {len} bytes long, expected {KEY_LEN}")]
    WrongLength {
        /// The 1-based line number in the key text.
        line: usize,
        /// How many bytes the line decoded to.
        len: usize,
    },
}

/// Why a sealed datagram could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The input is shorter than a nonce and a tag, so it cannot be a sealed datagram.
    #[error("sealed datagram of {len} bytes is shorter than the minimum of {SEAL_OVERHEAD}")]
    TooShort {
        /// Length of the rejected input.
        len: usize,
    },
    /// No key of the ring authenticates the datagram with the given associated data: it was
    /// sealed with an unknown key or for another cluster, or it was altered on the way.
    #[error("no key of the ring authenticates the datagram")]
    Unauthenticated,
}

/// An ordered set of 256-bit keys: the first key seals, every key opens.
///
/// The keys live only inside the ciphers, which wipe them from memory when dropped. `Debug`
/// prints the number of keys, never key material.
#[derive(Clone)]
pub struct KeyRing {
    /// Never empty; index 0 seals.
    ciphers: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("KeyRing").field("keys", &self.ciphers.len()).finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Builds a ring from raw keys; the first one seals. The given key bytes are wiped once
    /// they have been copied into the ciphers.
    ///
    /// # Errors
    ///
    /// [`KeyRingError::Empty`] if `keys` is empty.
    pub fn new(mut keys: Vec<[u8; KEY_LEN]>) -> Result<KeyRing, KeyRingError> {
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        let ciphers = keys.iter().map(|key| XChaCha20Poly1305::new(key.into())).collect();
        keys.zeroize();
        Ok(KeyRing { ciphers })
    }

    /// Parses a key file: one key per line, each the standard (padded) base64 encoding of
    /// exactly 32 bytes, for example the output of `head -c 32 /dev/urandom | base64`.
    ///
    /// Surrounding whitespace is trimmed, and blank lines and lines whose first non-blank
    /// character is `#` are ignored. The first key line seals.
    ///
    /// # Errors
    ///
    /// The first bad line, by its 1-based line number ([`KeyRingError::InvalidBase64`],
    /// [`KeyRingError::WrongLength`]), or [`KeyRingError::Empty`] if the text holds no key.
    /// Errors never contain key material.
    pub fn from_base64_lines(text: &str) -> Result<KeyRing, KeyRingError> {
        // Sized up front so that the vector never reallocates and leaves key copies behind in
        // freed memory; the guard wipes the keys on every exit, including the error returns.
        let mut keys = Zeroizing::new(Vec::with_capacity(text.lines().count()));
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let decoded = Zeroizing::new(
                BASE64_STANDARD
                    .decode(line)
                    .map_err(|_| KeyRingError::InvalidBase64 { line: line_number })?,
            );
            let key: [u8; KEY_LEN] = decoded
                .as_slice()
                .try_into()
                .map_err(|_| KeyRingError::WrongLength { line: line_number, len: decoded.len() })?;
            keys.push(key);
        }
        KeyRing::new(keys.to_vec())
    }

    /// How many keys the ring holds (at least one).
    pub fn len(&self) -> usize {
        self.ciphers.len()
    }

    /// Always false: a ring holds at least one key. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.ciphers.is_empty()
    }

    /// Encrypts and authenticates `plaintext`, and authenticates `aad`, with the first key.
    /// Returns `nonce || ciphertext || tag`, [`SEAL_OVERHEAD`] bytes longer than `plaintext`.
    ///
    /// # Panics
    ///
    /// If the operating system's random source fails. On Linux `getrandom(2)` only blocks until
    /// the pool is seeded at boot and does not fail afterwards, and sealing with a predictable
    /// nonce would be worse than stopping.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        if let Err(error) = OsRng.try_fill_bytes(&mut nonce) {
            panic!("the operating system's random source failed: {error}");
        }
        let mut sealed = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        sealed.extend_from_slice(&nonce);
        // Encryption in this AEAD only fails for plaintexts longer than 256 GiB, far beyond
        // any datagram, so the sealing cipher never returns an error here.
        let ciphertext = self.ciphers[0]
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .unwrap_or_else(|_| panic!("XChaCha20-Poly1305 refused a {} byte plaintext", plaintext.len()));
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Authenticates and decrypts a datagram made by [`KeyRing::seal`] with the same `aad`,
    /// trying every key of the ring in order. Never panics, whatever the input.
    ///
    /// # Errors
    ///
    /// [`OpenError::TooShort`] if `sealed` cannot hold a nonce and a tag;
    /// [`OpenError::Unauthenticated`] if no key authenticates it.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError::TooShort { len: sealed.len() });
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::from_slice(nonce);
        self.ciphers
            .iter()
            .find_map(|cipher| cipher.decrypt(nonce, Payload { msg: ciphertext, aad }).ok())
            .ok_or(OpenError::Unauthenticated)
    }
}

/// How many of the most recent sequence numbers a [`ReplayWindow`] remembers.
pub const REPLAY_WINDOW_SIZE: u64 = 128;

/// Sliding-window anti-replay over `u64` sequence numbers, as in IPsec (RFC 4303): remembers
/// the highest number accepted and which of the [`REPLAY_WINDOW_SIZE`] numbers below it were
/// seen, in a bitmap.
///
/// A number newer than the highest is accepted and slides the window forward; a number inside
/// the window is accepted once; a number older than the window is refused, because the
/// window can no longer tell whether it was seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The highest sequence number accepted so far, or `None` before the first one.
    highest: Option<u64>,
    /// Bit `i` is set when `highest - i` has been accepted.
    seen: u128,
}

impl ReplayWindow {
    /// A window that has accepted nothing yet, so it accepts any first number.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns true exactly once for each sequence number that is newer than the window, or
    /// inside it and not yet seen; false for duplicates and for numbers older than the window.
    pub fn accept(&mut self, seq: u64) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.seen = 1;
            return true;
        };
        if seq > highest {
            let advance = seq - highest;
            self.seen = if advance >= REPLAY_WINDOW_SIZE { 1 } else { (self.seen << advance) | 1 };
            self.highest = Some(seq);
            return true;
        }
        let age = highest - seq;
        if age >= REPLAY_WINDOW_SIZE {
            return false;
        }
        let bit = 1u128 << age;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OLD_KEY: [u8; KEY_LEN] = [1; KEY_LEN];
    const NEW_KEY: [u8; KEY_LEN] = [2; KEY_LEN];

    fn ring(keys: &[[u8; KEY_LEN]]) -> KeyRing {
        KeyRing::new(keys.to_vec()).unwrap()
    }

    fn encode(key: &[u8]) -> String {
        BASE64_STANDARD.encode(key)
    }

    #[test]
    fn seal_then_open_returns_the_plaintext() {
        let keys = ring(&[OLD_KEY]);
        let sealed = keys.seal(b"cluster-a", b"hello gossip");
        assert_eq!(sealed.len(), b"hello gossip".len() + SEAL_OVERHEAD);
        assert_eq!(keys.open(b"cluster-a", &sealed).unwrap(), b"hello gossip");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let keys = ring(&[OLD_KEY]);
        let sealed = keys.seal(b"", b"");
        assert_eq!(sealed.len(), SEAL_OVERHEAD);
        assert_eq!(keys.open(b"", &sealed).unwrap(), b"");
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let keys = ring(&[OLD_KEY]);
        let first = keys.seal(b"aad", b"same");
        let second = keys.seal(b"aad", b"same");
        assert_ne!(first[..NONCE_LEN], second[..NONCE_LEN]);
        assert_ne!(first, second);
    }

    #[test]
    fn plaintext_does_not_appear_in_the_sealed_datagram() {
        let keys = ring(&[OLD_KEY]);
        let plaintext = b"a recognisable plaintext";
        let sealed = keys.seal(b"aad", plaintext);
        assert!(!sealed.windows(plaintext.len()).any(|window| window == plaintext));
    }

    #[test]
    fn wrong_key_is_refused() {
        let sealed = ring(&[OLD_KEY]).seal(b"cluster-a", b"payload");
        assert_eq!(ring(&[NEW_KEY]).open(b"cluster-a", &sealed), Err(OpenError::Unauthenticated));
    }

    #[test]
    fn another_clusters_aad_is_refused() {
        let keys = ring(&[OLD_KEY]);
        let sealed = keys.seal(b"cluster-a", b"payload");
        assert_eq!(keys.open(b"cluster-b", &sealed), Err(OpenError::Unauthenticated));
    }

    #[test]
    fn short_and_empty_inputs_are_too_short() {
        let keys = ring(&[OLD_KEY]);
        assert_eq!(keys.open(b"aad", b""), Err(OpenError::TooShort { len: 0 }));
        let sealed = keys.seal(b"aad", b"payload");
        for len in 0..SEAL_OVERHEAD {
            assert_eq!(keys.open(b"aad", &sealed[..len]), Err(OpenError::TooShort { len }));
        }
    }

    #[test]
    fn truncated_datagrams_are_refused() {
        let keys = ring(&[OLD_KEY]);
        let sealed = keys.seal(b"aad", b"payload");
        for len in SEAL_OVERHEAD..sealed.len() {
            assert_eq!(
                keys.open(b"aad", &sealed[..len]),
                Err(OpenError::Unauthenticated),
                "truncated to {len} bytes"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let keys = ring(&[OLD_KEY]);
        let sealed = keys.seal(b"aad", b"payload");
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut altered = sealed.clone();
                altered[byte] ^= 1 << bit;
                assert_eq!(
                    keys.open(b"aad", &altered),
                    Err(OpenError::Unauthenticated),
                    "bit {bit} of byte {byte}"
                );
            }
        }
    }

    #[test]
    fn appended_bytes_are_refused() {
        let keys = ring(&[OLD_KEY]);
        let mut sealed = keys.seal(b"aad", b"payload");
        sealed.push(0);
        assert_eq!(keys.open(b"aad", &sealed), Err(OpenError::Unauthenticated));
    }

    #[test]
    fn rotation_keeps_both_generations_readable() {
        let old_ring = ring(&[OLD_KEY]);
        let rotated_ring = ring(&[NEW_KEY, OLD_KEY]);
        let staged_ring = ring(&[OLD_KEY, NEW_KEY]);

        // A node already rotated still opens what a straggler sealed with the old key.
        let from_old = old_ring.seal(b"c", b"old");
        assert_eq!(rotated_ring.open(b"c", &from_old).unwrap(), b"old");

        // The staged step (new key second) opens what rotated nodes seal, but seals with the
        // old key so that nodes without the new key keep understanding it.
        let from_rotated = rotated_ring.seal(b"c", b"new");
        assert_eq!(staged_ring.open(b"c", &from_rotated).unwrap(), b"new");
        let from_staged = staged_ring.seal(b"c", b"staged");
        assert_eq!(old_ring.open(b"c", &from_staged).unwrap(), b"staged");

        // Skipping the staged step is exactly what breaks: the old ring cannot open new data.
        assert_eq!(old_ring.open(b"c", &from_rotated), Err(OpenError::Unauthenticated));
    }

    #[test]
    fn empty_ring_is_refused() {
        assert_eq!(KeyRing::new(Vec::new()).unwrap_err(), KeyRingError::Empty);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let keys = ring(&[[0xAB; KEY_LEN], NEW_KEY]);
        let printed = format!("{keys:?}");
        assert_eq!(printed, "KeyRing { keys: 2, .. }");
        assert_eq!(keys.len(), 2);
        assert!(!keys.is_empty());
    }

    #[test]
    fn base64_lines_skip_comments_and_blanks() {
        let text = format!(
            "# rotated 2026-05-01\n\n  {}  \r\n   # the old key, remove after rollout\n{}\n\n",
            encode(&NEW_KEY),
            encode(&OLD_KEY)
        );
        let keys = KeyRing::from_base64_lines(&text).unwrap();
        assert_eq!(keys.len(), 2);
        // The first key line seals.
        let sealed = keys.seal(b"c", b"x");
        assert_eq!(ring(&[NEW_KEY]).open(b"c", &sealed).unwrap(), b"x");
    }

    #[test]
    fn base64_without_key_lines_is_empty() {
        assert_eq!(KeyRing::from_base64_lines("").unwrap_err(), KeyRingError::Empty);
        assert_eq!(KeyRing::from_base64_lines("# only a comment\n\n   \n").unwrap_err(), KeyRingError::Empty);
    }

    #[test]
    fn base64_errors_name_the_line_and_hide_the_key() {
        let good = encode(&OLD_KEY);
        let mistyped = format!("{}!", &good[..good.len() - 1]);
        let text = format!("# keys\n{good}\n{mistyped}\n");
        let error = KeyRing::from_base64_lines(&text).unwrap_err();
        assert_eq!(error, KeyRingError::InvalidBase64 { line: 3 });
        let message = error.to_string();
        assert_eq!(message, "line 3: not valid standard base64");
        assert!(!message.contains(&good[..8]));

        let short = encode(&[7; 16]);
        assert_eq!(
            KeyRing::from_base64_lines(&format!("\n{short}")).unwrap_err(),
            KeyRingError::WrongLength { line: 2, len: 16 }
        );
        let long = encode(&[7; 33]);
        let error = KeyRing::from_base64_lines(&long).unwrap_err();
        assert_eq!(error, KeyRingError::WrongLength { line: 1, len: 33 });
        assert_eq!(error.to_string(), "line 1: key is 33 bytes long, expected 32");

        // Unpadded and URL-safe spellings are not the documented format.
        let unpadded = good.trim_end_matches('=');
        assert_eq!(
            KeyRing::from_base64_lines(unpadded).unwrap_err(),
            KeyRingError::InvalidBase64 { line: 1 }
        );
        let url_safe = encode(&[0xFB; KEY_LEN]).replace('+', "-").replace('/', "_");
        assert_eq!(
            KeyRing::from_base64_lines(&url_safe).unwrap_err(),
            KeyRingError::InvalidBase64 { line: 1 }
        );
    }

    #[test]
    fn replay_window_accepts_in_order_numbers_once() {
        let mut window = ReplayWindow::new();
        for seq in 0..1000 {
            assert!(window.accept(seq), "first sight of {seq}");
            assert!(!window.accept(seq), "duplicate of {seq}");
        }
    }

    #[test]
    fn replay_window_accepts_any_first_number() {
        let mut window = ReplayWindow::default();
        assert!(window.accept(u64::MAX));
        assert!(!window.accept(u64::MAX));
        assert!(window.accept(u64::MAX - 1));
        assert!(!window.accept(0));
    }

    #[test]
    fn replay_window_tolerates_reordering_within_the_window() {
        let mut window = ReplayWindow::new();
        assert!(window.accept(200));
        // Everything up to REPLAY_WINDOW_SIZE - 1 below the highest is still accepted once.
        for seq in (200 - (REPLAY_WINDOW_SIZE - 1)..200).rev() {
            assert!(window.accept(seq), "late {seq}");
        }
        for seq in 200 - (REPLAY_WINDOW_SIZE - 1)..=200 {
            assert!(!window.accept(seq), "replayed {seq}");
        }
        assert!(window.accept(203));
        assert!(window.accept(201));
        assert!(!window.accept(203));
        assert!(window.accept(202));
        assert!(!window.accept(201));
    }

    #[test]
    fn replay_window_refuses_numbers_older_than_the_window() {
        let mut window = ReplayWindow::new();
        assert!(window.accept(1000));
        assert!(!window.accept(1000 - REPLAY_WINDOW_SIZE));
        assert!(!window.accept(0));
        assert!(window.accept(1000 - REPLAY_WINDOW_SIZE + 1));
    }

    #[test]
    fn replay_window_survives_large_jumps() {
        let mut window = ReplayWindow::new();
        assert!(window.accept(5));
        assert!(window.accept(5 + REPLAY_WINDOW_SIZE));
        // 5 fell exactly out of the window: refused, although it was seen.
        assert!(!window.accept(5));
        // 6 is the oldest number still inside the window.
        assert!(window.accept(6));
        assert!(window.accept(1 << 40));
        // The jump forgot the old bitmap, and everything left behind is now too old.
        assert!(!window.accept(5 + REPLAY_WINDOW_SIZE));
        assert!(window.accept((1 << 40) - 1));
        assert!(window.accept(u64::MAX));
        assert!(!window.accept(u64::MAX));
        assert!(!window.accept(1 << 40));
    }

    /// A reference model that remembers every accepted number, to check the bitmap against.
    fn model_accepts(accepted: &mut std::collections::BTreeSet<u64>, seq: u64) -> bool {
        let too_old = accepted
            .last()
            .is_some_and(|&highest| highest >= REPLAY_WINDOW_SIZE && seq <= highest - REPLAY_WINDOW_SIZE);
        !too_old && accepted.insert(seq)
    }

    proptest! {
        #[test]
        fn open_never_panics_on_arbitrary_bytes(
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let keys = ring(&[NEW_KEY, OLD_KEY]);
            prop_assert!(keys.open(&aad, &bytes).is_err());
        }

        #[test]
        fn seal_open_round_trips(
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let keys = ring(&[NEW_KEY, OLD_KEY]);
            let sealed = keys.seal(&aad, &plaintext);
            prop_assert_eq!(keys.open(&aad, &sealed), Ok(plaintext));
        }

        #[test]
        fn replay_window_matches_a_model_that_remembers_everything(
            base in any::<u64>(),
            offsets in proptest::collection::vec(0u64..400, 1..300),
        ) {
            let base = base.min(u64::MAX - 400);
            let mut window = ReplayWindow::new();
            let mut accepted = std::collections::BTreeSet::new();
            for offset in offsets {
                let seq = base + offset;
                prop_assert_eq!(window.accept(seq), model_accepts(&mut accepted, seq), "seq {}", seq);
            }
        }
    }
}
