//! Convergence benchmark on the simulated network, printed as a table.
//!
//! For N = 10, 100 and 1000 nodes (default configuration, lossless 1 ms links; 100 ms rounds
//! below 500 nodes and 1 s rounds from there on, see `interval_for`): the time for the cluster to join,
//! the rounds and virtual time for one new key to reach every node, the time until the first
//! and the last peer declare a killed node dead, the live nodes declared dead meanwhile, and the
//! idle bytes and datagrams each node sends per second at a 1 s interval once the cluster has
//! settled, next to chitchat's ~325 B/s per peer. Finally, the false deaths in ten virtual
//! minutes with 5 % loss and up to 30 ms of jitter. Run with
//! `cargo bench -p fechter-gossip --bench convergence` (a few minutes in release);
//! `GOSSIP_BENCH_NODES=10,100` limits the cluster sizes of the first table.

use std::io::Write as _;
use std::time::Duration;

use fechter_gossip::Liveness;
use fechter_gossip::sim::{SimConfig, Simulation, node_config};

fn name(index: usize) -> String {
    format!("node-{index}")
}

fn cluster(nodes: usize, network: SimConfig, interval: Duration) -> Simulation {
    let mut sim = Simulation::new(network);
    for index in 0..nodes {
        let mut config = node_config(index, 1);
        config.gossip_interval = interval;
        sim.add_node(config);
    }
    sim
}

fn fully_joined(sim: &Simulation) -> bool {
    let running: Vec<usize> = (0..sim.len()).filter(|&i| sim.is_running(i)).collect();
    running.iter().all(|&observer| {
        running.iter().all(|&other| sim.node(observer).liveness(&name(other)) == Some(Liveness::Alive))
    })
}

/// Runs in coarse slices until the cluster has joined; returns the virtual time it took.
fn join(sim: &mut Simulation, slice: Duration, limit: Duration) -> Option<Duration> {
    let started = sim.elapsed();
    while sim.elapsed() - started < limit {
        if fully_joined(sim) {
            return Some(sim.elapsed() - started);
        }
        sim.run_for(slice);
    }
    None
}

struct Row {
    nodes: usize,
    interval: Duration,
    join: Option<Duration>,
    spread: Option<Duration>,
    detect_first: Option<Duration>,
    detect_all: Option<Duration>,
    false_deaths: usize,
    idle_bytes: f64,
    idle_datagrams: f64,
}

/// The round used for a cluster of `nodes`. One node hears about 6 digests of about 50 entries
/// (1400 bytes) per round, some 300 heartbeats: at 1000 nodes each peer is therefore heard only
/// every ~3 rounds whatever the interval, and a 100 ms round would cost ~60 000 datagrams per
/// second across the cluster for no gain in detection per round. Large clusters use 1 s, as
/// chitchat and memberlist do.
fn interval_for(nodes: usize) -> Duration {
    if nodes >= 500 { Duration::from_secs(1) } else { Duration::from_millis(100) }
}

/// NodeDead events about any node other than `victim` since the marks.
fn deaths_since(sim: &Simulation, marks: &[usize], victim: Option<usize>) -> usize {
    let victim_name = victim.map(name);
    (0..sim.len())
        .map(|i| {
            sim.events(i)[marks[i]..]
                .iter()
                .filter(|(_, event)| {
                    matches!(event, fechter_gossip::Event::NodeDead(id) if Some(&id.name) != victim_name.as_ref())
                })
                .count()
        })
        .sum()
}

fn measure(nodes: usize) -> Row {
    let interval = interval_for(nodes);
    let mut network = SimConfig::new(2026);
    network.step = interval / 100;
    let mut sim = cluster(nodes, network, interval);
    let join_time = join(&mut sim, interval * 5, interval * 600);
    sim.run_for(interval * 20);
    let marks: Vec<usize> = (0..nodes).map(|i| sim.events(i).len()).collect();

    // A settled cluster at a 1 s interval: the large one is measured in place, the small ones
    // get a cluster of their own (their rounds here are 100 ms).
    let (idle_bytes, idle_datagrams) =
        if interval == Duration::from_secs(1) { idle_window(&mut sim) } else { idle_traffic(nodes) };

    let writer = nodes / 2;
    let writer_name = name(writer);
    let spread = sim.set(writer, "fresh", b"value".to_vec()).ok().and_then(|()| {
        sim.run_until(interval * 300, |sim| {
            (0..sim.len()).all(|i| sim.node(i).value(&writer_name, "fresh") == Some(b"value"))
        })
    });

    let victim = nodes / 3;
    sim.kill(victim);
    let observers: Vec<usize> = (0..nodes).filter(|&i| i != victim).collect();
    let victim_name = name(victim);
    let mut detect_first = None;
    let detect_all = sim.run_until(interval * 600, |sim| {
        let dead = observers
            .iter()
            .filter(|&&i| sim.node(i).liveness(&victim_name) != Some(Liveness::Alive))
            .count();
        if dead > 0 && detect_first.is_none() {
            detect_first = Some(sim.elapsed());
        }
        dead == observers.len()
    });
    let killed_at = sim.elapsed() - detect_all.unwrap_or_default();
    let detect_first = detect_first.map(|at| at - killed_at);
    let false_deaths = deaths_since(&sim, &marks, Some(victim));
    Row {
        nodes,
        interval,
        join: join_time,
        spread,
        detect_first,
        detect_all,
        false_deaths,
        idle_bytes,
        idle_datagrams,
    }
}

