//! The pool is replicated before anything is assigned, and `up` spreads it evenly.

use std::thread;

use anyhow::ensure;

use crate::common::{
    QUIET, add_pool, client_reaches_all, scenario, start_all, wait_for_membership, wait_for_spread,
    wait_for_status_agreement,
};

#[test]
fn addresses_added_through_a_non_leader_spread_evenly_after_up() {
    scenario("addresses_added_through_a_non_leader_spread_evenly_after_up", "spread", 3, |lab| {
        start_all(lab, false)?;
        wait_for_membership(lab)?;
        // Node 0 has the lowest id and leads; the addresses go in through node 1.
        let pool = add_pool(lab, 1, 6)?;

        // Every node learns the whole pool in order, and while every node is down nothing is
        // assigned and nothing is held.
        for i in 0..3 {
            lab.wait_for(&format!("node {i} to list the pool"), crate::common::CONVERGE, || {
                Ok(lab.status(i)?.pool() == pool)
            })?;
        }
        thread::sleep(QUIET);
        for i in 0..3 {
            let status = lab.status(i)?;
            ensure!(
                status.addresses.iter().all(|entry| entry.assigned_to.is_none() && entry.held_by.is_empty()),
                "node {i} shows assignments before any node is up: {status:?}"
            );
            let text = lab.cli_ok(i, &["status"])?;
            let expected: Vec<String> =
                pool.iter().map(|address| format!("eth0:{address} is not assigned")).collect();
            ensure!(text.lines().eq(expected.iter().map(String::as_str)), "node {i}'s status reads {text:?}");
        }
        ensure!(
            lab.holdings()?.iter().all(|held| held.is_empty()),
            "addresses held while down: {:?}",
            lab.holdings()?
        );

        for i in 0..3 {
            lab.cli_ok(i, &["up"])?;
        }
        let holdings = wait_for_spread(lab, &pool, &[0, 1, 2], "2/2/2 after up")?;
        ensure!(holdings.iter().all(|held| held.len() == 2), "not 2/2/2: {holdings:?}");
        for i in 0..3 {
            wait_for_status_agreement(lab, i, &pool, &holdings)?;
        }

        // The text forms agree with the JSON: addresses by default, node ids with -n.
        let holder = |address| crate::common::holder_of(&holdings, address).map(|i| lab.node_ip(i));
        let by_address: Vec<String> = pool
            .iter()
            .map(|&address| {
                format!(
                    "eth0:{address} assigned to {}",
                    holder(address).map_or_else(String::new, |ip| ip.to_string())
                )
            })
            .collect();
        ensure!(
            lab.cli_ok(2, &["status"])?.lines().eq(by_address.iter().map(String::as_str)),
            "status text differs"
        );
        let numeric = lab.cli_ok(2, &["status", "-n"])?;
        ensure!(
            numeric.lines().zip(&pool).all(|(line, address)| line.ends_with(":4573")
                && line.starts_with(&format!("eth0:{address} assigned to "))),
            "status -n reads {numeric:?}"
        );
        let info = lab.cli_ok(1, &["info"])?;
        for other in [0, 2] {
            let line = format!("{} is alive (status: up)", lab.node_ip(other));
            ensure!(info.lines().any(|l| l == line), "node 1's info lacks {line:?}: {info:?}");
        }
        ensure!(
            lab.cli_ok(0, &["connectivity"])?.trim() == "can talk to gateway",
            "node 0 cannot talk to its gateway"
        );

        client_reaches_all(lab, &pool)
    });
}
