//! The fechter daemon: gossip membership, leader allocation and address reconciliation.
//!
//! The pure core (`hlc`, `pool`, `cluster`, `leader`, `acks`, `reconcile`, `gateway`, `settle`) takes
//! time as an argument and returns decisions as data; `persist`, `control` and `daemon` do the IO.

pub mod acks;
pub mod checks;
pub mod cluster;
pub mod config;
pub mod control;
pub mod daemon;
pub mod gateway;
pub mod hlc;
pub mod hooks;
pub mod leader;
pub mod links;
pub mod maintenance;
pub mod metrics;
pub mod options;
pub mod persist;
pub mod pool;
pub mod reclaim;
pub mod reconcile;
pub mod service;
pub mod settle;
pub mod shell;
