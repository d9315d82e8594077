//! Cluster behaviour on the seeded simulated network: convergence, failure detection,
//! partitions, restarts, departures, tombstones, hostile datagrams and determinism.

use std::time::Duration;

use fechter_gossip::sim::{SimConfig, Simulation, address, node_config};
use fechter_gossip::wire::{Digest, DigestEntry, Envelope, KeyUpdate, Message, NodeDelta, encode_datagram};
use fechter_gossip::{Config, Event, Liveness};

fn cluster(nodes: usize, network: SimConfig, adjust: impl Fn(&mut Config)) -> Simulation {
    let mut sim = Simulation::new(network);
    for index in 0..nodes {
        let mut config = node_config(index, 1);
        adjust(&mut config);
        sim.add_node(config);
    }
    sim
}

fn name(index: usize) -> String {
    format!("node-{index}")
}

/// Every running node sees every other running node alive.
fn fully_joined(sim: &Simulation) -> bool {
    let running: Vec<usize> = (0..sim.len()).filter(|&i| sim.is_running(i)).collect();
    running.iter().all(|&observer| {
        running.iter().all(|&other| sim.node(observer).liveness(&name(other)) == Some(Liveness::Alive))
    })
}

fn join(sim: &mut Simulation, limit: Duration) -> Duration {
    sim.run_until(limit, fully_joined)
        .unwrap_or_else(|| panic!("cluster of {} did not join within {limit:?}", sim.len()))
}

fn everyone_has(sim: &Simulation, owner: usize, key: &str, value: &[u8]) -> bool {
    (0..sim.len()).filter(|&i| sim.is_running(i)).all(|i| sim.node(i).value(&name(owner), key) == Some(value))
}

fn spread_rounds(nodes: usize, limit: Duration) -> f64 {
    let mut sim = cluster(nodes, SimConfig::new(7), |_| {});
    join(&mut sim, limit);
    let writer = nodes / 2;
    if let Err(error) = sim.set(writer, "fresh", b"value".to_vec()) {
        panic!("{error}");
    }
    let took = sim
        .run_until(limit, |sim| everyone_has(sim, writer, "fresh", b"value"))
        .unwrap_or_else(|| panic!("key did not reach all {nodes} nodes"));
    took.as_secs_f64() / 0.1
}

#[test]
fn a_new_key_reaches_ten_nodes_quickly() {
    let rounds = spread_rounds(10, Duration::from_secs(10));
    assert!(rounds <= 2.0 * 10f64.log2(), "{rounds} rounds");
}

#[test]
fn a_new_key_reaches_one_hundred_nodes_quickly() {
    let rounds = spread_rounds(100, Duration::from_secs(20));
    assert!(rounds <= 2.0 * 100f64.log2(), "{rounds} rounds");
}

#[test]
fn three_hundred_nodes_join_spread_a_key_quickly_and_declare_no_live_node_dead() {
    // Some minutes in a debug build (seconds in release), so it runs on request:
    // FECHTER_GOSSIP_LONG_SIM=1. The benchmark measures 1000 nodes in release.
    if std::env::var_os("FECHTER_GOSSIP_LONG_SIM").is_none() {
        return;
    }
    let nodes = 300;
    let mut network = SimConfig::new(7);
    network.step = Duration::from_millis(5);
    let mut sim = cluster(nodes, network, |_| {});
    // Checking all 90 000 pairs after every step would dominate, so check every round.
    let mut joined = false;
    for _ in 0..300 {
        if fully_joined(&sim) {
            joined = true;
            break;
        }
        sim.run_for(Duration::from_millis(100));
    }
    assert!(joined, "300 nodes did not join within 30 s");
    let marks: Vec<usize> = (0..nodes).map(|i| sim.events(i).len()).collect();
    let writer = nodes / 2;
    sim.set(writer, "fresh", b"value".to_vec()).unwrap_or_else(|e| panic!("{e}"));
    let took = sim
        .run_until(Duration::from_secs(10), |sim| everyone_has(sim, writer, "fresh", b"value"))
        .unwrap_or_else(|| panic!("key did not reach all {nodes} nodes"));
    let rounds = took.as_secs_f64() / 0.1;
    assert!(rounds <= 2.0 * (nodes as f64).log2(), "{rounds} rounds");
    sim.run_for(Duration::from_secs(10));
    for (observer, &mark) in marks.iter().enumerate() {
        let deaths =
            sim.events(observer)[mark..].iter().filter(|(_, e)| matches!(e, Event::NodeDead(_))).count();
        assert_eq!(deaths, 0, "node {observer} declared live nodes dead");
    }
    assert!(fully_joined(&sim));
}

