//! Bulk-write benchmark on the simulated network: one node writes a large batch of keys (a
//! leader's whole assignment) and the table shows the virtual time until every node holds all of
//! them, with one datagram of deltas per exchange (the old behaviour) and with the default
//! bound of `Config::max_delta_datagrams`.
//!
//! Defaults: 1000 nodes, 10 000 keys of about 40 bytes, 1 s rounds, lossless 1 ms links; the
//! writer pushes one round at once (as `Simulation::set` does) and otherwise waits for the
//! regular rounds. The last column counts, over every ordered pair of nodes at the end, what
//! `Gossip::hears_me` says (all should hear each other). `GOSSIP_BULK_NODES`, `GOSSIP_BULK_KEYS`
//! and `GOSSIP_BULK_BOUNDS` (a list of bounds, e.g. `1,8,16`) change the case. Run with
//! `cargo bench -p fechter-gossip --bench bulk` (release; minutes of CPU at 1000 nodes).

use std::io::Write as _;
use std::time::{Duration, Instant};

use fechter_gossip::Liveness;
use fechter_gossip::sim::{SimConfig, Simulation, node_config};

fn name(index: usize) -> String {
    format!("node-{index}")
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.trim().parse().ok()).unwrap_or(default)
}

/// The `index`-th key and value, about 40 bytes together: an address and its holder.
fn assignment(index: usize) -> (String, Vec<u8>) {
    let [_, _, high, low] = (index as u32).to_be_bytes();
    (format!("assign:10.20.{high}.{low}"), format!("node-{:04}:4573/t7", index % 1000).into_bytes())
}

struct Outcome {
    join: Option<Duration>,
    spread: Option<Duration>,
    extra_datagrams: u64,
    datagrams: u64,
    hearing: [usize; 3],
    cpu: Duration,
}

fn run(nodes: usize, keys: usize, bound: usize) -> Outcome {
    let started = Instant::now();
    let interval = Duration::from_secs(1);
    let mut network = SimConfig::new(2026);
    network.step = Duration::from_millis(10);
    network.record_events = false;
    let mut sim = Simulation::new(network);
    for index in 0..nodes {
        let mut config = node_config(index, 1);
        config.gossip_interval = interval;
        config.max_delta_datagrams = bound;
        sim.add_node(config);
    }
    let joined = |sim: &Simulation| {
        (0..sim.len()).all(|observer| {
            (0..sim.len()).all(|other| sim.node(observer).liveness(&name(other)) == Some(Liveness::Alive))
        })
    };
    let join_started = sim.elapsed();
    let mut join = None;
    while sim.elapsed() - join_started < interval * 600 {
        if joined(&sim) {
            join = Some(sim.elapsed() - join_started);
            break;
        }
        sim.run_for(interval * 5);
    }
    sim.run_for(interval * 20);

    let writer = nodes / 2;
    for index in 0..keys {
        let (key, value) = assignment(index);
        if let Err(error) = sim.node_mut(writer).set(&key, value) {
            panic!("{error}");
        }
    }
    let (last_key, last_value) = assignment(keys - 1);
    let writer_name = name(writer);
    let extra_before: u64 = (0..nodes).map(|i| sim.node(i).stats().extra_delta_datagrams).sum();
    sim.reset_counters();
    sim.gossip_now(writer);
    let written_at = sim.elapsed();
    let mut spread = None;
    // Checked once per round: the last key arrives last, since deltas are gap-free.
    while sim.elapsed() - written_at < interval * 4000 {
        if (0..nodes).all(|i| sim.node(i).value(&writer_name, &last_key) == Some(last_value.as_slice())) {
            spread = Some(sim.elapsed() - written_at);
            break;
        }
        sim.run_for(interval);
    }
    let extra_after: u64 = (0..nodes).map(|i| sim.node(i).stats().extra_delta_datagrams).sum();
    let datagrams = (0..nodes).map(|i| sim.counters(i).datagrams_sent).sum();
    // Every node's judgement of whether each other node hears it, in a healthy cluster.
    let mut hearing = [0; 3];
    for observer in 0..nodes {
        for peer in (0..nodes).filter(|&peer| peer != observer) {
            let slot = match sim.node(observer).hears_me(&name(peer), sim.now()) {
                Some(true) => 0,
                Some(false) => 1,
                None => 2,
            };
            hearing[slot] += 1;
        }
    }
    let extra_datagrams = extra_after - extra_before;
    Outcome { join, spread, extra_datagrams, datagrams, hearing, cpu: started.elapsed() }
}

fn show(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "timeout".to_owned(), |d| format!("{:.0} s", d.as_secs_f64()))
}

fn main() -> std::io::Result<()> {
    let nodes = env_or("GOSSIP_BULK_NODES", 1000);
    let keys = env_or("GOSSIP_BULK_KEYS", 10_000).max(1);
    let bounds: Vec<usize> = std::env::var("GOSSIP_BULK_BOUNDS")
        .ok()
        .map(|list| list.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, node_config(0, 1).max_delta_datagrams]);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| N | keys | max_delta_datagrams | join | all keys everywhere | extra datagrams | datagrams sent meanwhile | hears_me true / false / none | run time |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    for bound in bounds {
        let outcome = run(nodes, keys, bound);
        writeln!(
            out,
            "| {nodes} | {keys} | {bound} | {} | {} | {} | {} | {} / {} / {} | {:.0} s |",
            show(outcome.join),
            show(outcome.spread),
            outcome.extra_datagrams,
            outcome.datagrams,
            outcome.hearing[0],
            outcome.hearing[1],
            outcome.hearing[2],
            outcome.cpu.as_secs_f64(),
        )?;
        out.flush()?;
    }
    Ok(())
}
