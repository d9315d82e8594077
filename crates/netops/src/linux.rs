//! [`LinuxNet`]: the real [`Net`], on rtnetlink, `AF_PACKET` raw sockets and ICMP echo.
//!
//! Every socket is opened in the network namespace of the thread that opens it: the netlink
//! connection in [`LinuxNet::new`], the event socket in [`Net::subscribe`], the announcement socket
//! on a blocking thread the runtime spawned, and the ICMP sockets on the first ping. The daemon runs
//! whole under `ip netns exec`, so all of them land in its namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use pnet::datalink::{self, Channel, DataLinkSender, NetworkInterface};
use pnet::packet::icmp::IcmpTypes;
use pnet::packet::icmpv6::Icmpv6Types;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::{Handle, MulticastGroup};
use surge_ping::{Client, ICMP, IcmpPacket, PingIdentifier, PingSequence, SurgeError};
use tokio::sync::{OnceCell, mpsc};
use tokio::task::JoinHandle;

use crate::frames::{self, MacAddr};
use crate::ping::{ReplySummary, SequenceCounter, check_reply};
use crate::removal::{self, Found, Outcomes, Step};
use crate::rtnl;
use crate::watch::Watcher;
use crate::{
    AddressSpec, AnnounceConfig, EVENT_QUEUE_LEN, InstalledAddress, LinkState, Net, NetError, NetEvent,
    PingError, is_valid_interface_name, validate_unicast,
};

/// Frames sent back to back before a pause, so that a round for hundreds of addresses does not
/// overrun a transmit queue or a switch: 64 frames per millisecond, which sends the 2 000 frames
/// of 1 000 IPv4 addresses in about 30 ms.
const FRAMES_PER_PACE: usize = 64;
/// The pause after every [`FRAMES_PER_PACE`] frames, and before retrying a frame the transmit
/// queue refused.
const PACE_GAP: Duration = Duration::from_millis(1);
/// How often one frame is retried while the transmit queue is full before the round fails.
const SEND_RETRIES: u32 = 50;
/// How long one send may wait for room in the socket buffer.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How many address deletions may wait for their answers at once.
///
/// The kernel handles a deletion while it is being sent, so the gain of sending the next one
/// before the answer is back is the round trip through the runtime, not kernel work: on a
/// two-worker runtime 200 deletions took 5 to 7 ms this way against 8 to 10 ms one after the
/// other. The bound is there because the kernel queues each answer on the socket and drops one
/// that finds the receive buffer full, which would leave its request waiting forever: 64 answers
/// of well under 100 bytes stay far below the default buffer of over 200 KiB.
const DELETES_IN_FLIGHT: usize = 64;
/// The payload of every echo request; it names the sender for whoever captures it.
const PING_PAYLOAD: &[u8] = b"fechter gateway check";

/// The real [`Net`] for Linux. Cheap to clone; clones share the netlink connection and the ping
/// sockets.
#[derive(Clone)]
pub struct LinuxNet {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Handle,
    connection: JoinHandle<()>,
    runtime: tokio::runtime::Handle,
    /// The echo identifier of this process, random so that two fechters (or a fechter and a
    /// `ping`) on one host never take each other's replies.
    identifier: u16,
    sequence: SequenceCounter,
    ping_v4: OnceCell<Client>,
    ping_v6: OnceCell<Client>,
}

