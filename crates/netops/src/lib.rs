//! Linux side effects for fechter: addresses over netlink, gratuitous ARP and unsolicited neighbour
//! advertisements, link and address watching, and gateway pings.
//!
//! This is the only crate of fechter that touches the kernel. Everything it does sits behind the
//! narrow [`Net`] trait, with two implementations:
//!
//! - [`LinuxNet`], the real one: rtnetlink for addresses, links and events, `AF_PACKET` raw sockets
//!   (pnet) for announcements, and ICMP echo (surge-ping) for the gateway check. It works in the
//!   network namespace of the thread that created it.
//! - [`fake::FakeNet`], an in-memory model with the same semantics, fault injection and recorded
//!   announcements, which the daemon's tests use.
//!
//! # Ownership mark
//!
//! Every address fechter installs carries the address protocol attribute (`IFA_PROTO`, Linux 5.18
//! and later) set to [`FECHTER_ADDRESS_PROTOCOL`], and every IPv4 address also carries the label
//! `<ifname>:fch` when that fits in the kernel's 15-byte limit (see [`ownership_label`]). An address
//! that has neither mark is the operator's: fechter lists it with `owned == false` and refuses to
//! remove it ([`NetError::NotOwned`]).
#![deny(missing_docs)]

pub mod fake;
pub mod frames;
mod linux;
mod ping;
mod removal;
mod rtnl;
mod watch;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

pub use linux::LinuxNet;
pub use ping::SequenceCounter;

/// The value of the address protocol attribute (`IFA_PROTO`) on every address fechter installs.
///
/// The kernel reserves 1 to 3 for its own addresses (loopback, router advertisement, link-local),
/// and small numbers are what other tools pick first; 252 (0xfc) stays clear of both. `ip address`
/// shows it as `proto 252`.
pub const FECHTER_ADDRESS_PROTOCOL: u8 = 0xfc;

/// The suffix of the IPv4 label fechter puts on its addresses: `eth0` becomes `eth0:fch`.
pub const LABEL_SUFFIX: &str = ":fch";

/// The longest interface name or label the kernel accepts (`IFNAMSIZ` less the final NUL byte).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// The IPv4 label fechter gives its addresses on `interface`, or `None` when `<interface>:fch`
/// would not fit in [`MAX_INTERFACE_NAME_LEN`] bytes (the protocol attribute alone marks it then).
pub fn ownership_label(interface: &str) -> Option<String> {
    let label = format!("{interface}{LABEL_SUFFIX}");
    (label.len() <= MAX_INTERFACE_NAME_LEN).then_some(label)
}

/// An address fechter wants present (or absent) on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressSpec {
    /// The interface name, e.g. `eth0`.
    pub interface: String,
    /// The address itself, IPv4 or IPv6.
    pub address: IpAddr,
    /// The prefix length, 1 to 32 for IPv4 and 1 to 128 for IPv6.
    pub prefix_len: u8,
}

impl AddressSpec {
    /// A spec for `address/prefix_len` on `interface`.
    pub fn new(interface: impl Into<String>, address: IpAddr, prefix_len: u8) -> AddressSpec {
        AddressSpec { interface: interface.into(), address, prefix_len }
    }

    /// Checks what can be checked without the kernel: a name an interface could have, a unicast
    /// address, and a prefix length that fits the family.
    ///
    /// A name no interface can carry is reported as [`NetError::NoSuchInterface`], because that is
    /// what the kernel would answer for it.
    pub fn validate(&self) -> Result<(), NetError> {
        if !is_valid_interface_name(&self.interface) {
            return Err(NetError::NoSuchInterface(self.interface.clone()));
        }
        validate_unicast(self.address)?;
        let max = match self.address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if self.prefix_len == 0 || self.prefix_len > max {
            return Err(NetError::InvalidAddress(format!(
                "prefix length {} of {} is outside 1..={max}",
                self.prefix_len, self.address
            )));
        }
        Ok(())
    }
}

impl fmt::Display for AddressSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} on {}", self.address, self.prefix_len, self.interface)
    }
}

