//! The control-socket protocol between `fechter` and `fechterd`.
//!
//! One request and one reply per line, each a JSON object, over the daemon's Unix socket. Every
//! message carries `version`, so a CLI and a daemon of different releases fail with a clear error
//! instead of misreading each other. These types are the whole wire format: only the two binaries
//! know it, and nothing else in the workspace derives serde for the control plane.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Where the daemon listens and the CLI connects unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/fechter/fechterd.sock";

/// The environment variable both binaries read for the socket path.
pub const SOCKET_ENV: &str = "FECHTER_SOCKET";

/// The longest request line the daemon reads; anything longer is refused without being parsed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A request from the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

impl Request {
    /// A request in this build's protocol version.
    pub fn new(command: Command) -> Request {
        Request { version: PROTOCOL_VERSION, command }
    }
}

/// The commands the daemon understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// Add an address to the cluster's pool.
    AddAddress {
        /// The interface the address is installed on, on whichever node holds it.
        interface: String,
        /// The address itself.
        address: IpAddr,
        /// The prefix length; the daemon uses /32 or /128 when absent.
        prefix_len: Option<u8>,
    },
    /// Remove an address from the pool; it stays behind as a tombstone.
    RemoveAddress {
        /// The interface named when the address was added.
        interface: String,
        /// The address to remove.
        address: IpAddr,
    },
    /// Declare this node ready to hold addresses.
    Up,
    /// Declare this node not ready: its addresses move away.
    Down,
    /// The pool and who holds what.
    Status,
    /// This node and its peers.
    Info,
    /// Whether this node reaches its gateway.
    Connectivity,
    /// Turn cluster-wide maintenance mode on or off: while it is on, no address is acquired,
    /// released or reassigned anywhere, whatever happens to the nodes.
    Maintenance {
        /// Whether maintenance mode should be on.
        on: bool,
    },
}

impl Command {
    /// Whether the command changes cluster or node state, as opposed to only reading it.
    /// The daemon lets only privileged peers run changing commands.
    pub fn changes_state(&self) -> bool {
        match self {
            Command::AddAddress { .. }
            | Command::RemoveAddress { .. }
            | Command::Up
            | Command::Down
            | Command::Maintenance { .. } => true,
            Command::Status | Command::Info | Command::Connectivity => false,
        }
    }
}

/// A reply from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The daemon's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Reply {
    /// A successful reply in this build's protocol version.
    pub fn ok(body: Body) -> Reply {
        Reply { version: PROTOCOL_VERSION, outcome: Outcome::Ok(body) }
    }

    /// An error reply in this build's protocol version.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Reply {
        Reply { version: PROTOCOL_VERSION, outcome: Outcome::Error { kind, message: message.into() } }
    }
}

/// Success with a body, or a typed error with a message meant for the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// The command was carried out.
    Ok(Body),
    /// The command was refused and changed nothing.
    Error {
        /// What went wrong, for programs.
        kind: ErrorKind,
        /// What went wrong, for people.
        message: String,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The request line was not a valid request.
    MalformedRequest,
    /// The request was in a protocol version this daemon does not speak.
    UnsupportedVersion,
    /// An interface name, address or prefix was not valid.
    InvalidArgument,
    /// The address is already in the pool.
    DuplicateAddress,
    /// The address is not in the pool.
    UnknownAddress,
    /// The peer may not change state over this socket.
    PermissionDenied,
    /// The daemon could not carry out a valid command.
    Internal,
}

/// The payload of a successful reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "body", rename_all = "kebab-case")]
pub enum Body {
    /// A changing command was accepted.
    Done,
    /// The reply to [`Command::Status`].
    Status(StatusReport),
    /// The reply to [`Command::Info`].
    Info(InfoReport),
    /// The reply to [`Command::Connectivity`].
    Connectivity(ConnectivityReport),
}

/// The pool and its assignment, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node the cluster follows for assignments, if any is known.
    pub leader: Option<String>,
    /// Active addresses in pool order; tombstones are left out.
    pub addresses: Vec<AddressStatus>,
    /// Whether cluster-wide maintenance mode is on: every assignment is frozen, even a dead
    /// node's. Absent in the replies of daemons older than maintenance mode, which means off.
    #[serde(default)]
    pub maintenance: bool,
    /// The health of every live node that publishes it, this one included, ordered by id.
    /// Absent in the replies of daemons older than health checks.
    #[serde(default)]
    pub health: Vec<NodeHealth>,
}

