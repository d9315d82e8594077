//! End-to-end tests: the real `fechterd` and `fechter` binaries in network namespaces.
//!
//! Every test builds its own [`fechter_lab::Lab`] (its own namespaces, sockets and state), so the
//! tests run in parallel. They need root and `ip netns`; elsewhere each one prints why it skipped,
//! unless `FECHTER_E2E=require` turns a skip into a failure (CI sets it). The binaries come from
//! the same cargo target directory; `cargo build --workspace` puts them there.

mod admin;
mod chaos;
mod cli_input;
mod common;
mod failover;
mod garbage;
mod gateway;
mod ipv6;
mod lan;
mod ops_config;
mod ops_health;
mod ops_maintenance;
mod restart;
mod security;
mod spread;
mod state_dir;
