//! fechterd as a service: started from a TOML file alone, under a stand-in for systemd's notify
//! socket, reloaded with SIGHUP; it says READY=1, feeds the watchdog, logs exactly what a reload
//! changed and what waits for a restart, and applies the change at once.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fechter_lab::{Lab, run_with_timeout};

use crate::common::{CONVERGE, scenario};

/// Kills the daemon when the test ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The notifications received within `timeout`, until one contains `wanted`.
fn receive_until(socket: &UnixDatagram, wanted: &str, timeout: Duration) -> Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        socket.set_read_timeout(Some(
            deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
        ))?;
        match socket.recv(&mut buffer) {
            Ok(length) => {
                let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
                let done = message.lines().any(|line| line == wanted);
                received.push(message);
                if done {
                    return Ok(received);
                }
            }
            Err(error)
                if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(error) => return Err(error).context("reading the notify socket"),
        }
    }
    bail!("no {wanted:?} within {timeout:?}; received {received:?}")
}

fn config_text(lab: &Lab, quorum: u32, dead_at: f64) -> String {
    format!(
        "listen-address = \"{}\"\ngateway = \"{}\"\nstate-dir = \"{}\"\nsocket = \"{}\"\nup = true\n\
         log-level = \"info\"\nquorum = {quorum}\ndead-at = {dead_at:.1}\nannounce-count = 1\n",
        lab.node_ip(0),
        lab.gateway_ip(),
        lab.state_dir(0).display(),
        lab.socket_path(0).display(),
    )
}

#[test]
fn a_node_starts_from_its_config_file_tells_systemd_and_reloads_on_sighup() {
    scenario("a_node_starts_from_its_config_file_tells_systemd_and_reloads_on_sighup", "config", 1, |lab| {
        let config = lab.dir().join("fechterd.toml");
        fs::write(&config, config_text(lab, 0, 8.0))?;
        let notify_path = lab.dir().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).context("binding the notify socket")?;
        let log_path = lab.dir().join("n0.log");
        let log = fs::File::create(&log_path)?;
        let child = Command::new("ip")
            .args(["netns", "exec", lab.node_ns(0)])
            .arg(&lab.binaries().daemon)
            .arg("--config")
            .arg(&config)
            // The socket comes from the file: the lab's FECHTER_SOCKET, if any, must not override it.
            .env_remove("FECHTER_SOCKET")
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "2000000")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting fechterd")?;
        let mut daemon = Daemon(child);
        let pid = daemon.0.id();

        let startup = receive_until(&notify, "READY=1", Duration::from_secs(30))
            .with_context(|| fs::read_to_string(&log_path).unwrap_or_default())?;
        let watchdog = receive_until(&notify, "WATCHDOG=1", Duration::from_secs(5))?;
        ensure!(!startup.is_empty() && !watchdog.is_empty());
        // Fed at half the period: a second one comes within about a second.
        receive_until(&notify, "WATCHDOG=1", Duration::from_secs(3))?;

        let address = lab.vip(0);
        lab.add_address(0, address)?;
        lab.wait_for("the node to hold its address", CONVERGE, || Ok(lab.held(0)?.contains(&address)))?;

        // A quorum of two cannot be met by one node: applied at once, the node lets go. The
        // phi threshold goes to gossip at start only, so it waits for a restart.
        fs::write(&config, config_text(lab, 2, 9.0))?;
        let sent = run_with_timeout(
            Command::new("kill").args(["-HUP", &pid.to_string()]),
            None,
            Duration::from_secs(10),
        )?;
        ensure!(sent.success(), "kill -HUP failed: {}", sent.stderr);
        let expected = format!(
            "reloaded {}: changed quorum 0 -> 2; ignored until a restart: dead-at 8 -> 9",
            config.display()
        );
        lab.wait_for("the reload to be logged", CONVERGE, || {
            Ok(fs::read_to_string(&log_path)?.lines().any(|line| line.ends_with(&expected)))
        })
        .with_context(|| fs::read_to_string(&log_path).unwrap_or_default())?;
        lab.wait_for("the node to release its address for want of a quorum", CONVERGE, || {
            Ok(lab.held(0)?.is_empty())
        })?;
        ensure!(daemon.0.try_wait()?.is_none(), "the daemon exited on SIGHUP");

        // A broken file changes nothing and keeps the daemon running.
        fs::write(&config, "quorum = \n")?;
        run_with_timeout(
            Command::new("kill").args(["-HUP", &pid.to_string()]),
            None,
            Duration::from_secs(10),
        )?;
        lab.wait_for("the refused reload to be logged", CONVERGE, || {
            Ok(fs::read_to_string(&log_path)?.contains("reload refused, keeping the running configuration"))
        })?;
        ensure!(
            lab.cli_ok(0, &["connectivity"])?.trim() == "can talk to gateway",
            "the daemon stopped answering"
        );

        let sent = run_with_timeout(
            Command::new("kill").args(["-TERM", &pid.to_string()]),
            None,
            Duration::from_secs(10),
        )?;
        ensure!(sent.success(), "kill -TERM failed: {}", sent.stderr);
        receive_until(&notify, "STOPPING=1", Duration::from_secs(20))?;
        let status = daemon.0.wait()?;
        ensure!(status.success(), "fechterd exited with {status}");
        Ok(())
    });
}
