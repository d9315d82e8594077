//! A node dies (cable pulled, process killed), its addresses move and the client follows; then it
//! returns, takes back exactly its share, and no address is ever on two interfaces on the LAN.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, ensure};

use crate::common::{
    CONVERGE, client_reaches_all, holder_of, scenario, spread_cluster, wait_for_membership, wait_for_spread,
    wait_for_spread_ignoring,
};

/// How soon the client's neighbour table must follow a moved address without any traffic from the
/// client: only an announcement from the new holder can do that; without one, Linux keeps the
/// old MAC until the entry expires (tens of seconds) or probes it (5 s after traffic resumes).
const ANNOUNCE_WINDOW: Duration = Duration::from_secs(4);

#[test]
fn a_dead_nodes_addresses_move_and_come_back_with_minimal_disruption() {
    scenario("a_dead_nodes_addresses_move_and_come_back_with_minimal_disruption", "failover", 3, |lab| {
        let sampler = lab.start_sampler();
        let (pool, before) = spread_cluster(lab, 2, 6)?;
        // The client talks to every address, so its neighbour table holds each one's current MAC.
        client_reaches_all(lab, &pool)?;

        // Node 0 leads, so its death also tests a change of leader.
        let victim = 0;
        let moved: Vec<IpAddr> = before[victim].iter().copied().collect();
        lab.pull_cable(victim)?;
        lab.kill_node(victim)?;
        // The victim's interface still carries what it held when it died, but it is off the LAN.
        let after_death =
            wait_for_spread_ignoring(lab, &pool, &[1, 2], &[victim], "the survivors to hold 3/3")?;
        ensure!(after_death[1].len() == 3 && after_death[2].len() == 3, "not 3/3: {after_death:?}");

        let macs = [lab.mac(0)?, lab.mac(1)?, lab.mac(2)?];
        lab.wait_for(
            "the client's neighbour entries to follow the moved addresses",
            ANNOUNCE_WINDOW,
            || {
                for &address in &moved {
                    let holder =
                        holder_of(&after_death, address).context("a moved address is held nowhere")?;
                    if lab.client_neighbour(address)?.as_ref() != Some(&macs[holder]) {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )?;
        client_reaches_all(lab, &pool)?;

        // The node returns as a rebooted machine would: the daemon restarts (clearing its stale
        // addresses) before the cable is back, and it stays down until told `up`.
        lab.start_node(victim, false)?;
        lab.wait_for("the returning node to clear its stale addresses", CONVERGE, || {
            Ok(lab.held(victim)?.is_empty())
        })?;
        lab.plug_cable(victim)?;
        wait_for_membership(lab)?;
        lab.cli_ok(victim, &["up"])?;
        let returned = wait_for_spread(lab, &pool, &[0, 1, 2], "2/2/2 after the node returned")?;
        ensure!(returned.iter().all(|held| held.len() == 2), "not 2/2/2: {returned:?}");
        let moved_back: BTreeSet<IpAddr> = pool
            .iter()
            .copied()
            .filter(|&address| holder_of(&after_death, address) != holder_of(&returned, address))
            .collect();
        ensure!(
            moved_back.len() == 2,
            "{} addresses moved on return, not 2: {moved_back:?}",
            moved_back.len()
        );
        client_reaches_all(lab, &pool)?;

        let log = sampler.finish();
        ensure!(log.samples >= 20, "only {} samples were taken", log.samples);
        ensure!(log.conflict_count == 0, "addresses on two interfaces at once: {:?}", log.conflicts);
        Ok(())
    });
}
