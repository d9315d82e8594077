//! The lab itself, before any daemon: the LAN works and the faults do what they claim.

use std::time::Duration;

use anyhow::ensure;
use fechter_lab::wait_until;

use crate::common::scenario;

#[test]
fn lab_builds_a_lan_and_injects_faults() {
    scenario("lab_builds_a_lan_and_injects_faults", "lan", 2, |lab| {
        for i in 0..lab.node_count() {
            ensure!(lab.client_ping(lab.node_ip(i).into())?, "the client cannot ping node {i}");
        }
        ensure!(lab.held(0)?.is_empty(), "a fresh node holds {:?}", lab.held(0)?);

        lab.pull_cable(1)?;
        ensure!(!lab.client_ping(lab.node_ip(1).into())?, "node 1 answers with its cable pulled");
        lab.plug_cable(1)?;
        ensure!(
            wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
                lab.client_ping(lab.node_ip(1).into()).unwrap_or(false)
            }),
            "node 1 does not answer after its cable is plugged back"
        );

        let gateway = lab.gateway_ip().to_string();
        let node0 = lab.node_ns(0).to_owned();
        ensure!(
            lab.exec(&node0, "ping", &["-c1", "-W1", &gateway])?.success(),
            "node 0 cannot ping its gateway"
        );
        lab.blackhole_gateway(0)?;
        ensure!(
            !lab.exec(&node0, "ping", &["-c1", "-W1", &gateway])?.success(),
            "the blackhole lets pings through"
        );
        ensure!(
            lab.exec(&node0, "ping", &["-c1", "-W1", &lab.client_ip().to_string()])?.success(),
            "the blackhole cut more than the gateway"
        );
        lab.restore_gateway(0)?;
        ensure!(
            lab.exec(&node0, "ping", &["-c1", "-W1", &gateway])?.success(),
            "the gateway did not come back"
        );

        lab.send_from_client(lab.node_ip(0).into(), 9, &[0u8; 100])?;
        ensure!(
            lab.client_neighbour(lab.node_ip(0).into())?.is_some(),
            "the client has no neighbour entry for node 0"
        );
        ensure!(
            lab.client_neighbour(lab.node_ip(0).into())? == Some(lab.mac(0)?),
            "the client's entry is not node 0's MAC"
        );
        Ok(())
    });
}
