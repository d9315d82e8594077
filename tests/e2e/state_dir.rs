//! The state directory under crashes: a daemon killed while it writes never leaves a torn
//! `pool.json`, and a corrupt one is reported and healed from the peers without losing the pool.

use std::collections::BTreeSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use fechter_lab::{Lab, run_with_timeout};
use serde_json::Value;

use crate::common::{CONVERGE, client_reaches_all, scenario, spread_cluster, start_all, wait_for_spread};
use crate::garbage::Noise;

/// How many times the writing daemon is killed.
const KILL_ROUNDS: usize = 6;

/// What fechterd logs when it finds a corrupt pool file.
const CORRUPT_LINE: &str = "the saved pool is corrupt";

/// What fechterd logs when it removes the temporary file of an interrupted save.
const LEFTOVER_LINE: &str = "removed the temporary file of an interrupted save";

#[test]
fn kill_9_while_writing_never_leaves_a_partial_pool_file() {
    scenario("kill_9_while_writing_never_leaves_a_partial_pool_file", "tornfile", 2, |lab| {
        // Admin-down nodes hold nothing, so every add is only a pool write, as fast as it goes.
        start_all(lab, false)?;
        let victim = 1;
        let writer = Writer::start(lab, victim);
        let mut noise = Noise::seeded();
        for round in 0..KILL_ROUNDS {
            let acknowledged_before = writer.acknowledged().len();
            lab.wait_for(&format!("round {round}: an add to be acknowledged"), CONVERGE, || {
                Ok(writer.acknowledged().len() > acknowledged_before)
            })?;
            thread::sleep(Duration::from_millis(u64::try_from(noise.below(300)).unwrap_or(0)));
            lab.kill_node(victim)?;
            // Every add acknowledged so far was acknowledged by a daemon that is dead now.
            let acknowledged = writer.acknowledged();

            let dir = lab.state_dir(victim);
            let names = file_names(dir)?;
            ensure!(
                !names.iter().any(|name| name.starts_with("pool.json.corrupt")),
                "round {round}: the daemon found a torn pool file at some start: {names:?}"
            );
            let saved = read_pool_file(&dir.join("pool.json"))
                .with_context(|| format!("round {round}: pool.json after kill -9"))?;
            let lost: Vec<&IpAddr> =
                acknowledged.iter().filter(|address| !saved.active.contains(address)).collect();
            ensure!(lost.is_empty(), "round {round}: acknowledged but not in pool.json: {lost:?}");
            let leftover = names.iter().any(|name| name == "pool.json.tmp");

            lab.start_node(victim, false)?;
            if leftover {
                let log = current_start_log(lab, victim)?;
                ensure!(
                    log.contains(LEFTOVER_LINE),
                    "round {round}: the leftover pool.json.tmp was not cleaned up"
                );
            }
        }
        let acknowledged = writer.finish()?;
        ensure!(acknowledged.len() >= KILL_ROUNDS, "only {} adds were acknowledged", acknowledged.len());
        // Both nodes end with every acknowledged address, in memory and on disk.
        for i in 0..2 {
            lab.wait_for(&format!("node {i} to list every acknowledged address"), CONVERGE, || {
                let pool: BTreeSet<IpAddr> = lab.status(i)?.pool().into_iter().collect();
                let saved = read_pool_file(&lab.state_dir(i).join("pool.json"))?;
                Ok(acknowledged
                    .iter()
                    .all(|address| pool.contains(address) && saved.active.contains(address)))
            })?;
        }
        Ok(())
    });
}

