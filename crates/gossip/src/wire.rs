//! The datagram format.
//!
//! Every datagram starts with a plaintext header: the magic `0xFE 0xC7`, the protocol version
//! byte, a flags byte (bit 0: sealed), the cluster id's length as a big-endian `u16` and the
//! cluster id itself. The header is checked first, so datagrams of another protocol, version or
//! cluster are dropped and counted before any decoding work. The body is an [`Envelope`] encoded
//! with bincode 2 (standard configuration: little-endian variable-length integers). When the
//! cluster has keys, the body is sealed with [`KeyRing::seal`] and the whole header is the
//! associated data, so a sealed datagram cannot be moved to another cluster or version.
//!
//! Decoding never panics. It refuses trailing bytes, and bincode's byte limit bounds what the
//! decoder may allocate to a fixed multiple of the datagram's length class (64 KiB for datagrams
//! up to 2 KiB), so a short datagram cannot claim a large allocation.

use bincode::enc::EncoderImpl;
use bincode::enc::write::SizeWriter;
use bincode::{Decode, Encode};

use crate::crypto::KeyRing;
use crate::types::NodeId;

/// The two bytes that start every gossip datagram.
pub const MAGIC: [u8; 2] = [0xFE, 0xC7];

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Header flag: the body is sealed.
const FLAG_SEALED: u8 = 1;

/// Length of the header before the cluster id.
const FIXED_HEADER_LEN: usize = 6;

/// The decoded body of a datagram.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Envelope {
    /// The node that sent the datagram.
    pub sender: NodeId,
    /// Numbers the sender's datagrams within its generation, for replay protection.
    pub sequence: u64,
    /// What the sender says.
    pub message: Message,
}

/// The result of [`decode_datagram`]: a datagram that passed every stateless check.
pub type DecodedMessage = Envelope;

/// The gossip messages: a push-pull exchange `Syn -> SynAck -> Ack`, plus `Leave`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Message {
    /// Opens an exchange with the initiator's digest.
    Syn {
        /// What the initiator knows.
        digest: Digest,
    },
    /// Answers a `Syn`: the responder's digest (what it wants and what it can tell) and the
    /// deltas the initiator lacks.
    SynAck {
        /// Entries the responder asks about or has news about.
        digest: Digest,
        /// Updates the initiator lacks.
        delta: Vec<NodeDelta>,
    },
    /// Closes an exchange with the deltas the responder asked for.
    Ack {
        /// Updates the responder lacks.
        delta: Vec<NodeDelta>,
    },
    /// The sender leaves the cluster on purpose.
    Leave,
}

/// A list of what the sender knows about some nodes.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Digest {
    /// One entry per listed node.
    pub entries: Vec<DigestEntry>,
    /// True when the list covers every node the sender knows, so that a missing node is one the
    /// sender has never heard of.
    pub complete: bool,
}

/// What the sender knows about one node.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DigestEntry {
    /// The node.
    pub node: NodeId,
    /// The newest heartbeat counter the sender has seen; liveness travels here, so it does not
    /// depend on deltas fitting into datagrams.
    pub heartbeat: u64,
    /// The newest key version the sender holds (all versions up to it, gap-free).
    pub max_version: u64,
    /// Tombstones up to this version have been collected by the sender.
    pub last_gc_version: u64,
    /// The node announced that it leaves.
    pub left: bool,
}

/// Key updates of one node, in ascending version order without gaps.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct NodeDelta {
    /// The node that owns the keys.
    pub node: NodeId,
    /// True for a reset: the receiver's copy may miss collected tombstones, so it must drop its
    /// copy and rebuild it from version 0 (when its own state confirms the need).
    pub reset: bool,
    /// The sender's collection floor for this node.
    pub last_gc_version: u64,
    /// The updates continue the receiver's copy from this version (0 for a reset).
    pub from_version: u64,
    /// After applying the updates, the receiver holds every version up to this one.
    pub up_to: u64,
    /// The updates, in ascending version order.
    pub updates: Vec<KeyUpdate>,
}

/// One versioned key write.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct KeyUpdate {
    /// The key.
    pub key: String,
    /// The value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The owner's version of this write.
    pub version: u64,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The datagram does not start with [`MAGIC`].
    #[error("not a gossip datagram")]
    BadMagic,
    /// Another protocol version.
    #[error("protocol version {0} is not supported")]
    WrongVersion(u8),
    /// Another cluster id.
    #[error("datagram of another cluster")]
    OtherCluster,
    /// Sealing does not match: wrong key, tampering, plaintext on a keyed node or a sealed
    /// datagram on a node without keys.
    #[error("datagram failed authentication")]
    AuthFailure,
    /// The header or body does not decode, or bytes trail the body.
    #[error("malformed datagram")]
    Malformed,
}