/// Whether the kernel would accept `name` as an interface name (`dev_valid_name` in Linux).
pub fn is_valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_LEN
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Rejects the addresses that can never be a service address: unspecified, multicast, loopback
/// and the IPv4 limited broadcast.
pub fn validate_unicast(address: IpAddr) -> Result<(), NetError> {
    let reason = if address.is_unspecified() {
        Some("unspecified")
    } else if address.is_multicast() {
        Some("multicast")
    } else if address.is_loopback() {
        Some("loopback")
    } else if address == IpAddr::V4(Ipv4Addr::BROADCAST) {
        Some("broadcast")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetError::InvalidAddress(format!("{address} is a {reason} address"))),
        None => Ok(()),
    }
}

/// An address present on an interface, as the kernel (or the fake) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstalledAddress {
    /// The interface name.
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// The prefix length.
    pub prefix_len: u8,
    /// True when fechter installed it (it carries fechter's mark); false for the operator's.
    pub owned: bool,
}

impl InstalledAddress {
    /// The spec that names this address.
    pub fn spec(&self) -> AddressSpec {
        AddressSpec::new(self.interface.clone(), self.address, self.prefix_len)
    }
}

/// The state of a network interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LinkState {
    /// The interface exists.
    pub exists: bool,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The lower layer reports a carrier (`IFF_LOWER_UP`): the cable is in.
    pub carrier: bool,
}

impl LinkState {
    /// The state of an interface that does not exist.
    pub const ABSENT: LinkState = LinkState { exists: false, up: false, carrier: false };
    /// The state of an interface that is up and has a carrier.
    pub const UP: LinkState = LinkState { exists: true, up: true, carrier: true };
    /// The state of an interface that is administratively down.
    pub const DOWN: LinkState = LinkState { exists: true, up: false, carrier: false };

    /// Whether packets can flow: the interface exists, is up and has a carrier.
    pub fn is_usable(&self) -> bool {
        self.exists && self.up && self.carrier
    }
}

/// A change seen on the host, reported by [`Net::subscribe`].
///
/// Linux re-announces an address whenever its flags change, so [`NetEvent::AddressAdded`] may come
/// again for an address already known: treat it as "this address is present".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// An interface appeared, disappeared, went up or down, or gained or lost its carrier.
    LinkChanged {
        /// The interface name.
        interface: String,
        /// Its new state.
        state: LinkState,
    },
    /// An address is present (newly added, or its flags changed).
    AddressAdded(InstalledAddress),
    /// An address was removed, by fechter or by anyone else.
    AddressRemoved(InstalledAddress),
}

/// How often to repeat an announcement.
///
/// The default is 3 rounds 1 s apart: the first round goes out at once, and the repeats catch
/// switches and hosts that missed or rate-limited it, the way keepalived and arping default to a
/// few repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnnounceConfig {
    /// How many rounds to send in all, the first one included. 0 sends nothing.
    pub count: u32,
    /// The time between the starts of two rounds.
    pub interval: Duration,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig { count: 3, interval: Duration::from_secs(1) }
    }
}

/// What can go wrong with an address, link or announcement operation.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No interface has this name (or the name is one no interface can have).
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    /// The process lacks CAP_NET_ADMIN (netlink changes) or CAP_NET_RAW (raw sockets).
    #[error("permission denied: fechter needs CAP_NET_ADMIN and CAP_NET_RAW")]
    PermissionDenied,
    /// The address or prefix length cannot be used; the text says why.
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    /// The address is present but was not installed by fechter, so fechter leaves it alone.
    #[error("{0} is present but was not installed by fechter; leaving it in place")]
    NotOwned(AddressSpec),
    /// The interface is administratively down, so nothing can be sent on it.
    #[error("interface {0} is down")]
    LinkDown(String),
    /// The interface has no Ethernet address (loopback, tunnels), so it cannot announce.
    #[error("interface {0} has no Ethernet address to announce from")]
    NoLinkLayerAddress(String),
    /// The kernel answered a netlink request with an error not covered above.
    #[error("netlink: {0}")]
    Netlink(String),
    /// A socket operation failed.
    #[error("I/O: {0}")]
    Io(#[source] io::Error),
}

