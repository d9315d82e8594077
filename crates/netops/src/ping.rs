//! The pure parts of the gateway check: the wrapping echo sequence and the verdict on a reply.
//!
//! The original Fechter accepted any ICMP packet as the answer and died once its sequence passed
//! 65 535. Here the sequence is a `u16` that wraps, and a reply counts only when it is an echo reply
//! carrying this process's identifier and the sequence just sent.

use std::sync::atomic::{AtomicU16, Ordering};

use crate::PingError;

/// A thread-safe echo sequence counter that wraps from 65 535 to 0.
#[derive(Debug, Default)]
pub struct SequenceCounter(AtomicU16);

impl SequenceCounter {
    /// A counter whose first [`SequenceCounter::next`] returns `first`.
    pub fn starting_at(first: u16) -> SequenceCounter {
        SequenceCounter(AtomicU16::new(first))
    }

    /// The next sequence number; after 65 535 comes 0.
    pub fn next(&self) -> u16 {
        // Atomic addition wraps on overflow, which is exactly the ICMP sequence arithmetic.
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// What the gateway check needs to know about the packet that answered an echo request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplySummary {
    /// True for an echo reply (ICMP type 0, ICMPv6 type 129).
    pub(crate) is_echo_reply: bool,
    /// The ICMP type, for the error text.
    pub(crate) icmp_type: u8,
    /// The ICMP code, for the error text.
    pub(crate) icmp_code: u8,
    /// The echo identifier (for an ICMP error, the one of the quoted request).
    pub(crate) identifier: u16,
    /// The echo sequence (for an ICMP error, the one of the quoted request).
    pub(crate) sequence: u16,
}

/// Accepts `reply` only as the answer to the request with `sequence` and, when the socket lets this
/// process choose it, `identifier`; an ICMP error becomes [`PingError::Unreachable`], and a reply
/// to some other request counts as no reply at all.
pub(crate) fn check_reply(
    reply: &ReplySummary,
    identifier: Option<u16>,
    sequence: u16,
) -> Result<(), PingError> {
    let ours = reply.sequence == sequence && identifier.is_none_or(|id| id == reply.identifier);
    if !ours {
        return Err(PingError::Timeout);
    }
    if !reply.is_echo_reply {
        return Err(PingError::Unreachable(format!(
            "ICMP type {} code {}",
            reply.icmp_type, reply.icmp_code
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_reply(identifier: u16, sequence: u16) -> ReplySummary {
        ReplySummary { is_echo_reply: true, icmp_type: 0, icmp_code: 0, identifier, sequence }
    }

    #[test]
    fn sequence_wraps_after_65535() {
        let counter = SequenceCounter::starting_at(65_534);
        assert_eq!(counter.next(), 65_534);
        assert_eq!(counter.next(), 65_535);
        assert_eq!(counter.next(), 0);
        assert_eq!(counter.next(), 1);
    }

    #[test]
    fn a_full_cycle_returns_to_the_start() {
        let counter = SequenceCounter::starting_at(7);
        for _ in 0..=u16::MAX {
            counter.next();
        }
        assert_eq!(counter.next(), 7);
    }

    #[test]
    fn only_the_matching_echo_reply_counts() {
        assert!(check_reply(&echo_reply(42, 0), Some(42), 0).is_ok());
        assert!(check_reply(&echo_reply(42, 65_535), Some(42), 65_535).is_ok());
        assert!(matches!(check_reply(&echo_reply(43, 0), Some(42), 0), Err(PingError::Timeout)));
        assert!(matches!(check_reply(&echo_reply(42, 1), Some(42), 0), Err(PingError::Timeout)));
        // On a datagram ICMP socket the kernel owns the identifier, so only the sequence is ours.
        assert!(check_reply(&echo_reply(9, 5), None, 5).is_ok());
    }

    #[test]
    fn icmp_errors_mean_unreachable() {
        let unreachable =
            ReplySummary { is_echo_reply: false, icmp_type: 3, icmp_code: 1, identifier: 42, sequence: 3 };
        match check_reply(&unreachable, Some(42), 3) {
            Err(PingError::Unreachable(text)) => assert_eq!(text, "ICMP type 3 code 1"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}
