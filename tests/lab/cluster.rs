//! The lab itself: the namespaces of one LAN, its nodes' daemons, and the faults a test injects.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::binaries::Binaries;
use crate::netns::{IP_TIMEOUT, destroy_namespace, exec_in, ip, ip_batch, sweep_stale_labs, unique_lab_name};
use crate::process::{CommandOutput, run_with_timeout};
use crate::report::{Info, Status};
use crate::sampler::Sampler;
use crate::wait::wait_until;

/// The gossip UDP port fechterd binds on its node address by default.
pub const GOSSIP_PORT: u16 = 4573;

/// How long one CLI call may take; the daemon answers in milliseconds, but the machine is small.
const CLI_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a started daemon gets to open its control socket.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a SIGTERMed daemon gets to release its addresses and exit.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(20);

/// How many lines of each node's log a failing test prints.
const LOG_TAIL_LINES: usize = 120;

static PAYLOAD_COUNTER: AtomicU32 = AtomicU32::new(0);

/// One node: its namespace, its files, and its daemon while one runs.
#[derive(Debug)]
struct Node {
    ns: String,
    ip: Ipv4Addr,
    socket: PathBuf,
    state_dir: PathBuf,
    log: PathBuf,
    daemon: Option<Child>,
    starts: u32,
}

/// A LAN of network namespaces running a fechter cluster; see the crate docs for the layout.
/// Nodes are numbered from 0; node `i` has address `198.18.<net>.<11+i>`, so node 0 has the lowest
/// id and leads whenever it is alive.
#[derive(Debug)]
pub struct Lab {
    name: String,
    net: u8,
    dir: PathBuf,
    binaries: Binaries,
    /// Every namespace created so far, in creation order, so a half-built lab still cleans up.
    namespaces: Vec<String>,
    nodes: Vec<Node>,
    /// Nodes whose cable is pulled; shared with samplers, which must not count them.
    disconnected: Arc<Mutex<BTreeSet<usize>>>,
}