/// The time at which `observer` declared `victim` dead, if it did.
fn death_time(sim: &Simulation, observer: usize, victim: usize) -> Option<Duration> {
    sim.events(observer).iter().find_map(|(at, event)| match event {
        Event::NodeDead(id) if id.name == name(victim) => Some(*at),
        _ => None,
    })
}

#[test]
fn a_silent_node_is_declared_dead_by_every_peer_within_the_bound() {
    let mut sim = cluster(10, SimConfig::new(11), |_| {});
    join(&mut sim, Duration::from_secs(10));
    sim.run_for(Duration::from_secs(5));
    let killed_at = sim.elapsed();
    sim.kill(3);
    sim.run_for(Duration::from_secs(2));
    for observer in (0..10).filter(|&i| i != 3) {
        let at = death_time(&sim, observer, 3)
            .unwrap_or_else(|| panic!("node {observer} never declared node 3 dead"));
        let detection = at - killed_at;
        assert!(
            detection >= Duration::from_millis(200) && detection <= Duration::from_millis(600),
            "node {observer} took {detection:?}"
        );
    }
}

#[test]
fn no_live_node_is_declared_dead_with_loss_and_jitter() {
    let mut network = SimConfig::new(5);
    network.loss = 0.05;
    network.jitter = Duration::from_millis(30);
    network.step = Duration::from_millis(10);
    network.record_events = true;
    let mut sim = cluster(10, network, |_| {});
    join(&mut sim, Duration::from_secs(10));
    let joined_events: Vec<usize> = (0..10).map(|i| sim.events(i).len()).collect();
    // Ten virtual minutes take about a minute and a half in a debug build, so the default run
    // is shorter; FECHTER_GOSSIP_LONG_SIM=1 runs the full ten minutes (the benchmark always does,
    // in release).
    let minutes = if std::env::var_os("FECHTER_GOSSIP_LONG_SIM").is_some() { 10 } else { 1 };
    sim.run_for(Duration::from_secs(60 * minutes));
    for (observer, &mark) in joined_events.iter().enumerate() {
        let deaths: Vec<&(Duration, Event)> = sim.events(observer)[mark..]
            .iter()
            .filter(|(_, event)| matches!(event, Event::NodeDead(_)))
            .collect();
        assert!(deaths.is_empty(), "node {observer} saw false deaths: {deaths:?}");
    }
    assert!(fully_joined(&sim));
}

#[test]
fn a_partition_heals_into_one_identical_state() {
    let mut sim = cluster(8, SimConfig::new(21), |_| {});
    join(&mut sim, Duration::from_secs(10));
    let (left, right): (Vec<usize>, Vec<usize>) = (0..8).partition(|&i| i < 4);
    sim.partition(&left, &right);
    sim.run_for(Duration::from_secs(2));
    for index in 0..8 {
        sim.set(index, "side", format!("written by {index}").into_bytes()).unwrap_or_else(|e| panic!("{e}"));
    }
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.node(0).liveness(&name(7)), Some(Liveness::Dead));
    sim.heal();
    join(&mut sim, Duration::from_secs(20));
    let converged = sim.run_until(Duration::from_secs(10), |sim| {
        let reference = sim.node(0).view(sim.now());
        (1..8).all(|i| {
            let view = sim.node(i).view(sim.now());
            view.nodes.iter().all(|(name, node)| reference.nodes[name].keys == node.keys)
        })
    });
    assert!(converged.is_some(), "states differ after healing");
    for index in 0..8 {
        assert!(everyone_has(&sim, index, "side", format!("written by {index}").as_bytes()));
    }
}

