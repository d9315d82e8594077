//! A hostile network and hostile local users: a keyed cluster works and shuts out a wrong key or
//! another cluster id, keys rotate without an outage, forged, replayed, truncated and oversized
//! datagrams are dropped and counted, and only root and the admin group change anything over the
//! control socket.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use fechter_lab::{CommandOutput, GOSSIP_PORT, Lab, Status, run_with_timeout, spread_problem};

use crate::common::{
    CONVERGE, QUIET, add_pool, client_reaches_all, scenario, wait_for_spread, wait_for_spread_ignoring,
    wait_for_status_agreement,
};
use crate::garbage::{MAX_UDP_PAYLOAD, Noise, capture_gossip_datagram};

/// The message fechterd logs, at most every few seconds, when gossip dropped datagrams.
const DROP_LINE: &str = "dropped gossip datagrams";

/// The gossip datagram budget: longer datagrams are dropped unread.
const DATAGRAM_BUDGET: usize = 1400;

/// How often the reachability probes ping.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The longest an address may stay unreachable during a rolling restart. Each restart hands the
/// node's addresses over twice (SIGTERM releases them, the restarted node takes a share back);
/// one handover takes well under a second (release, the leader's next step, acquire, gratuitous
/// ARP), and the rest is slack for a noisy two-core machine running several clusters.
const HANDOVER_GAP: Duration = Duration::from_secs(6);

static ACCOUNT_COUNTER: AtomicU32 = AtomicU32::new(0);

#[test]
fn a_keyed_cluster_works_and_shuts_out_a_wrong_key_and_another_cluster() {
    scenario("a_keyed_cluster_works_and_shuts_out_a_wrong_key_and_another_cluster", "keyed", 4, |lab| {
        let good = write_key_file(lab, "good.key", &[&keygen(lab)?])?;
        let bad = write_key_file(lab, "bad.key", &[&keygen(lab)?])?;
        let outsider = 3;
        // The outsider starts first, so the others' first datagrams (sent to every seed while
        // they have no peer) reach it too, and both sides have something to refuse.
        start_keyed(lab, outsider, &bad, &[])?;
        for i in 0..3 {
            start_keyed(lab, i, &good, &[])?;
        }
        wait_for_members(lab, &[0, 1, 2])?;
        let pool = add_pool(lab, 0, 6)?;
        wait_for_spread(lab, &pool, &[0, 1, 2], "the keyed cluster to spread the pool")?;
        client_reaches_all(lab, &pool)?;

        stays_shut_out(lab, outsider, &pool)?;
        wait_for_drops(lab, outsider, "auth_failure", 1)?;
        wait_for_drops(lab, 0, "auth_failure", 1)?;

        // The right key under another cluster id is refused as well, by the plaintext header.
        lab.kill_node(outsider)?;
        start_keyed(lab, outsider, &good, &["--cluster-id", "intruders"])?;
        stays_shut_out(lab, outsider, &pool)?;
        wait_for_drops(lab, 0, "other_cluster", 1)?;

        // With the right key and cluster id the same node joins and takes its share.
        lab.kill_node(outsider)?;
        start_keyed(lab, outsider, &good, &[])?;
        wait_for_members(lab, &[0, 1, 2, 3])?;
        wait_for_spread(lab, &pool, &[0, 1, 2, 3], "the admitted node to take its share")?;

        // Failover works under encryption: node 1 dies without a word.
        lab.pull_cable(1)?;
        lab.kill_node(1)?;
        wait_for_spread_ignoring(lab, &pool, &[0, 2, 3], &[1], "the survivors to take over")?;
        client_reaches_all(lab, &pool)
    });
}

