//! Daemons that stop and start: killed, terminated, or the whole cluster at once.

use anyhow::ensure;

use crate::common::{
    CONVERGE, client_reaches_all, holdings_stay, scenario, spread_cluster, start_all, wait_for_membership,
    wait_for_spread, wait_for_spread_ignoring,
};

#[test]
fn a_killed_node_restarts_clean_and_down() {
    scenario("a_killed_node_restarts_clean_and_down", "kill", 3, |lab| {
        let (pool, before) = spread_cluster(lab, 0, 6)?;
        ensure!(before[1].len() == 2, "node 1 holds {:?}", before[1]);

        // SIGKILL leaves node 1's addresses on its interface: that is the dead machine's state,
        // and the survivors take over regardless.
        lab.kill_node(1)?;
        wait_for_spread_ignoring(lab, &pool, &[0, 2], &[1], "the survivors to take over")?;

        // The restarted node clears the stale addresses and, although it was up before it died,
        // stays down and holds nothing until told `up`.
        lab.start_node(1, false)?;
        let survivors = wait_for_spread(lab, &pool, &[0, 2], "node 1 to clear its stale addresses")?;
        wait_for_membership(lab)?;
        ensure!(
            lab.info(1)?.local.admin.as_deref() == Some("down"),
            "node 1 came back {:?}",
            lab.info(1)?.local.admin
        );
        holdings_stay(lab, &survivors, "a restarted node that was never told up")?;

        lab.cli_ok(1, &["up"])?;
        let back = wait_for_spread(lab, &pool, &[0, 1, 2], "2/2/2 after up")?;
        ensure!(back.iter().all(|held| held.len() == 2), "not 2/2/2: {back:?}");
        client_reaches_all(lab, &pool)
    });
}

#[test]
fn sigterm_releases_the_addresses_and_exits_cleanly() {
    scenario("sigterm_releases_the_addresses_and_exits_cleanly", "sigterm", 3, |lab| {
        let (pool, before) = spread_cluster(lab, 0, 6)?;
        ensure!(!before[2].is_empty(), "node 2 holds nothing to release");
        let status = lab.terminate_node(2)?;
        ensure!(status.code() == Some(0), "node 2 exited with {status}");
        ensure!(lab.held(2)?.is_empty(), "node 2 exited still holding {:?}", lab.held(2)?);
        let after = wait_for_spread(lab, &pool, &[0, 1], "the others to take over")?;
        ensure!(after[0].len() == 3 && after[1].len() == 3, "not 3/3: {after:?}");
        // A terminated node says goodbye, so its peers know it left rather than died.
        lab.wait_for("node 0 to see that node 2 has left", CONVERGE, || {
            let line = format!("{} has left", lab.node_ip(2));
            Ok(lab.cli_ok(0, &["info"])?.lines().any(|l| l == line))
        })?;
        client_reaches_all(lab, &pool)
    });
}

#[test]
fn a_full_cluster_restart_keeps_the_pool() {
    scenario("a_full_cluster_restart_keeps_the_pool", "fullstop", 3, |lab| {
        let (mut pool, _) = spread_cluster(lab, 1, 6)?;
        let removed = pool.remove(2);
        lab.cli_ok(0, &["remove-address", &format!("eth0:{removed}")])?;
        for i in 0..3 {
            lab.wait_for(&format!("node {i} to list the pool without {removed}"), CONVERGE, || {
                Ok(lab.status(i)?.pool() == pool)
            })?;
        }
        for i in 0..3 {
            let status = lab.terminate_node(i)?;
            ensure!(status.code() == Some(0), "node {i} exited with {status}");
        }
        ensure!(
            lab.holdings()?.iter().all(|held| held.is_empty()),
            "addresses left behind: {:?}",
            lab.holdings()?
        );

        start_all(lab, true)?;
        for i in 0..3 {
            lab.wait_for(&format!("node {i} to list the pool after the restart"), CONVERGE, || {
                Ok(lab.status(i)?.pool() == pool)
            })?;
        }
        let holdings = wait_for_spread(lab, &pool, &[0, 1, 2], "the kept pool to spread again")?;
        ensure!(!holdings.iter().any(|held| held.contains(&removed)), "the removed {removed} came back");
        client_reaches_all(lab, &pool)
    });
}
