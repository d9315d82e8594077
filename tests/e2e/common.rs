//! What the scenarios share: running one with its own lab, building the usual cluster, and the
//! checks that say a pool is spread correctly.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use fechter_lab::{Lab, e2e_gate, spread_problem};

/// How long the cluster gets for anything that should take a few seconds: the machine is a noisy
/// two-core box running several clusters at once.
pub(crate) const CONVERGE: Duration = Duration::from_secs(40);

/// How long something that should NOT happen is watched for.
pub(crate) const QUIET: Duration = Duration::from_secs(3);

/// Runs `body` against a fresh lab of `nodes` nodes, unless the machine cannot (see
/// [`e2e_gate`]). An error panics while the lab is still alive, so its drop prints the node logs.
pub(crate) fn scenario(name: &str, tag: &str, nodes: usize, body: impl FnOnce(&mut Lab) -> Result<()>) {
    if !e2e_gate(name) {
        return;
    }
    let mut lab = match Lab::new(tag, nodes) {
        Ok(lab) => lab,
        Err(error) => panic!("{name}: {error:#}"),
    };
    if let Err(error) = body(&mut lab) {
        panic!("{name} failed: {error:#}");
    }
}

/// Starts every node's daemon, admin-up when `up`.
pub(crate) fn start_all(lab: &mut Lab, up: bool) -> Result<()> {
    for i in 0..lab.node_count() {
        lab.start_node(i, up)?;
    }
    Ok(())
}

/// Waits until every node sees every other node alive.
pub(crate) fn wait_for_membership(lab: &Lab) -> Result<()> {
    lab.wait_for("every node to see every other alive", CONVERGE, || {
        for i in 0..lab.node_count() {
            let info = lab.info(i)?;
            for other in (0..lab.node_count()).filter(|&other| other != i) {
                if info.peer(&lab.node_id(other)).is_none_or(|peer| peer.liveness != "alive") {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })
}

/// Adds `count` pool addresses (`vip(0)`, `vip(1)`, ...) through node `via`; returns them in order.
pub(crate) fn add_pool(lab: &Lab, via: usize, count: u8) -> Result<Vec<IpAddr>> {
    let pool: Vec<IpAddr> = (0..count).map(|k| lab.vip(k)).collect();
    for &address in &pool {
        lab.add_address(via, address)?;
    }
    Ok(pool)
}

/// The usual start: all nodes up, `count` addresses added through node `via`, spread evenly.
pub(crate) fn spread_cluster(
    lab: &mut Lab,
    via: usize,
    count: u8,
) -> Result<(Vec<IpAddr>, Vec<BTreeSet<IpAddr>>)> {
    start_all(lab, true)?;
    wait_for_membership(lab)?;
    let pool = add_pool(lab, via, count)?;
    let all: Vec<usize> = (0..lab.node_count()).collect();
    let holdings = wait_for_spread(lab, &pool, &all, "the pool spread over all nodes")?;
    Ok((pool, holdings))
}

/// Waits until `pool` is spread evenly over `holders` (see [`fechter_lab::spread_problem`]).
pub(crate) fn wait_for_spread(
    lab: &Lab,
    pool: &[IpAddr],
    holders: &[usize],
    what: &str,
) -> Result<Vec<BTreeSet<IpAddr>>> {
    wait_for_spread_ignoring(lab, pool, holders, &[], what)
}

/// Like [`wait_for_spread`], but the interfaces of the nodes in `ignored` (cut off the LAN, with a
/// dead daemon) do not count; they come back empty in the result.
pub(crate) fn wait_for_spread_ignoring(
    lab: &Lab,
    pool: &[IpAddr],
    holders: &[usize],
    ignored: &[usize],
    what: &str,
) -> Result<Vec<BTreeSet<IpAddr>>> {
    let clear = |holdings: &[BTreeSet<IpAddr>]| -> Vec<BTreeSet<IpAddr>> {
        let mut visible = holdings.to_vec();
        for &i in ignored {
            visible[i].clear();
        }
        visible
    };
    let holdings = lab.wait_for_holdings(what, CONVERGE, |holdings| {
        spread_problem(&clear(holdings), pool, holders).is_none()
    })?;
    Ok(clear(&holdings))
}

/// The node holding `address` in `holdings`.
pub(crate) fn holder_of(holdings: &[BTreeSet<IpAddr>], address: IpAddr) -> Option<usize> {
    holdings.iter().position(|held| held.contains(&address))
}

/// Waits until node `i`'s `status` lists exactly `pool` in order, each address assigned to and held
/// by the node whose interface has it in `holdings` (status is eventually consistent: held keys
/// travel by gossip).
pub(crate) fn wait_for_status_agreement(
    lab: &Lab,
    i: usize,
    pool: &[IpAddr],
    holdings: &[BTreeSet<IpAddr>],
) -> Result<()> {
    let mut mismatch = String::new();
    let agreed = lab.wait_for(&format!("node {i}'s status to agree with the interfaces"), CONVERGE, || {
        let status = lab.status(i)?;
        if status.pool() != pool {
            mismatch = format!("pool {:?}", status.pool());
            return Ok(false);
        }
        for entry in &status.addresses {
            let expected = holder_of(holdings, entry.address).map(|holder| lab.node_id(holder));
            if entry.assigned_to != expected || entry.held_by != Vec::from_iter(expected.clone()) {
                mismatch = format!("{entry:?}, expected {expected:?}");
                return Ok(false);
            }
        }
        Ok(true)
    });
    agreed.map_err(|error| error.context(format!("last mismatch: {mismatch}")))
}

/// Checks that the client reaches every address of `pool`.
pub(crate) fn client_reaches_all(lab: &Lab, pool: &[IpAddr]) -> Result<()> {
    for &address in pool {
        // A reply may need the neighbour entry to settle first; a few tries cover a busy machine.
        let mut reached = false;
        for _ in 0..5 {
            if lab.client_ping(address)? {
                reached = true;
                break;
            }
        }
        ensure!(reached, "the client cannot ping {address}");
    }
    Ok(())
}

/// Fails unless the holdings stay `expected` for [`QUIET`].
pub(crate) fn holdings_stay(lab: &Lab, expected: &[BTreeSet<IpAddr>], what: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + QUIET;
    while std::time::Instant::now() < deadline {
        let now = lab.holdings()?;
        if now != expected {
            bail!("{what}: the holdings changed from {expected:?} to {now:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