#[test]
fn cluster_keys_rotate_without_an_outage() {
    scenario("cluster_keys_rotate_without_an_outage", "rotate", 3, |lab| {
        let (old, new) = (keygen(lab)?, keygen(lab)?);
        // The procedure of the gossip crate's documentation: a key is first added as a second line
        // (it opens, the old one still seals), then moved to the top, and only then the old one goes.
        let steps: [&[&str]; 4] = [&[&old], &[&old, &new], &[&new, &old], &[&new]];
        let key_file = |lab: &Lab, i: usize, step: usize| {
            write_key_file(lab, &format!("n{i}-step{step}.key"), steps[step])
        };
        for i in 0..3 {
            start_keyed(lab, i, &key_file(lab, i, 0)?, &[])?;
        }
        wait_for_members(lab, &[0, 1, 2])?;
        let pool = add_pool(lab, 0, 3)?;
        wait_for_spread(lab, &pool, &[0, 1, 2], "the pool to spread under the old key")?;
        client_reaches_all(lab, &pool)?;

        let sampler = lab.start_sampler();
        let probes = pool.iter().map(|&address| Probe::start(lab, address)).collect::<Result<Vec<_>>>()?;
        for step in 1..steps.len() {
            for i in 0..3 {
                let status = lab.terminate_node(i)?;
                ensure!(status.code() == Some(0), "node {i} exited with {status} at step {step}");
                start_keyed(lab, i, &key_file(lab, i, step)?, &[])?;
                wait_for_members(lab, &[0, 1, 2])?;
                wait_for_spread(
                    lab,
                    &pool,
                    &[0, 1, 2],
                    &format!("the pool to spread after node {i}'s step {step}"),
                )?;
            }
        }
        for probe in probes {
            let (address, result) = (probe.address, probe.finish()?);
            ensure!(result.sent >= 50, "only {} probes were sent to {address}", result.sent);
            ensure!(
                result.longest_gap() <= HANDOVER_GAP,
                "{address} was unreachable for {:?} ({} probes in a row lost of {})",
                result.longest_gap(),
                result.longest_loss,
                result.sent
            );
        }
        let log = sampler.finish();
        ensure!(log.conflict_count == 0, "addresses on two interfaces at once: {:?}", log.conflicts);
        // The proof that no step cut anyone off: no node ever refused a datagram as unauthentic.
        for i in 0..3 {
            let log = fs::read_to_string(lab.log_path(i))?;
            for counters in drop_reports(&log) {
                ensure!(
                    counters.get("auth_failure").copied().unwrap_or(0) == 0,
                    "node {i} refused datagrams during the rotation: {counters:?}"
                );
            }
        }
        client_reaches_all(lab, &pool)
    });
}

