//! Health checks: a node is healthy while every configured check passes, and only a healthy node
//! is eligible to hold addresses (exactly as a node that reaches its gateway).
//!
//! Three kinds, each run every `--check-interval` with a `--check-timeout`:
//! - `--check-exec CMD`: `sh -c CMD` exits 0;
//! - `--check-http URL`: a GET of a plain `http://` URL answers the expected status and, if asked,
//!   a body containing a given text. There is no TLS: check a local plain-HTTP health port, or use
//!   `--check-exec` with `curl` for HTTPS;
//! - `--check-tcp HOST:PORT`: a TCP connection is accepted.
//!
//! Each check's results pass through a [`Hysteresis`]: it starts failing, passes after `rise`
//! consecutive passes and fails again after `fall` consecutive failures, so one slow answer does
//! not move addresses and a node does not take addresses before its service has proved healthy.

use std::net::Ipv6Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::shell;

/// The most of an HTTP response a check reads; a wanted body text must appear within it.
pub const MAX_HTTP_RESPONSE: usize = 1024 * 1024;

/// The longest check name published in gossip; longer ones are cut.
pub const MAX_PUBLISHED_NAME: usize = 64;

/// How many failing checks a node publishes by name; the rest are counted in one more entry.
pub const MAX_PUBLISHED_CHECKS: usize = 8;

/// The health check options of `fechterd`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Health checks")]
pub struct CheckOptions {
    /// Health check: run `sh -c CMD`; exit status 0 passes. Repeatable.
    #[arg(long = "check-exec", value_name = "CMD")]
    pub check_exec: Vec<String>,

    /// Health check: GET a plain http:// URL (no TLS); the expected status passes. Repeatable.
    #[arg(long = "check-http", value_name = "URL", value_parser = HttpTarget::parse)]
    pub check_http: Vec<HttpTarget>,

    /// The status code --check-http expects.
    #[arg(long, value_name = "CODE", default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..=599))]
    pub check_http_status: u16,

    /// A text the --check-http response body must contain (within its first MiB).
    #[arg(long, value_name = "TEXT")]
    pub check_http_body: Option<String>,

    /// Health check: a TCP connection to HOST:PORT is accepted. Repeatable.
    #[arg(long = "check-tcp", value_name = "HOST:PORT", value_parser = TcpTarget::parse)]
    pub check_tcp: Vec<TcpTarget>,

    /// Time between two runs of each check, e.g. `1s`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub check_interval: Duration,

    /// How long one run of a check may take before it fails.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub check_timeout: Duration,

    /// Consecutive passes that make a failing check pass.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub check_rise: u32,

    /// Consecutive failures that make a passing check fail.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub check_fall: u32,
}

impl CheckOptions {
    /// The checks the options ask for, in the order exec, http, tcp.
    pub fn config(&self) -> ChecksConfig {
        let exec = self.check_exec.iter().cloned().map(Check::Exec);
        let http = self.check_http.iter().map(|target| {
            Check::Http(HttpCheck {
                target: target.clone(),
                status: self.check_http_status,
                body: self.check_http_body.clone(),
            })
        });
        let tcp = self.check_tcp.iter().cloned().map(Check::Tcp);
        ChecksConfig {
            checks: exec.chain(http).chain(tcp).collect(),
            interval: self.check_interval,
            timeout: self.check_timeout,
            rise: self.check_rise,
            fall: self.check_fall,
        }
    }
}

/// Parses a duration: a number with `ms`, `s` or `m`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 1s or 500ms"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "" | "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if duration.is_zero() {
        return Err("the duration must be positive".to_owned());
    }
    Ok(duration)
}