impl std::fmt::Debug for LinuxNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxNet").field("echo_identifier", &self.inner.identifier).finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl LinuxNet {
    /// Opens a netlink connection in the current network namespace. Must run inside a tokio
    /// runtime, which also carries the background work (event watching, announcement repeats).
    pub async fn new() -> Result<LinuxNet, NetError> {
        let (connection, handle, _unsolicited) = rtnetlink::new_connection()?;
        let connection = tokio::spawn(connection);
        Ok(LinuxNet {
            inner: Arc::new(Inner {
                handle,
                connection,
                runtime: tokio::runtime::Handle::current(),
                identifier: rand::random(),
                sequence: SequenceCounter::default(),
                ping_v4: OnceCell::new(),
                ping_v6: OnceCell::new(),
            }),
        })
    }

    /// The echo identifier this instance puts in its requests.
    pub fn echo_identifier(&self) -> u16 {
        self.inner.identifier
    }

    async fn find_link(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        if !is_valid_interface_name(name) {
            return Ok(None);
        }
        let mut links = self.inner.handle.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(error) if rtnl::errno(&error) == Some(libc::ENODEV) => Ok(None),
            Err(error) => Err(rtnl::net_error(error, name)),
        }
    }

    async fn require_link(&self, name: &str) -> Result<LinkMessage, NetError> {
        self.find_link(name).await?.ok_or_else(|| NetError::NoSuchInterface(name.to_owned()))
    }

    /// Every address of the namespace. (The kernel dumps them all whatever the request names: the
    /// connection does not ask for strict checking, and filtering here would save nothing.)
    async fn dump_addresses(&self) -> Result<Vec<AddressMessage>, NetError> {
        self.inner
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|error| rtnl::net_error(error, ""))
    }

    /// The index of each interface a valid spec of `specs` names, or `None` for one that does not
    /// exist. Invalid specs are skipped: they fail without asking the kernel anything.
    async fn link_indices<'a>(
        &self,
        specs: &'a [AddressSpec],
    ) -> BTreeMap<&'a str, Result<Option<u32>, NetError>> {
        let mut indices = BTreeMap::new();
        for spec in specs.iter().filter(|spec| spec.validate().is_ok()) {
            if !indices.contains_key(spec.interface.as_str()) {
                let index =
                    self.find_link(&spec.interface).await.map(|link| link.map(|link| link.header.index));
                indices.insert(spec.interface.as_str(), index);
            }
        }
        indices
    }

    /// The addresses on the interfaces `indices`, from one dump, keyed by interface index, address
    /// and prefix length.
    async fn addresses_on(&self, indices: &BTreeSet<u32>) -> Result<AddressesByKey, NetError> {
        let mut addresses = BTreeMap::new();
        for message in self.dump_addresses().await? {
            if !indices.contains(&message.header.index) {
                continue;
            }
            if let Some(address) = rtnl::local_address(&message) {
                addresses
                    .entry((message.header.index, address, message.header.prefix_len))
                    .or_insert(message);
            }
        }
        Ok(addresses)
    }

    /// Sends `deletions` with up to [`DELETES_IN_FLIGHT`] of them awaiting their answers at once;
    /// returns each answer with the position it came with, in the order they arrived.
    async fn delete_concurrently(
        &self,
        deletions: Vec<(usize, AddressMessage)>,
    ) -> Vec<(usize, Result<(), rtnetlink::Error>)> {
        let handle = &self.inner.handle;
        futures::stream::iter(deletions)
            .map(|(position, request)| async move { (position, handle.address().del(request).execute().await) })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .collect()
            .await
    }

    async fn ping_client(&self, gateway: IpAddr) -> Result<&Client, PingError> {
        let (cell, kind) = match gateway {
            IpAddr::V4(_) => (&self.inner.ping_v4, ICMP::V4),
            IpAddr::V6(_) => (&self.inner.ping_v6, ICMP::V6),
        };
        cell.get_or_try_init(|| async move {
            // A raw socket lets this process choose the echo identifier and check it on the
            // reply; surge-ping falls back to a datagram socket, where the kernel owns it.
            let config = surge_ping::Config::builder().kind(kind).sock_type_hint(socket2::Type::RAW).build();
            Client::new(&config).map_err(PingError::from)
        })
        .await
    }
}

/// The addresses of some interfaces, keyed by interface index, address and prefix length.
type AddressesByKey = BTreeMap<(u32, IpAddr, u8), AddressMessage>;