#[test]
fn a_corrupt_pool_file_is_reported_and_healed_from_the_peers() {
    scenario("a_corrupt_pool_file_is_reported_and_healed_from_the_peers", "corrupt", 3, |lab| {
        let (pool, _) = spread_cluster(lab, 1, 6)?;
        let mut noise = Noise::seeded();
        let truncated = {
            let whole = fs::read(lab.state_dir(0).join("pool.json"))?;
            whole[..whole.len() / 2].to_vec()
        };
        let corruptions: [(usize, &str, Vec<u8>); 3] = [
            // Node 0 leads: it must not lead the others into an empty pool.
            (0, "cut in half", truncated),
            (2, "random bytes", noise.bytes(700)),
            (1, "JSON of the wrong shape", br#"{"version":1,"addresses":[{"address":"nonsense"}]}"#.to_vec()),
        ];
        for (i, what, bytes) in corruptions {
            let status = lab.terminate_node(i)?;
            ensure!(status.code() == Some(0), "node {i} exited with {status}");
            let file = lab.state_dir(i).join("pool.json");
            fs::write(&file, &bytes)?;
            lab.start_node(i, true)?;

            let log = current_start_log(lab, i)?;
            let line = log
                .lines()
                .find(|line| line.contains(CORRUPT_LINE))
                .ok_or_else(|| anyhow!("node {i} did not report its {what} pool file:\n{log}"))?;
            let moved = file_names(lab.state_dir(i))?
                .into_iter()
                .find(|name| name.starts_with("pool.json.corrupt-") && line.contains(name.as_str()))
                .ok_or_else(|| anyhow!("the log line names no file that is there: {line}"))?;
            ensure!(
                fs::read(lab.state_dir(i).join(&moved))? == bytes,
                "{moved} does not keep the {what} file as it was"
            );
            healed(lab, i, &pool)?;
            wait_for_spread(lab, &pool, &[0, 1, 2], &format!("the pool to spread after node {i} healed"))?;
        }
        client_reaches_all(lab, &pool)
    });
}

#[test]
fn a_full_cluster_restart_with_one_corrupt_pool_file_keeps_the_pool() {
    scenario("a_full_cluster_restart_with_one_corrupt_pool_file_keeps_the_pool", "corruptall", 3, |lab| {
        let (mut pool, _) = spread_cluster(lab, 0, 6)?;
        let removed = pool.remove(1);
        lab.cli_ok(2, &["remove-address", &format!("eth0:{removed}")])?;
        for i in 0..3 {
            lab.wait_for(&format!("node {i} to save the pool without {removed}"), CONVERGE, || {
                let saved = read_pool_file(&lab.state_dir(i).join("pool.json"))?;
                Ok(saved.removed.contains(&removed) && saved.active == pool.iter().copied().collect())
            })?;
        }
        for i in 0..3 {
            let status = lab.terminate_node(i)?;
            ensure!(status.code() == Some(0), "node {i} exited with {status}");
        }
        fs::write(lab.state_dir(0).join("pool.json"), b"{\"version\":1,\"addresses\":[{\"addr")?;

        start_all(lab, true)?;
        ensure!(current_start_log(lab, 0)?.contains(CORRUPT_LINE), "node 0 did not report its corrupt file");
        for i in 0..3 {
            healed(lab, i, &pool)?;
        }
        let saved = read_pool_file(&lab.state_dir(0).join("pool.json"))?;
        ensure!(saved.removed.contains(&removed), "node 0 forgot that {removed} was removed");
        let holdings = wait_for_spread(lab, &pool, &[0, 1, 2], "the kept pool to spread again")?;
        ensure!(!holdings.iter().any(|held| held.contains(&removed)), "the removed {removed} came back");
        client_reaches_all(lab, &pool)
    });
}

/// Waits until node `i` lists exactly `pool`, in order, and has saved it.
fn healed(lab: &Lab, i: usize, pool: &[IpAddr]) -> Result<()> {
    let active: BTreeSet<IpAddr> = pool.iter().copied().collect();
    lab.wait_for(&format!("node {i} to relearn and save the pool"), CONVERGE, || {
        Ok(lab.status(i)?.pool() == pool
            && read_pool_file(&lab.state_dir(i).join("pool.json")).is_ok_and(|saved| saved.active == active))
    })
}

/// The addresses of a `pool.json`.
struct SavedPool {
    active: BTreeSet<IpAddr>,
    removed: BTreeSet<IpAddr>,
}

/// Reads a `pool.json` strictly: complete JSON of format version 1 whose every record has all its
/// fields. A torn file fails here.
fn read_pool_file(path: &Path) -> Result<SavedPool> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not complete JSON ({} bytes)", path.display(), bytes.len()))?;
    ensure!(file.get("version") == Some(&Value::from(1)), "{} has no format version 1", path.display());
    let records = file
        .get("addresses")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{} has no address list", path.display()))?;
    let mut saved = SavedPool { active: BTreeSet::new(), removed: BTreeSet::new() };
    for record in records {
        let address: IpAddr = record
            .get("address")
            .and_then(Value::as_str)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| anyhow!("a record without an address: {record}"))?;
        for field in ["interface", "prefix_len", "added", "changed"] {
            ensure!(record.get(field).is_some(), "the record of {address} has no {field}: {record}");
        }
        match record.get("active").and_then(Value::as_bool) {
            Some(true) => saved.active.insert(address),
            Some(false) => saved.removed.insert(address),
            None => return Err(anyhow!("the record of {address} has no active flag: {record}")),
        };
    }
    Ok(saved)
}

