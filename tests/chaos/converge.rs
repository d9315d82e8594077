//! Waiting for the cluster to settle, and the checks on a settled cluster: membership, the pool
//! every node reports, an even spread, and the client reaching every address at its holder's MAC.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use fechter_lab::{Lab, spread_problem};

use crate::ledger::ExpectedPool;

/// Polls `check` every `period` until it reports no problem or `timeout` passes; returns how long
/// it took, or the last problem (an error counts as one).
pub(crate) fn settle(
    timeout: Duration,
    period: Duration,
    mut check: impl FnMut() -> Result<Option<String>>,
) -> std::result::Result<Duration, String> {
    let started = Instant::now();
    loop {
        let problem = match check() {
            Ok(None) => return Ok(started.elapsed()),
            Ok(Some(problem)) => problem,
            Err(error) => format!("{error:#}"),
        };
        if started.elapsed() >= timeout {
            return Err(problem);
        }
        thread::sleep(period);
    }
}

/// Why not every node sees every other node alive, if so.
pub(crate) fn membership_problem(lab: &Lab) -> Result<Option<String>> {
    for node in 0..lab.node_count() {
        let info = lab.info(node)?;
        for other in (0..lab.node_count()).filter(|&other| other != node) {
            let liveness = info.peer(&lab.node_id(other)).map_or("unknown", |peer| peer.liveness.as_str());
            if liveness != "alive" {
                return Ok(Some(format!("n{node} sees n{other} as {liveness}")));
            }
        }
    }
    Ok(None)
}

/// Why the cluster has not settled on the acknowledged pool: membership, every node's status
/// (the same pool everywhere, keeping every acknowledged command), and the holdings.
pub(crate) fn final_problem(lab: &Lab, expected: &ExpectedPool) -> Result<Option<String>> {
    if let Some(problem) = membership_problem(lab)? {
        return Ok(Some(problem));
    }
    let pool = lab.status(0)?.pool();
    let problems = expected.problems(&pool);
    if !problems.is_empty() {
        return Ok(Some(format!("n0's status: {}", problems.join("; "))));
    }
    for node in 1..lab.node_count() {
        let other = lab.status(node)?.pool();
        if other != pool {
            return Ok(Some(format!("n{node}'s pool {other:?} differs from n0's {pool:?}")));
        }
    }
    let all: Vec<usize> = (0..lab.node_count()).collect();
    Ok(spread_problem(&lab.holdings()?, &pool, &all))
}

/// Pings every address of `pool` from the client and checks that the client's neighbour entry
/// then names the MAC of the node holding it; one line per problem.
pub(crate) fn client_problems(lab: &Lab, pool: &[IpAddr]) -> Result<Vec<String>> {
    let holdings = lab.holdings()?;
    let macs: Vec<String> = (0..lab.node_count()).map(|node| lab.mac(node)).collect::<Result<_>>()?;
    let mut problems = Vec::new();
    for &address in pool {
        // A reply may need the neighbour entry to settle first; a few tries cover a busy machine.
        let mut reached = false;
        for _ in 0..5 {
            if lab.client_ping(address)? {
                reached = true;
                break;
            }
        }
        if !reached {
            problems.push(format!("the client cannot ping {address}"));
            continue;
        }
        let Some(holder) = holdings.iter().position(|held| held.contains(&address)) else {
            problems.push(format!("{address} answers but no node holds it"));
            continue;
        };
        let neighbour = lab.client_neighbour(address)?;
        if neighbour.as_ref() != Some(&macs[holder]) {
            problems.push(format!(
                "the client's neighbour entry for {address} is {neighbour:?}, but n{holder} ({}) holds it",
                macs[holder]
            ));
        }
    }
    Ok(problems)
}

/// The holdings as `n0 {a, b} n1 {} ...`.
pub(crate) fn describe(holdings: &[BTreeSet<IpAddr>]) -> String {
    holdings
        .iter()
        .enumerate()
        .map(|(node, held)| {
            let list: Vec<String> = held.iter().map(IpAddr::to_string).collect();
            format!("n{node} {{{}}}", list.join(", "))
        })
        .collect::<Vec<_>>()
        .join("  ")
}
