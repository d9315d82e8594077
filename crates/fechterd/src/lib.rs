//! The fechter daemon: gossip membership, leader allocation and address reconciliation.
//!
//! The pure core (`hlc`, `pool`, `cluster`, `leader`, `reconcile`, `gateway`) takes time as an
//! argument and returns decisions as data; `persist`, `control` and `daemon` do the IO.

pub mod cluster;
pub mod control;
pub mod daemon;
pub mod gateway;
pub mod hlc;
pub mod leader;
pub mod options;
pub mod persist;
pub mod pool;
pub mod reconcile;
