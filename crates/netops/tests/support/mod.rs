//! A small network-namespace lab shared by the privileged tests and the benchmark.
//!
//! Every lab creates its own namespaces, named `fchnet-<pid>-<serial>-<role>` so that tests running
//! in parallel never meet, and deletes them when dropped, even after a failed assertion. Only
//! 198.18.0.0/15 and 2001:db8::/32 are used inside them; the host's own interfaces, routes and
//! namespaces are never touched. Code under test runs on a dedicated thread that has entered a lab
//! namespace with `setns`, inside a current-thread tokio runtime, so every socket it opens (and every
//! blocking thread its runtime spawns) lives in that namespace.
#![allow(dead_code, reason = "shared by the tests and the benchmark, which use different parts of it")]

use std::future::Future;
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// Reports that `test` cannot run and why. Under `FECHTER_E2E=require` that is a failure.
pub(crate) fn skip(test: &str, reason: &str) {
    if std::env::var("FECHTER_E2E").as_deref() == Ok("require") {
        panic!("{test} cannot run and FECHTER_E2E=require: {reason}");
    }
    // Written straight to the process's stderr: the test harness captures `eprintln!`, and a skip
    // should be visible in the run's output.
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {reason}");
}

/// A lab for `test` with namespaces for `roles`, or `None` (after reporting the skip) when this
/// process cannot build one.
pub(crate) fn lab_or_skip(test: &str, roles: &[&str]) -> Option<Lab> {
    match Lab::new(roles) {
        Ok(lab) => Some(lab),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

/// A set of network namespaces, deleted on drop.
pub(crate) struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

impl Lab {
    fn new(roles: &[&str]) -> Result<Lab, String> {
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let mut lab =
            Lab { prefix: format!("fchnet-{}-{serial}", std::process::id()), namespaces: Vec::new() };
        for role in roles {
            let name = lab.ns(role);
            run("ip", &["netns", "add", &name])
                .map_err(|error| format!("cannot create a network namespace (needs root): {error}"))?;
            lab.namespaces.push(name);
            lab.exec(role, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    /// The full namespace name of `role`.
    pub(crate) fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Runs `command` inside the namespace of `role` and returns its standard output.
    pub(crate) fn exec(&self, role: &str, command: &[&str]) -> Result<String, String> {
        let ns = self.ns(role);
        let mut args = vec!["netns", "exec", ns.as_str()];
        args.extend_from_slice(command);
        run("ip", &args)
    }

    /// Runs `ip <args>` inside the namespace of `role`.
    pub(crate) fn ip(&self, role: &str, args: &[&str]) -> Result<String, String> {
        let ns = self.ns(role);
        let mut full = vec!["-n", ns.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Like [`Lab::ip`], panicking with the command's error output on failure.
    pub(crate) fn must(&self, role: &str, args: &[&str]) -> String {
        match self.ip(role, args) {
            Ok(output) => output,
            Err(error) => panic!("ip -n {} {}: {error}", self.ns(role), args.join(" ")),
        }
    }

    /// A veth pair between two namespaces, both ends up, with fixed MAC addresses.
    pub(crate) fn veth(&self, a: (&str, &str, &str), b: (&str, &str, &str)) {
        let (role_a, name_a, mac_a) = a;
        let (role_b, name_b, mac_b) = b;
        let ns_b = self.ns(role_b);
        self.must(
            role_a,
            &[
                "link", "add", name_a, "address", mac_a, "type", "veth", "peer", "name", name_b, "address",
                mac_b, "netns", &ns_b,
            ],
        );
        self.must(role_a, &["link", "set", name_a, "up"]);
        self.must(role_b, &["link", "set", name_b, "up"]);
    }

    /// Runs the future `make` builds on a fresh thread inside the namespace of `role`, on a
    /// current-thread runtime, and returns its output (re-raising its panic).
    pub(crate) fn run_in<F, Fut, T>(&self, role: &str, make: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.ns(role));
        let thread = std::thread::spawn(move || {
            enter(&path);
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
            runtime.block_on(make())
        });
        match thread.join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Starts capturing every frame arriving on `interface` in the namespace of `role` for
    /// `duration`; returns once the capture socket is open.
    pub(crate) fn capture(&self, role: &str, interface: &str, duration: Duration) -> Capture {
        let path = format!("/run/netns/{}", self.ns(role));
        let interface = interface.to_owned();
        let (ready_sender, ready) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter(&path);
            let target = pnet::datalink::interfaces()
                .into_iter()
                .find(|candidate| candidate.name == interface)
                .expect("the capture interface exists");
            let config = pnet::datalink::Config {
                read_timeout: Some(Duration::from_millis(20)),
                promiscuous: false,
                read_buffer_size: 65_536,
                ..pnet::datalink::Config::default()
            };
            let mut receiver = match pnet::datalink::channel(&target, config) {
                Ok(pnet::datalink::Channel::Ethernet(_, receiver)) => receiver,
                Ok(_) => panic!("not an Ethernet channel"),
                Err(error) => panic!("cannot open the capture socket: {error}"),
            };
            let _ = ready_sender.send(());
            let started = Instant::now();
            let mut frames = Vec::new();
            while started.elapsed() < duration {
                if let Ok(frame) = receiver.next() {
                    frames.push((started.elapsed(), frame.to_vec()));
                }
            }
            frames
        });
        ready.recv_timeout(Duration::from_secs(5)).expect("the capture started");
        Capture { thread }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace destroys every interface, address and route inside it.
        for name in &self.namespaces {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A running capture; [`Capture::frames`] waits for it to end.
pub(crate) struct Capture {
    thread: JoinHandle<Vec<(Duration, Vec<u8>)>>,
}

impl Capture {
    /// Every frame captured, with its arrival time since the capture started.
    pub(crate) fn frames(self) -> Vec<(Duration, Vec<u8>)> {
        match self.thread.join() {
            Ok(frames) => frames,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

fn enter(path: &str) {
    let namespace = std::fs::File::open(path).expect("the namespace file exists");
    nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNET).expect("setns into the lab namespace");
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Waits up to `timeout` for `condition` to hold, checking every 20 ms.
pub(crate) fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}
