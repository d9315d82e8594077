//! [`FakeNet`]: an in-memory [`Net`] with the semantics of [`crate::LinuxNet`], for tests.
//!
//! It models interfaces with their [`LinkState`], addresses with their ownership, recorded
//! announcements and pings, programmable ping results, one-shot fault injection, and an event for
//! every change, exactly as the kernel would report it:
//!
//! - adding an address already present (anyone's) succeeds and changes nothing;
//! - removing an absent address, or one on a missing interface, succeeds; removing an address
//!   that is not fechter's fails with [`NetError::NotOwned`] and leaves it; a batch removal
//!   applies these rules to each spec, with the same decision code as [`crate::LinuxNet`];
//! - taking a link down removes its IPv6 addresses, as Linux does unless `keep_addr_on_down` is
//!   set, and deleting a link removes all of its addresses;
//! - announcing needs an existing interface that is up.
//!
//! `FakeNet` is a handle: clones share one state, so a test keeps one to drive and inspect the
//! fake while the code under test owns another.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::removal::{self, Found, Outcomes, Step};
use crate::{
    AddressSpec, AnnounceConfig, EVENT_QUEUE_LEN, InstalledAddress, LinkState, Net, NetError, NetEvent,
    PingError, validate_unicast,
};

/// The operations of [`Net`], for [`FakeNet::fail_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FakeOp {
    /// [`Net::add_address`].
    AddAddress,
    /// [`Net::remove_address`] and [`Net::remove_addresses`]. An injected failure fails every spec
    /// of a batch and removes nothing, as a failed address dump would.
    RemoveAddress,
    /// [`Net::list_addresses`].
    ListAddresses,
    /// [`Net::link_state`].
    LinkState,
    /// [`Net::announce`].
    Announce,
    /// [`Net::subscribe`].
    Subscribe,
}

/// One call of [`Net::announce`] that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The interface announced on.
    pub interface: String,
    /// The addresses announced, in the order given.
    pub addresses: Vec<IpAddr>,
    /// The repeat configuration asked for.
    pub config: AnnounceConfig,
}

/// The round-trip time the fake reports for a reachable gateway.
pub const FAKE_ROUND_TRIP: Duration = Duration::from_millis(1);

/// An in-memory [`Net`]. See the module documentation for its semantics.
#[derive(Debug, Clone, Default)]
pub struct FakeNet {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Debug)]
struct FakeState {
    links: BTreeMap<String, LinkState>,
    /// Every address present, with whether fechter owns it.
    addresses: BTreeMap<AddressSpec, bool>,
    announcements: Vec<Announcement>,
    pings: Vec<IpAddr>,
    gateway_reachable: bool,
    ping_failures: VecDeque<PingError>,
    failures: BTreeMap<FakeOp, VecDeque<NetError>>,
    subscribers: Vec<mpsc::Sender<NetEvent>>,
}

impl Default for FakeState {
    fn default() -> Self {
        FakeState {
            links: BTreeMap::new(),
            addresses: BTreeMap::new(),
            announcements: Vec::new(),
            pings: Vec::new(),
            gateway_reachable: true,
            ping_failures: VecDeque::new(),
            failures: BTreeMap::new(),
            subscribers: Vec::new(),
        }
    }
}