/// One active pool address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressStatus {
    /// The interface it is installed on.
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The node id the leader assigned it to.
    pub assigned_to: Option<String>,
    /// The node ids that report holding it right now (more than one only while a conflict lasts).
    pub held_by: Vec<String>,
}

/// This node and every peer it knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoReport {
    /// This node.
    pub local: NodeInfo,
    /// The other nodes, ordered by id.
    pub peers: Vec<NodeInfo>,
    /// The node the cluster follows for assignments, if any is known.
    pub leader: Option<String>,
}

/// What is known about one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node id, `ip:port`.
    pub id: String,
    /// Whether the failure detector considers it alive.
    pub liveness: Liveness,
    /// The operator's `up` or `down`, when the node has published it.
    pub admin: Option<AdminState>,
    /// Whether it reaches its gateway, when published.
    pub gateway_reachable: Option<bool>,
    /// Whether it may hold addresses now.
    pub eligible: bool,
    /// The failure detector's suspicion level, when it has enough samples.
    pub phi: Option<f64>,
    /// How many addresses it reports holding.
    pub held: usize,
    /// Its health checks and links, when it has published them. Absent in the replies of daemons
    /// older than health checks.
    #[serde(default)]
    pub health: Option<Health>,
}

/// A node's health: whether its checks pass and which of its interfaces are unusable.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Health {
    /// Whether every health check passes (after its rise and fall counts); true without checks.
    pub healthy: bool,
    /// The checks that fail, by name (`exec:CMD`, `http:URL`, `tcp:HOST:PORT`).
    #[serde(default)]
    pub failing_checks: Vec<String>,
    /// The pool interfaces that are missing, down or without carrier there: none of their
    /// addresses are given to the node until they return.
    #[serde(default)]
    pub down_interfaces: Vec<String>,
}

/// One node's health in a [`StatusReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// The node id, `ip:port`.
    pub id: String,
    /// Its health.
    #[serde(flatten)]
    pub health: Health,
}

/// A node's liveness as the failure detector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Liveness {
    /// Heartbeats arrive.
    Alive,
    /// Heartbeats stopped.
    Dead,
    /// The node said it was leaving.
    Left,
}

/// The operator's say on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminState {
    /// `fechter up`.
    Up,
    /// `fechter down`, and the state every node starts in.
    Down,
}

/// The reply to [`Command::Connectivity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectivityReport {
    /// The gateway this node pings.
    pub gateway: IpAddr,
    /// Whether the gateway answers.
    pub reachable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form_is_flat_and_versioned() {
        let request = Request::new(Command::AddAddress {
            interface: "eth0".to_owned(),
            address: "198.18.0.20".parse().unwrap(),
            prefix_len: Some(24),
        });
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(
            line,
            r#"{"version":1,"command":"add-address","interface":"eth0","address":"198.18.0.20","prefix_len":24}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::ok(Body::Done),
            Reply::error(ErrorKind::UnknownAddress, "eth0:198.18.0.21 is not in the pool"),
            Reply::ok(Body::Connectivity(ConnectivityReport {
                gateway: "198.18.0.1".parse().unwrap(),
                reachable: true,
            })),
        ];
        for reply in replies {
            let line = serde_json::to_string(&reply).unwrap();
            assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), reply);
        }
    }

    #[test]
    fn maintenance_is_a_changing_command_and_old_status_replies_mean_off() {
        let request = Request::new(Command::Maintenance { on: true });
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(line, r#"{"version":1,"command":"maintenance","on":true}"#);
        assert!(request.command.changes_state());
        let old = r#"{"version":1,"result":"ok","body":"status","leader":null,"addresses":[]}"#;
        let reply: Reply = serde_json::from_str(old).unwrap();
        let Outcome::Ok(Body::Status(report)) = reply.outcome else { panic!("{reply:?}") };
        assert!(!report.maintenance);
    }

    #[test]
    fn unknown_commands_do_not_parse() {
        assert!(serde_json::from_str::<Request>(r#"{"version":1,"command":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"command":"up"}"#).is_err());
    }
}