/// The header bytes for a cluster, which are also the associated data of sealing.
pub(crate) fn header(cluster_id: &str, sealed: bool) -> Vec<u8> {
    // Cluster ids longer than u16::MAX bytes are cut; both sides cut them alike.
    let id = &cluster_id.as_bytes()[..cluster_id.len().min(usize::from(u16::MAX))];
    let mut header = Vec::with_capacity(FIXED_HEADER_LEN + id.len());
    header.extend_from_slice(&MAGIC);
    header.push(PROTOCOL_VERSION);
    header.push(if sealed { FLAG_SEALED } else { 0 });
    header.extend_from_slice(&(id.len() as u16).to_be_bytes());
    header.extend_from_slice(id);
    header
}

/// Encodes and, with keys, seals one datagram.
pub fn encode_datagram(cluster_id: &str, keys: Option<&KeyRing>, envelope: &Envelope) -> Vec<u8> {
    encode_with_header(&header(cluster_id, keys.is_some()), keys, envelope)
}

/// Like [`encode_datagram`] with a precomputed header.
pub(crate) fn encode_with_header(header: &[u8], keys: Option<&KeyRing>, envelope: &Envelope) -> Vec<u8> {
    let body = encode_body(envelope);
    let mut datagram = header.to_vec();
    match keys {
        Some(keys) => datagram.extend_from_slice(&keys.seal(header, &body)),
        None => datagram.extend_from_slice(&body),
    }
    datagram
}

/// Encodes a value with the wire configuration. Encoding into a vector cannot fail for the
/// wire types (no map of unknown size, no custom encoder), so an error would be a bug; it is
/// mapped to an empty body, which every receiver refuses as malformed.
fn encode_body(envelope: &Envelope) -> Vec<u8> {
    bincode::encode_to_vec(envelope, bincode::config::standard()).unwrap_or_default()
}

/// The encoded length of a wire value, used to fill datagrams up to the budget.
pub(crate) fn encoded_len<T: Encode>(value: &T) -> usize {
    let mut encoder = EncoderImpl::new(SizeWriter::default(), bincode::config::standard());
    match value.encode(&mut encoder) {
        Ok(()) => encoder.into_writer().bytes_written,
        Err(_) => usize::MAX,
    }
}

/// The largest encoded length of a collection-length prefix for `count` items.
pub(crate) fn length_prefix_len(count: usize) -> usize {
    match count {
        0..=250 => 1,
        251..=0xFFFF => 3,
        0x1_0000..=0xFFFF_FFFF => 5,
        _ => 9,
    }
}

/// Checks and decodes one datagram without any state: header, cluster, sealing, and a body
/// that decodes exactly. Replay and generation checks need state and happen in the core.
///
/// # Errors
///
/// The first check that fails, as a [`WireError`].
pub fn decode_datagram(
    datagram: &[u8],
    cluster_id: &str,
    keys: Option<&KeyRing>,
) -> Result<DecodedMessage, WireError> {
    if datagram.len() < MAGIC.len() || datagram[..MAGIC.len()] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let Some(&version) = datagram.get(2) else {
        return Err(WireError::Malformed);
    };
    if version != PROTOCOL_VERSION {
        return Err(WireError::WrongVersion(version));
    }
    let (Some(&flags), Some(&high), Some(&low)) = (datagram.get(3), datagram.get(4), datagram.get(5)) else {
        return Err(WireError::Malformed);
    };
    let id_len = usize::from(u16::from_be_bytes([high, low]));
    let header_len = FIXED_HEADER_LEN + id_len;
    let Some(id) = datagram.get(FIXED_HEADER_LEN..header_len) else {
        return Err(WireError::Malformed);
    };
    let expected = &cluster_id.as_bytes()[..cluster_id.len().min(usize::from(u16::MAX))];
    if id != expected {
        return Err(WireError::OtherCluster);
    }
    let (header, body) = datagram.split_at(header_len);
    let sealed = flags & FLAG_SEALED != 0;
    if flags & !FLAG_SEALED != 0 {
        return Err(WireError::Malformed);
    }
    match (keys, sealed) {
        (Some(keys), true) => {
            let plain = keys.open(header, body).map_err(|_| WireError::AuthFailure)?;
            decode_body(&plain)
        }
        (None, false) => decode_body(body),
        _ => Err(WireError::AuthFailure),
    }
}