/// A deletion a batch decided on.
struct Deletion {
    /// The request that deletes the address found.
    request: AddressMessage,
    /// Whether the address is an IPv4 primary, which goes after the others (see
    /// [`rtnl::is_ipv4_primary`]).
    primary: bool,
}

/// The outcome of one deletion.
fn deletion_outcome(answer: Result<(), rtnetlink::Error>, interface: &str) -> Result<(), NetError> {
    match answer {
        Ok(()) => Ok(()),
        // Someone removed it between the dump and the delete, or it went with its primary or its
        // interface: gone is what was asked for.
        Err(error) if matches!(rtnl::errno(&error), Some(libc::EADDRNOTAVAIL | libc::ENODEV)) => Ok(()),
        Err(error) => Err(rtnl::net_error(error, interface)),
    }
}

async fn dump_links(handle: &Handle) -> Result<Vec<LinkMessage>, NetError> {
    handle.link().get().execute().try_collect().await.map_err(|error| rtnl::net_error(error, ""))
}

async fn link_by_index(handle: &Handle, index: u32) -> Option<LinkMessage> {
    let mut links = handle.link().get().match_index(index).execute();
    links.try_next().await.ok().flatten()
}

impl Net for LinuxNet {
    async fn add_address(&self, spec: &AddressSpec) -> Result<(), NetError> {
        spec.validate()?;
        let link = self.require_link(&spec.interface).await?;
        let mut request = self.inner.handle.address().add(link.header.index, spec.address, spec.prefix_len);
        rtnl::mark_new_address(request.message_mut(), spec);
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(error) if rtnl::errno(&error) == Some(libc::EEXIST) => Ok(()),
            Err(error) => Err(rtnl::net_error(error, &spec.interface)),
        }
    }

    async fn remove_address(&self, spec: &AddressSpec) -> Result<(), NetError> {
        removal::only_outcome(self.remove_addresses(std::slice::from_ref(spec)).await)
    }

    async fn remove_addresses(&self, specs: &[AddressSpec]) -> Outcomes {
        let links = self.link_indices(specs).await;
        let existing: BTreeSet<u32> = links.values().filter_map(|index| *index.as_ref().ok()?).collect();
        // One dump serves the whole batch, which is what makes it fast: a dump lists every address
        // of the namespace, so one per spec made releasing many addresses quadratic.
        let present =
            if existing.is_empty() { Ok(BTreeMap::new()) } else { self.addresses_on(&existing).await };

        let mut outcomes = Vec::with_capacity(specs.len());
        let mut deletions = Vec::new();
        for (position, spec) in specs.iter().enumerate() {
            let step = removal::decide(spec, || {
                let index = match links.get(spec.interface.as_str()) {
                    Some(Ok(Some(index))) => *index,
                    Some(Err(error)) => return Err(error.replicate()),
                    // The interface is gone, and its addresses with it.
                    Some(Ok(None)) | None => return Ok(None),
                };
                let present = present.as_ref().map_err(NetError::replicate)?;
                Ok(present.get(&(index, spec.address, spec.prefix_len)).map(|message| Found {
                    target: Deletion {
                        request: rtnl::delete_request(message),
                        primary: rtnl::is_ipv4_primary(message),
                    },
                    owned: rtnl::is_owned(message, &spec.interface),
                }))
            });
            match step {
                Step::Settled(outcome) => outcomes.push((spec.clone(), outcome)),
                Step::Delete(deletion) => {
                    // A placeholder, replaced by the kernel's answer below.
                    outcomes.push((spec.clone(), Ok(())));
                    deletions.push((position, deletion));
                }
            }
        }

        // IPv4 primaries go in a second round, once the secondaries of the batch are gone. Deleting
        // a primary while secondaries of its subnet remain makes the kernel delete them behind the
        // batch's back (`promote_secondaries` off) or promote one and rewrite its routes (on);
        // deleting the secondaries first leaves the kernel none of that to do, either way.
        let (primaries, others): (Vec<_>, Vec<_>) =
            deletions.into_iter().partition(|(_, deletion)| deletion.primary);
        for round in [others, primaries] {
            let requests =
                round.into_iter().map(|(position, deletion)| (position, deletion.request)).collect();
            for (position, answer) in self.delete_concurrently(requests).await {
                if let Some((spec, outcome)) = outcomes.get_mut(position) {
                    *outcome = deletion_outcome(answer, &spec.interface);
                }
            }
        }
        outcomes
    }

    async fn list_addresses(&self) -> Result<Vec<InstalledAddress>, NetError> {
        let names: BTreeMap<u32, String> = dump_links(&self.inner.handle)
            .await?
            .iter()
            .filter_map(|link| Some((link.header.index, rtnl::link_name(link)?.to_owned())))
            .collect();
        let mut addresses: Vec<InstalledAddress> = self
            .dump_addresses()
            .await?
            .iter()
            .filter_map(|message| {
                let name = names.get(&message.header.index)?;
                rtnl::installed_address(message, name)
            })
            .collect();
        addresses.sort();
        Ok(addresses)
    }

    async fn link_state(&self, interface: &str) -> Result<LinkState, NetError> {
        Ok(self.find_link(interface).await?.map_or(LinkState::ABSENT, |link| rtnl::link_state(&link)))
    }

    async fn announce(
        &self,
        interface: &str,
        addresses: &[IpAddr],
        config: &AnnounceConfig,
    ) -> Result<(), NetError> {
        for address in addresses {
            validate_unicast(*address)?;
        }
        if addresses.is_empty() || config.count == 0 {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        let link = self.require_link(interface).await?;
        if !rtnl::link_state(&link).up {
            return Err(NetError::LinkDown(interface.to_owned()));
        }
        let mac = rtnl::link_mac(&link).ok_or_else(|| NetError::NoLinkLayerAddress(interface.to_owned()))?;
        let first_round = frames::announcement_frames(mac, addresses);
        let target = datalink_interface(interface, link.header.index, mac);

        let sender = tokio::task::spawn_blocking(move || {
            let mut sender = open_sender(&target)?;
            send_round(sender.as_mut(), &first_round, &target.name)?;
            Ok::<_, NetError>(sender)
        })
        .await
        .map_err(|error| NetError::Io(io::Error::other(error.to_string())))??;

        if config.count > 1 {
            let repeat = Repeat {
                net: self.clone(),
                interface: interface.to_owned(),
                index: link.header.index,
                mac,
                addresses: addresses.to_vec(),
            };
            tokio::spawn(
                repeat.run(sender, RoundTimes { started, rounds: config.count, interval: config.interval }),
            );
        }
        Ok(())
    }

    async fn ping(&self, gateway: IpAddr, timeout: Duration) -> Result<Duration, PingError> {
        if gateway.is_unspecified() || gateway.is_multicast() {
            return Err(PingError::InvalidAddress(gateway.to_string()));
        }
        let client = self.ping_client(gateway).await?;
        let raw_socket = client.get_socket().get_type() == socket2::Type::RAW;
        let sequence = self.inner.sequence.next();
        let mut pinger = client.pinger(gateway, PingIdentifier(self.inner.identifier)).await;
        pinger.timeout(timeout);
        match pinger.ping(PingSequence(sequence), PING_PAYLOAD).await {
            Ok((packet, round_trip)) => {
                let identifier = raw_socket.then_some(self.inner.identifier);
                check_reply(&summarize(&packet), identifier, sequence)?;
                Ok(round_trip)
            }
            Err(SurgeError::Timeout { .. }) => Err(PingError::Timeout),
            Err(SurgeError::IOError(error)) => Err(ping_io_error(error)),
            Err(error) => Err(PingError::Io(io::Error::other(error.to_string()))),
        }
    }

    fn subscribe(&self) -> Result<mpsc::Receiver<NetEvent>, NetError> {
        // The netlink socket registers with the runtime's reactor, which needs its context even
        // when the caller is not a task.
        let _context = self.inner.runtime.enter();
        let (connection, _handle, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])?;
        let connection = self.inner.runtime.spawn(connection);
        let (events, receiver) = mpsc::channel(EVENT_QUEUE_LEN);
        self.inner.runtime.spawn(forward_events(self.inner.handle.clone(), messages, events, connection));
        Ok(receiver)
    }
}

