//! The client's probes: how the benchmark sees an address answer again.
//!
//! [`EchoProber`] pings one address every 10 ms from the client's namespace and captures every
//! echo reply with `tcpdump`, which stamps it with the kernel's receive time and names the MAC it
//! came from. So "the first reply after the fault from a node other than the victim" is exact to
//! the ping interval, and a reply still coming from the old holder during a planned handover is
//! never mistaken for the new one.
//!
//! [`ConnectProber`] watches hundreds of addresses at once. Hundreds of ping processes would load
//! the two cores the daemons need, and without unsafe code a Rust process cannot open ICMP
//! sockets; a TCP connect to a closed port does the same job: the node holding the address answers
//! with a reset (never rate-limited, unlike ICMP errors), which `connect` reports as refused. The
//! probing runs in a copy of this binary started inside the client's namespace
//! (`--connect-helper`), one thread per address, and stops probing an address once it answered.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};

/// Microseconds since the epoch: the clock `tcpdump -tt` stamps packets with.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// One echo reply the client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EchoReply {
    /// When it arrived, in microseconds since the epoch.
    pub(crate) at_us: u64,
    /// The source MAC, lowercase.
    pub(crate) mac: String,
}

/// Reads a `tcpdump -n -e -tt` line: `<secs>.<micros> <src mac> > <dst mac>, ...`.
pub(crate) fn parse_tcpdump_line(line: &str) -> Option<EchoReply> {
    let mut words = line.split_whitespace();
    let stamp = words.next()?;
    let mac = words.next()?;
    let (seconds, fraction) = stamp.split_once('.')?;
    let seconds: u64 = seconds.parse().ok()?;
    if fraction.is_empty() || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Scale whatever precision tcpdump printed to microseconds.
    let padded = format!("{fraction:0<9}");
    let nanos: u64 = padded.parse().ok()?;
    let valid_mac =
        mac.len() == 17 && mac.split(':').all(|part| part.len() == 2 && u8::from_str_radix(part, 16).is_ok());
    valid_mac.then(|| EchoReply { at_us: seconds * 1_000_000 + nanos / 1000, mac: mac.to_ascii_lowercase() })
}

/// Pings one address from a namespace and records every echo reply with its MAC.
#[derive(Debug)]
pub(crate) struct EchoProber {
    ping: Option<Child>,
    tcpdump: Child,
    replies: Arc<(Mutex<Vec<EchoReply>>, Condvar)>,
    reader: Option<JoinHandle<()>>,
}