impl FakeState {
    fn emit(&mut self, event: NetEvent) {
        // A closed subscriber is forgotten; a full one misses the event, as a lagging netlink
        // socket would.
        self.subscribers.retain(|subscriber| match subscriber.try_send(event.clone()) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    fn take_failure(&mut self, op: FakeOp) -> Result<(), NetError> {
        match self.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn remove_where(&mut self, doomed: impl Fn(&AddressSpec) -> bool) {
        let removed: Vec<(AddressSpec, bool)> = self
            .addresses
            .iter()
            .filter(|(spec, _)| doomed(spec))
            .map(|(spec, owned)| (spec.clone(), *owned))
            .collect();
        for (spec, owned) in removed {
            self.addresses.remove(&spec);
            self.emit(NetEvent::AddressRemoved(installed(&spec, owned)));
        }
    }
}

fn installed(spec: &AddressSpec, owned: bool) -> InstalledAddress {
    InstalledAddress {
        interface: spec.interface.clone(),
        address: spec.address,
        prefix_len: spec.prefix_len,
        owned,
    }
}

impl FakeNet {
    /// An empty fake: no interfaces, no addresses, gateways reachable.
    pub fn new() -> FakeNet {
        FakeNet::default()
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock leaves consistent data behind: every
        // mutation completes before the guard drops.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates (or replaces the state of) interface `name`; the state's `exists` is implied.
    pub fn add_interface(&self, name: &str, state: LinkState) {
        self.set_link(name, LinkState { exists: true, ..state });
    }

    /// Changes interface `name` to `state`, with the side effects Linux has: a link taken down
    /// loses its IPv6 addresses, and a link that stops existing loses all of them. Emits the
    /// address removals, then a [`NetEvent::LinkChanged`] if the state changed.
    pub fn set_link(&self, name: &str, state: LinkState) {
        let mut fake = self.lock();
        if !state.exists {
            fake.remove_where(|spec| spec.interface == name);
            if fake.links.remove(name).is_some() {
                fake.emit(NetEvent::LinkChanged { interface: name.to_owned(), state: LinkState::ABSENT });
            }
            return;
        }
        if !state.up {
            fake.remove_where(|spec| spec.interface == name && spec.address.is_ipv6());
        }
        if fake.links.insert(name.to_owned(), state) != Some(state) {
            fake.emit(NetEvent::LinkChanged { interface: name.to_owned(), state });
        }
    }

    /// Adds an address as an operator would (without fechter's mark), so it is listed with
    /// `owned == false` and can never be removed through [`Net::remove_address`].
    pub fn add_foreign_address(&self, spec: &AddressSpec) -> Result<(), NetError> {
        spec.validate()?;
        let mut fake = self.lock();
        if !fake.links.contains_key(&spec.interface) {
            return Err(NetError::NoSuchInterface(spec.interface.clone()));
        }
        if !fake.addresses.contains_key(spec) {
            fake.addresses.insert(spec.clone(), false);
            fake.emit(NetEvent::AddressAdded(installed(spec, false)));
        }
        Ok(())
    }

    /// Removes an address as an operator would (`ip address del`), whoever owns it; returns
    /// whether it was present.
    pub fn remove_by_hand(&self, spec: &AddressSpec) -> bool {
        let mut fake = self.lock();
        match fake.addresses.remove(spec) {
            Some(owned) => {
                fake.emit(NetEvent::AddressRemoved(installed(spec, owned)));
                true
            }
            None => false,
        }
    }

    /// Makes the next call of `op` fail with `error`; several calls queue up in order.
    pub fn fail_next(&self, op: FakeOp, error: NetError) {
        self.lock().failures.entry(op).or_default().push_back(error);
    }

    /// Makes the next ping fail with `error`, whatever the reachability; several queue up.
    pub fn fail_next_ping(&self, error: PingError) {
        self.lock().ping_failures.push_back(error);
    }

    /// Whether pings get an answer ([`FAKE_ROUND_TRIP`]) or time out.
    pub fn set_gateway_reachable(&self, reachable: bool) {
        self.lock().gateway_reachable = reachable;
    }

    /// Every address present, sorted.
    pub fn addresses(&self) -> Vec<InstalledAddress> {
        self.lock().addresses.iter().map(|(spec, owned)| installed(spec, *owned)).collect()
    }

    /// Whether `spec` is present, and if so whether fechter owns it.
    pub fn address(&self, spec: &AddressSpec) -> Option<bool> {
        self.lock().addresses.get(spec).copied()
    }

    /// Every successful announcement so far, oldest first.
    pub fn announcements(&self) -> Vec<Announcement> {
        self.lock().announcements.clone()
    }

    /// Every announcement so far, removed from the record.
    pub fn take_announcements(&self) -> Vec<Announcement> {
        std::mem::take(&mut self.lock().announcements)
    }

    /// Every gateway pinged so far, oldest first.
    pub fn pings(&self) -> Vec<IpAddr> {
        self.lock().pings.clone()
    }
}

impl Net for FakeNet {
    async fn add_address(&self, spec: &AddressSpec) -> Result<(), NetError> {
        let mut fake = self.lock();
        fake.take_failure(FakeOp::AddAddress)?;
        spec.validate()?;
        if !fake.links.contains_key(&spec.interface) {
            return Err(NetError::NoSuchInterface(spec.interface.clone()));
        }
        if !fake.addresses.contains_key(spec) {
            fake.addresses.insert(spec.clone(), true);
            fake.emit(NetEvent::AddressAdded(installed(spec, true)));
        }
        Ok(())
    }

    async fn remove_address(&self, spec: &AddressSpec) -> Result<(), NetError> {
        removal::only_outcome(self.remove_addresses(std::slice::from_ref(spec)).await)
    }

    async fn remove_addresses(&self, specs: &[AddressSpec]) -> Outcomes {
        let mut fake = self.lock();
        if let Err(error) = fake.take_failure(FakeOp::RemoveAddress) {
            return specs.iter().map(|spec| (spec.clone(), Err(error.replicate()))).collect();
        }
        let mut outcomes = Vec::with_capacity(specs.len());
        for spec in specs {
            let step = removal::decide(spec, || {
                Ok(fake.addresses.get(spec).map(|owned| Found { target: (), owned: *owned }))
            });
            let outcome = match step {
                Step::Settled(outcome) => outcome,
                Step::Delete(()) => {
                    fake.addresses.remove(spec);
                    fake.emit(NetEvent::AddressRemoved(installed(spec, true)));
                    Ok(())
                }
            };
            outcomes.push((spec.clone(), outcome));
        }
        outcomes
    }

    async fn list_addresses(&self) -> Result<Vec<InstalledAddress>, NetError> {
        self.lock().take_failure(FakeOp::ListAddresses)?;
        Ok(self.addresses())
    }

    async fn link_state(&self, interface: &str) -> Result<LinkState, NetError> {
        let mut fake = self.lock();
        fake.take_failure(FakeOp::LinkState)?;
        Ok(fake.links.get(interface).copied().unwrap_or(LinkState::ABSENT))
    }

    async fn announce(
        &self,
        interface: &str,
        addresses: &[IpAddr],
        config: &AnnounceConfig,
    ) -> Result<(), NetError> {
        let mut fake = self.lock();
        fake.take_failure(FakeOp::Announce)?;
        for address in addresses {
            validate_unicast(*address)?;
        }
        if addresses.is_empty() || config.count == 0 {
            return Ok(());
        }
        match fake.links.get(interface) {
            None => return Err(NetError::NoSuchInterface(interface.to_owned())),
            Some(state) if !state.up => return Err(NetError::LinkDown(interface.to_owned())),
            Some(_) => {}
        }
        fake.announcements.push(Announcement {
            interface: interface.to_owned(),
            addresses: addresses.to_vec(),
            config: *config,
        });
        Ok(())
    }

    async fn ping(&self, gateway: IpAddr, timeout: Duration) -> Result<Duration, PingError> {
        if gateway.is_unspecified() || gateway.is_multicast() {
            return Err(PingError::InvalidAddress(gateway.to_string()));
        }
        let (reachable, failure) = {
            let mut fake = self.lock();
            fake.pings.push(gateway);
            (fake.gateway_reachable, fake.ping_failures.pop_front())
        };
        if let Some(error) = failure {
            return Err(error);
        }
        if reachable {
            Ok(FAKE_ROUND_TRIP)
        } else {
            // A real ping waits out its timeout before giving up; so does the fake, on the
            // caller's clock (tokio's paused test clock makes this instant).
            tokio::time::sleep(timeout).await;
            Err(PingError::Timeout)
        }
    }

    fn subscribe(&self) -> Result<mpsc::Receiver<NetEvent>, NetError> {
        let mut fake = self.lock();
        fake.take_failure(FakeOp::Subscribe)?;
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE_LEN);
        fake.subscribers.push(sender);
        Ok(receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> AddressSpec {
        AddressSpec::new("eth0", IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)), 24)
    }

    fn v6(last: u16) -> AddressSpec {
        AddressSpec::new("eth0", IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)), 64)
    }

    fn fake_with_eth0() -> FakeNet {
        let fake = FakeNet::new();
        fake.add_interface("eth0", LinkState::UP);
        fake
    }

    fn drain(events: &mut mpsc::Receiver<NetEvent>) -> Vec<NetEvent> {
        let mut drained = Vec::new();
        while let Ok(event) = events.try_recv() {
            drained.push(event);
        }
        drained
    }

    #[tokio::test]
    async fn add_is_idempotent_and_marks_ownership() {
        let fake = fake_with_eth0();
        let mut events = fake.subscribe().expect("subscribe");
        fake.add_address(&v4(10)).await.expect("add");
        fake.add_address(&v4(10)).await.expect("add again");
        assert_eq!(fake.address(&v4(10)), Some(true));
        assert_eq!(drain(&mut events), vec![NetEvent::AddressAdded(installed(&v4(10), true))]);
        let listed = fake.list_addresses().await.expect("list");
        assert_eq!(listed, vec![installed(&v4(10), true)]);
    }

    #[tokio::test]
    async fn add_needs_an_existing_interface_and_a_valid_spec() {
        let fake = fake_with_eth0();
        let elsewhere = AddressSpec::new("eth9", v4(10).address, 24);
        assert!(matches!(
            fake.add_address(&elsewhere).await,
            Err(NetError::NoSuchInterface(name)) if name == "eth9"
        ));
        let bad = AddressSpec::new("eth0", v4(10).address, 40);
        assert!(matches!(fake.add_address(&bad).await, Err(NetError::InvalidAddress(_))));
    }

    #[tokio::test]
    async fn remove_is_idempotent_and_never_touches_foreign_addresses() {
        let fake = fake_with_eth0();
        fake.add_foreign_address(&v4(20)).expect("foreign");
        fake.add_address(&v4(10)).await.expect("add");
        // Adding over a foreign address succeeds but does not make it fechter's.
        fake.add_address(&v4(20)).await.expect("add over foreign");
        assert_eq!(fake.address(&v4(20)), Some(false));

        assert!(matches!(
            fake.remove_address(&v4(20)).await,
            Err(NetError::NotOwned(spec)) if spec == v4(20)
        ));
        assert_eq!(fake.address(&v4(20)), Some(false));

        fake.remove_address(&v4(10)).await.expect("remove");
        fake.remove_address(&v4(10)).await.expect("remove again");
        let gone = AddressSpec::new("eth9", v4(10).address, 24);
        fake.remove_address(&gone).await.expect("missing interface");
        assert_eq!(fake.addresses(), vec![installed(&v4(20), false)]);
    }

    fn eth1(last: u8) -> AddressSpec {
        AddressSpec::new("eth1", IpAddr::V4(Ipv4Addr::new(198, 18, 1, last)), 24)
    }

    #[tokio::test]
    async fn batch_removal_applies_every_rule_to_each_spec() {
        let fake = fake_with_eth0();
        fake.add_interface("eth1", LinkState::UP);
        for spec in [v4(10), v4(11), v6(10), eth1(10)] {
            fake.add_address(&spec).await.expect("add");
        }
        fake.add_foreign_address(&v4(20)).expect("foreign");
        fake.add_foreign_address(&v6(20)).expect("foreign");
        let mut events = fake.subscribe().expect("subscribe");

        let missing_interface = AddressSpec::new("eth9", v4(10).address, 24);
        let invalid = AddressSpec::new("eth0", v4(12).address, 0);
        let batch = [
            v4(20),
            v4(10),
            missing_interface.clone(),
            v6(10),
            invalid.clone(),
            v4(30),
            eth1(10),
            v6(20),
            v4(11),
            v4(10),
        ];
        let outcomes = fake.remove_addresses(&batch).await;
        let specs: Vec<AddressSpec> = outcomes.iter().map(|(spec, _)| spec.clone()).collect();
        assert_eq!(specs, batch, "one outcome per spec, in the order given");
        for (spec, outcome) in &outcomes {
            if *spec == v4(20) || *spec == v6(20) {
                assert!(matches!(outcome, Err(NetError::NotOwned(refused)) if refused == spec), "{spec}");
            } else if *spec == invalid {
                assert!(matches!(outcome, Err(NetError::InvalidAddress(_))), "{spec}: {outcome:?}");
            } else {
                assert!(outcome.is_ok(), "{spec}: {outcome:?}");
            }
        }
        assert_eq!(fake.addresses(), vec![installed(&v4(20), false), installed(&v6(20), false)]);
        let removed: Vec<NetEvent> = [v4(10), v6(10), eth1(10), v4(11)]
            .iter()
            .map(|spec| NetEvent::AddressRemoved(installed(spec, true)))
            .collect();
        assert_eq!(drain(&mut events), removed, "one event per address actually removed");

        assert!(fake.remove_addresses(&[]).await.is_empty());
    }

    #[tokio::test]
    async fn an_injected_removal_failure_fails_the_whole_batch() {
        let fake = fake_with_eth0();
        fake.add_address(&v4(10)).await.expect("add");
        fake.add_address(&v4(11)).await.expect("add");
        fake.fail_next(FakeOp::RemoveAddress, NetError::Io(std::io::Error::other("socket closed")));
        let outcomes = fake.remove_addresses(&[v4(10), v4(11), v4(12)]).await;
        assert_eq!(outcomes.len(), 3);
        for (spec, outcome) in &outcomes {
            assert!(matches!(outcome, Err(NetError::Io(_))), "{spec}: {outcome:?}");
        }
        assert_eq!(fake.address(&v4(10)), Some(true));
        assert_eq!(fake.address(&v4(11)), Some(true));
        let outcomes = fake.remove_addresses(&[v4(10), v4(11)]).await;
        assert!(outcomes.iter().all(|(_, outcome)| outcome.is_ok()), "the failure fired once");
        assert!(fake.addresses().is_empty());
    }

    #[tokio::test]
    async fn link_changes_emit_events_and_drop_addresses_like_linux() {
        let fake = fake_with_eth0();
        fake.add_address(&v4(10)).await.expect("add v4");
        fake.add_address(&v6(10)).await.expect("add v6");
        let mut events = fake.subscribe().expect("subscribe");

        fake.set_link("eth0", LinkState::DOWN);
        assert_eq!(
            drain(&mut events),
            vec![
                NetEvent::AddressRemoved(installed(&v6(10), true)),
                NetEvent::LinkChanged { interface: "eth0".to_owned(), state: LinkState::DOWN },
            ]
        );
        assert_eq!(fake.link_state("eth0").await.ok(), Some(LinkState::DOWN));
        fake.set_link("eth0", LinkState::DOWN);
        assert!(drain(&mut events).is_empty(), "no change, no event");

        fake.set_link("eth0", LinkState::ABSENT);
        assert_eq!(
            drain(&mut events),
            vec![
                NetEvent::AddressRemoved(installed(&v4(10), true)),
                NetEvent::LinkChanged { interface: "eth0".to_owned(), state: LinkState::ABSENT },
            ]
        );
        assert_eq!(fake.link_state("eth0").await.ok(), Some(LinkState::ABSENT));
        assert!(fake.addresses().is_empty());
    }

    #[tokio::test]
    async fn removal_by_hand_is_reported() {
        let fake = fake_with_eth0();
        fake.add_address(&v4(10)).await.expect("add");
        let mut events = fake.subscribe().expect("subscribe");
        assert!(fake.remove_by_hand(&v4(10)));
        assert!(!fake.remove_by_hand(&v4(10)));
        assert_eq!(drain(&mut events), vec![NetEvent::AddressRemoved(installed(&v4(10), true))]);
    }

    #[tokio::test]
    async fn announcements_are_recorded_and_need_an_up_interface() {
        let fake = fake_with_eth0();
        let addresses = [v4(10).address, v6(10).address];
        let config = AnnounceConfig::default();
        fake.announce("eth0", &addresses, &config).await.expect("announce");
        assert_eq!(
            fake.announcements(),
            vec![Announcement { interface: "eth0".to_owned(), addresses: addresses.to_vec(), config }]
        );
        assert_eq!(fake.take_announcements().len(), 1);
        assert!(fake.announcements().is_empty());

        assert!(matches!(
            fake.announce("eth9", &addresses, &config).await,
            Err(NetError::NoSuchInterface(_))
        ));
        fake.set_link("eth0", LinkState::DOWN);
        assert!(matches!(fake.announce("eth0", &addresses, &config).await, Err(NetError::LinkDown(_))));
        let multicast = [IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1))];
        assert!(matches!(fake.announce("eth0", &multicast, &config).await, Err(NetError::InvalidAddress(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn ping_follows_the_programmed_reachability() {
        let fake = FakeNet::new();
        let gateway = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let timeout = Duration::from_millis(500);
        assert_eq!(fake.ping(gateway, timeout).await.ok(), Some(FAKE_ROUND_TRIP));
        fake.set_gateway_reachable(false);
        assert!(matches!(fake.ping(gateway, timeout).await, Err(PingError::Timeout)));
        fake.set_gateway_reachable(true);
        fake.fail_next_ping(PingError::Unreachable("test".to_owned()));
        assert!(matches!(fake.ping(gateway, timeout).await, Err(PingError::Unreachable(_))));
        assert!(fake.ping(gateway, timeout).await.is_ok());
        assert_eq!(fake.pings().len(), 4);
    }

    #[tokio::test]
    async fn injected_faults_fire_once_in_order() {
        let fake = fake_with_eth0();
        fake.fail_next(FakeOp::AddAddress, NetError::PermissionDenied);
        fake.fail_next(FakeOp::AddAddress, NetError::Netlink("busy".to_owned()));
        assert!(matches!(fake.add_address(&v4(10)).await, Err(NetError::PermissionDenied)));
        assert!(matches!(fake.add_address(&v4(10)).await, Err(NetError::Netlink(_))));
        fake.add_address(&v4(10)).await.expect("third try works");

        fake.fail_next(FakeOp::Subscribe, NetError::PermissionDenied);
        assert!(fake.subscribe().is_err());
        assert!(fake.subscribe().is_ok());
        fake.fail_next(FakeOp::ListAddresses, NetError::PermissionDenied);
        assert!(fake.list_addresses().await.is_err());
        fake.fail_next(FakeOp::LinkState, NetError::PermissionDenied);
        assert!(fake.link_state("eth0").await.is_err());
        fake.fail_next(FakeOp::RemoveAddress, NetError::PermissionDenied);
        assert!(fake.remove_address(&v4(10)).await.is_err());
        fake.fail_next(FakeOp::Announce, NetError::PermissionDenied);
        assert!(fake.announce("eth0", &[v4(10).address], &AnnounceConfig::default()).await.is_err());
        assert_eq!(fake.address(&v4(10)), Some(true));
    }

    #[tokio::test]
    async fn clones_share_state() {
        let fake = fake_with_eth0();
        let handle = fake.clone();
        fake.add_address(&v4(10)).await.expect("add");
        assert_eq!(handle.address(&v4(10)), Some(true));
    }
}
