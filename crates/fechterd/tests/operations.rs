//! Link monitoring and health checks with whole daemons in one process: real gossip over
//! loopback UDP and a `FakeNet` per node, whose links a test can take down (a `FakeNet` drops a
//! downed link's IPv6 addresses, as Linux does).
//!
//! These run in process rather than in the namespace lab because taking a lab node's only
//! interface down also cuts its gossip; here each node has a second interface, `eth1`, that
//! carries pool addresses only.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use fechter_cli::proto::{Body, Command, Health, InfoReport, Outcome, Reply};
use fechter_netops::LinkState;
use fechter_netops::fake::FakeNet;
use fechterd::checks::{Check, ChecksConfig};
use fechterd::control::ControlRequest;
use fechterd::daemon::DaemonError;
use fechterd::pool::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

mod support;
use support::{eventually, start_daemon};

struct Node {
    net: FakeNet,
    address: SocketAddr,
    control: mpsc::Sender<ControlRequest>,
    _shutdown: oneshot::Sender<()>,
    _task: JoinHandle<Result<(), DaemonError>>,
}

impl Node {
    async fn start(seeds: &[SocketAddr], name: &str, checks: ChecksConfig) -> Node {
        let net = FakeNet::new();
        net.add_interface("eth0", LinkState::UP);
        net.add_interface("eth1", LinkState::UP);
        let state_dir: PathBuf =
            std::env::temp_dir().join(format!("fechterd-operations-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state_dir);
        let started = start_daemon(
            seeds,
            &net,
            state_dir,
            Pool::new(),
            |config| config.admin_up = true,
            |daemon| daemon.with_checks(checks),
        )
        .await;
        Node {
            net,
            address: started.address,
            control: started.control,
            _shutdown: started.shutdown,
            _task: started.task,
        }
    }

    async fn send(&self, command: Command) -> Reply {
        support::send(&self.control, command).await
    }

    async fn info(&self) -> InfoReport {
        match self.send(Command::Info).await.outcome {
            Outcome::Ok(Body::Info(report)) => report,
            other => panic!("unexpected info reply {other:?}"),
        }
    }

    fn held_on(&self, interface: &str) -> Vec<IpAddr> {
        self.net
            .addresses()
            .into_iter()
            .filter(|installed| installed.owned && installed.interface == interface)
            .map(|installed| installed.address)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_without_carrier_hands_over_its_addresses_and_gets_them_back() {
    let a = Node::start(&[], "links-a", ChecksConfig::default()).await;
    let b = Node::start(&[a.address], "links-b", ChecksConfig::default()).await;
    let v4: Vec<IpAddr> = (1..=2).map(|n| IpAddr::from([198, 18, 1, n])).collect();
    let v6: Vec<IpAddr> = (1..=2).map(|n| format!("2001:db8::{n}").parse().unwrap()).collect();
    for address in &v4 {
        let add = Command::AddAddress { interface: "eth0".into(), address: *address, prefix_len: None };
        assert_eq!(a.send(add).await, Reply::ok(Body::Done));
    }
    for address in &v6 {
        let add = Command::AddAddress { interface: "eth1".into(), address: *address, prefix_len: Some(64) };
        assert_eq!(a.send(add).await, Reply::ok(Body::Done));
    }
    // [A's eth0, A's eth1, B's eth0, B's eth1] counts; balance is over the whole pool while
    // every link is up, so the split between interfaces is the allocator's choice.
    let spread = |a: &Node, b: &Node| {
        [a.held_on("eth0").len(), a.held_on("eth1").len(), b.held_on("eth0").len(), b.held_on("eth1").len()]
    };
    let balanced =
        |held: [usize; 4]| held[0] + held[2] == 2 && held[1] + held[3] == 2 && held[0] + held[1] == 2;
    eventually("each node holds two addresses", async || balanced(spread(&a, &b))).await;

    b.net.set_link("eth1", LinkState { exists: true, up: true, carrier: false });
    eventually("eth1's addresses all go to A", async || {
        let held = spread(&a, &b);
        held[1] == 2 && held[3] == 0 && held[0] + held[2] == 2
    })
    .await;
    let b_id = b.address.to_string();
    let expected =
        Health { healthy: true, failing_checks: Vec::new(), down_interfaces: vec!["eth1".to_owned()] };
    eventually("A's info shows B's eth1 down, B still eligible", async || {
        let info = a.info().await;
        info.peers
            .iter()
            .any(|peer| peer.id == b_id && peer.eligible && peer.health.as_ref() == Some(&expected))
    })
    .await;
    b.net.set_link("eth1", LinkState::UP);
    eventually("two addresses each again", async || balanced(spread(&a, &b))).await;

    // Taken down administratively everywhere, the links lose their IPv6 addresses (Linux drops
    // them, and so does the fake) and nobody may hold them; they come back with the links.
    a.net.set_link("eth1", LinkState::DOWN);
    b.net.set_link("eth1", LinkState::DOWN);
    eventually("no eth1 address is held", async || {
        let held = spread(&a, &b);
        held[1] + held[3] == 0 && held[0] + held[2] == 2
    })
    .await;
    eventually("A's info shows its eth1 down", async || {
        a.info().await.local.health.is_some_and(|health| health.down_interfaces == ["eth1"])
    })
    .await;
    a.net.set_link("eth1", LinkState::UP);
    b.net.set_link("eth1", LinkState::UP);
    eventually("the IPv6 addresses are back", async || balanced(spread(&a, &b))).await;
    let local = a.info().await.local.health.unwrap();
    assert!(local.down_interfaces.is_empty() && local.healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_releases_everything_and_info_says_why() {
    let flag = std::env::temp_dir().join(format!("fechterd-operations-sick-{}", std::process::id()));
    let _ = std::fs::remove_file(&flag);
    let check = Check::Exec(format!("test ! -e {}", flag.display()));
    let name = check.name();
    let checks = ChecksConfig {
        checks: vec![check],
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        rise: 2,
        fall: 2,
    };
    let a = Node::start(&[], "checks-a", ChecksConfig::default()).await;
    let b = Node::start(&[a.address], "checks-b", checks).await;
    for n in 1..=4 {
        let add = Command::AddAddress {
            interface: "eth0".into(),
            address: IpAddr::from([198, 18, 2, n]),
            prefix_len: None,
        };
        assert_eq!(a.send(add).await, Reply::ok(Body::Done));
    }
    eventually("2/2 once B's check passes", async || {
        (a.held_on("eth0").len(), b.held_on("eth0").len()) == (2, 2)
    })
    .await;

    std::fs::write(&flag, b"sick").unwrap();
    eventually("B gives up everything", async || {
        (a.held_on("eth0").len(), b.held_on("eth0").len()) == (4, 0)
    })
    .await;
    let local = b.info().await.local;
    assert!(!local.eligible);
    assert_eq!(
        local.health,
        Some(Health { healthy: false, failing_checks: vec![name.clone()], down_interfaces: Vec::new() })
    );
    let b_id = b.address.to_string();
    eventually("A's status shows B's failing check", async || {
        let Outcome::Ok(Body::Status(report)) = a.send(Command::Status).await.outcome else {
            return false;
        };
        report.health.iter().any(|node| node.id == b_id && node.health.failing_checks == [name.clone()])
    })
    .await;

    std::fs::remove_file(&flag).unwrap();
    eventually("2/2 again", async || (a.held_on("eth0").len(), b.held_on("eth0").len()) == (2, 2)).await;
}
