//! Scuttlebutt anti-entropy gossip with a phi-accrual failure detector, sans-IO.
//!
//! Every node owns a key-value map; the maps reach every node by scuttlebutt anti-entropy (van
//! Renesse et al., LADIS 2008) in datagrams that never exceed a byte budget, and a phi-accrual
//! failure detector (Hayashibara et al., SRDS 2004) says who is alive. The crate knows nothing
//! about IP addresses beyond where to send datagrams.
//!
//! - [`Gossip`] is the pure core: feed it datagrams and ticks with the current time, and it
//!   returns the datagrams to send and the events to report.
//! - [`spawn`] drives a core on tokio over a [`Transport`] such as [`UdpTransport`], and
//!   returns a [`GossipHandle`].
//! - [`sim`] runs many cores on a seeded virtual network for tests and benchmarks.
//! - [`wire`] is the datagram format; [`crypto`] seals datagrams and rejects replays.
#![deny(missing_docs)]

mod config;
mod core;
pub mod crypto;
mod detector;
mod driver;
pub mod sim;
mod types;
pub mod wire;

pub use crate::config::Config;
pub use crate::core::Gossip;
pub use crate::driver::{
    BURST_SPACING, GossipHandle, KeyChange, Transport, UdpTransport, burst_rounds, spawn,
};
pub use crate::types::{ClusterView, Event, Liveness, NodeId, NodeView, Outgoing, Reading, SetError, Stats};
pub use crate::wire::{DecodedMessage, WireError, decode_datagram};