/// Every configured check and how they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksConfig {
    /// The checks; none means the node is always healthy.
    pub checks: Vec<Check>,
    /// Time between two runs of each check.
    pub interval: Duration,
    /// The time limit of one run.
    pub timeout: Duration,
    /// Consecutive passes that make a failing check pass.
    pub rise: u32,
    /// Consecutive failures that make a passing check fail.
    pub fall: u32,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        ChecksConfig {
            checks: Vec::new(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// One health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `sh -c CMD` exits 0.
    Exec(String),
    /// A GET answers as expected.
    Http(HttpCheck),
    /// A TCP connection is accepted.
    Tcp(TcpTarget),
}

impl Check {
    /// The check's name in logs, `info` and `status`: `exec:CMD`, `http:URL` or `tcp:HOST:PORT`.
    pub fn name(&self) -> String {
        match self {
            Check::Exec(command) => format!("exec:{command}"),
            Check::Http(check) => format!("http:{}", check.target.url),
            Check::Tcp(target) => format!("tcp:{target}"),
        }
    }

    /// Runs the check once; `Err` says why it failed.
    pub async fn run(&self, timeout: Duration) -> Result<(), String> {
        match self {
            Check::Exec(command) => {
                let outcome = shell::run("sh", &["-c", command], &[], timeout).await;
                if outcome.succeeded() { Ok(()) } else { Err(outcome.to_string()) }
            }
            Check::Tcp(target) => {
                match tokio::time::timeout(timeout, TcpStream::connect((target.host.as_str(), target.port)))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(format!("connecting: {error}")),
                    Err(_) => Err("connecting timed out".to_owned()),
                }
            }
            Check::Http(check) => match tokio::time::timeout(timeout, check.fetch()).await {
                Ok(result) => result,
                Err(_) => Err("the response did not arrive in time".to_owned()),
            },
        }
    }
}

/// An HTTP check: where, and what the answer must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// The URL.
    pub target: HttpTarget,
    /// The expected status code.
    pub status: u16,
    /// A text the body must contain.
    pub body: Option<String>,
}

impl HttpCheck {
    /// Sends the GET and judges the answer, without a time limit (the caller sets one).
    async fn fetch(&self) -> Result<(), String> {
        let target = &self.target;
        let mut stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|error| format!("connecting: {error}"))?;
        stream.write_all(target.request().as_bytes()).await.map_err(|error| format!("sending: {error}"))?;
        let mut response = Vec::new();
        let mut chunk = [0_u8; 8192];
        loop {
            let read = stream.read(&mut chunk).await.map_err(|error| format!("receiving: {error}"))?;
            response.extend_from_slice(&chunk[..read]);
            let complete = read == 0 || response.len() >= MAX_HTTP_RESPONSE;
            if let Some(verdict) = judge_response(&response, complete, self.status, self.body.as_deref()) {
                return verdict;
            }
        }
    }
}

/// Judges the response received so far: `None` while more is needed, otherwise the verdict.
/// `complete` says that nothing more will come (end of stream or the size limit).
pub fn judge_response(
    response: &[u8],
    complete: bool,
    expected_status: u16,
    wanted_body: Option<&str>,
) -> Option<Result<(), String>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let body_start = match parsed.parse(response) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if complete => {
            return Some(Err("the response ended inside its headers".to_owned()));
        }
        Ok(httparse::Status::Partial) => return None,
        Err(error) => return Some(Err(format!("not an HTTP response: {error}"))),
    };
    let status = parsed.code.unwrap_or(0);
    if status != expected_status {
        return Some(Err(format!("status {status}, expected {expected_status}")));
    }
    let Some(wanted) = wanted_body else {
        return Some(Ok(()));
    };
    let content_length = parsed
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-length"))
        .and_then(|header| std::str::from_utf8(header.value).ok()?.trim().parse::<usize>().ok());
    let body = &response[body_start..];
    if contains(body, wanted.as_bytes()) {
        return Some(Ok(()));
    }
    let body_done = complete || content_length.is_some_and(|length| body.len() >= length);
    body_done.then(|| Err(format!("the body does not contain {wanted:?}")))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

/// A plain `http://` URL, split for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// The URL as given.
    pub url: String,
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port, 80 unless given.
    pub port: u16,
    /// The path and query, at least `/`.
    pub path: String,
}

