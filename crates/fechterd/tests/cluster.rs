//! Whole daemons in one process: real gossip over loopback UDP, a `FakeNet` per node, and a
//! monitor that checks after every few milliseconds that no address is on two nodes at once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fechter_cli::proto::{Body, Command, ErrorKind, Outcome, Reply, StatusReport};
use fechter_netops::fake::FakeNet;
use fechter_netops::{AddressSpec, LinkState};
use fechterd::control::ControlRequest;
use fechterd::daemon::{DaemonConfig, DaemonError, remove_stale_addresses};
use fechterd::persist::{Loaded, load_pool};
use fechterd::pool::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

mod support;
use support::{GOSSIP_INTERVAL, eventually, start_daemon};

struct Node {
    id: String,
    address: SocketAddr,
    net: FakeNet,
    control: mpsc::Sender<ControlRequest>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), DaemonError>>,
}

impl Node {
    async fn start(seeds: &[SocketAddr], state_dir: PathBuf) -> Node {
        Node::start_with(seeds, state_dir, |_| {}).await
    }

    async fn start_with(
        seeds: &[SocketAddr],
        state_dir: PathBuf,
        configure: impl FnOnce(&mut DaemonConfig),
    ) -> Node {
        let net = FakeNet::new();
        net.add_interface("eth0", LinkState::UP);
        let pool = match load_pool(&state_dir, 0).unwrap() {
            Loaded::Pool(pool) => pool,
            _ => Pool::new(),
        };
        let started = start_daemon(seeds, &net, state_dir, pool, configure, |daemon| daemon).await;
        Node {
            id: started.address.to_string(),
            address: started.address,
            net,
            control: started.control,
            shutdown: Some(started.shutdown),
            task: started.task,
        }
    }

    async fn send(&self, command: Command) -> Reply {
        support::send(&self.control, command).await
    }

    async fn ok(&self, command: Command) {
        let reply = self.send(command.clone()).await;
        assert_eq!(reply, Reply::ok(Body::Done), "{command:?}");
    }

    async fn status(&self) -> StatusReport {
        match self.send(Command::Status).await.outcome {
            Outcome::Ok(Body::Status(report)) => report,
            other => panic!("unexpected status reply {other:?}"),
        }
    }

    fn held(&self) -> Vec<IpAddr> {
        self.net.addresses().into_iter().filter(|a| a.owned).map(|a| a.address).collect()
    }

    /// Stops the node like a machine losing power: no leave, no release; its addresses vanish
    /// with the machine.
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
        for installed in self.net.addresses() {
            self.net.remove_by_hand(&installed.spec());
        }
    }

    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

fn vip(n: u8) -> IpAddr {
    IpAddr::from([198, 18, 1, n])
}

fn add(n: u8) -> Command {
    Command::AddAddress { interface: "eth0".into(), address: vip(n), prefix_len: None }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fechterd-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Samples every node's interfaces and records any address found on two nodes at once.
fn watch_for_doubles(nets: Vec<FakeNet>) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    let doubles = Arc::new(Mutex::new(Vec::new()));
    let found = Arc::clone(&doubles);
    let task = tokio::spawn(async move {
        loop {
            let mut holders: BTreeMap<IpAddr, usize> = BTreeMap::new();
            for net in &nets {
                for installed in net.addresses().into_iter().filter(|a| a.owned) {
                    *holders.entry(installed.address).or_default() += 1;
                }
            }
            for (address, count) in holders {
                if count > 1 {
                    tracing::error!(%address, count, "address on several nodes at once");
                    found.lock().unwrap().push(format!("{address} on {count} nodes"));
                }
            }
            sleep(Duration::from_millis(2)).await;
        }
    });
    (doubles, task)
}

