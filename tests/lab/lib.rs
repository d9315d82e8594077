//! The namespace lab used by the end-to-end tests and the demo.
//!
//! A [`Lab`] is a small LAN built from network namespaces: a bridge namespace holding `br0`, where
//! every host's cable ends; a gateway (`.1`); a client (`.250`) that measures reachability from the
//! outside; and N nodes, each with `eth0` = `198.18.<net>.<11+i>/24` and a default route through the
//! gateway. Node `i` runs the real `fechterd` inside its namespace, and the real `fechter` talks to it
//! through its Unix socket (sockets are path-based, so the CLI runs in the host namespace).
//!
//! Everything a lab creates is named `flab-<tag>-<pid>-<counter>-<role>`, so labs of parallel tests
//! never meet, and a later run can tell the leftovers of a crashed run (whose pid is gone) from the
//! namespaces of a run still going. Dropping a lab kills every process it started and every process
//! still inside its namespaces, deletes the namespaces, and, when the drop happens during a panic,
//! prints the tail of every node's log first. Nothing outside the lab's own namespaces is touched.

mod binaries;
mod cluster;
mod gate;
mod netns;
mod process;
mod report;
mod sampler;
mod spread;
mod wait;

pub use binaries::Binaries;
pub use cluster::{GOSSIP_PORT, Lab, read_held};
pub use gate::{e2e_gate, effective_uid};
pub use netns::sweep_stale_labs;
pub use process::{CommandOutput, run_with_timeout};
pub use report::{AddressStatus, Info, NodeInfo, Status};
pub use sampler::{SampleLog, Sampler, double_holdings};
pub use spread::spread_problem;
pub use wait::wait_until;