impl HttpTarget {
    /// Parses `http://HOST[:PORT][/PATH]`; `https://` is refused, since there is no TLS.
    pub fn parse(url: &str) -> Result<HttpTarget, String> {
        let scheme_end = url.find("://").ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
        let scheme = &url[..scheme_end];
        if scheme.eq_ignore_ascii_case("https") {
            return Err(format!(
                "{url:?}: https is not supported (no TLS); check a plain http:// port, or use --check-exec with curl"
            ));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(format!("{url:?} is not an http:// URL"));
        }
        let rest = &url[scheme_end + 3..];
        let rest = rest.split('#').next().unwrap_or(rest);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(format!("{url:?}: credentials in the URL are not supported"));
        }
        let (host, port) =
            split_host_port(authority, Some(80)).map_err(|error| format!("{url:?}: {error}"))?;
        let path = match path {
            "" => "/".to_owned(),
            query if query.starts_with('?') => format!("/{query}"),
            path => path.to_owned(),
        };
        if path.bytes().any(|byte| byte.is_ascii_whitespace() || byte.is_ascii_control()) {
            return Err(format!("{url:?}: spaces and control characters must be percent-encoded"));
        }
        Ok(HttpTarget { url: url.to_owned(), host, port, path })
    }

    /// The request: HTTP/1.0, so that the answer is never chunked and ends with the connection.
    pub fn request(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let host = if self.port == 80 { host } else { format!("{host}:{}", self.port) };
        format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: fechterd/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.path,
            env!("CARGO_PKG_VERSION")
        )
    }
}

/// A `HOST:PORT` to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpTarget {
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl TcpTarget {
    /// Parses `HOST:PORT` or `[IPV6]:PORT`; the port is required.
    pub fn parse(text: &str) -> Result<TcpTarget, String> {
        let (host, port) = split_host_port(text, None)?;
        Ok(TcpTarget { host, port })
    }
}

impl std::fmt::Display for TcpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Splits `host[:port]` or `[v6][:port]`; without a port, `default` is used or a port is required.
fn split_host_port(text: &str, default: Option<u16>) -> Result<(String, u16), String> {
    let parse_port = |port: &str| {
        port.parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("{port:?} is not a port (1-65535)"))
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("{text:?}: missing ']'"))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        match after.strip_prefix(':') {
            Some(port) => (host, Some(parse_port(port)?)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("{text:?}: expected ':PORT' after ']'")),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(format!("{text:?}: write an IPv6 address in brackets, [ADDR]:PORT"));
            }
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (text, None),
        }
    };
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !valid_host {
        return Err(format!("{host:?} is not a host name or address"));
    }
    let port = port.or(default).ok_or_else(|| format!("{text:?}: a port is required, HOST:PORT"))?;
    Ok((host.to_owned(), port))
}

/// The up/down state of one check with rise and fall counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    passing: bool,
    streak: u32,
}

impl Hysteresis {
    /// A check that has not passed yet.
    pub fn new(rise: u32, fall: u32) -> Hysteresis {
        Hysteresis { rise: rise.max(1), fall: fall.max(1), passing: false, streak: 0 }
    }

    /// Whether the check counts as passing.
    pub fn passing(&self) -> bool {
        self.passing
    }

    /// Records one result; returns the new state when it flips.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if passed == self.passing {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if passed { self.rise } else { self.fall };
        if self.streak < needed {
            return None;
        }
        self.passing = passed;
        self.streak = 0;
        Some(passed)
    }
}

/// One run's result, as a check task reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Which check, by its index in [`ChecksConfig::checks`].
    pub index: usize,
    /// `Err` says why it failed.
    pub outcome: Result<(), String>,
}

/// A state change of one check, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The check's name.
    pub name: String,
    /// Whether it passes now.
    pub passing: bool,
    /// Why the last run failed, if it did.
    pub reason: Option<String>,
}

/// Every check's state: the node is healthy while all pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthBoard {
    checks: Vec<(String, Hysteresis)>,
}

impl HealthBoard {
    /// A board for `config`'s checks, all not passed yet.
    pub fn new(config: &ChecksConfig) -> HealthBoard {
        HealthBoard {
            checks: config
                .checks
                .iter()
                .map(|check| (check.name(), Hysteresis::new(config.rise, config.fall)))
                .collect(),
        }
    }

    /// Records a result; returns the transition it caused, if any.
    pub fn record(&mut self, result: &CheckResult) -> Option<Transition> {
        let (name, state) = self.checks.get_mut(result.index)?;
        let passing = state.record(result.outcome.is_ok())?;
        Some(Transition { name: name.clone(), passing, reason: result.outcome.clone().err() })
    }