/// Decodes an envelope with a byte limit chosen from the body's length class: bincode counts
/// the memory a decode claims (a collection claims its length times the size of its item
/// type up front), so the limit is a generous multiple of the input, never an unbounded amount.
fn decode_body(body: &[u8]) -> Result<Envelope, WireError> {
    if body.len() <= 2 * 1024 {
        decode_limited::<{ 64 * 1024 }>(body)
    } else if body.len() <= 16 * 1024 {
        decode_limited::<{ 512 * 1024 }>(body)
    } else {
        decode_limited::<{ 2 * 1024 * 1024 }>(body)
    }
}

/// Decodes an envelope with a fixed byte limit and refuses trailing bytes.
fn decode_limited<const LIMIT: usize>(body: &[u8]) -> Result<Envelope, WireError> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (envelope, used): (Envelope, usize) =
        bincode::decode_from_slice(body, config).map_err(|_| WireError::Malformed)?;
    if used != body.len() {
        return Err(WireError::Malformed);
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

    fn envelope() -> Envelope {
        let node = NodeId {
            name: "10.0.0.1:4573".into(),
            generation: 7,
            gossip_addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 4573)),
        };
        Envelope {
            sender: node.clone(),
            sequence: 3,
            message: Message::SynAck {
                digest: Digest {
                    entries: vec![DigestEntry {
                        node: node.clone(),
                        heartbeat: 9,
                        max_version: 2,
                        last_gc_version: 0,
                        left: false,
                    }],
                    complete: true,
                },
                delta: vec![NodeDelta {
                    node,
                    reset: false,
                    last_gc_version: 0,
                    from_version: 0,
                    up_to: 2,
                    updates: vec![KeyUpdate { key: "a".into(), value: Some(vec![1, 2]), version: 1 }],
                }],
            },
        }
    }

    #[test]
    fn plaintext_round_trips_and_length_is_predicted() {
        let envelope = envelope();
        let datagram = encode_datagram("c1", None, &envelope);
        assert_eq!(decode_datagram(&datagram, "c1", None), Ok(envelope.clone()));
        assert_eq!(datagram.len(), header("c1", false).len() + encoded_len(&envelope));
    }

    #[test]
    fn header_checks_come_first() {
        let datagram = encode_datagram("c1", None, &envelope());
        assert_eq!(decode_datagram(&datagram, "c2", None), Err(WireError::OtherCluster));
        let mut other_version = datagram.clone();
        other_version[2] = 9;
        assert_eq!(decode_datagram(&other_version, "c1", None), Err(WireError::WrongVersion(9)));
        assert_eq!(decode_datagram(b"xx", "c1", None), Err(WireError::BadMagic));
        assert_eq!(decode_datagram(b"", "c1", None), Err(WireError::BadMagic));
    }

    #[test]
    fn trailing_bytes_and_every_truncation_are_refused() {
        let mut datagram = encode_datagram("c1", None, &envelope());
        for len in 0..datagram.len() {
            assert!(decode_datagram(&datagram[..len], "c1", None).is_err(), "{len}");
        }
        datagram.push(0);
        assert_eq!(decode_datagram(&datagram, "c1", None), Err(WireError::Malformed));
    }

    #[test]
    fn sealing_is_required_both_ways() {
        let keys = KeyRing::new(vec![[5; 32]]).unwrap_or_else(|error| panic!("{error}"));
        let other = KeyRing::new(vec![[6; 32]]).unwrap_or_else(|error| panic!("{error}"));
        let sealed = encode_datagram("c1", Some(&keys), &envelope());
        let plain = encode_datagram("c1", None, &envelope());
        assert_eq!(decode_datagram(&sealed, "c1", Some(&keys)), Ok(envelope()));
        assert_eq!(decode_datagram(&sealed, "c1", Some(&other)), Err(WireError::AuthFailure));
        assert_eq!(decode_datagram(&sealed, "c1", None), Err(WireError::AuthFailure));
        assert_eq!(decode_datagram(&plain, "c1", Some(&keys)), Err(WireError::AuthFailure));
    }

    #[test]
    fn huge_claimed_lengths_fail_without_allocating() {
        // A digest claiming 2^40 entries in a 20-byte body.
        let mut datagram = header("c1", false);
        datagram.extend_from_slice(&[0xFD, 0, 0, 0, 0, 0, 0, 1, 0]);
        datagram.extend_from_slice(&[0; 11]);
        assert_eq!(decode_datagram(&datagram, "c1", None), Err(WireError::Malformed));
    }
}