/// When the rounds of one announcement are due: round `k` (counting the first as 0) starts
/// `k * interval` after `started`.
struct RoundTimes {
    started: tokio::time::Instant,
    rounds: u32,
    interval: Duration,
}

/// The later rounds of one announcement, sent in the background.
struct Repeat {
    net: LinuxNet,
    interface: String,
    index: u32,
    mac: MacAddr,
    addresses: Vec<IpAddr>,
}

impl Repeat {
    /// Sends the rounds after the first when they are due, each only for the addresses still on
    /// the interface: an address released (or moved to another node) since must not be claimed
    /// again, or neighbours would follow this node's late announcement away from its new holder.
    async fn run(mut self, mut sender: Box<dyn DataLinkSender>, times: RoundTimes) {
        for round in 1..times.rounds {
            let due = times.interval.checked_mul(round).and_then(|offset| times.started.checked_add(offset));
            let Some(due) = due else {
                // An interval so long that the round would come after the end of time.
                return;
            };
            tokio::time::sleep_until(due).await;
            let installed: BTreeSet<IpAddr> = match self.net.dump_addresses().await {
                Ok(messages) => messages
                    .iter()
                    .filter(|message| message.header.index == self.index)
                    .filter_map(rtnl::local_address)
                    .collect(),
                Err(error) => {
                    tracing::warn!(interface = %self.interface, %error, round, "cannot list addresses; dropping the remaining announcement rounds");
                    return;
                }
            };
            self.addresses.retain(|address| installed.contains(address));
            if self.addresses.is_empty() {
                return;
            }
            let round_frames = frames::announcement_frames(self.mac, &self.addresses);
            let name = self.interface.clone();
            let sent = tokio::task::spawn_blocking(move || {
                let result = send_round(sender.as_mut(), &round_frames, &name);
                (sender, result)
            })
            .await;
            match sent {
                Ok((returned, Ok(()))) => sender = returned,
                Ok((_, Err(error))) => {
                    tracing::warn!(interface = %self.interface, %error, round, "announcement repeat failed; dropping the remaining rounds");
                    return;
                }
                Err(error) => {
                    tracing::warn!(interface = %self.interface, %error, round, "announcement repeat did not finish");
                    return;
                }
            }
        }
    }
}