#[test]
fn forged_replayed_truncated_and_oversized_datagrams_are_dropped_and_counted() {
    scenario(
        "forged_replayed_truncated_and_oversized_datagrams_are_dropped_and_counted",
        "hostile",
        3,
        |lab| {
            let key = write_key_file(lab, "cluster.key", &[&keygen(lab)?])?;
            for i in 0..3 {
                start_keyed(lab, i, &key, &[])?;
            }
            wait_for_members(lab, &[0, 1, 2])?;
            let pool = add_pool(lab, 0, 6)?;
            let holdings = wait_for_spread(lab, &pool, &[0, 1, 2], "the keyed cluster to spread the pool")?;
            // Status travels by gossip after the interfaces change; it must have settled first.
            for i in 0..3 {
                wait_for_status_agreement(lab, i, &pool, &holdings)?;
            }
            let statuses = |lab: &Lab| -> Result<Vec<Status>> { (0..3).map(|i| lab.status(i)).collect() };
            let before = statuses(lab)?;
            let sealed = capture_gossip_datagram(lab, 1)?;
            ensure!(sealed.len() > 6 + 7 + 40, "the captured datagram is too short: {}", sealed.len());
            let header_len = 6 + usize::from(u16::from_be_bytes([sealed[4], sealed[5]]));
            ensure!(
                sealed.get(6..header_len) == Some(b"fechter".as_slice()),
                "unexpected header {sealed:02x?}"
            );
            let baseline: Vec<BTreeMap<String, u64>> =
                (0..3).map(|i| latest_drops(lab, i)).collect::<Result<_>>()?;

            let mut noise = Noise::seeded();
            let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
            let mut payloads: Vec<Vec<u8>> = Vec::new();
            let mut add = |kind: &'static str, payload: Vec<u8>| {
                *expected.entry(kind).or_default() += 1;
                payloads.push(payload);
            };
            // Another cluster id in the header, whether re-sealed or not, is refused before decryption.
            let mut other_id = sealed.clone();
            other_id[6] ^= 0x20;
            add("other_cluster", other_id);
            let mut renamed = vec![0xfe, 0xc7, sealed[2], sealed[3], 0, 9];
            renamed.extend_from_slice(b"intruders");
            renamed.extend_from_slice(&sealed[header_len..]);
            add("other_cluster", renamed);
            // A changed bit anywhere the tag covers, a datagram cut short, or a sealed one posing as
            // plaintext: no key of the ring opens it.
            for position in [3usize, header_len + 30, sealed.len() - 1] {
                let mut flipped = sealed.clone();
                flipped[position] ^= if position == 3 { 0x01 } else { 0x5a };
                add("auth_failure", flipped);
            }
            add("auth_failure", sealed[..header_len + 10].to_vec());
            add("auth_failure", sealed[..sealed.len() - 1].to_vec());
            let mut longer = sealed.clone();
            longer.push(0);
            add("auth_failure", longer);
            add("bad_magic", sealed[..1].to_vec());
            add("malformed", sealed[..4].to_vec());
            let mut version = sealed.clone();
            version[2] = 0x7f;
            add("wrong_version", version);
            // Anything over the budget is dropped unread, however plausible its start.
            for len in [DATAGRAM_BUDGET + 1, MAX_UDP_PAYLOAD] {
                let mut oversized = sealed[..header_len].to_vec();
                oversized.extend(noise.bytes(len - header_len));
                add("oversized", oversized);
            }
            for i in 0..3 {
                for payload in &payloads {
                    lab.send_from_client(lab.node_ip(i).into(), GOSSIP_PORT, payload)?;
                }
            }
            // The captured datagram itself, resent: node 1 received it once already. The other
            // nodes never saw it; to them it is an authentic old message that changes nothing.
            let replays = 3;
            for _ in 0..replays {
                lab.send_from_client(lab.node_ip(1).into(), GOSSIP_PORT, &sealed)?;
            }
            lab.send_from_client(lab.node_ip(0).into(), GOSSIP_PORT, &sealed)?;
            lab.send_from_client(lab.node_ip(2).into(), GOSSIP_PORT, &sealed)?;

            for (i, base) in baseline.iter().enumerate() {
                let mut wanted = expected.clone();
                if i == 1 {
                    wanted.insert("replay", replays);
                }
                lab.wait_for(&format!("node {i} to count every hostile datagram"), CONVERGE, || {
                    let now = latest_drops(lab, i)?;
                    Ok(wanted.iter().all(|(kind, count)| {
                        let counter =
                            |counters: &BTreeMap<String, u64>| counters.get(*kind).copied().unwrap_or(0);
                        counter(&now).saturating_sub(counter(base)) >= *count
                    }))
                })
                .with_context(|| format!("expected {wanted:?} more than {base:?}"))?;
            }

            thread::sleep(QUIET);
            for i in 0..3 {
                ensure!(lab.daemon_running(i), "node {i}'s daemon died of hostile datagrams");
                let info = lab.info(i)?;
                ensure!(
                    info.peers.len() == 2 && info.peers.iter().all(|peer| peer.liveness == "alive"),
                    "node {i}'s peers changed: {info:?}"
                );
            }
            ensure!(
                lab.holdings()? == holdings,
                "the holdings changed: {holdings:?} -> {:?}",
                lab.holdings()?
            );
            ensure!(statuses(lab)? == before, "the status changed: {before:?} -> {:?}", statuses(lab)?);
            Ok(())
        },
    );
}