#[test]
fn ten_thousand_keys_on_one_node_converge_within_budget() {
    let mut sim = cluster(5, SimConfig::new(3), |_| {});
    join(&mut sim, Duration::from_secs(10));
    for key in 0..10_000 {
        sim.node_mut(2)
            .set(&format!("key-{key:05}"), format!("value-{key}").into_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    sim.gossip_now(2);
    let took = sim.run_until(Duration::from_secs(120), |sim| {
        (0..5).all(|i| sim.node(i).value(&name(2), "key-09999") == Some(b"value-9999".as_slice()))
    });
    let took = took.unwrap_or_else(|| panic!("10 000 keys did not converge"));
    for observer in 0..5 {
        let view = sim.node(observer).view(sim.now());
        assert_eq!(view.nodes[&name(2)].keys.len(), 10_000);
    }
    // Convergence takes many rounds (the budget caps each exchange), but no liveness is lost.
    assert!(took > Duration::from_secs(1), "{took:?}");
    assert!(fully_joined(&sim));
}

#[test]
fn a_restarted_node_never_gets_its_old_keys_back() {
    let mut sim = cluster(5, SimConfig::new(9), |_| {});
    join(&mut sim, Duration::from_secs(10));
    sim.set(1, "address", b"10.0.0.99".to_vec()).unwrap_or_else(|e| panic!("{e}"));
    sim.set(1, "status", b"up".to_vec()).unwrap_or_else(|e| panic!("{e}"));
    sim.run_for(Duration::from_secs(1));
    assert!(everyone_has(&sim, 1, "status", b"up"));
    sim.kill(1);
    sim.run_for(Duration::from_millis(300));
    // The new life starts with a newer generation and writes nothing yet.
    sim.restart(1, node_config(1, 2));
    sim.run_for(Duration::from_secs(5));
    let restarted = sim.node(1);
    assert_eq!(restarted.value(&name(1), "address"), None);
    assert_eq!(restarted.value(&name(1), "status"), None);
    // Even a peer that explicitly hands the new life its old keys (the original txgossip bug)
    // changes nothing.
    let old_life = fechter_gossip::NodeId { name: name(1), generation: 1, gossip_addr: address(1) };
    let stale = Envelope {
        sender: sim.node(0).id().clone(),
        sequence: 1_000_000,
        message: Message::Ack {
            delta: vec![NodeDelta {
                node: old_life,
                reset: false,
                last_gc_version: 0,
                from_version: 0,
                up_to: 2,
                updates: vec![KeyUpdate { key: "status".into(), value: Some(b"up".to_vec()), version: 1 }],
            }],
        },
    };
    sim.inject(1, address(0), &encode_datagram("sim", None, &stale));
    let restarted = sim.node(1);
    assert_eq!(restarted.value(&name(1), "status"), None);
    assert_eq!(restarted.stats().ignored_updates_about_self, 1);
    for observer in [0, 2, 3, 4] {
        let node = sim.node(observer);
        assert_eq!(node.known_generation(&name(1)), Some(2));
        assert_eq!(node.value(&name(1), "status"), None, "observer {observer}");
        assert_eq!(node.liveness(&name(1)), Some(Liveness::Alive));
    }
    // The old generation's keys were reported gone.
    assert!(sim.events(0).iter().any(|(_, event)| matches!(event,
        Event::KeyChanged { node, key, value: None } if node.generation == 1 && key == "status")));
}

#[test]
fn a_departure_is_seen_at_once() {
    let mut sim = cluster(6, SimConfig::new(13), |_| {});
    join(&mut sim, Duration::from_secs(10));
    let left_at = sim.elapsed();
    sim.leave(4);
    let took = sim.run_until(Duration::from_secs(1), |sim| {
        (0..6).filter(|&i| i != 4).all(|i| sim.node(i).liveness(&name(4)) == Some(Liveness::Left))
    });
    let took = took.unwrap_or_else(|| panic!("leave not seen"));
    assert!(took <= Duration::from_millis(20), "{took:?} after {left_at:?}");
    assert!(sim.events(0).iter().any(|(_, e)| matches!(e, Event::NodeLeft(id) if id.name == name(4))));
}

#[test]
fn tombstones_are_collected_and_a_peer_partitioned_past_the_grace_resyncs() {
    let mut sim = cluster(4, SimConfig::new(17), |config| {
        config.tombstone_grace = Duration::from_secs(3);
    });
    join(&mut sim, Duration::from_secs(10));
    for key in 0..20 {
        sim.set(0, &format!("k{key}"), vec![1; 8]).unwrap_or_else(|e| panic!("{e}"));
    }
    sim.run_for(Duration::from_secs(1));
    assert!(everyone_has(&sim, 0, "k19", &[1; 8]));
    // Node 3 is cut off while node 0 deletes most keys and writes one more.
    sim.partition(&[3], &[0, 1, 2]);
    for key in 0..15 {
        sim.delete(0, &format!("k{key}"));
    }
    sim.set(0, "after", b"x".to_vec()).unwrap_or_else(|e| panic!("{e}"));
    sim.run_for(Duration::from_secs(6));
    // The tombstones were collected on the connected side.
    let view = sim.node(1).view(sim.now());
    assert_eq!(view.nodes[&name(0)].keys.len(), 6);
    // Node 3 still holds the deleted keys until it resyncs.
    assert_eq!(sim.node(3).value(&name(0), "k0"), Some([1u8; 8].as_slice()));
    sim.heal();
    let resynced = sim.run_until(Duration::from_secs(10), |sim| {
        sim.node(3).value(&name(0), "k0").is_none()
            && sim.node(3).value(&name(0), "after") == Some(b"x".as_slice())
    });
    assert!(resynced.is_some(), "node 3 did not resync after the grace");
    let reference = sim.node(1).view(sim.now()).nodes[&name(0)].keys.clone();
    assert_eq!(sim.node(3).view(sim.now()).nodes[&name(0)].keys, reference);
}

#[test]
fn garbage_and_foreign_datagrams_change_nothing_and_are_counted() {
    let mut sim = cluster(3, SimConfig::new(23), |_| {});
    join(&mut sim, Duration::from_secs(10));
    let before = sim.node(0).view(sim.now());
    let stranger = address(999);
    // A real datagram of another cluster, taken from a core's output.
    let foreign = {
        let mut config_seeded = Config::new("other-cluster", "y", 1, stranger);
        config_seeded.seeds = vec![address(0)];
        let mut seeded = fechter_gossip::Gossip::new(config_seeded, sim.now());
        seeded.tick(sim.now()).remove(0).datagram
    };
    let mut valid = foreign.clone();
    // Rewrite it into this cluster's header to get a well-formed datagram to truncate.
    valid.drain(6..6 + "other-cluster".len());
    valid.splice(4..6, [0u8, 3]);
    valid.splice(6..6, *b"sim");
    sim.inject(0, stranger, b"");
    sim.inject(0, stranger, b"hello world");
    sim.inject(0, stranger, &foreign);
    let mut wrong_version = valid.clone();
    wrong_version[2] = 77;
    sim.inject(0, stranger, &wrong_version);
    for len in 3..valid.len() {
        sim.inject(0, stranger, &valid[..len]);
    }
    let mut trailing = valid.clone();
    trailing.push(0);
    sim.inject(0, stranger, &trailing);
    sim.inject(0, stranger, &vec![0xFE; 5000]);
    let stats = sim.node(0).stats();
    assert_eq!(stats.dropped_bad_magic, 2);
    assert_eq!(stats.dropped_other_cluster, 1);
    assert_eq!(stats.dropped_wrong_version, 1);
    assert_eq!(stats.dropped_oversized, 1);
    assert_eq!(stats.dropped_malformed as usize, valid.len() - 3 + 1);
    let after = sim.node(0).view(sim.now());
    assert_eq!(before.nodes.keys().collect::<Vec<_>>(), after.nodes.keys().collect::<Vec<_>>());
}

#[test]
fn runs_repeat_exactly_for_a_seed() {
    let run = || {
        let mut network = SimConfig::new(99);
        network.loss = 0.1;
        network.jitter = Duration::from_millis(20);
        let mut sim = cluster(12, network, |_| {});
        sim.run_for(Duration::from_secs(3));
        sim.set(5, "k", b"v".to_vec()).unwrap_or_else(|e| panic!("{e}"));
        sim.kill(7);
        sim.run_for(Duration::from_secs(2));
        (0..12).map(|i| (sim.counters(i), sim.events(i).to_vec())).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_forgotten_node_is_not_resurrected_by_stale_gossip() {
    let mut sim = cluster(5, SimConfig::new(31), |config| {
        config.dead_node_grace = Duration::from_secs(2);
    });
    join(&mut sim, Duration::from_secs(10));
    sim.kill(4);
    sim.run_for(Duration::from_secs(5));
    for observer in 0..4 {
        assert_eq!(sim.node(observer).known_generation(&name(4)), None, "observer {observer}");
    }
    // A peer that still holds the old generation gossips it; nobody takes it back.
    let mut late = node_config(5, 1);
    late.seeds = vec![address(0)];
    let late = sim.add_node(late);
    sim.run_for(Duration::from_secs(1));
    for observer in 0..4 {
        assert_eq!(sim.node(observer).known_generation(&name(4)), None);
    }
    assert!(sim.node(late).known_nodes() <= 5);
}

#[test]
fn oversized_values_are_refused_at_set_and_large_ones_still_travel() {
    let mut sim = cluster(3, SimConfig::new(37), |_| {});
    join(&mut sim, Duration::from_secs(10));
    let max = sim.node(0).max_value_len("big").unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        sim.set(0, "big", vec![7; max + 1]),
        Err(fechter_gossip::SetError::ValueTooLarge { .. })
    ));
    sim.set(0, "big", vec![7; max]).unwrap_or_else(|e| panic!("{e}"));
    sim.set(1, "big", vec![8; max]).unwrap_or_else(|e| panic!("{e}"));
    let took = sim.run_until(Duration::from_secs(5), |sim| {
        everyone_has(sim, 0, "big", &vec![7; max]) && everyone_has(sim, 1, "big", &vec![8; max])
    });
    assert!(took.is_some());
}

#[test]
fn a_keyed_cluster_converges_and_refuses_strangers_and_replays() {
    let keys = fechter_gossip::crypto::KeyRing::new(vec![[9; 32]]).unwrap_or_else(|e| panic!("{e}"));
    let mut sim = cluster(4, SimConfig::new(41), |config| config.keys = Some(keys.clone()));
    join(&mut sim, Duration::from_secs(10));
    sim.set(2, "secret", b"s".to_vec()).unwrap_or_else(|e| panic!("{e}"));
    assert!(sim.run_until(Duration::from_secs(2), |sim| everyone_has(sim, 2, "secret", b"s")).is_some());
    // A node with another key and a node without keys get nowhere.
    let mut wrong = node_config(4, 1);
    wrong.keys = Some(fechter_gossip::crypto::KeyRing::new(vec![[1; 32]]).unwrap_or_else(|e| panic!("{e}")));
    wrong.seeds = vec![address(0)];
    let wrong = sim.add_node(wrong);
    let mut plain = node_config(5, 1);
    plain.seeds = vec![address(0)];
    let plain = sim.add_node(plain);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.node(0).known_nodes(), 4);
    assert!(sim.node(0).stats().dropped_auth_failure > 0);
    assert_eq!(sim.node(wrong).known_nodes(), 1);
    assert_eq!(sim.node(plain).known_nodes(), 1);
    // A replayed datagram is dropped.
    let mut replay_config = node_config(6, 1);
    replay_config.keys = Some(keys.clone());
    replay_config.seeds = vec![address(0)];
    let mut replayer = fechter_gossip::Gossip::new(replay_config, sim.now());
    let datagram = replayer.tick(sim.now()).remove(0).datagram;
    sim.inject(0, address(6), &datagram);
    let replays = sim.node(0).stats().dropped_replay;
    sim.inject(0, address(6), &datagram);
    assert_eq!(sim.node(0).stats().dropped_replay, replays + 1);
}

/// A peer that comes back after a long silence is judged on the heartbeats of its new life only.
/// In a chaos run, an observer restarted while the victim's cable was out first learned the victim
/// from others' digests; the victim's first fresh heartbeat, seconds later, went into the history
/// as one long gap and kept phi low for about four seconds after the victim's next failure.
#[test]
fn a_peer_back_from_a_long_silence_is_declared_dead_as_fast_as_ever() {
    let mut sim = cluster(5, SimConfig::new(43), |_| {});
    join(&mut sim, Duration::from_secs(10));
    // Node 0 is cut off long enough to be declared dead; node 1 restarts meanwhile and learns
    // node 0 only from the others' digests.
    sim.partition(&[0], &[1, 2, 3, 4]);
    sim.run_for(Duration::from_secs(3));
    sim.restart(1, node_config(1, 2));
    sim.run_for(Duration::from_secs(5));
    sim.heal();
    let back = sim.run_until(Duration::from_secs(5), fully_joined);
    assert!(back.is_some(), "node 0 did not come back");
    sim.run_for(Duration::from_secs(3));
    let killed_at = sim.elapsed();
    sim.kill(0);
    sim.run_for(Duration::from_secs(3));
    for observer in 1..5 {
        let at = sim
            .events(observer)
            .iter()
            .filter(|(at, _)| *at >= killed_at)
            .find_map(|(at, event)| matches!(event, Event::NodeDead(id) if id.name == name(0)).then_some(*at))
            .unwrap_or_else(|| panic!("node {observer} never declared node 0 dead"));
        let detection = at - killed_at;
        assert!(detection <= Duration::from_millis(600), "node {observer} took {detection:?}");
    }
}

/// The rounds until every node of a 20-node cluster holds all of 3000 keys that one node wrote
/// at once, with at most `bound` datagrams of deltas per exchange.
fn bulk_rounds(bound: usize) -> (f64, u64) {
    let nodes = 20;
    let mut sim = cluster(nodes, SimConfig::new(47), |config| config.max_delta_datagrams = bound);
    join(&mut sim, Duration::from_secs(10));
    let writer = 7;
    for key in 0..3000 {
        sim.node_mut(writer)
            .set(
                &format!("assign:10.20.{}.{}", key / 256, key % 256),
                format!("node-{:02}:4573", key % nodes).into_bytes(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let extra_before: u64 = (0..nodes).map(|i| sim.node(i).stats().extra_delta_datagrams).sum();
    sim.gossip_now(writer);
    let last = format!("node-{:02}:4573", 2999 % nodes);
    let took = sim
        .run_until(Duration::from_secs(120), |sim| {
            (0..nodes)
                .all(|i| sim.node(i).value(&name(writer), "assign:10.20.11.183") == Some(last.as_bytes()))
        })
        .unwrap_or_else(|| panic!("3000 keys did not reach every node with bound {bound}"));
    for observer in 0..nodes {
        assert_eq!(sim.node(observer).view(sim.now()).nodes[&name(writer)].keys.len(), 3000);
    }
    assert!(fully_joined(&sim), "liveness suffered with bound {bound}");
    let extra: u64 =
        (0..nodes).map(|i| sim.node(i).stats().extra_delta_datagrams).sum::<u64>() - extra_before;
    (took.as_secs_f64() / 0.1, extra)
}

#[test]
fn a_bulk_write_reaches_a_cluster_in_far_fewer_rounds_with_several_datagrams_per_exchange() {
    let (single, no_extra) = bulk_rounds(1);
    let (bulk, extra) = bulk_rounds(Config::new("c", "n", 1, address(0)).max_delta_datagrams);
    assert_eq!(no_extra, 0);
    assert!(extra > 0);
    // Measured: about 64 rounds with one datagram per exchange, about 9.5 with the default.
    assert!(bulk * 3.0 < single, "{bulk} rounds with bursts against {single} without");
}

#[test]
fn one_exchange_sends_a_far_behind_peer_a_bounded_gap_free_run_of_deltas() {
    let now = std::time::Instant::now();
    let mut writer = fechter_gossip::Gossip::new(node_config(0, 1), now);
    let mut config = node_config(1, 1);
    config.seeds = vec![address(0)];
    let mut reader = fechter_gossip::Gossip::new(config, now);
    for key in 0..3000 {
        writer.set(&format!("key-{key:04}"), vec![7; 30]).unwrap_or_else(|e| panic!("{e}"));
    }
    // The reader knows nothing yet, so its first Syn (to its seed) makes it far behind.
    let syn = reader.tick(now).remove(0).datagram;
    let replies = writer.handle(address(1), &syn, now);
    let bound = writer.config().max_delta_datagrams;
    assert_eq!(replies.len(), bound);
    assert_eq!(writer.stats().extra_delta_datagrams, bound as u64 - 1);
    let mut ends = Vec::new();
    for (index, reply) in replies.iter().enumerate() {
        assert!(reply.datagram.len() <= writer.config().datagram_budget);
        let envelope =
            fechter_gossip::decode_datagram(&reply.datagram, "sim", None).unwrap_or_else(|e| panic!("{e}"));
        let deltas = match envelope.message {
            Message::SynAck { delta, .. } if index == 0 => delta,
            Message::Ack { delta } if index > 0 => delta,
            other => panic!("datagram {index} is {other:?}"),
        };
        let held = ends.last().copied().unwrap_or(0);
        assert_eq!(deltas.len(), 1);
        assert_eq!(deltas[0].from_version, held, "datagram {index} continues the previous one");
        assert!(deltas[0].up_to > held);
        ends.push(deltas[0].up_to);
        reader.handle(address(0), &reply.datagram, now);
    }
    // Versions are 1-based and keys were written in order, so version v is key v - 1.
    let key_of = |version: u64| format!("key-{:04}", version - 1);
    let held = ends[bound - 1];
    assert!(held < 3000);
    assert_eq!(reader.value(&name(0), &key_of(held)), Some([7; 30].as_slice()));
    assert_eq!(reader.value(&name(0), &key_of(held + 1)), None);
    // A lost datagram wastes the ones after it: they do not continue the receiver's copy.
    let mut lossy = fechter_gossip::Gossip::new(node_config(2, 1), now);
    for (_, reply) in replies.iter().enumerate().filter(|(index, _)| *index != 2) {
        lossy.handle(address(0), &reply.datagram, now);
    }
    assert_eq!(lossy.value(&name(0), &key_of(ends[1])), Some([7; 30].as_slice()));
    assert_eq!(lossy.value(&name(0), &key_of(ends[1] + 1)), None);
    assert_eq!(lossy.value(&name(0), &key_of(held)), None);
    // A peer that lacks nothing gets the SynAck alone.
    let mut small = fechter_gossip::Gossip::new(node_config(3, 1), now);
    small.set("only", b"one".to_vec()).unwrap_or_else(|e| panic!("{e}"));
    let mut config = node_config(4, 1);
    config.seeds = vec![address(3)];
    let mut peer = fechter_gossip::Gossip::new(config, now);
    let replies = small.handle(address(4), &peer.tick(now).remove(0).datagram, now);
    assert_eq!(replies.len(), 1);
    assert_eq!(small.stats().extra_delta_datagrams, 0);
}

/// Every running node's judgement of whether each other running node hears it.
fn hearing(sim: &Simulation, observer: usize, peer: usize) -> Option<bool> {
    sim.node(observer).hears_me(&name(peer), sim.now())
}

#[test]
fn every_peer_of_a_healthy_cluster_hears_every_other_despite_loss_and_jitter() {
    let mut network = SimConfig::new(53);
    network.loss = 0.05;
    network.jitter = Duration::from_millis(30);
    network.step = Duration::from_millis(10);
    let mut sim = cluster(5, network, |_| {});
    join(&mut sim, Duration::from_secs(10));
    let pairs: Vec<(usize, usize)> = (0..5)
        .flat_map(|observer| (0..5).filter(move |&peer| peer != observer).map(move |peer| (observer, peer)))
        .collect();
    let heard = sim.run_until(Duration::from_secs(2), |sim| {
        pairs.iter().all(|&(observer, peer)| hearing(sim, observer, peer) == Some(true))
    });
    assert!(heard.is_some(), "not every peer reported hearing every other after joining");
    // Thirty seconds, checked at every step.
    for _ in 0..3000 {
        sim.step();
        for &(observer, peer) in &pairs {
            let heard = hearing(&sim, observer, peer);
            let reading = sim.node(observer).reading(&name(peer));
            assert_eq!(heard, Some(true), "{observer} about {peer} at {:?}: {reading:?}", sim.elapsed());
        }
    }
}

#[test]
fn a_deaf_node_is_seen_alive_but_not_hearing_and_hears_again_after_healing() {
    let mut sim = cluster(5, SimConfig::new(59), |_| {});
    join(&mut sim, Duration::from_secs(10));
    sim.run_for(Duration::from_secs(1));
    assert!((1..5).all(|observer| hearing(&sim, observer, 0) == Some(true)));
    let version_before_the_cut = sim.node(1).view_version();
    // Node 0 receives nothing from anyone but still sends.
    for index in 1..5 {
        sim.cut(index, 0);
    }
    let deaf = sim.run_until(Duration::from_secs(1), |sim| {
        (1..5).all(|observer| {
            assert_eq!(sim.node(observer).liveness(&name(0)), Some(Liveness::Alive), "observer {observer}");
            hearing(sim, observer, 0) == Some(false)
        })
    });
    assert!(deaf.is_some(), "node 0's deafness was not seen within a second");
    // The published view carries the judgment from the next round on, with a new version, so
    // a subscriber learns of it without polling.
    let published = sim.run_until(Duration::from_millis(300), |sim| {
        sim.node(1).view(sim.now()).nodes.get(&name(0)).and_then(|node| node.hears_me) == Some(false)
    });
    assert!(published.is_some(), "the view never showed node 0 as deaf");
    assert!(sim.node(1).view_version() > version_before_the_cut);
    // Node 0 itself saw everyone die; the others still see each other hear them.
    assert!((1..5).all(|peer| sim.node(0).liveness(&name(peer)) == Some(Liveness::Dead)));
    assert_eq!(hearing(&sim, 1, 2), Some(true));
    sim.heal();
    let healed = sim.run_until(Duration::from_secs(1), |sim| {
        (1..5).all(|observer| hearing(sim, observer, 0) == Some(true))
    });
    assert!(healed.is_some(), "node 0 was not seen hearing again within a second of healing");
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.node(1).view(sim.now()).nodes.get(&name(0)).and_then(|node| node.hears_me), Some(true));
}

#[test]
fn a_reading_reaches_the_own_max_version_once_the_peer_holds_the_write() {
    let mut sim = cluster(5, SimConfig::new(61), |_| {});
    join(&mut sim, Duration::from_secs(10));
    sim.set(2, "status", b"up".to_vec()).unwrap_or_else(|e| panic!("{e}"));
    sim.set(2, "address", b"10.0.0.9".to_vec()).unwrap_or_else(|e| panic!("{e}"));
    let own = sim.node(2).own_max_version();
    assert_eq!(own, 2);
    let caught_up = sim.run_until(Duration::from_secs(2), |sim| {
        [0, 1, 3, 4]
            .iter()
            .all(|&peer| sim.node(2).reading(&name(peer)).is_some_and(|r| r.max_version == own))
    });
    assert!(caught_up.is_some());
    for peer in [0, 1, 3, 4] {
        assert_eq!(sim.node(peer).value(&name(2), "address"), Some(b"10.0.0.9".as_slice()));
    }
    // The view says so too, and a newer write makes every peer lack something again until
    // it reports holding that as well.
    let holds = |sim: &Simulation, expected: bool| {
        let view = sim.node(2).view(sim.now());
        [0, 1, 3, 4]
            .iter()
            .all(|&peer| view.nodes.get(&name(peer)).and_then(|node| node.holds_all_mine) == Some(expected))
    };
    assert!(sim.run_until(Duration::from_millis(300), |sim| holds(sim, true)).is_some());
    sim.set(2, "address", b"10.0.0.10".to_vec()).unwrap_or_else(|e| panic!("{e}"));
    sim.run_for(Duration::from_millis(100));
    assert!((0..5).filter(|&peer| peer != 2).any(|peer| {
        sim.node(2).view(sim.now()).nodes.get(&name(peer)).and_then(|node| node.holds_all_mine) == Some(false)
    }));
    assert!(sim.run_until(Duration::from_secs(2), |sim| holds(sim, true)).is_some());
}

#[test]
fn readings_belong_to_one_generation_on_each_side_and_end_with_a_departure() {
    let mut sim = cluster(5, SimConfig::new(67), |_| {});
    join(&mut sim, Duration::from_secs(10));
    sim.run_for(Duration::from_secs(1));
    assert!(sim.node(0).reading(&name(1)).is_some());
    // Node 1 restarts, and its new life cannot reach node 0 directly: node 0 learns the new
    // generation from the others and drops the old life's reading.
    sim.kill(1);
    sim.cut(1, 0);
    sim.restart(1, node_config(1, 2));
    let learned =
        sim.run_until(Duration::from_secs(2), |sim| sim.node(0).known_generation(&name(1)) == Some(2));
    assert!(learned.is_some());
    assert_eq!(sim.node(0).reading(&name(1)), None);
    sim.heal();
    let read = sim.run_until(Duration::from_secs(2), |sim| {
        sim.node(0).reading(&name(1)).is_some() && sim.node(1).reading(&name(0)).is_some()
    });
    assert!(read.is_some());
    // What a peer says about the previous life of node 1 is no reading of the new one.
    let before = sim.node(1).reading(&name(0));
    assert!(before.is_some());
    let old_life = fechter_gossip::NodeId { name: name(1), generation: 1, gossip_addr: address(1) };
    let stale = Envelope {
        sender: sim.node(0).id().clone(),
        sequence: 1_000_000,
        message: Message::Syn {
            digest: Digest {
                entries: vec![
                    first_heartbeat_entry(sim.node(0).id().clone()),
                    first_heartbeat_entry(old_life),
                ],
                complete: false,
            },
        },
    };
    sim.inject(1, address(0), &encode_datagram("sim", None, &stale));
    assert_eq!(sim.node(1).reading(&name(0)), before);
    // A departed peer reads nothing any more.
    assert!(sim.node(0).reading(&name(3)).is_some());
    sim.leave(3);
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.node(0).liveness(&name(3)), Some(Liveness::Left));
    assert_eq!(sim.node(0).reading(&name(3)), None);
    assert_eq!(sim.node(0).hears_me(&name(3), sim.now()), None);
}

#[test]
fn identities_whose_name_is_not_their_address_are_refused_when_names_are_addresses() {
    let mut sim = cluster(3, SimConfig::new(71), |config| {
        config.node_name = config.gossip_addr.to_string();
        config.names_are_addresses = true;
    });
    let joined = sim.run_until(Duration::from_secs(10), |sim| {
        (0..3).all(|observer| {
            (0..3).all(|other| {
                sim.node(observer).liveness(&address(other).to_string()) == Some(Liveness::Alive)
            })
        })
    });
    assert!(joined.is_some(), "a cluster named by addresses did not join");
    // A real node's datagram with one byte of a name flipped ("4573" became "4o73"), as a
    // broken device or a forger without the cluster key could send it.
    let real = sim.node(1).id().clone();
    let phantom = fechter_gossip::NodeId { name: "10.0.0.1:4o73".to_owned(), ..real.clone() };
    let from_phantom = Envelope {
        sender: phantom.clone(),
        sequence: 1,
        message: Message::Syn {
            digest: Digest { entries: vec![first_heartbeat_entry(phantom.clone())], complete: false },
        },
    };
    let listing_phantom = Envelope {
        sender: real,
        sequence: 1_000_000,
        message: Message::Syn {
            digest: Digest { entries: vec![first_heartbeat_entry(phantom)], complete: false },
        },
    };
    let before = sim.node(0).stats().dropped_malformed;
    sim.inject(0, address(1), &encode_datagram("sim", None, &from_phantom));
    sim.inject(0, address(1), &encode_datagram("sim", None, &listing_phantom));
    assert_eq!(sim.node(0).known_nodes(), 3, "a phantom node was learned");
    assert_eq!(sim.node(0).known_generation("10.0.0.1:4o73"), None);
    assert_eq!(sim.node(0).stats().dropped_malformed, before + 1, "the phantom sender is counted");
}

/// A digest entry naming `node` at its first heartbeat, holding no keys.
fn first_heartbeat_entry(node: fechter_gossip::NodeId) -> DigestEntry {
    DigestEntry { node, heartbeat: 1, max_version: 0, last_gc_version: 0, left: false }
}
