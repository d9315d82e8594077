//! Command-line options, with the original Fechter's short flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use fechter_cli::proto::{DEFAULT_SOCKET, SOCKET_ENV};

/// The gossip port, and the default port of `--attach`.
pub const DEFAULT_PORT: u16 = 4573;

/// How many gossip intervals a node listens before it leads or acquires anything.
pub const SETTLE_INTERVALS: u32 = 10;

/// The fechter daemon: keeps a pool of IP addresses spread over the live nodes of a cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "fechterd", version, about)]
pub struct Options {
    /// Read options from this TOML file too (keys are the long option names, e.g.
    /// `listen-address = "10.0.0.10"`); the command line overrides it. SIGHUP reloads it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The address gossip binds to; with the port it is this node's id.
    #[arg(short = 'a', long, value_name = "ADDR")]
    pub listen_address: IpAddr,

    /// The gateway pinged to decide whether this node may hold addresses.
    #[arg(short = 'g', long, value_name = "ADDR")]
    pub gateway: IpAddr,

    /// The gossip UDP port.
    #[arg(short = 'p', long, default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// A running node to join, HOST[:PORT]; repeat for more.
    #[arg(short = 's', long = "attach", value_name = "HOST[:PORT]")]
    pub attach: Vec<AttachTarget>,

    /// The failure detector's phi threshold: a peer is dead above it.
    #[arg(short = 'D', long, value_name = "PHI", default_value_t = 8.0, value_parser = parse_phi)]
    pub dead_at: f64,

    /// Where the pool is kept across restarts.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/fechter")]
    pub state_dir: PathBuf,

    /// The control socket.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Authenticate and encrypt gossip with the keys in FILE (one base64 key per line).
    #[arg(long, value_name = "FILE")]
    pub cluster_key_file: Option<PathBuf>,

    /// Besides root, members of this group may change state over the control socket.
    #[arg(long, value_name = "NAME", default_value = crate::control::DEFAULT_ADMIN_GROUP)]
    pub admin_group: String,

    /// Start admin-up instead of waiting for `fechter up`.
    #[arg(long)]
    pub up: bool,

    /// The log filter, e.g. `info` or `fechterd=debug,info`.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,

    /// Datagrams of another cluster id are dropped.
    #[arg(long, value_name = "ID", default_value = "fechter")]
    pub cluster_id: String,

    /// Milliseconds between gossip rounds.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub gossip_interval_ms: u64,

    /// Gratuitous ARP / unsolicited NA packets sent per acquisition.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub announce_count: u32,

    /// Milliseconds between the packets of one announcement.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub announce_interval_ms: u64,

    /// Seconds between re-announcements of every held address; 0 turns them off.
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub refresh_interval_s: u64,

    /// Milliseconds between gateway pings.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub ping_interval_ms: u64,

    /// Milliseconds to wait for a gateway reply.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub ping_timeout_ms: u64,

    /// Hold addresses only while at least N live nodes are seen, this one included; 0 turns it off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub quorum: usize,

    /// Health checks: --check-exec, --check-http, --check-tcp and their timing.
    #[command(flatten)]
    pub checks: crate::checks::CheckOptions,

    /// Hooks run on acquire and release: --hooks-dir, --hook-timeout.
    #[command(flatten)]
    pub hooks: crate::hooks::HookOptions,

    /// The Prometheus endpoint: --metrics-address.
    #[command(flatten)]
    pub metrics: crate::metrics::MetricsOptions,
}

impl Options {
    /// Where gossip binds and peers reach this node.
    pub fn gossip_address(&self) -> SocketAddr {
        SocketAddr::new(self.listen_address, self.port)
    }

    /// This node's id: `ip:port`, `[ip6]:port` for IPv6.
    pub fn node_id(&self) -> String {
        self.gossip_address().to_string()
    }

    /// The gossip round interval.
    pub fn gossip_interval(&self) -> Duration {
        Duration::from_millis(self.gossip_interval_ms)
    }

    /// The periodic re-announcement interval, if any.
    pub fn refresh_interval(&self) -> Option<Duration> {
        (self.refresh_interval_s > 0).then(|| Duration::from_secs(self.refresh_interval_s))
    }
}

fn parse_phi(text: &str) -> Result<f64, String> {
    let phi: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if phi.is_finite() && phi > 0.0 {
        Ok(phi)
    } else {
        Err(format!("the phi threshold must be a positive number, not {text}"))
    }
}

/// A node to join: a host name or address and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachTarget {
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    /// The gossip port.
    pub port: u16,
}