#[test]
fn only_root_and_the_admin_group_change_state_over_the_socket() {
    scenario("only_root_and_the_admin_group_change_state_over_the_socket", "local", 1, |lab| {
        let accounts = Accounts::create()?;
        lab.start_node_with(0, true, &["--admin-group", &accounts.admin_group])?;
        let first = lab.vip(0);
        lab.add_address(0, first)?;
        let holdings = lab.wait_for_holdings("node 0 to hold the first address", CONVERGE, |holdings| {
            holdings[0] == BTreeSet::from([first])
        })?;
        wait_for_status_agreement(lab, 0, &[first], &holdings)?;
        let socket = lab.socket_path(0).to_owned();
        let cli = lab.binaries().cli.clone();
        let outsider = Identity { uid: accounts.uid, gid: accounts.user_gid, groups: Vec::new() };
        let version = outsider.run(&cli, &socket, &["--version"])?;
        ensure!(
            version.success(),
            "the unprivileged user cannot run {} (is every directory above it searchable?): {}",
            cli.display(),
            version.stderr.trim()
        );

        // Reading is open to everyone.
        let before = lab.status(0)?;
        for command in [&["status", "--json"][..], &["info"], &["connectivity"]] {
            let output = outsider.run(&cli, &socket, command)?;
            ensure!(
                output.success(),
                "`{}` refused to an ordinary user: {}",
                command.join(" "),
                output.stderr
            );
        }
        let seen = Status::parse(&outsider.run(&cli, &socket, &["status", "--json"])?.stdout)?;
        ensure!(seen == before, "an ordinary user sees {seen:?}, root sees {before:?}");

        // Changing is not.
        let second = lab.vip(1);
        let refused: [Vec<String>; 4] = [
            vec!["down".into()],
            vec!["up".into()],
            vec!["add-address".into(), format!("eth0:{second}")],
            vec!["remove-address".into(), format!("eth0:{first}")],
        ];
        for command in &refused {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            let output = outsider.run(&cli, &socket, &args)?;
            ensure!(
                output.code == Some(1)
                    && output.stderr.contains("permission denied")
                    && output.stderr.contains(&accounts.admin_group),
                "`{}` by an ordinary user: exit {:?}, stderr {:?}",
                args.join(" "),
                output.code,
                output.stderr
            );
        }
        ensure!(lab.status(0)? == before, "a refused command changed the status: {:?}", lab.status(0)?);
        ensure!(lab.info(0)?.local.admin.as_deref() == Some("up"), "a refused `down` took effect");
        ensure!(lab.held(0)? == BTreeSet::from([first]), "a refused command changed the holdings");
        let log = fs::read_to_string(lab.log_path(0))?;
        ensure!(
            log.matches("refused a state change").count() >= refused.len(),
            "the refusals are not all in the log"
        );

        // Membership in the admin group, in each of the three ways a process can have it.
        let as_primary = Identity { uid: accounts.uid, gid: accounts.admin_gid, groups: Vec::new() };
        run_ok(&as_primary, &cli, &socket, &["add-address", &format!("eth0:{second}")])?;
        lab.wait_for_holdings("the admin's address to be held", CONVERGE, |holdings| {
            holdings[0] == BTreeSet::from([first, second])
        })?;
        let as_supplementary =
            Identity { uid: accounts.uid, gid: accounts.user_gid, groups: vec![accounts.admin_gid] };
        run_ok(&as_supplementary, &cli, &socket, &["down"])?;
        lab.wait_for_holdings("`down` by the admin to release everything", CONVERGE, |holdings| {
            holdings[0].is_empty()
        })?;
        accounts.add_user_to_admin_group()?;
        run_ok(&outsider, &cli, &socket, &["up"])?;
        lab.wait_for_holdings("`up` by a listed member to take the addresses back", CONVERGE, |holdings| {
            holdings[0] == BTreeSet::from([first, second])
        })?;
        Ok(())
    });
}

// ---- keys and nodes ----

/// A new cluster key from `fechter keygen`.
fn keygen(lab: &Lab) -> Result<String> {
    let output =
        run_with_timeout(Command::new(&lab.binaries().cli).arg("keygen"), None, Duration::from_secs(15))?;
    ensure!(output.success(), "fechter keygen failed: {}", output.stderr.trim());
    let key = output.stdout.trim().to_owned();
    ensure!(key.len() == 44, "fechter keygen printed {key:?}");
    Ok(key)
}