fn datalink_interface(name: &str, index: u32, mac: MacAddr) -> NetworkInterface {
    // pnet binds its socket by index; the other fields only describe the interface.
    NetworkInterface {
        name: name.to_owned(),
        description: String::new(),
        index,
        mac: Some(mac),
        ips: Vec::new(),
        flags: 0,
    }
}

fn open_sender(target: &NetworkInterface) -> Result<Box<dyn DataLinkSender>, NetError> {
    let config = datalink::Config {
        promiscuous: false,
        write_timeout: Some(SEND_TIMEOUT),
        ..datalink::Config::default()
    };
    match datalink::channel(target, config) {
        Ok(Channel::Ethernet(sender, _receiver)) => Ok(sender),
        Ok(_) => Err(NetError::Io(io::Error::other("pnet opened a channel that is not Ethernet"))),
        Err(error) => Err(send_error(error, &target.name)),
    }
}

/// Sends one round, pausing after every [`FRAMES_PER_PACE`] frames.
fn send_round(sender: &mut dyn DataLinkSender, frames: &[Vec<u8>], interface: &str) -> Result<(), NetError> {
    for (position, frame) in frames.iter().enumerate() {
        if position > 0 && position % FRAMES_PER_PACE == 0 {
            std::thread::sleep(PACE_GAP);
        }
        send_frame(sender, frame, interface)?;
    }
    Ok(())
}