fn file_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// What node `i`'s daemon logged since its last start.
fn current_start_log(lab: &Lab, i: usize) -> Result<String> {
    let log = fs::read_to_string(lab.log_path(i))?;
    Ok(log.rsplit_once("==== lab: start #").map_or(log.as_str(), |(_, tail)| tail).to_owned())
}

/// Adds addresses of 198.19.0.0/16 through one node, one after the other, from its own thread, and
/// records which adds the daemon acknowledged. The lab's own /24 holds only a hundred addresses, and
/// a daemon that restarts quickly lets the writer get through more than that over the kill rounds;
/// nothing here needs the addresses to be reachable, only acknowledged and saved.
struct Writer {
    acknowledged: Arc<Mutex<Vec<IpAddr>>>,
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Result<()>>,
}

impl Writer {
    fn start(lab: &Lab, via: usize) -> Writer {
        let cli: PathBuf = lab.binaries().cli.clone();
        let socket = lab.socket_path(via).to_owned();
        let addresses: Vec<IpAddr> = (0..1_000_u16)
            .map(|k| IpAddr::V4(Ipv4Addr::new(198, 19, (k / 200) as u8, (1 + k % 200) as u8)))
            .collect();
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (record, stopped) = (Arc::clone(&acknowledged), Arc::clone(&stop));
        let thread = thread::spawn(move || -> Result<()> {
            let mut next = addresses.into_iter();
            let mut current = next.next();
            while let Some(address) = current {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let output = run_with_timeout(
                    Command::new(&cli)
                        .arg("--socket")
                        .arg(&socket)
                        .arg("add-address")
                        .arg(format!("eth0:{address}")),
                    None,
                    Duration::from_secs(15),
                )?;
                if output.success() {
                    record.lock().unwrap_or_else(PoisonError::into_inner).push(address);
                    current = next.next();
                } else if output.stderr.contains("already in the pool") {
                    // The killed daemon applied it but died before it could answer.
                    current = next.next();
                } else {
                    // The daemon is dead or starting: try the same address again.
                    thread::sleep(Duration::from_millis(20));
                }
            }
            Ok(())
        });
        Writer { acknowledged, stop, thread }
    }

    fn acknowledged(&self) -> Vec<IpAddr> {
        self.acknowledged.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn finish(self) -> Result<Vec<IpAddr>> {
        let Writer { acknowledged, stop, thread } = self;
        stop.store(true, Ordering::Relaxed);
        thread.join().map_err(|_| anyhow!("the writer thread panicked"))??;
        Ok(acknowledged.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }
}
