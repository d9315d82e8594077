//! The split-brain guard: a node that cannot reach its gateway holds nothing.

use anyhow::ensure;

use crate::common::{CONVERGE, client_reaches_all, scenario, spread_cluster, wait_for_spread};

#[test]
fn a_node_without_its_gateway_holds_nothing_until_it_recovers() {
    scenario("a_node_without_its_gateway_holds_nothing_until_it_recovers", "gateway", 3, |lab| {
        let (pool, _) = spread_cluster(lab, 0, 6)?;

        lab.blackhole_gateway(1)?;
        let cut = wait_for_spread(lab, &pool, &[0, 2], "node 1 to give everything up")?;
        ensure!(cut[0].len() == 3 && cut[2].len() == 3, "not 3/3: {cut:?}");
        lab.wait_for("node 1 to say it lost its gateway", CONVERGE, || {
            Ok(lab.cli_ok(1, &["connectivity"])?.trim() == "cannot talk to gateway")
        })?;
        let info = lab.cli_ok(0, &["info"])?;
        let line = format!("{} is alive (status: down)", lab.node_ip(1));
        ensure!(info.lines().any(|l| l == line), "node 0's info lacks {line:?}: {info:?}");
        client_reaches_all(lab, &pool)?;

        lab.restore_gateway(1)?;
        lab.wait_for("node 1 to reach its gateway again", CONVERGE, || {
            Ok(lab.cli_ok(1, &["connectivity"])?.trim() == "can talk to gateway")
        })?;
        let back = wait_for_spread(lab, &pool, &[0, 1, 2], "2/2/2 after the gateway returned")?;
        ensure!(back.iter().all(|held| held.len() == 2), "not 2/2/2: {back:?}");
        client_reaches_all(lab, &pool)
    });
}