/// Bytes and datagrams sent per node per second by a settled cluster at a 1 s interval.
fn idle_traffic(nodes: usize) -> (f64, f64) {
    let interval = Duration::from_secs(1);
    let mut network = SimConfig::new(77);
    network.record_events = false;
    network.step = Duration::from_millis(10);
    let mut sim = cluster(nodes, network, interval);
    let _ = join(&mut sim, interval * 5, Duration::from_secs(300));
    sim.run_for(Duration::from_secs(20));
    idle_window(&mut sim)
}

/// Bytes and datagrams each node sends per second over the next 20 s.
fn idle_window(sim: &mut Simulation) -> (f64, f64) {
    sim.reset_counters();
    let window = 20.0;
    sim.run_for(Duration::from_secs(20));
    let nodes = sim.len();
    let (bytes, datagrams) = (0..nodes).fold((0u64, 0u64), |(bytes, datagrams), i| {
        let counters = sim.counters(i);
        (bytes + counters.bytes_sent, datagrams + counters.datagrams_sent)
    });
    (bytes as f64 / nodes as f64 / window, datagrams as f64 / nodes as f64 / window)
}

/// Live nodes declared dead during ten virtual minutes of 5 % loss and 30 ms jitter.
fn false_deaths(nodes: usize) -> (usize, Option<f64>) {
    let mut network = SimConfig::new(5);
    network.loss = 0.05;
    network.jitter = Duration::from_millis(30);
    network.step = Duration::from_millis(10);
    network.record_events = true;
    let mut sim = cluster(nodes, network, Duration::from_millis(100));
    let _ = join(&mut sim, Duration::from_millis(100), Duration::from_secs(30));
    let marks: Vec<usize> = (0..nodes).map(|i| sim.events(i).len()).collect();
    sim.run_for(Duration::from_secs(600));
    let deaths = (0..nodes)
        .map(|i| {
            sim.events(i)[marks[i]..]
                .iter()
                .filter(|(_, event)| matches!(event, fechter_gossip::Event::NodeDead(_)))
                .count()
        })
        .sum();
    // The highest phi any node shows for any live peer at the end, as a margin indicator.
    let max_phi = (0..nodes)
        .flat_map(|i| sim.node(i).view(sim.now()).nodes.into_values())
        .filter_map(|node| node.phi)
        .fold(None, |max: Option<f64>, phi| Some(max.map_or(phi, |max| max.max(phi))));
    (deaths, max_phi)
}

fn show(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "timeout".to_owned(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
}

fn main() -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| N | round | join | key spread: rounds / time | target 2*log2(N) | detect first / all | false deaths | idle B/s/node @1s | target 325*N | idle dgrams/s/node @1s |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|")?;
    // GOSSIP_BENCH_NODES=10,100 limits the sizes.
    let sizes: Vec<usize> = std::env::var("GOSSIP_BENCH_NODES")
        .ok()
        .map(|list| list.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    for &nodes in &sizes {
        let row = measure(nodes);
        let rounds = row.spread.map(|d| d.as_secs_f64() / row.interval.as_secs_f64());
        writeln!(
            out,
            "| {} | {} ms | {} | {} / {} | {:.1} | {} / {} | {} | {:.0} | {} | {:.1} |",
            row.nodes,
            row.interval.as_millis(),
            show(row.join),
            rounds.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
            show(row.spread),
            2.0 * (row.nodes as f64).log2(),
            show(row.detect_first),
            show(row.detect_all),
            row.false_deaths,
            row.idle_bytes,
            325 * row.nodes,
            row.idle_datagrams,
        )?;
        out.flush()?;
    }
    writeln!(out)?;
    writeln!(out, "Every datagram was checked against the 1400-byte budget by the simulated network.")?;
    writeln!(out)?;
    writeln!(
        out,
        "| N | false deaths in 10 min (5 % loss, 0-30 ms jitter, 100 ms rounds) | max phi at end |"
    )?;
    writeln!(out, "|---|---|---|")?;
    for nodes in [10, 20] {
        let (deaths, max_phi) = false_deaths(nodes);
        writeln!(out, "| {nodes} | {deaths} | {:.2} |", max_phi.unwrap_or(0.0))?;
        out.flush()?;
    }
    Ok(())
}