/// Writes a key file (one key per line, mode 0600) in the lab's directory.
fn write_key_file(lab: &Lab, name: &str, keys: &[&str]) -> Result<PathBuf> {
    let path = lab.dir().join(name);
    let mut text = String::from("# written by the e2e tests\n");
    for key in keys {
        text.push_str(key);
        text.push('\n');
    }
    File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Starts node `i` admin-up with `--cluster-key-file key_file` and `extra`.
fn start_keyed(lab: &mut Lab, i: usize, key_file: &Path, extra: &[&str]) -> Result<()> {
    let key = key_file.display().to_string();
    let mut args = vec!["--cluster-key-file", key.as_str()];
    args.extend_from_slice(extra);
    lab.start_node_with(i, true, &args)
}

/// Waits until each of `members` sees each other one alive.
fn wait_for_members(lab: &Lab, members: &[usize]) -> Result<()> {
    lab.wait_for(&format!("nodes {members:?} to see each other alive"), CONVERGE, || {
        for &i in members {
            let info = lab.info(i)?;
            for &other in members.iter().filter(|&&other| other != i) {
                if info.peer(&lab.node_id(other)).is_none_or(|peer| peer.liveness != "alive") {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })
}

/// Checks for [`QUIET`] that node `outsider` knows no peer, no peer knows it, it holds nothing and
/// the cluster's pool stays where it is.
fn stays_shut_out(lab: &Lab, outsider: usize, pool: &[IpAddr]) -> Result<()> {
    let members: Vec<usize> = (0..lab.node_count()).filter(|&i| i != outsider).collect();
    let deadline = Instant::now() + QUIET;
    while Instant::now() < deadline {
        let info = lab.info(outsider)?;
        ensure!(info.peers.is_empty(), "node {outsider} got to know peers: {info:?}");
        for &i in &members {
            ensure!(
                lab.info(i)?.peer(&lab.node_id(outsider)).is_none(),
                "node {i} lists the outsider node {outsider}"
            );
        }
        let holdings = lab.holdings()?;
        ensure!(holdings[outsider].is_empty(), "node {outsider} holds {:?}", holdings[outsider]);
        if let Some(problem) = spread_problem(&holdings, pool, &members) {
            bail!("the cluster's spread broke while an outsider knocked: {problem}");
        }
        ensure!(lab.status(outsider)?.addresses.is_empty(), "node {outsider} learnt the pool");
        thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

// ---- drop counters in the log ----

/// The counters of every drop report in `log`, oldest first.
fn drop_reports(log: &str) -> Vec<BTreeMap<String, u64>> {
    log.lines()
        .filter(|line| line.contains(DROP_LINE))
        .map(|line| {
            line.split_whitespace()
                .filter_map(|field| field.split_once('='))
                .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
                .collect()
        })
        .collect()
}

/// The drop counters that node `i`'s running daemon reported last (empty before its first report).
fn latest_drops(lab: &Lab, i: usize) -> Result<BTreeMap<String, u64>> {
    let log = fs::read_to_string(lab.log_path(i))?;
    // The counters are totals since the daemon started; only the current start's reports count.
    let current = log.rsplit_once("==== lab: start #").map_or(log.as_str(), |(_, tail)| tail);
    Ok(drop_reports(current).pop().unwrap_or_default())
}

/// Waits until node `i` has reported at least `at_least` drops of `kind`.
fn wait_for_drops(lab: &Lab, i: usize, kind: &str, at_least: u64) -> Result<()> {
    lab.wait_for(&format!("node {i} to report dropped datagrams ({kind})"), CONVERGE, || {
        Ok(latest_drops(lab, i)?.get(kind).copied().unwrap_or(0) >= at_least)
    })
}

// ---- reachability probes ----

/// A `ping` from the client to one address, running until [`Probe::finish`].
struct Probe {
    address: IpAddr,
    child: Child,
    output: PathBuf,
}

/// What a probe saw.
#[derive(Debug)]
struct ProbeResult {
    sent: u64,
    longest_loss: u64,
}

impl ProbeResult {
    fn longest_gap(&self) -> Duration {
        PROBE_INTERVAL * u32::try_from(self.longest_loss).unwrap_or(u32::MAX)
    }
}

impl Probe {
    fn start(lab: &Lab, address: IpAddr) -> Result<Probe> {
        let output = lab.dir().join(format!("probe-{address}.txt"));
        let file = File::create(&output).with_context(|| format!("cannot create {}", output.display()))?;
        let interval = format!("{}", PROBE_INTERVAL.as_secs_f64());
        // `ip netns exec` execs ping, so the child's pid is ping's and SIGINT reaches it.
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.client_ns(), "ping", "-n", "-i", &interval, "-W", "1"])
            .arg(address.to_string())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ping")?;
        Ok(Probe { address, child, output })
    }

    /// Stops the ping with SIGINT (so it flushes its output) and reads which requests went
    /// unanswered.
    fn finish(mut self) -> Result<ProbeResult> {
        let pid = self.child.id().to_string();
        let sent =
            run_with_timeout(Command::new("kill").args(["-INT", &pid]), None, Duration::from_secs(10))?;
        ensure!(sent.success(), "cannot stop ping {pid}: {}", sent.stderr);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("ping {pid} ignored SIGINT");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let text = fs::read_to_string(&self.output)?;
        parse_ping(&text).with_context(|| format!("reading {}", self.output.display()))
    }
}

/// Reads ping's output: the requests sent (from the summary) and the longest run of them that got
/// no reply.
fn parse_ping(text: &str) -> Result<ProbeResult> {
    let sent: u64 = text
        .lines()
        .find_map(|line| line.split_once(" packets transmitted").map(|(count, _)| count.trim().parse()))
        .ok_or_else(|| anyhow!("ping printed no summary"))??;
    let answered: BTreeSet<u64> = text
        .lines()
        .filter(|line| line.contains(" bytes from "))
        .filter_map(|line| line.split_whitespace().find_map(|field| field.strip_prefix("icmp_seq=")))
        .filter_map(|seq| seq.parse().ok())
        .collect();
    let (mut longest_loss, mut run) = (0, 0);
    for seq in 1..=sent {
        if answered.contains(&seq) {
            run = 0;
        } else {
            run += 1;
            longest_loss = longest_loss.max(run);
        }
    }
    Ok(ProbeResult { sent, longest_loss })
}

// ---- local users ----

/// Who runs a command: a uid, a primary gid, and supplementary groups.
struct Identity {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Identity {
    /// Runs `cli --socket socket args` as this identity, through `setpriv`.
    fn run(&self, cli: &Path, socket: &Path, args: &[&str]) -> Result<CommandOutput> {
        let mut command = Command::new("setpriv");
        command.arg(format!("--reuid={}", self.uid)).arg(format!("--regid={}", self.gid));
        if self.groups.is_empty() {
            command.arg("--clear-groups");
        } else {
            let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            command.arg(format!("--groups={}", groups.join(",")));
        }
        command.arg("--").arg(cli).arg("--socket").arg(socket).args(args);
        run_with_timeout(&mut command, None, Duration::from_secs(15))
    }
}

fn run_ok(identity: &Identity, cli: &Path, socket: &Path, args: &[&str]) -> Result<()> {
    let output = identity.run(cli, socket, args)?;
    ensure!(
        output.success(),
        "`{}` as uid {} gid {} groups {:?}: exit {:?}, {}",
        args.join(" "),
        identity.uid,
        identity.gid,
        identity.groups,
        output.code,
        output.stderr.trim()
    );
    Ok(())
}

/// A throwaway system user (with its own group) and an admin group, deleted when dropped, even when
/// the test fails. Names are `fsec-u-<pid>-<n>` and `fsec-a-<pid>-<n>`, so a later run can delete
/// the leftovers of a run that was killed (whose pid is gone).
struct Accounts {
    user: String,
    admin_group: String,
    uid: u32,
    user_gid: u32,
    admin_gid: u32,
    created_user: bool,
    created_group: bool,
}

impl Accounts {
    fn create() -> Result<Accounts> {
        sweep_stale_accounts();
        let tag = format!("{}-{}", std::process::id(), ACCOUNT_COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut accounts = Accounts {
            user: format!("fsec-u-{tag}"),
            admin_group: format!("fsec-a-{tag}"),
            uid: 0,
            user_gid: 0,
            admin_gid: 0,
            created_user: false,
            created_group: false,
        };
        admin_command("groupadd", &["--system", &accounts.admin_group])?;
        accounts.created_group = true;
        admin_command(
            "useradd",
            &[
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                &accounts.user,
            ],
        )?;
        accounts.created_user = true;
        let passwd = fs::read_to_string("/etc/passwd")?;
        let entry = passwd
            .lines()
            .find(|line| line.split(':').next() == Some(accounts.user.as_str()))
            .ok_or_else(|| anyhow!("useradd created no entry for {}", accounts.user))?;
        let fields: Vec<&str> = entry.split(':').collect();
        accounts.uid = fields.get(2).context("short passwd entry")?.parse()?;
        accounts.user_gid = fields.get(3).context("short passwd entry")?.parse()?;
        accounts.admin_gid = group_id(&accounts.admin_group)?;
        ensure!(accounts.uid != 0 && accounts.user_gid != 0, "the throwaway user is privileged: {entry}");
        Ok(accounts)
    }

    fn add_user_to_admin_group(&self) -> Result<()> {
        admin_command("gpasswd", &["--add", &self.user, &self.admin_group])
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        // Errors cannot be returned from a drop; a leftover is swept by the next run.
        if self.created_user {
            let _ = admin_command("userdel", &[&self.user]);
            // userdel removes the user's own group where USERGROUPS_ENAB is set; elsewhere this does.
            if group_id(&self.user).is_ok() {
                let _ = admin_command("groupdel", &[&self.user]);
            }
        }
        if self.created_group {
            let _ = admin_command("groupdel", &[&self.admin_group]);
        }
    }
}

fn admin_command(program: &str, args: &[&str]) -> Result<()> {
    let output = run_with_timeout(Command::new(program).args(args), None, Duration::from_secs(30))?;
    ensure!(output.success(), "{program} {}: {}", args.join(" "), output.stderr.trim());
    Ok(())
}

fn group_id(name: &str) -> Result<u32> {
    let groups = fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(name)).then(|| fields.nth(1)?.parse().ok())?
        })
        .ok_or_else(|| anyhow!("no group {name}"))
}

/// Deletes the throwaway users and groups of earlier runs whose process is gone.
fn sweep_stale_accounts() {
    let stale = |name: &str| {
        let Some(rest) = name.strip_prefix("fsec-u-").or_else(|| name.strip_prefix("fsec-a-")) else {
            return false;
        };
        rest.split('-').next().is_some_and(|pid| {
            pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
    };
    let names = |file: &str| -> Vec<String> {
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(':').next())
            .filter(|name| stale(name))
            .map(str::to_owned)
            .collect()
    };
    for user in names("/etc/passwd") {
        let _ = admin_command("userdel", &[&user]);
    }
    for group in names("/etc/group") {
        let _ = admin_command("groupdel", &[&group]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reports_are_read_from_the_log() {
        let log = "2026-01-01T00:00:00Z  WARN fechterd: dropped gossip datagrams (totals since start) \
                   other_cluster=2 auth_failure=5 replay=0 received=40\nother line x=1\n";
        let reports = drop_reports(log);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].get("auth_failure"), Some(&5));
        assert_eq!(reports[0].get("other_cluster"), Some(&2));
    }

    #[test]
    fn ping_output_gives_the_longest_loss() {
        let text = "PING 198.18.1.100 (198.18.1.100) 56(84) bytes of data.\n\
                    64 bytes from 198.18.1.100: icmp_seq=1 ttl=64 time=0.1 ms\n\
                    64 bytes from 198.18.1.100: icmp_seq=4 ttl=64 time=0.1 ms\n\
                    From 198.18.1.250 icmp_seq=5 Destination Host Unreachable\n\
                    64 bytes from 198.18.1.100: icmp_seq=6 ttl=64 time=0.1 ms\n\n\
                    --- 198.18.1.100 ping statistics ---\n\
                    8 packets transmitted, 3 received, 62% packet loss, time 700ms\n";
        let result = parse_ping(text).unwrap();
        assert_eq!(result.sent, 8);
        assert_eq!(result.longest_loss, 2);
        assert!(parse_ping("nothing").is_err());
    }
}