    /// Whether every check passes; true without checks.
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|(_, state)| state.passing())
    }

    /// Every check by name with whether it passes, in configuration order.
    pub fn states(&self) -> impl Iterator<Item = (&str, bool)> {
        self.checks.iter().map(|(name, state)| (name.as_str(), state.passing()))
    }

    /// The failing checks' names, as published in gossip: each cut to [`MAX_PUBLISHED_NAME`]
    /// bytes, at most [`MAX_PUBLISHED_CHECKS`] of them and then a count of the others, so the
    /// node status always fits in one datagram.
    pub fn failing_for_gossip(&self) -> Vec<String> {
        let failing: Vec<&str> =
            self.states().filter(|(_, passing)| !passing).map(|(name, _)| name).collect();
        let mut published: Vec<String> =
            failing.iter().take(MAX_PUBLISHED_CHECKS).map(|name| cut(name, MAX_PUBLISHED_NAME)).collect();
        if failing.len() > MAX_PUBLISHED_CHECKS {
            published.push(format!("and {} more", failing.len() - MAX_PUBLISHED_CHECKS));
        }
        published
    }
}

fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The running check tasks; dropping this stops them.
#[derive(Debug)]
pub struct CheckTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for CheckTasks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts one task per check; each runs its check every interval and sends the results.
pub fn spawn_checks(config: &ChecksConfig, results: mpsc::Sender<CheckResult>) -> CheckTasks {
    let tasks = config
        .checks
        .iter()
        .enumerate()
        .map(|(index, check)| {
            let (check, results) = (check.clone(), results.clone());
            let (interval, timeout) = (config.interval, config.timeout);
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let outcome = check.run(timeout).await;
                    if results.send(CheckResult { index, outcome }).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    CheckTasks { tasks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        checks: CheckOptions,
    }

    fn options(args: &[&str]) -> Result<CheckOptions, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("test").chain(args.iter().copied())).map(|w| w.checks)
    }

    #[test]
    fn options_build_the_checks_with_defaults() {
        let none = options(&[]).unwrap().config();
        assert_eq!(none, ChecksConfig::default());
        let config = options(&[
            "--check-exec",
            "true",
            "--check-http",
            "http://127.0.0.1:8080/health",
            "--check-http-status",
            "204",
            "--check-http-body",
            "ok",
            "--check-tcp",
            "[::1]:22",
            "--check-interval",
            "500ms",
            "--check-rise",
            "1",
        ])
        .unwrap()
        .config();
        let names: Vec<String> = config.checks.iter().map(Check::name).collect();
        assert_eq!(names, ["exec:true", "http:http://127.0.0.1:8080/health", "tcp:[::1]:22"]);
        assert!(
            matches!(&config.checks[1], Check::Http(HttpCheck { status: 204, body: Some(b), .. }) if b == "ok")
        );
        assert_eq!(
            (config.interval, config.timeout, config.rise, config.fall),
            (Duration::from_millis(500), Duration::from_secs(1), 1, 3)
        );
        for bad in [
            vec!["--check-http", "https://example.com/"],
            vec!["--check-tcp", "host"],
            vec!["--check-http-status", "99"],
            vec!["--check-interval", "0s"],
            vec!["--check-rise", "0"],
        ] {
            assert!(options(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "s", "1h", "-1s", "0", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_and_tcp_targets_parse() {
        let target = HttpTarget::parse("http://example.org").unwrap();
        assert_eq!((target.host.as_str(), target.port, target.path.as_str()), ("example.org", 80, "/"));
        assert!(target.request().starts_with("GET / HTTP/1.0\r\nHost: example.org\r\n"));
        let v6 = HttpTarget::parse("HTTP://[2001:db8::1]:8080/a/b?c=d#frag").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.path.as_str()), ("2001:db8::1", 8080, "/a/b?c=d"));
        assert!(v6.request().contains("\r\nHost: [2001:db8::1]:8080\r\n"));
        assert_eq!(HttpTarget::parse("http://h?x").unwrap().path, "/?x");
        for bad in [
            "example.org",
            "ftp://h/",
            "http://",
            "http://u:p@h/",
            "http://h:0/",
            "http://h/a b",
            "http://::1/",
        ] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad:?}");
        }
        assert!(HttpTarget::parse("https://h/").unwrap_err().contains("no TLS"));
        assert_eq!(TcpTarget::parse("db:5432"), Ok(TcpTarget { host: "db".into(), port: 5432 }));
        assert_eq!(TcpTarget::parse("[::1]:7").unwrap().to_string(), "[::1]:7");
        for bad in ["db", "db:", "db:0", "::1:7", "[::1]", "a b:1"] {
            assert!(TcpTarget::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn responses_are_judged_by_status_and_body() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nall ok\n";
        assert_eq!(judge_response(ok, false, 200, None), Some(Ok(())));
        assert_eq!(judge_response(ok, false, 200, Some("ok")), Some(Ok(())));
        assert_eq!(
            judge_response(ok, false, 200, Some("fine")),
            Some(Err("the body does not contain \"fine\"".to_owned()))
        );
        assert_eq!(judge_response(ok, false, 204, None), Some(Err("status 200, expected 204".to_owned())));
        // Headers still arriving, or a body without a length that is still arriving.
        assert_eq!(judge_response(b"HTTP/1.1 200 OK\r\nConte", false, 200, None), None);
        let open = b"HTTP/1.0 200 OK\r\n\r\npartial";
        assert_eq!(judge_response(open, false, 200, Some("done")), None);
        assert!(matches!(judge_response(open, true, 200, Some("done")), Some(Err(_))));
        assert!(matches!(judge_response(b"HTTP/1.1 200", true, 200, None), Some(Err(_))));
        assert!(matches!(judge_response(b"\x00\x01garbage\r\n\r\n", false, 200, None), Some(Err(_))));
    }

    #[test]
    fn hysteresis_needs_rise_passes_and_fall_failures() {
        let mut state = Hysteresis::new(2, 3);
        assert!(!state.passing());
        let results = [true, false, true, true, false, false, true, false, false, false, true];
        let flips: Vec<Option<bool>> = results.iter().map(|passed| state.record(*passed)).collect();
        assert_eq!(flips, [None, None, None, Some(true), None, None, None, None, None, Some(false), None]);
        assert!(!state.passing());
    }

    #[test]
    fn the_board_is_healthy_when_every_check_passes() {
        let config = ChecksConfig {
            checks: vec![Check::Exec("a".repeat(100)), Check::Tcp(TcpTarget { host: "h".into(), port: 1 })],
            rise: 1,
            fall: 1,
            ..ChecksConfig::default()
        };
        let mut board = HealthBoard::new(&config);
        assert!(!board.healthy());
        assert!(HealthBoard::new(&ChecksConfig::default()).healthy());
        let first = board.record(&CheckResult { index: 0, outcome: Ok(()) }).unwrap();
        assert!(first.passing);
        assert!(board.record(&CheckResult { index: 7, outcome: Ok(()) }).is_none());
        let failing = board.failing_for_gossip();
        assert_eq!(failing, ["tcp:h:1"]);
        board.record(&CheckResult { index: 1, outcome: Ok(()) });
        assert!(board.healthy());
        let down = board.record(&CheckResult { index: 0, outcome: Err("exit status 1".into()) }).unwrap();
        assert_eq!(down.reason.as_deref(), Some("exit status 1"));
        let published = board.failing_for_gossip();
        assert_eq!(published.len(), 1);
        assert!(published[0].len() <= MAX_PUBLISHED_NAME && published[0].ends_with("..."));
    }

    #[tokio::test]
    async fn checks_run_against_real_endpoints() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = [0_u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nservice ready").await;
            }
        });
        let timeout = Duration::from_secs(5);
        let http = |body: &str| {
            Check::Http(HttpCheck {
                target: HttpTarget::parse(&format!("http://127.0.0.1:{port}/health")).unwrap(),
                status: 200,
                body: Some(body.to_owned()),
            })
        };
        assert_eq!(http("ready").run(timeout).await, Ok(()));
        assert!(http("broken").run(timeout).await.is_err());
        assert_eq!(Check::Tcp(TcpTarget { host: "127.0.0.1".into(), port }).run(timeout).await, Ok(()));
        assert_eq!(Check::Exec("exit 0".into()).run(timeout).await, Ok(()));
        assert_eq!(Check::Exec("exit 4".into()).run(timeout).await, Err("exit status 4".to_owned()));
        server.abort();
        let _ = server.await;
        assert!(Check::Tcp(TcpTarget { host: "127.0.0.1".into(), port }).run(timeout).await.is_err());
    }
}