fn send_frame(sender: &mut dyn DataLinkSender, frame: &[u8], interface: &str) -> Result<(), NetError> {
    let mut retries = 0;
    loop {
        match sender.send_to(frame, None) {
            Some(Ok(())) => return Ok(()),
            Some(Err(error)) if is_congestion(&error) && retries < SEND_RETRIES => {
                retries += 1;
                std::thread::sleep(PACE_GAP);
            }
            Some(Err(error)) => return Err(send_error(error, interface)),
            None => {
                return Err(NetError::Io(io::Error::other("the frame does not fit pnet's send buffer")));
            }
        }
    }
}

fn is_congestion(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock || error.raw_os_error() == Some(libc::ENOBUFS)
}

fn send_error(error: io::Error, interface: &str) -> NetError {
    match error.raw_os_error() {
        Some(libc::ENETDOWN) => NetError::LinkDown(interface.to_owned()),
        Some(libc::ENODEV | libc::ENXIO) => NetError::NoSuchInterface(interface.to_owned()),
        _ => NetError::from(error),
    }
}

fn ping_io_error(error: io::Error) -> PingError {
    match error.raw_os_error() {
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => PingError::Unreachable(error.to_string()),
        _ => PingError::from(error),
    }
}

fn summarize(packet: &IcmpPacket) -> ReplySummary {
    match packet {
        IcmpPacket::V4(packet) => ReplySummary {
            is_echo_reply: packet.get_icmp_type() == IcmpTypes::EchoReply,
            icmp_type: packet.get_icmp_type().0,
            icmp_code: packet.get_icmp_code().0,
            identifier: packet.get_identifier().0,
            sequence: packet.get_sequence().0,
        },
        IcmpPacket::V6(packet) => ReplySummary {
            is_echo_reply: packet.get_icmpv6_type() == Icmpv6Types::EchoReply,
            icmp_type: packet.get_icmpv6_type().0,
            icmp_code: packet.get_icmpv6_code().0,
            identifier: packet.get_identifier().0,
            sequence: packet.get_sequence().0,
        },
    }
}

fn address_index(message: &RouteNetlinkMessage) -> Option<u32> {
    match message {
        RouteNetlinkMessage::NewAddress(address) | RouteNetlinkMessage::DelAddress(address) => {
            Some(address.header.index)
        }
        _ => None,
    }
}

/// Translates multicast messages into events until the subscriber goes away or the socket fails.
async fn forward_events<M, A>(
    handle: Handle,
    mut messages: M,
    events: mpsc::Sender<NetEvent>,
    connection: JoinHandle<()>,
) where
    M: Stream<Item = (NetlinkMessage<RouteNetlinkMessage>, A)> + Unpin,
{
    let mut watcher = Watcher::default();
    // The dump only names the interfaces that exist already, for the address events.
    match dump_links(&handle).await {
        Ok(links) => links.iter().for_each(|link| watcher.learn_name(link)),
        Err(error) => tracing::warn!(%error, "cannot list links for the event watcher"),
    }
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            () = events.closed() => None,
        };
        let Some((message, _)) = next else {
            break;
        };
        let NetlinkPayload::InnerMessage(message) = message.payload else {
            continue;
        };
        if let Some(index) = address_index(&message)
            && !watcher.knows(index)
            && let Some(link) = link_by_index(&handle, index).await
        {
            watcher.learn_name(&link);
        }
        if let Some(event) = watcher.on_message(&message)
            && events.send(event).await.is_err()
        {
            break;
        }
    }
    connection.abort();
}
