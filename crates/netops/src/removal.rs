//! The decision of address removal, shared by [`crate::LinuxNet`] and [`crate::fake::FakeNet`] so
//! that both apply the same rules to every spec of a batch and to a single removal alike.
//!
//! Removing a spec comes to one of three things: an invalid spec is an error; an address that is
//! not there (or whose interface is not there) is already what was asked for; and a present
//! address is deleted only if fechter's mark is on it, otherwise the answer is
//! [`NetError::NotOwned`]. Only the implementations know how to look an address up and how to
//! delete it, so the lookup is a closure and the deletion target a type parameter.

use crate::{AddressSpec, NetError};

/// The outcome of removing each spec of a batch, in the order the specs were given.
pub(crate) type Outcomes = Vec<(AddressSpec, Result<(), NetError>)>;

/// An address a removal found present on its interface.
pub(crate) struct Found<T> {
    /// What the implementation needs to delete it.
    pub(crate) target: T,
    /// Whether it carries fechter's mark.
    pub(crate) owned: bool,
}

/// What removing one spec comes to.
pub(crate) enum Step<T> {
    /// Nothing needs to be sent: this is the outcome.
    Settled(Result<(), NetError>),
    /// Delete this address, which is present and fechter's.
    Delete(T),
}

/// Decides what removing `spec` comes to. `look_up` reports the address present under `spec`, or
/// `None` when it (or its interface) is absent; it runs only for a valid spec, and its error
/// becomes the spec's outcome.
pub(crate) fn decide<T>(
    spec: &AddressSpec,
    look_up: impl FnOnce() -> Result<Option<Found<T>>, NetError>,
) -> Step<T> {
    if let Err(error) = spec.validate() {
        return Step::Settled(Err(error));
    }
    match look_up() {
        Err(error) => Step::Settled(Err(error)),
        Ok(None) => Step::Settled(Ok(())),
        Ok(Some(Found { owned: false, .. })) => Step::Settled(Err(NetError::NotOwned(spec.clone()))),
        Ok(Some(Found { target, owned: true })) => Step::Delete(target),
    }
}

/// The outcome of a batch of one, for the single removal that shares the batch's code path.
pub(crate) fn only_outcome(outcomes: Outcomes) -> Result<(), NetError> {
    // A batch answers once per spec, so a batch of one always has exactly one outcome; reading a
    // missing one as success only keeps this free of a panic path.
    outcomes.into_iter().next().map_or(Ok(()), |(_, outcome)| outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn spec(prefix_len: u8) -> AddressSpec {
        AddressSpec::new("eth0", IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)), prefix_len)
    }

    fn found(owned: bool) -> Result<Option<Found<&'static str>>, NetError> {
        Ok(Some(Found { target: "the address", owned }))
    }

    #[test]
    fn owned_addresses_are_deleted_and_foreign_ones_refused() {
        assert!(matches!(decide(&spec(24), || found(true)), Step::Delete("the address")));
        assert!(matches!(
            decide(&spec(24), || found(false)),
            Step::Settled(Err(NetError::NotOwned(refused))) if refused == spec(24)
        ));
    }

    #[test]
    fn absent_addresses_are_already_removed() {
        assert!(matches!(decide::<()>(&spec(24), || Ok(None)), Step::Settled(Ok(()))));
    }

    #[test]
    fn invalid_specs_fail_without_a_lookup() {
        let step = decide(&spec(33), || -> Result<Option<Found<()>>, NetError> {
            panic!("an invalid spec must not be looked up")
        });
        assert!(matches!(step, Step::Settled(Err(NetError::InvalidAddress(_)))));
    }

    #[test]
    fn lookup_errors_become_the_outcome() {
        let step = decide::<()>(&spec(24), || Err(NetError::PermissionDenied));
        assert!(matches!(step, Step::Settled(Err(NetError::PermissionDenied))));
    }

    #[test]
    fn a_batch_of_one_answers_with_its_only_outcome() {
        assert!(only_outcome(vec![(spec(24), Err(NetError::PermissionDenied))]).is_err());
        assert!(only_outcome(vec![(spec(24), Ok(()))]).is_ok());
        assert!(only_outcome(Vec::new()).is_ok());
    }
}
