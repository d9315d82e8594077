//! Waiting for the cluster to settle, and the checks on a settled cluster: membership, the pool
//! every node reports, an even spread, and the client reaching every address at its holder's MAC.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use fechter_lab::Lab;

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

/// Why `holdings` is not `pool` spread over the nodes in `holders`: every address on exactly one
/// node, that node a holder, nothing else held anywhere, and the holders' loads within one.
pub(crate) fn spread_problem(
    holdings: &[BTreeSet<IpAddr>],
    pool: &[IpAddr],
    holders: &[usize],
) -> Option<String> {
    for &address in pool {
        let on: Vec<usize> = (0..holdings.len()).filter(|&node| holdings[node].contains(&address)).collect();
        if on.len() != 1 {
            return Some(format!("{address} is on nodes {on:?}"));
        }
        if !holders.contains(&on[0]) {
            return Some(format!("{address} is on n{}, which should hold nothing", on[0]));
        }
    }
    for (node, held) in holdings.iter().enumerate() {
        if let Some(stray) = held.iter().find(|address| !pool.contains(address)) {
            return Some(format!("n{node} holds {stray}, which is not in the pool"));
        }
    }
    let loads: Vec<usize> = holders.iter().map(|&node| holdings[node].len()).collect();
    let (least, most) = (loads.iter().min()?, loads.iter().max()?);
    (most - least > 1).then(|| format!("uneven loads {loads:?} on nodes {holders:?}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addresses: &[u8]) -> BTreeSet<IpAddr> {
        addresses.iter().map(|&last| IpAddr::from([198, 18, 0, last])).collect()
    }

    #[test]
    fn spread_problem_names_each_kind_of_fault() {
        let pool: Vec<IpAddr> = set(&[100, 101, 102]).into_iter().collect();
        let good = vec![set(&[100]), set(&[101, 102]), set(&[])];
        assert_eq!(spread_problem(&good, &pool, &[0, 1]), None);
        assert!(spread_problem(&good, &pool, &[0, 1, 2]).unwrap().contains("uneven"));
        assert!(spread_problem(&good, &pool, &[1, 2]).unwrap().contains("should hold nothing"));
        let twice = vec![set(&[100]), set(&[100, 101, 102]), set(&[])];
        assert!(spread_problem(&twice, &pool, &[0, 1]).unwrap().contains("on nodes [0, 1]"));
        let stray = vec![set(&[100, 200]), set(&[101, 102]), set(&[])];
        assert!(spread_problem(&stray, &pool, &[0, 1]).unwrap().contains("not in the pool"));
        assert_eq!(describe(&good[..2]), "n0 {198.18.0.100}  n1 {198.18.0.101, 198.18.0.102}");
    }
}