impl EchoProber {
    /// Starts capturing, then pinging `address` from namespace `ns` every `interval`.
    pub(crate) fn start(ns: &str, address: IpAddr, interval: Duration) -> Result<EchoProber> {
        let filter = format!("icmp[icmptype] == icmp-echoreply and src host {address}");
        let mut tcpdump = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", "eth0", "-n", "-e", "-l", "-p", "-tt", "-s", "128"])
            .arg("--immediate-mode")
            .arg(&filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start tcpdump in the client's namespace (apt-get install tcpdump)")?;
        let stdout = tcpdump.stdout.take().ok_or_else(|| anyhow!("tcpdump has no stdout"))?;
        let stderr = tcpdump.stderr.take().ok_or_else(|| anyhow!("tcpdump has no stderr"))?;
        let replies = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&replies);
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(reply) = parse_tcpdump_line(&line) {
                    let (list, arrived) = &*sink;
                    list.lock().unwrap_or_else(PoisonError::into_inner).push(reply);
                    arrived.notify_all();
                }
            }
        });
        let mut prober = EchoProber { ping: None, tcpdump, replies, reader: Some(reader) };
        // tcpdump says "listening on eth0" on stderr once its filter is attached; pinging before
        // that could lose the first replies.
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut said = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on") {
                    let _ = ready_tx.send(Ok(()));
                    return;
                }
                said.push(line);
            }
            // tcpdump ended without listening: pass on what it said.
            let _ = ready_tx.send(Err(said.join("; ")));
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(said)) => bail!("tcpdump in {ns} failed: {said}"),
            Err(_) => bail!("tcpdump in {ns} did not start listening within 10 s"),
        }
        let interval = format!("{:.3}", interval.as_secs_f64());
        let ping = Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-n", "-q", "-i", &interval, &address.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ping in the client's namespace")?;
        prober.ping = Some(ping);
        Ok(prober)
    }

    /// Waits up to `timeout` for the first reply that arrived after `after_us` from a MAC that
    /// `accept` likes, and returns it.
    pub(crate) fn wait_for_reply(
        &self,
        after_us: u64,
        accept: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<EchoReply> {
        let deadline = Instant::now() + timeout;
        let (list, arrived) = &*self.replies;
        let mut replies = list.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(reply) = replies.iter().find(|reply| reply.at_us > after_us && accept(&reply.mac)) {
                return Some(reply.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            replies = arrived.wait_timeout(replies, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

impl Drop for EchoProber {
    fn drop(&mut self) {
        // `ip netns exec` execs its program, so these pids are ping's and tcpdump's own.
        for child in self.ping.iter_mut().chain(std::iter::once(&mut self.tcpdump)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The port the connect probes aim at; nothing listens there, so a live holder answers with a
/// reset.
const PROBE_PORT: u16 = 9;

/// How long one connect attempt waits, and the least time between two attempts on one address.
const ATTEMPT: Duration = Duration::from_millis(20);

/// How long the helper tries before it gives up on an address.
const HELPER_LIMIT: Duration = Duration::from_secs(60);

/// Whether one connect attempt reached a host holding `address`.
fn answers(address: IpAddr) -> bool {
    match TcpStream::connect_timeout(&SocketAddr::new(address, PROBE_PORT), ATTEMPT) {
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// Probes `address` until it answers or the limit passes, at most once per [`ATTEMPT`], and
/// returns when the answering attempt started and ended.
fn probe_until_answer(address: IpAddr) -> Option<(u64, u64)> {
    let deadline = Instant::now() + HELPER_LIMIT;
    while Instant::now() < deadline {
        let started = Instant::now();
        let started_us = now_us();
        if answers(address) {
            return Some((started_us, now_us()));
        }
        if let Some(rest) = ATTEMPT.checked_sub(started.elapsed()) {
            thread::sleep(rest);
        }
    }
    None
}

/// The helper's side (`fechter-bench --connect-helper`, run inside the client's namespace).
/// Reads the addresses from the first stdin line; probes each until it answers and prints
/// `ready <addr>` (or `unreachable <addr>`); then waits for a `go` line and probes again, printing
/// `up <addr> <start us> <end us>` for the first answer of each; ends with `done`.
pub(crate) fn run_connect_helper() -> Result<()> {
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin.lock().read_line(&mut first).context("reading the addresses")?;
    let addresses: Vec<IpAddr> = first
        .split_whitespace()
        .map(|text| text.parse().with_context(|| format!("{text:?} is not an address")))
        .collect::<Result<_>>()?;
    let threads: Vec<JoinHandle<()>> = addresses
        .iter()
        .map(|&address| {
            thread::spawn(move || {
                let word = if probe_until_answer(address).is_some() { "ready" } else { "unreachable" };
                report(&format!("{word} {address}"));
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    let mut go = String::new();
    stdin.lock().read_line(&mut go).context("waiting for go")?;
    if go.trim() != "go" {
        return Ok(());
    }
    let threads: Vec<JoinHandle<()>> = addresses
        .iter()
        .map(|&address| {
            thread::spawn(move || {
                let line = match probe_until_answer(address) {
                    Some((started, ended)) => format!("up {address} {started} {ended}"),
                    None => format!("timeout {address}"),
                };
                report(&line);
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    report("done");
    Ok(())
}

/// Prints one line of the helper's protocol; the lock keeps concurrent lines whole.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The benchmark's side of the connect probes.
#[derive(Debug)]
pub(crate) struct ConnectProber {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    addresses: Vec<IpAddr>,
}

impl ConnectProber {
    /// Starts the helper in namespace `ns` and waits until every address answered once.
    pub(crate) fn start(ns: &str, addresses: &[IpAddr]) -> Result<ConnectProber> {
        let exe = std::env::current_exe().context("cannot find the running executable")?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&exe)
            .arg("--connect-helper")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the connect helper in the client's namespace")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("the helper has no stdout"))?;
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut prober =
            ConnectProber { stdin: child.stdin.take(), child, lines, addresses: addresses.to_vec() };
        let list: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
        prober.send(&list.join(" "))?;
        let mut ready = 0;
        let mut unreachable = Vec::new();
        while ready + unreachable.len() < addresses.len() {
            match prober.lines.recv_timeout(HELPER_LIMIT + Duration::from_secs(10)) {
                Ok(line) if line.starts_with("ready ") => ready += 1,
                Ok(line) if line.starts_with("unreachable ") => unreachable.push(line[12..].to_owned()),
                Ok(line) => bail!("the connect helper said {line:?}"),
                Err(_) => bail!("the connect helper stopped after {ready} ready addresses"),
            }
        }
        if !unreachable.is_empty() {
            bail!(
                "{} addresses never answered the client before the fault: {}",
                unreachable.len(),
                unreachable.join(" ")
            );
        }
        Ok(prober)
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("the helper's stdin is closed"))?;
        writeln!(stdin, "{line}").context("writing to the connect helper")?;
        stdin.flush().context("writing to the connect helper")
    }

    /// Starts the second round of probing; call it right after the fault.
    pub(crate) fn go(&mut self) -> Result<()> {
        self.send("go")
    }

    /// Waits for the second round to end and returns, per address, when its first answer
    /// arrived (microseconds since the epoch); addresses that never answered are missing.
    pub(crate) fn finish(self) -> Result<BTreeMap<IpAddr, u64>> {
        let mut answered = BTreeMap::new();
        let deadline = Instant::now() + HELPER_LIMIT + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "done" => break,
                Ok(line) => {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    if let ["up", address, _started, ended] = words.as_slice() {
                        let address: IpAddr =
                            address.parse().with_context(|| format!("bad helper line {line:?}"))?;
                        let ended: u64 =
                            ended.parse().with_context(|| format!("bad helper line {line:?}"))?;
                        answered.insert(address, ended);
                    }
                }
                Err(RecvTimeoutError::Timeout) => bail!("the connect helper did not finish"),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let missing = self.addresses.iter().filter(|address| !answered.contains_key(address)).count();
        if missing > 0 {
            bail!("{missing} of {} addresses never answered after the fault", self.addresses.len());
        }
        Ok(answered)
    }
}

impl Drop for ConnectProber {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpdump_lines_give_time_and_source_mac() {
        let line = "1795315549.123456 AA:bb:cc:dd:ee:01 > 11:22:33:44:55:66, ethertype IPv4 (0x0800), \
                    length 98: 198.18.1.100 > 198.18.1.250: ICMP echo reply, id 7, seq 5, length 64";
        assert_eq!(
            parse_tcpdump_line(line),
            Some(EchoReply { at_us: 1_795_315_549_123_456, mac: "aa:bb:cc:dd:ee:01".to_owned() })
        );
        assert_eq!(parse_tcpdump_line("12.5 aa:bb:cc:dd:ee:01 >").map(|r| r.at_us), Some(12_500_000));
        assert_eq!(parse_tcpdump_line("listening on eth0, link-type EN10MB"), None);
        assert_eq!(parse_tcpdump_line("1.000001 not-a-mac > x"), None);
        assert_eq!(parse_tcpdump_line(""), None);
    }
}
