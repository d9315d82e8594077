//! Maintenance mode: `fechter maintenance on` freezes every assignment cluster-wide. A daemon
//! stopped and started again keeps its addresses on its interfaces, a dead node's addresses are
//! not moved, and `status` says so; `maintenance off` lets them move.

use anyhow::{Context, Result, ensure};
use fechter_lab::Lab;
use serde_json::Value;

use crate::common::{
    CONVERGE, client_reaches_all, holdings_stay, scenario, spread_cluster, wait_for_membership,
    wait_for_spread_ignoring,
};

/// Whether node `i`'s `status` says maintenance mode is on, in its text and in its JSON alike.
fn maintenance_shown(lab: &Lab, i: usize) -> Result<bool> {
    let text = lab.cli_ok(i, &["status"])?;
    let json: Value =
        serde_json::from_str(&lab.cli_ok(i, &["status", "--json"])?).context("status --json")?;
    let in_text = text.lines().next() == Some("maintenance mode is on");
    let in_json = json.get("maintenance").and_then(Value::as_bool).context("no `maintenance` in the JSON")?;
    ensure!(in_text == in_json, "node {i}'s text ({text:?}) and JSON ({json}) disagree");
    Ok(in_json)
}

#[test]
fn maintenance_mode_freezes_every_assignment_until_it_is_turned_off() {
    scenario("maintenance_mode_freezes_every_assignment_until_it_is_turned_off", "maint", 3, |lab| {
        let (pool, before) = spread_cluster(lab, 0, 6)?;
        ensure!(!maintenance_shown(lab, 0)?, "maintenance mode is on before anyone asked");

        // Through a node that does not lead: the flag is cluster-wide.
        lab.cli_ok(1, &["maintenance", "on"])?;
        lab.wait_for("every node to report maintenance mode", CONVERGE, || {
            for i in 0..lab.node_count() {
                if !maintenance_shown(lab, i)? {
                    return Ok(false);
                }
            }
            Ok(true)
        })?;

        // An upgrade: the daemon stops and starts again, and its addresses never leave.
        let status = lab.terminate_node(2)?;
        ensure!(status.success(), "node 2's daemon exited with {status}");
        ensure!(lab.held(2)? == before[2], "node 2 released its addresses on SIGTERM in maintenance");
        lab.start_node(2, true)?;
        wait_for_membership(lab)?;
        ensure!(maintenance_shown(lab, 2)?, "the restarted node forgot maintenance mode");
        holdings_stay(lab, &before, "a restart in maintenance mode")?;

        // The leader dies: nobody takes over its addresses.
        let victim = 0;
        lab.pull_cable(victim)?;
        lab.kill_node(victim)?;
        lab.wait_for("the survivors to see the victim dead", CONVERGE, || {
            for i in [1, 2] {
                if lab.info(i)?.peer(&lab.node_id(victim)).is_none_or(|peer| peer.liveness == "alive") {
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        holdings_stay(lab, &before, "a dead node in maintenance mode")?;
        ensure!(maintenance_shown(lab, 1)?, "node 1's status no longer says maintenance");
        let frozen = lab.status(1)?;
        let victim_id = lab.node_id(victim);
        for &address in &before[victim] {
            let entry = frozen.addresses.iter().find(|entry| entry.address == address);
            ensure!(
                entry.is_some_and(|entry| entry.assigned_to.as_deref() == Some(victim_id.as_str())),
                "{address} is no longer assigned to the dead node: {entry:?}"
            );
        }

        lab.cli_ok(2, &["maintenance", "off"])?;
        let after = wait_for_spread_ignoring(
            lab,
            &pool,
            &[1, 2],
            &[victim],
            "the dead node's addresses to move once maintenance is off",
        )?;
        ensure!(after[1].len() == 3 && after[2].len() == 3, "not 3/3: {after:?}");
        ensure!(!maintenance_shown(lab, 1)?, "node 1 still reports maintenance mode");
        client_reaches_all(lab, &pool)
    });
}
