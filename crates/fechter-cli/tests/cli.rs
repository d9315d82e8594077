//! Runs the built `fechter` binary against a fake daemon: a Unix socket in a temporary directory
//! that records the request line and answers with a canned reply.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use fechter_cli::proto::{
    AddressStatus, AdminState, Body, ConnectivityReport, ErrorKind, InfoReport, Liveness, NodeInfo, Reply,
    StatusReport,
};

/// A listening socket standing in for fechterd, removed with its directory on drop.
struct FakeDaemon {
    dir: PathBuf,
    socket: PathBuf,
    listener: UnixListener,
}

impl FakeDaemon {
    fn new() -> FakeDaemon {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!("fechter-cli-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("fechterd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        FakeDaemon { dir, socket, listener }
    }

    /// Answers the next connection with `reply_line` (a newline is added when `terminate` is set)
    /// and hands back the request line it read, or None when no client came within ten seconds.
    fn serve_one(&self, reply_line: String, terminate: bool) -> JoinHandle<Option<String>> {
        let listener = self.listener.try_clone().unwrap();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return None,
                }
            };
            stream.set_nonblocking(false).unwrap();
            let mut request = String::new();
            BufReader::new(&stream).read_line(&mut request).unwrap();
            let mut reply = reply_line.into_bytes();
            if terminate {
                reply.push(b'\n');
            }
            (&stream).write_all(&reply).unwrap();
            Some(request)
        })
    }

    fn answer(&self, reply: &Reply) -> JoinHandle<Option<String>> {
        self.serve_one(serde_json::to_string(reply).unwrap(), true)
    }

    /// Whether a client connected that nobody accepted.
    fn was_contacted(&self) -> bool {
        match self.listener.accept() {
            Ok(_) => true,
            Err(error) => {
                assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
                false
            }
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        fechter().arg("--socket").arg(&self.socket).args(args).output().unwrap()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fechter() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fechter"));
    command.env_remove("FECHTER_SOCKET");
    command
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[track_caller]
fn check(output: &Output, code: i32, stdout: &str, stderr: &str) {
    assert_eq!(
        (output.status.code(), text(&output.stdout), text(&output.stderr)),
        (Some(code), stdout, stderr)
    );
}

fn node(id: &str, liveness: Liveness, admin: Option<AdminState>) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        liveness,
        admin,
        gateway_reachable: None,
        eligible: admin == Some(AdminState::Up),
        phi: None,
        held: 0,
        health: None,
    }
}

