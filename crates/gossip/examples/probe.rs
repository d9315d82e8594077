//! Temporary timing probe (removed before hand-off).
#![allow(clippy::print_stdout)]
use std::time::{Duration, Instant};
use fechter_gossip::sim::{SimConfig, Simulation, node_config};
use fechter_gossip::Liveness;

fn main() {
    let nodes: usize = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let secs: u64 = std::env::var("SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let ms: u64 = std::env::var("MS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let mut net = SimConfig::new(1);
    net.record_events = true;
    let mut sim = Simulation::new(net);
    for i in 0..nodes {
        let mut c = node_config(i, 1);
        c.gossip_interval = Duration::from_millis(ms);
        sim.add_node(c);
    }
    let wall = Instant::now();
    for s in 0..secs {
        sim.run_for(Duration::from_secs(1));
        let known: usize = (0..nodes).map(|i| sim.node(i).known_nodes()).min().unwrap_or(0);
        let alive: usize = if (s + 1) % 5 != 0 { 0 } else { (0..nodes).map(|i| (0..nodes).filter(|&j| sim.node(i).liveness(&format!("node-{j}")) == Some(Liveness::Alive)).count()).min().unwrap_or(0) };
        let deaths: usize = (0..nodes).map(|i| sim.events(i).iter().filter(|(_, e)| matches!(e, fechter_gossip::Event::NodeDead(_))).count()).sum();
        let dg: u64 = (0..nodes).map(|i| sim.counters(i).datagrams_sent).sum();
        let by: u64 = (0..nodes).map(|i| sim.counters(i).bytes_sent).sum();
        println!("sim {}s wall {:.1}s min_known {known} min_alive {alive} deaths {deaths} dgrams {dg} bytes {by}", s + 1, wall.elapsed().as_secs_f64());
    }
}