fn counts(nodes: &[&Node]) -> Vec<usize> {
    nodes.iter().map(|node| node.held().len()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_spreads_fails_over_and_hands_over() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    let dirs: Vec<PathBuf> = (0..3).map(|n| scratch(&format!("main{n}"))).collect();
    let first = Node::start(&[], dirs[0].clone()).await;
    let second = Node::start(&[first.address], dirs[1].clone()).await;
    let third = Node::start(&[first.address], dirs[2].clone()).await;
    let (doubles, monitor) =
        watch_for_doubles(vec![first.net.clone(), second.net.clone(), third.net.clone()]);
    let mut nodes = vec![first, second, third];
    nodes.sort_by_key(|node| node.address.port());
    let [leader, middle, last] = <[Node; 3]>::try_from(nodes).ok().unwrap();

    // Six addresses added through a node that is not the leader reach every node.
    for n in 1..=6 {
        last.ok(add(n)).await;
    }
    for node in [&leader, &middle, &last] {
        eventually("every node knows the pool and the leader", async || {
            let status = node.status().await;
            status.addresses.len() == 6 && status.leader.as_deref() == Some(leader.id.as_str())
        })
        .await;
    }
    // Nothing is assigned or held before `up`.
    sleep(GOSSIP_INTERVAL * 12).await;
    assert_eq!(counts(&[&leader, &middle, &last]), vec![0, 0, 0]);
    assert!(leader.status().await.addresses.iter().all(|a| a.assigned_to.is_none()));

    for node in [&leader, &middle, &last] {
        node.ok(Command::Up).await;
    }
    eventually("2/2/2", async || counts(&[&leader, &middle, &last]) == vec![2, 2, 2]).await;
    eventually("status agrees with the interfaces", async || {
        let status = middle.status().await;
        status.addresses.iter().all(|a| {
            let holder = [&leader, &middle, &last].into_iter().find(|node| node.held().contains(&a.address));
            holder.is_some_and(|holder| {
                a.assigned_to.as_deref() == Some(holder.id.as_str()) && a.held_by == vec![holder.id.clone()]
            })
        })
    })
    .await;
    assert!(leader.net.announcements().iter().all(|a| a.interface == "eth0"));
    assert!(!leader.net.announcements().is_empty(), "acquisitions are announced");

    // The leader dies abruptly: the survivors take its addresses, 3/3.
    let started = Instant::now();
    leader.crash().await;
    eventually("survivors hold 3/3", async || counts(&[&middle, &last]) == vec![3, 3]).await;
    let failover = started.elapsed();
    eventually("the next node leads", async || {
        middle.status().await.leader.as_deref() == Some(middle.id.as_str())
    })
    .await;

    // `down` hands everything over.
    middle.ok(Command::Down).await;
    eventually("down hands over", async || counts(&[&middle, &last]) == vec![0, 6]).await;
    middle.ok(Command::Up).await;
    eventually("up takes back half", async || counts(&[&middle, &last]) == vec![3, 3]).await;

    // Removing an address removes it everywhere.
    middle.ok(Command::RemoveAddress { interface: "eth0".into(), address: vip(2) }).await;
    eventually("the removed address is gone", async || {
        let held: Vec<IpAddr> = middle.held().into_iter().chain(last.held()).collect();
        held.len() == 5 && !held.contains(&vip(2))
    })
    .await;
    eventually("status leaves the removed address out", async || last.status().await.addresses.len() == 5)
        .await;

    // Losing the gateway releases everything.
    last.net.set_gateway_reachable(false);
    eventually("gateway loss releases everything", async || counts(&[&middle, &last]) == vec![5, 0]).await;
    let connectivity = last.send(Command::Connectivity).await;
    assert!(matches!(connectivity.outcome, Outcome::Ok(Body::Connectivity(report)) if !report.reachable));
    last.net.set_gateway_reachable(true);
    eventually("the gateway returns", async || {
        let counts = counts(&[&middle, &last]);
        counts.iter().sum::<usize>() == 5 && counts.iter().all(|count| (2..=3).contains(count))
    })
    .await;

    // SIGTERM releases.
    let last_net = last.net.clone();
    last.stop().await;
    assert!(last_net.addresses().is_empty(), "a stopped node releases everything");
    eventually("the survivor takes everything", async || middle.held().len() == 5).await;
    middle.stop().await;

    monitor.abort();
    let doubles = doubles.lock().unwrap().clone();
    assert!(doubles.is_empty(), "addresses were on two nodes at once: {doubles:?}");
    assert!(failover < Duration::from_secs(3), "failover took {failover:?}");
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_are_refused_and_change_nothing() {
    let dir = scratch("bad");
    let node = Node::start(&[], dir.clone()).await;
    node.ok(add(1)).await;
    let cases = [
        (add(1), ErrorKind::DuplicateAddress),
        (
            Command::AddAddress { interface: "eth0:1".into(), address: vip(2), prefix_len: None },
            ErrorKind::InvalidArgument,
        ),
        (
            Command::AddAddress { interface: "eth0".into(), address: vip(2), prefix_len: Some(33) },
            ErrorKind::InvalidArgument,
        ),
        (
            Command::AddAddress {
                interface: "eth0".into(),
                address: "224.0.0.5".parse().unwrap(),
                prefix_len: None,
            },
            ErrorKind::InvalidArgument,
        ),
        (Command::RemoveAddress { interface: "eth0".into(), address: vip(9) }, ErrorKind::UnknownAddress),
        (Command::RemoveAddress { interface: "eth1".into(), address: vip(1) }, ErrorKind::UnknownAddress),
    ];
    for (command, expected) in cases {
        match node.send(command.clone()).await.outcome {
            Outcome::Error { kind, message } => {
                assert_eq!(kind, expected, "{command:?}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{command:?} was accepted: {other:?}"),
        }
    }
    let status = node.status().await;
    assert_eq!(status.addresses.len(), 1);
    assert_eq!(status.addresses[0].address, vip(1));
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_reacquires_what_is_removed_by_hand_and_keeps_the_pool_across_restarts() {
    let dir = scratch("restart");
    let node = Node::start(&[], dir.clone()).await;
    node.ok(add(1)).await;
    node.ok(add(2)).await;
    node.ok(Command::Up).await;
    eventually("both held", async || node.held().len() == 2).await;
    let announced: Vec<_> =
        node.net.announcements().into_iter().map(|a| (a.interface, a.addresses)).collect();
    assert_eq!(
        announced,
        vec![("eth0".to_owned(), vec![vip(1), vip(2)])],
        "one batch per reconcile and interface"
    );
    node.net.remove_by_hand(&AddressSpec::new("eth0", vip(1), 32));
    eventually("re-added after removal by hand", async || node.held().len() == 2).await;
    node.stop().await;

    // A whole-cluster restart: the new run starts down, so holds nothing, but keeps the pool.
    let again = Node::start(&[], dir.clone()).await;
    eventually("the pool survived", async || again.status().await.addresses.len() == 2).await;
    sleep(GOSSIP_INTERVAL * 12).await;
    assert!(again.held().is_empty(), "admin state is not persisted");
    again.ok(Command::Up).await;
    eventually("held again after up", async || again.held().len() == 2).await;
    again.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_addresses_are_refreshed_and_a_missing_quorum_holds_nothing() {
    let dir = scratch("refresh");
    let node = Node::start_with(&[], dir.clone(), |config| {
        config.refresh_interval = Some(Duration::from_millis(50));
        config.admin_up = true;
    })
    .await;
    node.ok(add(1)).await;
    eventually("held", async || node.held().len() == 1).await;
    eventually("announced again", async || node.net.announcements().len() >= 3).await;
    node.stop().await;

    let lonely = Node::start_with(&[], dir.clone(), |config| {
        config.quorum = 2;
        config.admin_up = true;
    })
    .await;
    eventually("the pool is loaded", async || lonely.status().await.addresses.len() == 1).await;
    sleep(GOSSIP_INTERVAL * 15).await;
    assert!(lonely.held().is_empty(), "one live node is below a quorum of two");
    lonely.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn stale_owned_addresses_are_removed_and_foreign_ones_kept() {
    let net = FakeNet::new();
    net.add_interface("eth0", LinkState::UP);
    fechter_netops::Net::add_address(&net, &AddressSpec::new("eth0", vip(1), 32)).await.unwrap();
    net.add_foreign_address(&AddressSpec::new("eth0", vip(9), 24)).unwrap();
    assert_eq!(remove_stale_addresses(&net).await.unwrap(), 1);
    let left: Vec<_> = net.addresses().into_iter().map(|a| (a.address, a.owned)).collect();
    assert_eq!(left, vec![(vip(9), false)]);
}