impl Lab {
    /// Builds a lab with `node_count` nodes (no daemon started yet) after sweeping the leftovers of
    /// crashed earlier runs. `tag` (1 to 10 lowercase letters or digits) names it in `ip netns list`.
    pub fn new(tag: &str, node_count: usize) -> Result<Lab> {
        if node_count == 0 || node_count > 80 {
            bail!("a lab has 1 to 80 nodes, not {node_count}");
        }
        let binaries = Binaries::locate()?;
        sweep_stale_labs().context("cannot sweep the leftovers of earlier runs")?;
        let (name, counter) = unique_lab_name(tag)?;
        let net = u8::try_from(counter % 250).unwrap_or(0) + 1;
        let dir = std::env::temp_dir().join(&name);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let nodes = (0..node_count)
            .map(|i| Node {
                ns: format!("{name}-n{i}"),
                ip: Ipv4Addr::new(198, 18, net, 11 + u8::try_from(i).unwrap_or(0)),
                socket: dir.join(format!("n{i}.sock")),
                state_dir: dir.join(format!("n{i}-state")),
                log: dir.join(format!("n{i}.log")),
                daemon: None,
                starts: 0,
            })
            .collect();
        let mut lab = Lab {
            name,
            net,
            dir,
            binaries,
            namespaces: Vec::new(),
            nodes,
            disconnected: Arc::new(Mutex::new(BTreeSet::new())),
        };
        // On failure the half-built lab is dropped here, which removes whatever was created.
        lab.build().with_context(|| format!("cannot build lab {}", lab.name))?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let bridge = self.bridge_ns();
        self.add_namespace(&bridge)?;
        ip_batch(&bridge, "link set lo up\nlink add br0 type bridge\nlink set br0 up\n")?;
        let mut hosts = vec![("gw".to_owned(), self.gateway_ip()), ("cl".to_owned(), self.client_ip())];
        hosts.extend(self.nodes.iter().enumerate().map(|(i, node)| (format!("n{i}"), node.ip)));
        let mut ports = String::new();
        for (role, address) in &hosts {
            let ns = format!("{}-{role}", self.name);
            self.add_namespace(&ns)?;
            // The veth is created inside the host's namespace with its peer directly in the bridge
            // namespace, so no interface ever appears in the machine's own namespace.
            ip_batch(
                &ns,
                &format!(
                    "link set lo up\n\
                     link add eth0 type veth peer name p-{role} netns {bridge}\n\
                     addr add {address}/24 dev eth0\n\
                     link set eth0 up\n"
                ),
            )?;
            let _ = writeln!(ports, "link set p-{role} master br0\nlink set p-{role} up");
        }
        ip_batch(&bridge, &ports)?;
        for (role, _) in hosts.iter().filter(|(role, _)| role != "gw") {
            ip(&[
                "-n",
                &format!("{}-{role}", self.name),
                "route",
                "add",
                "default",
                "via",
                &self.gateway_ip().to_string(),
            ])?;
        }
        let gateway = self.gateway_ip().into();
        if !wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            self.client_ping(gateway).unwrap_or(false)
        }) {
            bail!("the client cannot ping the gateway {gateway} on a fresh lab");
        }
        Ok(())
    }

    fn add_namespace(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        Ok(())
    }

    // ---- names and addresses ----

    /// The lab's unique name, the prefix of all its namespaces.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab's directory: logs, sockets and state directories of its nodes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many nodes the lab has.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The namespace holding `br0`, where every cable ends as port `p-<role>`.
    pub fn bridge_ns(&self) -> String {
        format!("{}-br", self.name)
    }

    /// The gateway's namespace.
    pub fn gateway_ns(&self) -> String {
        format!("{}-gw", self.name)
    }

    /// The client's namespace.
    pub fn client_ns(&self) -> String {
        format!("{}-cl", self.name)
    }

    /// Node `i`'s namespace.
    pub fn node_ns(&self, i: usize) -> &str {
        &self.nodes[i].ns
    }

    /// The gateway's address, `198.18.<net>.1`.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.net, 1)
    }

    /// The client's address, `198.18.<net>.250`.
    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.net, 250)
    }

    /// Node `i`'s own address on eth0, `198.18.<net>.<11+i>`.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].ip
    }

    /// Node `i`'s id in the cluster, `ip:port`.
    pub fn node_id(&self, i: usize) -> String {
        format!("{}:{GOSSIP_PORT}", self.nodes[i].ip)
    }

    /// The node whose id is `id`, if it is one of this lab's.
    pub fn node_of_id(&self, id: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.node_id(i) == id)
    }

    /// The `k`-th address a test may put in the pool, `198.18.<net>.<100+k>` (k below 100).
    pub fn vip(&self, k: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, self.net, 100 + k.min(99)))
    }

    /// Node `i`'s control socket.
    pub fn socket_path(&self, i: usize) -> &Path {
        &self.nodes[i].socket
    }

    /// Node `i`'s state directory (`--state-dir`).
    pub fn state_dir(&self, i: usize) -> &Path {
        &self.nodes[i].state_dir
    }

    /// Node `i`'s log: the daemon's stdout and stderr over all its starts.
    pub fn log_path(&self, i: usize) -> &Path {
        &self.nodes[i].log
    }

    /// The paths of the real binaries.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    // ---- commands ----

    /// Runs `program args` inside namespace `ns` (one of this lab's) and returns what happened.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Result<CommandOutput> {
        exec_in(ns, program, args, IP_TIMEOUT)
    }

    /// Runs `fechter --socket <node i's socket> args` from the host (sockets are path-based).
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<CommandOutput> {
        self.cli_with_socket(&self.nodes[i].socket, args)
    }

    /// Runs `fechter --socket <socket> args`.
    pub fn cli_with_socket(&self, socket: &Path, args: &[&str]) -> Result<CommandOutput> {
        let mut command = Command::new(&self.binaries.cli);
        command.arg("--socket").arg(socket).args(args);
        run_with_timeout(&mut command, None, CLI_TIMEOUT)
    }

    /// Runs the CLI against node `i` and returns its stdout, failing unless it exits 0.
    pub fn cli_ok(&self, i: usize, args: &[&str]) -> Result<String> {
        let output = self.cli(i, args)?;
        if !output.success() {
            bail!(
                "`fechter {}` on node {i} exited {:?}: {}{}",
                args.join(" "),
                output.code,
                output.stderr.trim(),
                output.stdout.trim()
            );
        }
        Ok(output.stdout)
    }

    /// Node `i`'s `status --json`.
    pub fn status(&self, i: usize) -> Result<Status> {
        Status::parse(&self.cli_ok(i, &["status", "--json"])?)
            .with_context(|| format!("cannot read node {i}'s status"))
    }

    /// Node `i`'s `info --json`.
    pub fn info(&self, i: usize) -> Result<Info> {
        Info::parse(&self.cli_ok(i, &["info", "--json"])?)
            .with_context(|| format!("cannot read node {i}'s info"))
    }

    /// Adds `eth0:<address>` to the pool through node `i`.
    pub fn add_address(&self, i: usize, address: IpAddr) -> Result<()> {
        self.cli_ok(i, &["add-address", &format!("eth0:{address}")]).map(drop)
    }

    // ---- daemons ----

    /// Starts fechterd on node `i` (admin-up when `up`), attached to every other node, and waits
    /// until its control socket answers.
    pub fn start_node(&mut self, i: usize, up: bool) -> Result<()> {
        self.start_node_with(i, up, &[])
    }

    /// Like [`Lab::start_node`], with extra daemon arguments.
    pub fn start_node_with(&mut self, i: usize, up: bool, extra: &[&str]) -> Result<()> {
        if self.daemon_running(i) {
            bail!("node {i}'s daemon is already running");
        }
        let mut args: Vec<String> = vec!["-a".into(), self.nodes[i].ip.to_string()];
        args.extend(["-g".into(), self.gateway_ip().to_string()]);
        for (_, node) in self.nodes.iter().enumerate().filter(|(other, _)| *other != i) {
            args.extend(["-s".into(), node.ip.to_string()]);
        }
        let node = &mut self.nodes[i];
        args.extend(["--state-dir".into(), node.state_dir.display().to_string()]);
        args.extend(["--socket".into(), node.socket.display().to_string()]);
        args.extend(["--log-level".into(), "debug".into()]);
        if up {
            args.push("--up".into());
        }
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));

        fs::create_dir_all(&node.state_dir)
            .with_context(|| format!("cannot create {}", node.state_dir.display()))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("cannot open {}", node.log.display()))?;
        node.starts += 1;
        writeln!(log, "==== lab: start #{} of node {i}: fechterd {}", node.starts, args.join(" "))?;
        let stderr = log.try_clone()?;
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns])
            .arg(&self.binaries.daemon)
            .args(&args)
            // The log is a file that people read with less and grep: no colour escapes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start fechterd in {}", node.ns))?;
        // `ip netns exec` execs the program, so this pid is the daemon's own.
        node.daemon = Some(child);
        self.wait_ready(i)
    }

    fn wait_ready(&mut self, i: usize) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.daemon_exit(i) {
                bail!("node {i}'s daemon exited with {status} while starting:\n{}", self.log_tail(i, 30));
            }
            if self.cli(i, &["status", "--json"]).is_ok_and(|output| output.success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("node {i}'s daemon did not answer within {READY_TIMEOUT:?}:\n{}", self.log_tail(i, 30));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status of node `i`'s daemon if it has exited (the handle is then forgotten).
    fn daemon_exit(&mut self, i: usize) -> Option<ExitStatus> {
        let node = &mut self.nodes[i];
        let status = node.daemon.as_mut()?.try_wait().ok()??;
        node.daemon = None;
        Some(status)
    }

    /// Whether node `i`'s daemon is running.
    pub fn daemon_running(&mut self, i: usize) -> bool {
        self.nodes[i].daemon.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Node `i`'s daemon's pid, while one runs.
    pub fn daemon_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].daemon.as_ref().map(Child::id)
    }

    /// Kills node `i`'s daemon with SIGKILL: it gets no chance to release anything.
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        let mut child = self.nodes[i].daemon.take().ok_or_else(|| anyhow!("node {i} runs no daemon"))?;
        // Failing to kill an already exited child is fine; the wait reaps it either way.
        let _ = child.kill();
        child.wait().with_context(|| format!("cannot reap node {i}'s daemon"))?;
        Ok(())
    }

    /// Sends SIGTERM to node `i`'s daemon and waits for it to exit.
    pub fn terminate_node(&mut self, i: usize) -> Result<ExitStatus> {
        let mut child = self.nodes[i].daemon.take().ok_or_else(|| anyhow!("node {i} runs no daemon"))?;
        let pid = child.id().to_string();
        let sent = run_with_timeout(Command::new("kill").args(["-TERM", &pid]), None, IP_TIMEOUT)?;
        if !sent.success() {
            bail!("cannot SIGTERM node {i}'s daemon: {}", sent.stderr.trim());
        }
        let deadline = Instant::now() + TERMINATE_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("node {i}'s daemon did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills node `i`'s daemon (SIGKILL) if it runs, and starts it again.
    pub fn restart_node(&mut self, i: usize, up: bool) -> Result<()> {
        if self.nodes[i].daemon.is_some() {
            self.kill_node(i)?;
        }
        self.start_node(i, up)
    }

    // ---- the network ----

    /// The addresses on node `i`'s eth0 other than its own: what it really holds.
    pub fn held(&self, i: usize) -> Result<BTreeSet<IpAddr>> {
        read_held(&self.nodes[i].ns, self.nodes[i].ip)
    }

    /// [`Lab::held`] of every node, by node index.
    pub fn holdings(&self) -> Result<Vec<BTreeSet<IpAddr>>> {
        (0..self.nodes.len()).map(|i| self.held(i)).collect()
    }

    /// Node `i`'s eth0 MAC address.
    pub fn mac(&self, i: usize) -> Result<String> {
        let output = ip(&["-j", "-n", &self.nodes[i].ns, "link", "show", "dev", "eth0"])?;
        let links: Value = serde_json::from_str(&output.stdout).context("ip -j link printed no JSON")?;
        links
            .get(0)
            .and_then(|link| link.get("address"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no MAC address for node {i}'s eth0"))
    }

    /// Whether `address` answers one ping from the client within a second.
    pub fn client_ping(&self, address: IpAddr) -> Result<bool> {
        let target = address.to_string();
        Ok(exec_in(&self.client_ns(), "ping", &["-n", "-q", "-c1", "-W1", &target], IP_TIMEOUT)?.success())
    }

    /// Pings `address` from the client every 10 ms until the first reply or `limit`, and returns
    /// how long the first reply took (`None` if none came).
    pub fn client_ping_until_reply(&self, address: IpAddr, limit: Duration) -> Result<Option<Duration>> {
        let target = address.to_string();
        let deadline = limit.as_secs().max(1).to_string();
        let started = Instant::now();
        // With a deadline (-w), ping keeps sending until it has -c replies or the deadline passes.
        let output = exec_in(
            &self.client_ns(),
            "ping",
            &["-n", "-q", "-c1", "-i0.01", "-w", &deadline, &target],
            limit + IP_TIMEOUT,
        )?;
        Ok(output.success().then(|| started.elapsed()))
    }

    /// The MAC address the client's neighbour table has for `address`, if any.
    pub fn client_neighbour(&self, address: IpAddr) -> Result<Option<String>> {
        let output =
            ip(&["-j", "-n", &self.client_ns(), "neigh", "show", &address.to_string(), "dev", "eth0"])?;
        let entries: Value = serde_json::from_str(&output.stdout).context("ip -j neigh printed no JSON")?;
        Ok(entries.get(0).and_then(|entry| entry.get("lladdr")).and_then(Value::as_str).map(str::to_owned))
    }

    /// Pulls node `i`'s cable: its bridge port goes down, and to everyone else it is gone.
    pub fn pull_cable(&self, i: usize) -> Result<()> {
        // Marked first, so a sampler never counts the cut-off node's leftovers as on the LAN.
        self.disconnected.lock().unwrap_or_else(PoisonError::into_inner).insert(i);
        ip(&["-n", &self.bridge_ns(), "link", "set", &format!("p-n{i}"), "down"]).map(drop)
    }

    /// Plugs node `i`'s cable back in.
    pub fn plug_cable(&self, i: usize) -> Result<()> {
        ip(&["-n", &self.bridge_ns(), "link", "set", &format!("p-n{i}"), "up"])?;
        self.disconnected.lock().unwrap_or_else(PoisonError::into_inner).remove(&i);
        Ok(())
    }

    /// Makes node `i`'s gateway unreachable from node `i` alone (a blackhole route to it).
    pub fn blackhole_gateway(&self, i: usize) -> Result<()> {
        let route = format!("{}/32", self.gateway_ip());
        ip(&["-n", &self.nodes[i].ns, "route", "add", "blackhole", &route]).map(drop)
    }

    /// Undoes [`Lab::blackhole_gateway`].
    pub fn restore_gateway(&self, i: usize) -> Result<()> {
        let route = format!("{}/32", self.gateway_ip());
        ip(&["-n", &self.nodes[i].ns, "route", "del", "blackhole", &route]).map(drop)
    }

    /// Sends `payload` as one UDP datagram from the client to `destination:port`.
    pub fn send_from_client(&self, destination: IpAddr, port: u16, payload: &[u8]) -> Result<()> {
        let serial = PAYLOAD_COUNTER.fetch_add(1, Ordering::Relaxed);
        let file = self.dir.join(format!("payload-{serial}"));
        fs::write(&file, payload).with_context(|| format!("cannot write {}", file.display()))?;
        // bash's /dev/udp opens a connected UDP socket; dd reads the whole file as one block and
        // writes it with one write, which is one datagram.
        let script = r#"dd if="$0" bs=65536 count=1 status=none > "/dev/udp/$1/$2""#;
        let file_arg = file.display().to_string();
        let output = exec_in(
            &self.client_ns(),
            "bash",
            &["-c", script, &file_arg, &destination.to_string(), &port.to_string()],
            IP_TIMEOUT,
        )?;
        fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
        if !output.success() {
            bail!("sending {} bytes to {destination}:{port} failed: {}", payload.len(), output.stderr.trim());
        }
        Ok(())
    }

    // ---- watching ----

    /// Starts a [`Sampler`] that dumps every connected node's addresses about every 50 ms.
    pub fn start_sampler(&self) -> Sampler {
        let nodes = self.nodes.iter().map(|node| (node.ns.clone(), node.ip)).collect();
        Sampler::start(nodes, Arc::clone(&self.disconnected), Duration::from_millis(50))
    }

    /// Polls the holdings every 100 ms until `accept` likes them, and returns them; on timeout the
    /// error names `what` and shows the last holdings.
    pub fn wait_for_holdings(
        &self,
        what: &str,
        timeout: Duration,
        mut accept: impl FnMut(&[BTreeSet<IpAddr>]) -> bool,
    ) -> Result<Vec<BTreeSet<IpAddr>>> {
        let mut last = Err(anyhow!("never read"));
        let reached = wait_until(timeout, Duration::from_millis(100), || {
            last = self.holdings();
            last.as_ref().is_ok_and(|holdings| accept(holdings))
        });
        match last {
            Ok(holdings) if reached => Ok(holdings),
            Ok(holdings) => {
                bail!("timed out after {timeout:?} waiting for {what}; holdings: {}", describe(&holdings))
            }
            Err(error) => Err(error.context(format!("waiting for {what}"))),
        }
    }

    /// Polls `condition` every 200 ms until it returns `Ok(true)`; on timeout the error names
    /// `what` and gives the last error and the holdings.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let mut last_error = None;
        let reached = wait_until(timeout, Duration::from_millis(200), || match condition() {
            Ok(done) => done,
            Err(error) => {
                last_error = Some(format!("{error:#}"));
                false
            }
        });
        if reached {
            return Ok(());
        }
        let holdings =
            self.holdings().map(|holdings| describe(&holdings)).unwrap_or_else(|e| format!("{e:#}"));
        bail!(
            "timed out after {timeout:?} waiting for {what} (last error: {}); holdings: {holdings}",
            last_error.as_deref().unwrap_or("none")
        )
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The tails of all nodes' logs, for a failure report.
    pub fn dump_logs(&self) -> String {
        let mut dump = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let _ = writeln!(
                dump,
                "---- node {i} ({}), last {LOG_TAIL_LINES} lines of {} ----\n{}",
                node.ip,
                node.log.display(),
                self.log_tail(i, LOG_TAIL_LINES)
            );
        }
        dump
    }
}

/// One line per node with what it holds, e.g. `n0 {198.18.1.100} n1 {} ...`.
pub(crate) fn describe(holdings: &[BTreeSet<IpAddr>]) -> String {
    holdings
        .iter()
        .enumerate()
        .map(|(i, held)| {
            let list: Vec<String> = held.iter().map(IpAddr::to_string).collect();
            format!("n{i} {{{}}}", list.join(", "))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The addresses on eth0 in namespace `ns` other than `primary` and IPv6 link-local ones.
pub fn read_held(ns: &str, primary: Ipv4Addr) -> Result<BTreeSet<IpAddr>> {
    let output = ip(&["-j", "-n", ns, "addr", "show", "dev", "eth0"])?;
    let links: Value = serde_json::from_str(&output.stdout).context("ip -j addr printed no JSON")?;
    let mut held = BTreeSet::new();
    for info in
        links.get(0).and_then(|link| link.get("addr_info")).and_then(Value::as_array).into_iter().flatten()
    {
        if info.get("scope").and_then(Value::as_str) == Some("link") {
            continue;
        }
        let Some(local) = info.get("local").and_then(Value::as_str) else { continue };
        let address: IpAddr = local.parse().with_context(|| format!("ip printed a bad address {local:?}"))?;
        if address != IpAddr::V4(primary) {
            held.insert(address);
        }
    }
    Ok(held)
}

impl Drop for Lab {
    fn drop(&mut self) {
        let failed = thread::panicking();
        #[allow(clippy::print_stderr, reason = "a failing test's report is where the node logs are needed")]
        if failed {
            eprintln!("==== lab {} failed; node logs follow ====\n{}", self.name, self.dump_logs());
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.daemon.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let mut problems = Vec::new();
        for ns in self.namespaces.iter().rev() {
            problems.extend(destroy_namespace(ns));
        }
        if failed {
            #[allow(clippy::print_stderr, reason = "tells where the failed lab's files were kept")]
            {
                eprintln!("==== lab {} files kept in {}", self.name, self.dir.display());
            }
        } else if let Err(error) = fs::remove_dir_all(&self.dir) {
            problems.push(format!("removing {}: {error}", self.dir.display()));
        }
        if !problems.is_empty() {
            let report = format!("lab {} did not clean up: {}", self.name, problems.join("; "));
            if failed {
                #[allow(clippy::print_stderr, reason = "a second panic while unwinding would abort")]
                {
                    eprintln!("{report}");
                }
            } else {
                panic!("{report}");
            }
        }
    }
}
