//! The fechter command-line client and the control-socket protocol it shares with fechterd.

pub mod proto;
