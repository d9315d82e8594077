//! The operator's commands: `down` hands a node's addresses over, `remove-address` removes one
//! from every node.

use std::net::IpAddr;

use anyhow::ensure;

use crate::common::{
    CONVERGE, client_reaches_all, scenario, spread_cluster, wait_for_spread, wait_for_status_agreement,
};

#[test]
fn down_hands_the_addresses_over_and_up_takes_a_share_back() {
    scenario("down_hands_the_addresses_over_and_up_takes_a_share_back", "down", 3, |lab| {
        let sampler = lab.start_sampler();
        let (pool, _) = spread_cluster(lab, 1, 6)?;

        // The leader itself goes down: it keeps leading but must assign itself nothing.
        lab.cli_ok(0, &["down"])?;
        let handed = wait_for_spread(lab, &pool, &[1, 2], "node 0 to hand over")?;
        ensure!(handed[1].len() == 3 && handed[2].len() == 3, "not 3/3: {handed:?}");
        lab.wait_for("node 1 to see node 0 down", CONVERGE, || {
            let line = format!("{} is alive (status: down)", lab.node_ip(0));
            Ok(lab.cli_ok(1, &["info"])?.lines().any(|l| l == line))
        })?;
        ensure!(lab.info(0)?.local.admin.as_deref() == Some("down"), "node 0 does not report itself down");
        client_reaches_all(lab, &pool)?;

        lab.cli_ok(0, &["up"])?;
        let back = wait_for_spread(lab, &pool, &[0, 1, 2], "2/2/2 after up")?;
        ensure!(back.iter().all(|held| held.len() == 2), "not 2/2/2: {back:?}");
        client_reaches_all(lab, &pool)?;

        let log = sampler.finish();
        ensure!(log.conflict_count == 0, "addresses on two interfaces at once: {:?}", log.conflicts);
        Ok(())
    });
}

#[test]
fn remove_address_removes_it_everywhere() {
    scenario("remove_address_removes_it_everywhere", "remove", 3, |lab| {
        let (mut pool, _) = spread_cluster(lab, 0, 6)?;
        let removed: Vec<IpAddr> = vec![pool[0], pool[3]];
        for address in &removed {
            lab.cli_ok(2, &["remove-address", &format!("eth0:{address}")])?;
        }
        pool.retain(|address| !removed.contains(address));
        let holdings = wait_for_spread(lab, &pool, &[0, 1, 2], "the removed addresses to disappear")?;
        for i in 0..3 {
            wait_for_status_agreement(lab, i, &pool, &holdings)?;
        }
        for &address in &removed {
            ensure!(!lab.client_ping(address)?, "the client still reaches the removed {address}");
        }
        client_reaches_all(lab, &pool)?;

        // A removed address can come back; it then goes to the end of the pool order.
        lab.cli_ok(1, &["add-address", &format!("eth0:{}", removed[0])])?;
        pool.push(removed[0]);
        let holdings = wait_for_spread(lab, &pool, &[0, 1, 2], "the re-added address to be held")?;
        wait_for_status_agreement(lab, 2, &pool, &holdings)?;
        Ok(())
    });
}