impl NetError {
    /// An equal error for another operation the same failure stopped, such as every spec of a
    /// batch whose address dump failed. An I/O error is copied as its kind and text, because
    /// [`io::Error`] cannot be cloned.
    pub(crate) fn replicate(&self) -> NetError {
        match self {
            NetError::NoSuchInterface(name) => NetError::NoSuchInterface(name.clone()),
            NetError::PermissionDenied => NetError::PermissionDenied,
            NetError::InvalidAddress(reason) => NetError::InvalidAddress(reason.clone()),
            NetError::NotOwned(spec) => NetError::NotOwned(spec.clone()),
            NetError::LinkDown(name) => NetError::LinkDown(name.clone()),
            NetError::NoLinkLayerAddress(name) => NetError::NoLinkLayerAddress(name.clone()),
            NetError::Netlink(reason) => NetError::Netlink(reason.clone()),
            NetError::Io(error) => NetError::Io(io::Error::new(error.kind(), error.to_string())),
        }
    }
}

impl From<io::Error> for NetError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::PermissionDenied {
            NetError::PermissionDenied
        } else {
            NetError::Io(error)
        }
    }
}

/// What can go wrong with a gateway ping.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// No matching echo reply came back in time.
    #[error("no echo reply before the timeout")]
    Timeout,
    /// An ICMP error came back instead of an echo reply (e.g. destination unreachable).
    #[error("gateway unreachable: {0}")]
    Unreachable(String),
    /// The gateway address cannot be pinged (unspecified or multicast).
    #[error("invalid gateway address: {0}")]
    InvalidAddress(String),
    /// The process lacks CAP_NET_RAW.
    #[error("permission denied: pinging needs CAP_NET_RAW")]
    PermissionDenied,
    /// A socket operation failed.
    #[error("I/O: {0}")]
    Io(#[source] io::Error),
}

impl From<io::Error> for PingError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::PermissionDenied {
            PingError::PermissionDenied
        } else {
            PingError::Io(error)
        }
    }
}

/// The kernel-facing side of fechter, narrow enough to fake.
pub trait Net: Send + Sync + 'static {
    /// Installs `spec` with fechter's mark. Already present (fechter's or not) is success.
    fn add_address(&self, spec: &AddressSpec) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Removes `spec` if fechter installed it. Already gone (or its interface gone) is success; an
    /// address present without fechter's mark is left in place and reported as
    /// [`NetError::NotOwned`].
    fn remove_address(&self, spec: &AddressSpec) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Removes every spec of `specs`, each under the rules of [`Net::remove_address`]: an invalid
    /// spec fails alone, an address already gone (or on a missing interface) is success, and an
    /// address without fechter's mark stays in place and fails as [`NetError::NotOwned`] while
    /// the others are still removed.
    ///
    /// This is the way to release many addresses at once: [`LinuxNet`] reads the interfaces'
    /// addresses once for the whole batch and then sends the deletions without waiting for each
    /// answer in turn, where one [`Net::remove_address`] per address reads them all every time.
    ///
    /// Returns one outcome per spec, in the order given (a spec given twice is answered twice).
    /// A failure the whole batch shares, such as an address dump the kernel refused, is the
    /// outcome of every spec it stopped.
    fn remove_addresses(
        &self,
        specs: &[AddressSpec],
    ) -> impl Future<Output = Vec<(AddressSpec, Result<(), NetError>)>> + Send;

    /// Every address on every interface, fechter's and the operator's, sorted.
    fn list_addresses(&self) -> impl Future<Output = Result<Vec<InstalledAddress>, NetError>> + Send;

    /// The state of `interface`; a missing interface is [`LinkState::ABSENT`], not an error.
    fn link_state(&self, interface: &str) -> impl Future<Output = Result<LinkState, NetError>> + Send;

    /// Announces `addresses` on `interface`: gratuitous ARP (request and reply) for IPv4 and an
    /// unsolicited neighbour advertisement for IPv6.
    ///
    /// Returns once the first round went out; the remaining `config.count - 1` rounds follow in a
    /// background task, `config.interval` apart, so a failover is never delayed by the pacing.
    fn announce(
        &self,
        interface: &str,
        addresses: &[IpAddr],
        config: &AnnounceConfig,
    ) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Sends one ICMP echo request to `gateway` and waits up to `timeout` for the matching reply;
    /// returns the round-trip time.
    fn ping(
        &self,
        gateway: IpAddr,
        timeout: Duration,
    ) -> impl Future<Output = Result<Duration, PingError>> + Send;

    /// A stream of link and address changes, from now on (the first message about each link
    /// reports its current state). The watching stops when the receiver is dropped. The stream
    /// ends (`recv` returns `None`) if the kernel socket fails, e.g. after an overflow: subscribe
    /// again. Events can be lost that way, so a consumer should also reconcile from
    /// [`Net::list_addresses`] now and then.
    fn subscribe(&self) -> Result<tokio::sync::mpsc::Receiver<NetEvent>, NetError>;
}