impl AttachTarget {
    /// Resolves the target to socket addresses.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        Ok(tokio::net::lookup_host((self.host.as_str(), self.port)).await?.collect())
    }
}

impl std::fmt::Display for AttachTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for AttachTarget {
    type Err = String;

    /// Accepts `host`, `host:port`, an IPv6 address, or `[ipv6]:port`.
    fn from_str(text: &str) -> Result<AttachTarget, String> {
        let parse_port = |port: &str| {
            port.parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("{port:?} is not a port number (1-65535)"))
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: missing ']' after the IPv6 address"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{host:?} is not an IPv6 address"));
            }
            match after {
                "" => (host, DEFAULT_PORT),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, parse_port(port)?),
                    None => return Err(format!("{text:?}: expected ':PORT' after ']'")),
                },
            }
        } else if text.parse::<std::net::Ipv6Addr>().is_ok() {
            (text, DEFAULT_PORT)
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, parse_port(port)?),
                None => (text, DEFAULT_PORT),
            }
        };
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !valid_host {
            return Err(format!("{host:?} is not a host name or address"));
        }
        Ok(AttachTarget { host: host.to_owned(), port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("fechterd").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_and_node_id() {
        let options = parse(&["-a", "198.18.0.10", "-g", "198.18.0.1"]).unwrap();
        assert_eq!(options.node_id(), "198.18.0.10:4573");
        assert_eq!(options.dead_at, 8.0);
        assert_eq!(options.gossip_interval(), Duration::from_millis(100));
        assert_eq!(options.refresh_interval(), Some(Duration::from_secs(60)));
        assert_eq!(options.quorum, 0);
        assert_eq!(options.admin_group, "fechter");
        assert!(!options.up);
        let v6 = parse(&["-a", "2001:db8::1", "-g", "2001:db8::ff", "-p", "99"]).unwrap();
        assert_eq!(v6.node_id(), "[2001:db8::1]:99");
    }

    #[test]
    fn all_options_parse() {
        let options = parse(&[
            "-a",
            "10.0.0.10",
            "-g",
            "10.0.0.1",
            "-p",
            "5000",
            "-s",
            "10.0.0.11",
            "-s",
            "node-b:4000",
            "-D",
            "12.5",
            "--state-dir",
            "/tmp/s",
            "--socket",
            "/tmp/s.sock",
            "--up",
            "--quorum",
            "2",
            "--refresh-interval-s",
            "0",
        ])
        .unwrap();
        assert_eq!(
            options.attach,
            vec![
                AttachTarget { host: "10.0.0.11".into(), port: 4573 },
                AttachTarget { host: "node-b".into(), port: 4000 }
            ]
        );
        assert_eq!(options.dead_at, 12.5);
        assert_eq!(options.refresh_interval(), None);
        assert!(options.up);
    }

    #[test]
    fn bad_options_are_refused() {
        for args in [
            vec!["-g", "10.0.0.1"],
            vec!["-a", "10.0.0.10"],
            vec!["-a", "not-an-ip", "-g", "10.0.0.1"],
            vec!["-a", "10.0.0.10", "-g", "10.0.0.1", "-D", "0"],
            vec!["-a", "10.0.0.10", "-g", "10.0.0.1", "-D", "NaN"],
            vec!["-a", "10.0.0.10", "-g", "10.0.0.1", "-s", "host:0"],
            vec!["-a", "10.0.0.10", "-g", "10.0.0.1", "-s", "host:99999"],
            vec!["-a", "10.0.0.10", "-g", "10.0.0.1", "--gossip-interval-ms", "0"],
        ] {
            assert!(parse(&args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn attach_targets_parse_every_form() {
        let cases = [
            ("10.0.0.1", "10.0.0.1", 4573),
            ("10.0.0.1:99", "10.0.0.1", 99),
            ("host.example", "host.example", 4573),
            ("2001:db8::1", "2001:db8::1", 4573),
            ("[2001:db8::1]", "2001:db8::1", 4573),
            ("[2001:db8::1]:7", "2001:db8::1", 7),
        ];
        for (text, host, port) in cases {
            assert_eq!(text.parse::<AttachTarget>(), Ok(AttachTarget { host: host.into(), port }), "{text}");
        }
        for bad in ["", ":5", "[::1", "[nope]:5", "[::1]x", "a b", "host:", "a:b:c"] {
            assert!(bad.parse::<AttachTarget>().is_err(), "{bad:?}");
        }
        assert_eq!(AttachTarget { host: "::1".into(), port: 5 }.to_string(), "[::1]:5");
    }
}
