//! Real UDP on 127.0.0.1 with spawned drivers: join, propagation of a set, and a departure.

use std::net::SocketAddr;
use std::time::Duration;

use fechter_gossip::{Config, GossipHandle, Liveness, UdpTransport, spawn};

async fn start(name: &str, seeds: Vec<SocketAddr>) -> (GossipHandle, SocketAddr) {
    let bind: SocketAddr = ([127, 0, 0, 1], 0).into();
    let transport = UdpTransport::bind(bind).await.unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = transport.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
    let mut config = Config::new("udp-test", name, 1, addr);
    config.seeds = seeds;
    config.gossip_interval = Duration::from_millis(20);
    config.min_std_dev = Duration::from_millis(50);
    (spawn(config, transport), addr)
}

/// Waits until `check` holds for the handle's published view.
async fn wait_for(handle: &GossipHandle, what: &str, check: impl Fn(&fechter_gossip::ClusterView) -> bool) {
    let mut watch = handle.watch();
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if check(&watch.borrow_and_update()) {
                return;
            }
            if watch.changed().await.is_err() {
                panic!("driver stopped while waiting for {what}");
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_share_a_key_and_see_a_departure() {
    let (a, a_addr) = start("a", Vec::new()).await;
    let (b, _) = start("b", vec![a_addr]).await;
    let (c, _) = start("c", vec![a_addr]).await;
    for handle in [&a, &b, &c] {
        wait_for(handle, "all alive", |view| {
            ["a", "b", "c"]
                .iter()
                .all(|name| view.nodes.get(*name).is_some_and(|node| node.liveness == Liveness::Alive))
        })
        .await;
    }
    b.set("vip", b"10.0.0.7".to_vec()).await.unwrap_or_else(|e| panic!("{e}"));
    for handle in [&a, &c] {
        wait_for(handle, "key", |view| {
            view.nodes.get("b").and_then(|node| node.keys.get("vip")).map(Vec::as_slice)
                == Some(b"10.0.0.7".as_slice())
        })
        .await;
    }
    let fresh = a.view().await;
    assert!(fresh.nodes["b"].phi.is_some());
    c.leave().await;
    for handle in [&a, &b] {
        wait_for(handle, "departure", |view| {
            view.nodes.get("c").is_some_and(|node| node.liveness == Liveness::Left)
        })
        .await;
    }
    assert!(matches!(c.set("x", Vec::new()).await, Err(fechter_gossip::SetError::Stopped)));
    assert!(c.stats().await.datagrams_sent > 0);
    assert!(a.stats().await.datagrams_received > 0);
}

#[tokio::test(start_paused = true)]
async fn the_driver_ticks_on_tokio_time() {
    let (a, a_addr) = start("a", Vec::new()).await;
    let (b, _) = start("b", vec![a_addr]).await;
    wait_for(&b, "a alive", |view| view.nodes.get("a").is_some_and(|node| node.liveness == Liveness::Alive))
        .await;
    a.delete("missing").await;
    assert!(b.view().await.nodes.contains_key("a"));
}
