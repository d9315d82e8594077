//! Whether a pool is spread evenly over a set of nodes: the invariant both the end-to-end tests and
//! the chaos run check from outside.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// Why `holdings` is not `pool` spread evenly over exactly the nodes `holders`: every address on
/// exactly one interface, all of them on holders, nothing else held anywhere, and the holders'
/// counts differing by at most one. `None` when it is.
pub fn spread_problem(holdings: &[BTreeSet<IpAddr>], pool: &[IpAddr], holders: &[usize]) -> Option<String> {
    for &address in pool {
        let on: Vec<usize> = (0..holdings.len()).filter(|&i| holdings[i].contains(&address)).collect();
        if on.len() != 1 {
            return Some(format!("{address} is on nodes {on:?}"));
        }
        if !holders.contains(&on[0]) {
            return Some(format!("{address} is on node {}, which should hold nothing", on[0]));
        }
    }
    for (i, held) in holdings.iter().enumerate() {
        if let Some(stray) = held.iter().find(|address| !pool.contains(address)) {
            return Some(format!("node {i} holds {stray}, which is not in the pool"));
        }
    }
    let counts: Vec<usize> = holders.iter().map(|&i| holdings[i].len()).collect();
    let (least, most) = (counts.iter().min()?, counts.iter().max()?);
    (most - least > 1).then(|| format!("uneven counts {counts:?} on nodes {holders:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addresses: &[&str]) -> BTreeSet<IpAddr> {
        addresses.iter().map(|address| address.parse().unwrap()).collect()
    }

    #[test]
    fn spread_problem_finds_every_kind_of_fault() {
        let pool: Vec<IpAddr> =
            ["198.18.0.100", "198.18.0.101", "198.18.0.102"].map(|a| a.parse().unwrap()).into();
        let good = vec![set(&["198.18.0.100"]), set(&["198.18.0.101", "198.18.0.102"]), set(&[])];
        assert_eq!(spread_problem(&good, &pool, &[0, 1]), None);
        assert!(spread_problem(&good, &pool, &[0, 1, 2]).unwrap().contains("uneven"));
        assert!(spread_problem(&good, &pool, &[1, 2]).unwrap().contains("should hold nothing"));
        let twice =
            vec![set(&["198.18.0.100"]), set(&["198.18.0.100", "198.18.0.101", "198.18.0.102"]), set(&[])];
        assert!(spread_problem(&twice, &pool, &[0, 1]).unwrap().contains("on nodes [0, 1]"));
        let stray =
            vec![set(&["198.18.0.100", "198.18.0.200"]), set(&["198.18.0.101", "198.18.0.102"]), set(&[])];
        assert!(spread_problem(&stray, &pool, &[0, 1]).unwrap().contains("not in the pool"));
    }
}