#[test]
fn changing_commands_send_one_request_and_print_nothing() {
    let cases: [(&[&str], &str); 7] = [
        (
            &["add-address", "eth0:10.0.0.20"],
            r#"{"version":1,"command":"add-address","interface":"eth0","address":"10.0.0.20","prefix_len":null}"#,
        ),
        (
            &["add-address", "eth0:2001:db8::20/64"],
            r#"{"version":1,"command":"add-address","interface":"eth0","address":"2001:db8::20","prefix_len":64}"#,
        ),
        (
            &["remove-address", "eth0:10.0.0.20"],
            r#"{"version":1,"command":"remove-address","interface":"eth0","address":"10.0.0.20"}"#,
        ),
        (&["up"], r#"{"version":1,"command":"up"}"#),
        (&["down"], r#"{"version":1,"command":"down"}"#),
        (&["maintenance", "on"], r#"{"version":1,"command":"maintenance","on":true}"#),
        (&["maintenance", "off"], r#"{"version":1,"command":"maintenance","on":false}"#),
    ];
    for (args, request) in cases {
        let daemon = FakeDaemon::new();
        let served = daemon.answer(&Reply::ok(Body::Done));
        check(&daemon.run(args), 0, "", "");
        assert_eq!(served.join().unwrap().as_deref(), Some(format!("{request}\n").as_str()), "{args:?}");
    }
}

#[test]
fn status_prints_the_original_lines_or_json() {
    let report = StatusReport {
        leader: Some("10.0.0.10:4573".to_owned()),
        addresses: vec![
            AddressStatus {
                interface: "eth0".to_owned(),
                address: "10.0.0.20".parse().unwrap(),
                prefix_len: 32,
                assigned_to: Some("10.0.0.10:4573".to_owned()),
                held_by: vec!["10.0.0.10:4573".to_owned()],
            },
            AddressStatus {
                interface: "eth0".to_owned(),
                address: "2001:db8::20".parse().unwrap(),
                prefix_len: 64,
                assigned_to: None,
                held_by: Vec::new(),
            },
        ],
        maintenance: false,
        health: Vec::new(),
    };
    let reply = Reply::ok(Body::Status(report.clone()));
    let daemon = FakeDaemon::new();

    let served = daemon.answer(&reply);
    check(
        &daemon.run(&["status"]),
        0,
        "eth0:10.0.0.20 assigned to 10.0.0.10\neth0:2001:db8::20 is not assigned\n",
        "",
    );
    assert_eq!(served.join().unwrap().as_deref(), Some("{\"version\":1,\"command\":\"status\"}\n"));

    let served = daemon.answer(&reply);
    check(
        &daemon.run(&["status", "-n"]),
        0,
        "eth0:10.0.0.20 assigned to 10.0.0.10:4573\neth0:2001:db8::20 is not assigned\n",
        "",
    );
    served.join().unwrap();

    let served = daemon.answer(&reply);
    let output = daemon.run(&["status", "--json"]);
    served.join().unwrap();
    check(&output, 0, &format!("{}\n", serde_json::to_string_pretty(&report).unwrap()), "");
}

#[test]
fn info_prints_one_line_per_peer() {
    let report = InfoReport {
        local: node("10.0.0.10:4573", Liveness::Alive, Some(AdminState::Up)),
        peers: vec![
            node("10.0.0.11:4573", Liveness::Alive, Some(AdminState::Up)),
            node("10.0.0.12:4573", Liveness::Alive, Some(AdminState::Down)),
            node("10.0.0.13:4573", Liveness::Alive, None),
            node("10.0.0.14:4573", Liveness::Dead, None),
            node("[2001:db8::1]:4573", Liveness::Left, None),
        ],
        leader: None,
    };
    let reply = Reply::ok(Body::Info(report.clone()));
    let daemon = FakeDaemon::new();

    let served = daemon.answer(&reply);
    check(
        &daemon.run(&["info"]),
        0,
        "10.0.0.11 is alive (status: up)\n10.0.0.12 is alive (status: down)\n10.0.0.13 is alive\n\
         10.0.0.14 is dead\n2001:db8::1 has left\n",
        "",
    );
    served.join().unwrap();

    let served = daemon.answer(&reply);
    let output = daemon.run(&["info", "-n"]);
    served.join().unwrap();
    assert!(text(&output.stdout).ends_with("10.0.0.14:4573 is dead\n[2001:db8::1]:4573 has left\n"));

    let served = daemon.answer(&reply);
    let output = daemon.run(&["info", "--json"]);
    served.join().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(serde_json::from_slice::<InfoReport>(&output.stdout).unwrap(), report);
}

#[test]
fn connectivity_prints_the_original_lines() {
    for (reachable, line) in [(true, "can talk to gateway\n"), (false, "cannot talk to gateway\n")] {
        let daemon = FakeDaemon::new();
        let report = ConnectivityReport { gateway: "10.0.0.1".parse().unwrap(), reachable };
        let served = daemon.answer(&Reply::ok(Body::Connectivity(report)));
        check(&daemon.run(&["connectivity"]), 0, line, "");
        served.join().unwrap();
    }
}

#[test]
fn error_replies_exit_1_with_the_daemons_message() {
    let daemon = FakeDaemon::new();
    let served =
        daemon.answer(&Reply::error(ErrorKind::DuplicateAddress, "eth0:10.0.0.20 is already in the pool"));
    check(
        &daemon.run(&["add-address", "eth0:10.0.0.20"]),
        1,
        "",
        "error: eth0:10.0.0.20 is already in the pool\n",
    );
    served.join().unwrap();
}

#[test]
fn bad_replies_exit_1_without_a_panic() {
    let cases = [
        (r#"{"version":2,"result":"ok","body":"done"}"#.to_owned(), true, "control protocol version 2"),
        ("this is not json".to_owned(), true, "fechterd sent a reply that is not valid"),
        (String::new(), false, "closed the connection without replying"),
        (r#"{"version":1,"result":"ok","body":"done"}"#.to_owned(), false, "closed the connection"),
        (
            serde_json::to_string(&Reply::ok(Body::Done)).unwrap(),
            true,
            "answered status with a reply of another kind",
        ),
    ];
    for (reply_line, terminate, message) in cases {
        let daemon = FakeDaemon::new();
        let served = daemon.serve_one(reply_line, terminate);
        let output = daemon.run(&["status"]);
        served.join().unwrap();
        assert_eq!(output.status.code(), Some(1), "{message}");
        let stderr = text(&output.stderr);
        assert!(stderr.starts_with("error: ") && stderr.contains(message), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_missing_daemon_is_named_by_its_socket() {
    let daemon = FakeDaemon::new();
    let absent = daemon.dir.join("absent.sock");
    let output = fechter().arg("--socket").arg(&absent).arg("status").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!("error: cannot connect to fechterd at {}: ", absent.display())),
        "{stderr}"
    );
    assert!(stderr.ends_with(" (is fechterd running?)\n"), "{stderr}");

    // The environment variable is the second way to name the socket.
    let output = fechter().env("FECHTER_SOCKET", &absent).arg("up").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains(&absent.display().to_string()));
}

#[test]
fn invalid_arguments_exit_1_without_contacting_the_daemon() {
    let cases: [(&[&str], &str); 6] = [
        (&["add-address", "eth0"], "invalid resource format, expected IFNAME:ADDRESS[/PREFIX]"),
        (&["add-address", "eth0:10.0.0.300"], "not a valid IP address: 10.0.0.300"),
        (&["add-address", "eth0:10.0.0.20/33"], "prefix length 33 is out of range for an IPv4 address"),
        (&["add-address", "eth0:2001:db8::20/129"], "prefix length 129 is out of range for an IPv6 address"),
        (
            &["add-address", "a-very-long-interface:10.0.0.1"],
            "invalid interface name \"a-very-long-interface\": it is longer than 15 bytes",
        ),
        (
            &["remove-address", "eth0:10.0.0.20/32"],
            "remove-address takes IFNAME:ADDRESS, without a prefix length",
        ),
    ];
    for (args, message) in cases {
        let daemon = FakeDaemon::new();
        check(&daemon.run(args), 1, "", &format!("error: {message}\n"));
        assert!(!daemon.was_contacted(), "{args:?}");
    }
}

#[test]
fn usage_errors_exit_2_without_contacting_the_daemon() {
    let cases: [&[&str]; 6] = [
        &[],
        &["reboot"],
        &["add-address"],
        &["up", "now"],
        &["status", "--verbose"],
        &["completions", "cmd.exe"],
    ];
    for args in cases {
        let daemon = FakeDaemon::new();
        let output = daemon.run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty() && !output.stderr.is_empty(), "{args:?}");
        assert!(!daemon.was_contacted(), "{args:?}");
    }
}

#[test]
fn local_commands_need_no_daemon() {
    let output = fechter().arg("keygen").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let key = text(&output.stdout);
    assert_eq!(key.len(), 45, "{key}");
    assert!(key.ends_with("=\n"), "{key}");

    check(
        &fechter().arg("--version").output().unwrap(),
        0,
        &format!("fechter {}\n", env!("CARGO_PKG_VERSION")),
        "",
    );

    let output = fechter().args(["completions", "bash"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stdout).contains("remove-address"));

    let output = fechter().arg("man").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stdout).starts_with(".ie"));
}