/// How many events a subscriber may have waiting before the sender blocks (real) or drops (fake).
pub const EVENT_QUEUE_LEN: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn v4(text: &str) -> IpAddr {
        IpAddr::V4(text.parse().unwrap_or(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn label_is_used_only_when_it_fits() {
        assert_eq!(ownership_label("eth0").as_deref(), Some("eth0:fch"));
        assert_eq!(ownership_label("abcdefghijk").as_deref(), Some("abcdefghijk:fch"));
        assert_eq!(ownership_label("abcdefghijkl"), None);
    }

    #[test]
    fn validation_rejects_unusable_specs() {
        let ok = AddressSpec::new("eth0", v4("198.18.0.1"), 24);
        assert!(ok.validate().is_ok());
        let cases = [
            AddressSpec::new("eth0", v4("198.18.0.1"), 0),
            AddressSpec::new("eth0", v4("198.18.0.1"), 33),
            AddressSpec::new("eth0", v4("0.0.0.0"), 24),
            AddressSpec::new("eth0", v4("224.0.0.1"), 24),
            AddressSpec::new("eth0", v4("127.0.0.2"), 8),
            AddressSpec::new("eth0", v4("255.255.255.255"), 32),
            AddressSpec::new("eth0", IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
            AddressSpec::new("eth0", "2001:db8::1".parse().unwrap_or(v4("0.0.0.0")), 129),
        ];
        for spec in cases {
            assert!(matches!(spec.validate(), Err(NetError::InvalidAddress(_))), "{spec} should be invalid");
        }
        for name in ["", "a/b", "eth0:1", "with space", "sixteen-chars-xx", ".."] {
            let spec = AddressSpec::new(name, v4("198.18.0.1"), 24);
            assert!(matches!(spec.validate(), Err(NetError::NoSuchInterface(_))));
        }
    }

    #[test]
    fn io_permission_errors_become_permission_denied() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(NetError::from(denied), NetError::PermissionDenied));
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(PingError::from(denied), PingError::PermissionDenied));
        let other = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(matches!(NetError::from(other), NetError::Io(_)));
    }

    #[test]
    fn replicated_errors_keep_their_kind_and_text() {
        let errors = [
            NetError::NoSuchInterface("eth9".to_owned()),
            NetError::PermissionDenied,
            NetError::InvalidAddress("bad".to_owned()),
            NetError::NotOwned(AddressSpec::new("eth0", v4("198.18.0.1"), 24)),
            NetError::LinkDown("eth0".to_owned()),
            NetError::NoLinkLayerAddress("lo".to_owned()),
            NetError::Netlink("busy".to_owned()),
            NetError::Io(io::Error::from(io::ErrorKind::BrokenPipe)),
        ];
        for error in errors {
            let copy = error.replicate();
            assert_eq!(copy.to_string(), error.to_string());
            assert_eq!(std::mem::discriminant(&copy), std::mem::discriminant(&error));
        }
        let copy = NetError::Io(io::Error::from(io::ErrorKind::BrokenPipe)).replicate();
        assert!(matches!(copy, NetError::Io(error) if error.kind() == io::ErrorKind::BrokenPipe));
    }

    #[test]
    fn default_announce_config_is_three_rounds_a_second_apart() {
        let config = AnnounceConfig::default();
        assert_eq!(config.count, 3);
        assert_eq!(config.interval, Duration::from_secs(1));
    }
}
