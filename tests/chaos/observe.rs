//! Watching the LAN from outside while the schedule runs: every node's addresses every 100 ms,
//! and a ping from the client to every address ten times a second.
//!
//! The pingers are long-lived `ping -i 0.1` processes in the client's namespace, one per address
//! that may ever be in the pool, so reachability costs no process start per sample; a reader
//! thread per pinger records when each reply arrived. The sampler thread reads every node's eth0
//! in palindrome order (see [`crate::judge`]) and hands each sample, with the harness's current
//! model, to the [`Judge`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use fechter_lab::read_held;

use crate::judge::{Bounds, Figures, Judge, Sample, Violation};
use crate::ledger::ExpectedPool;
use crate::world::World;

/// How often the nodes are sampled.
const SAMPLE_PERIOD: Duration = Duration::from_millis(100);

/// What the harness has done so far: the faults applied and the pool acknowledged. The executor
/// updates it; the observer reads it with every sample.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    /// The faults applied.
    pub(crate) world: World,
    /// The pool the CLI acknowledged.
    pub(crate) pool: ExpectedPool,
}

/// The model shared between the executor and the observer.
pub(crate) type SharedModel = Arc<Mutex<Model>>;

/// Locks the model; a panicked holder cannot leave it half-written (every update is one call).
pub(crate) fn lock(model: &SharedModel) -> std::sync::MutexGuard<'_, Model> {
    model.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The time of the last reply from each address, since the run's clock started.
type Replies = Arc<Mutex<BTreeMap<IpAddr, Duration>>>;

/// Where to watch.
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    /// Each node's namespace and own address, by node index.
    pub(crate) nodes: Vec<(String, Ipv4Addr)>,
    /// The client's namespace.
    pub(crate) client_ns: String,
    /// Every address that may ever be in the pool.
    pub(crate) addresses: Vec<IpAddr>,
}

/// The running pingers and sampler; [`Observer::finish`] stops them and returns the verdict.
#[derive(Debug)]
pub(crate) struct Observer {
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<Judge>>,
    pingers: Vec<Child>,
    readers: Vec<JoinHandle<()>>,
}

impl Observer {
    /// Starts the pingers and the sampler; times are measured from `clock`.
    pub(crate) fn start(
        clock: Instant,
        targets: Targets,
        model: SharedModel,
        bounds: Bounds,
    ) -> Result<Observer> {
        let replies: Replies = Arc::new(Mutex::new(BTreeMap::new()));
        let mut observer = Observer {
            stop: Arc::new(AtomicBool::new(false)),
            sampler: None,
            pingers: Vec::new(),
            readers: Vec::new(),
        };
        for &address in &targets.addresses {
            // On failure the observer is dropped, which kills the pingers already started.
            observer.start_pinger(clock, &targets.client_ns, address, Arc::clone(&replies))?;
        }
        let stop = Arc::clone(&observer.stop);
        observer.sampler =
            Some(thread::spawn(move || sample_loop(clock, &targets.nodes, &model, &replies, &stop, bounds)));
        Ok(observer)
    }

    fn start_pinger(
        &mut self,
        clock: Instant,
        client_ns: &str,
        address: IpAddr,
        replies: Replies,
    ) -> Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", client_ns, "ping", "-n", "-i", "0.1", "-W", "1"])
            .arg(address.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start a pinger for {address}"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("the pinger for {address} has no stdout"))?;
        self.pingers.push(child);
        self.readers.push(thread::spawn(move || {
            // ping flushes every line; the reader ends when the pinger is killed.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains(" bytes from ") {
                    replies.lock().unwrap_or_else(PoisonError::into_inner).insert(address, clock.elapsed());
                }
            }
        }));
        Ok(())
    }

    /// Stops watching and returns the violations and figures.
    pub(crate) fn finish(mut self) -> (Vec<Violation>, Figures) {
        self.stop_all().map(Judge::finish).unwrap_or_default()
    }

    fn stop_all(&mut self) -> Option<Judge> {
        self.stop.store(true, Ordering::Relaxed);
        let judge = self.sampler.take().and_then(|sampler| sampler.join().ok());
        for pinger in &mut self.pingers {
            // A pinger that already exited is fine; the wait reaps it either way.
            let _ = pinger.kill();
            let _ = pinger.wait();
        }
        self.pingers.clear();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        judge
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn sample_loop(
    clock: Instant,
    nodes: &[(String, Ipv4Addr)],
    model: &SharedModel,
    replies: &Replies,
    stop: &AtomicBool,
    bounds: Bounds,
) -> Judge {
    let mut judge = Judge::new(bounds);
    let order: Vec<usize> = (0..nodes.len()).chain((0..nodes.len()).rev().skip(1)).collect();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // A failed dump (a busy machine timing out) drops the whole sample rather than judging a
        // partial one.
        let reads: Option<Vec<(usize, BTreeSet<IpAddr>)>> = order
            .iter()
            .map(|&node| read_held(&nodes[node].0, nodes[node].1).ok().map(|held| (node, held)))
            .collect();
        if let Some(reads) = reads {
            let last_reply = replies.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let sample = Sample { at: clock.elapsed(), reads, last_reply };
            let model = lock(model);
            judge.observe(&sample, &model.world, &model.pool);
        }
        next += SAMPLE_PERIOD;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    judge
}
