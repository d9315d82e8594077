//! Scuttlebutt anti-entropy gossip with a phi-accrual failure detector, sans-IO.
#![deny(missing_docs)]

pub mod crypto;
