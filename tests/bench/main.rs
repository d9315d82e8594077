//! `fechter-bench`: fechter's failover measured side by side with keepalived in one namespace LAN.
//!
//! The scenarios (see `--help` and BENCHMARKS.md): `failover` (cable pulled and daemon killed;
//! fechter's default and fast profiles next to keepalived's default and tuned VRRP), `handover`
//! (`fechter down` and SIGTERM), `many` (a node holding 200 addresses fails), `footprint` (idle
//! memory and CPU per daemon) and `idle` (five nodes under CPU load for minutes; any reassignment
//! is a false failover). Every result is printed as a table and as `key=value` lines. It needs
//! root; without it, it says so and exits 0. Every lab removes its namespaces and processes when
//! it is dropped, and a crashed run's leftovers are swept by the next one.

mod failover;
mod fechter;
mod footprint;
mod handover;
mod idle;
mod keepalived;
mod many;
mod options;
mod probe;
mod stats;
mod timeline;

use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use fechter_lab::{Binaries, e2e_gate, effective_uid};

use crate::failover::Series;
use crate::fechter::Profile;
use crate::footprint::Footprint;
use crate::idle::IdleResult;
use crate::keepalived::{DEFAULT_VRRP, TUNED_VRRP};
use crate::options::{BenchOptions, Invocation, Scenario};
use crate::stats::{Summary, Table, ms, ratio, say};

/// The goals, in milliseconds.
const GOAL_DEFAULT_MS: f64 = 1000.0;
const GOAL_FAST_MS: f64 = 400.0;
const GOAL_SPREAD: f64 = 1.5;
const GOAL_HANDOVER_MS: f64 = 200.0;
const GOAL_MANY_EXTRA_MS: f64 = 200.0;

fn main() -> ExitCode {
    let invocation = match options::parse(std::env::args().skip(1)) {
        Ok(invocation) => invocation,
        Err(message) => {
            say(&format!("fechter-bench: {message}"));
            return ExitCode::from(2);
        }
    };
    match invocation {
        Invocation::Help => {
            say(options::USAGE);
            ExitCode::SUCCESS
        }
        Invocation::ConnectHelper => match probe::run_connect_helper() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                say(&format!("connect helper: {error:#}"));
                ExitCode::FAILURE
            }
        },
        Invocation::Run(options) => run(&options),
    }
}

/// Collects the `key=value` lines printed at the end.
#[derive(Debug, Default)]
struct KeyValues(Vec<String>);

impl KeyValues {
    fn put(&mut self, key: &str, value: impl std::fmt::Display) {
        self.0.push(format!("{key}={value}"));
    }

    fn series(&mut self, series: &Series) {
        if let Some(summary) = series.summary() {
            self.put(&format!("{}_median_ms", series.key), ms(summary.median));
            self.put(&format!("{}_min_ms", series.key), ms(summary.min));
            self.put(&format!("{}_max_ms", series.key), ms(summary.max));
        }
        self.put(&format!("{}_runs", series.key), series.values.len());
        self.put(&format!("{}_failed_runs", series.key), series.failed);
    }
}

fn run(options: &BenchOptions) -> ExitCode {
    match effective_uid() {
        Some(0) => {}
        uid => {
            say(&format!(
                "fechter-bench skipped: it builds network namespaces and needs root (running as uid {})",
                uid.map_or_else(|| "unknown".to_owned(), |uid| uid.to_string())
            ));
            return ExitCode::SUCCESS;
        }
    }
    if !e2e_gate("fechter-bench") {
        return ExitCode::SUCCESS;
    }
    let binaries = match Binaries::locate() {
        Ok(binaries) => binaries,
        Err(error) => {
            say(&format!("fechter-bench: {error:#}"));
            return ExitCode::FAILURE;
        }
    };
    if !Path::new("/usr/bin/tcpdump").is_file() && !Path::new("/usr/sbin/tcpdump").is_file() {
        say("fechter-bench: tcpdump is missing (apt-get install tcpdump); the client's probes need it");
        return ExitCode::FAILURE;
    }
    print_machine(&binaries, options);
    let started = Instant::now();
    let mut values = KeyValues::default();
    let mut failures = Vec::new();
    let fast = Profile::fast(&options.fast_args);
    for &scenario in &options.scenarios {
        say("");
        say(&format!("== {scenario} =="));
        let outcome = match scenario {
            Scenario::Failover => run_failover(options, &fast, &mut values),
            Scenario::Handover => run_handover(options, &fast, &mut values),
            Scenario::Many => run_many(options, &mut values),
            Scenario::Footprint => run_footprint(options, &fast, &mut values),
            Scenario::Idle => run_idle(options, &fast, &mut values),
        };
        if let Err(error) = outcome {
            say(&format!("scenario {scenario} failed: {error:#}"));
            failures.push(scenario.name());
        }
    }
    say("");
    say("== summary ==");
    values.put("elapsed_s", format!("{:.0}", started.elapsed().as_secs_f64()));
    for line in &values.0 {
        say(line);
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        say(&format!("failed scenarios: {}", failures.join(", ")));
        ExitCode::FAILURE
    }
}

fn print_machine(binaries: &Binaries, options: &BenchOptions) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let command: Vec<String> = std::env::args().collect();
    say(&format!("fechter-bench: {}", command.join(" ")));
    say(&format!("machine: {cores} cores, {model}, Linux {}", kernel.trim()));
    say(&format!("fechterd: {}", binaries.daemon.display()));
    let scenarios: Vec<&str> = options.scenarios.iter().map(|scenario| scenario.name()).collect();
    say(&format!(
        "runs: {} per fechter configuration, {} per keepalived configuration, {} of many; scenarios: {}; fast profile: {}",
        options.runs,
        options.keepalived_runs,
        options.many_runs,
        scenarios.join(" "),
        options.fast_args.join(" ")
    ));
}

/// One row of a latency table with its verdict against `goal`.
fn latency_row(series: &Series, goal: &str, pass: Option<bool>) -> Vec<String> {
    let summary = series.summary();
    let get = |pick: fn(&Summary) -> f64| summary.as_ref().map_or_else(|| "-".to_owned(), |s| ms(pick(s)));
    vec![
        series.label.clone(),
        format!("{}/{}", series.values.len(), series.values.len() + series.failed),
        get(|s| s.median),
        get(|s| s.min),
        get(|s| s.max),
        summary.as_ref().map_or_else(|| "-".to_owned(), |s| ratio(s.spread())),
        goal.to_owned(),
        match pass {
            Some(true) => "met".to_owned(),
            Some(false) => "MISSED".to_owned(),
            None => String::new(),
        },
    ]
}

const LATENCY_HEADER: [&str; 8] =
    ["config", "runs ok", "median ms", "min ms", "max ms", "max/median", "goal", "verdict"];

/// Whether a fechter series meets "median under `bound`, slowest under 1.5 × median, no failed run".
fn meets(series: &Series, bound: f64) -> Option<bool> {
    let summary = series.summary()?;
    Some(series.failed == 0 && summary.median < bound && summary.spread() < GOAL_SPREAD)
}

fn run_failover(options: &BenchOptions, fast: &Profile, values: &mut KeyValues) -> Result<()> {
    let mut all = Vec::new();
    for profile in [Profile::default_settings(), fast.clone()] {
        say(&format!("fechter {} ({} runs) ...", profile.name, options.runs));
        all.push(failover::fechter_series(&profile, options.runs)?);
    }
    if options.keepalived_runs > 0 {
        for profile in [DEFAULT_VRRP, TUNED_VRRP] {
            say(&format!("keepalived {} ({} runs) ...", profile.name, options.keepalived_runs));
            all.push(failover::keepalived_series(profile, options.keepalived_runs)?);
        }
    }
    say("");
    say(&format!(
        "failover: cable pulled + daemon killed; time from the fault to the first echo reply from another node \
         (client pings every {} ms)",
        failover::PING_INTERVAL.as_millis()
    ));
    let mut table = Table::new(&LATENCY_HEADER);
    for series in &all {
        let row = match series.key.as_str() {
            "fechter_default" => latency_row(series, "median<1000, max<1.5x", meets(series, GOAL_DEFAULT_MS)),
            "fechter_fast" => latency_row(series, "median<400, max<1.5x", meets(series, GOAL_FAST_MS)),
            _ => latency_row(series, "baseline", None),
        };
        table.row(row);
        values.series(series);
    }
    table.print();
    let median = |key: &str| all.iter().find(|s| s.key == key).and_then(Series::summary).map(|s| s.median);
    let pairs = [
        ("fechter_default", "keepalived_default"),
        ("fechter_fast", "keepalived_tuned"),
        ("fechter_default", "keepalived_tuned"),
    ];
    for (ours, theirs) in pairs {
        if let (Some(a), Some(b)) = (median(ours), median(theirs)) {
            say(&format!("ratio of medians {ours} / {theirs} = {}", ratio(a / b)));
            values.put(&format!("ratio_{ours}_vs_{theirs}"), ratio(a / b));
        }
    }
    Ok(())
}

fn run_handover(options: &BenchOptions, fast: &Profile, values: &mut KeyValues) -> Result<()> {
    let mut all = Vec::new();
    for profile in [Profile::default_settings(), fast.clone()] {
        say(&format!("fechter {} ({} runs of each method) ...", profile.name, options.runs));
        all.extend(handover::series(&profile, options.runs)?);
    }
    say("");
    say("handover: time from the command to the first echo reply from the address's new node");
    let mut table = Table::new(&LATENCY_HEADER);
    for series in &all {
        let pass = series.summary().map(|s| series.failed == 0 && s.median < GOAL_HANDOVER_MS);
        table.row(latency_row(series, "median<200", pass));
        values.series(series);
    }
    table.print();
    Ok(())
}

fn run_many(options: &BenchOptions, values: &mut KeyValues) -> Result<()> {
    let profile = Profile::default_settings();
    say(&format!("fechter {} ({} runs) ...", profile.name, options.many_runs));
    let result = many::series(&profile, options.many_runs)?;
    say("");
    say(&format!(
        "many: a node holding {} addresses fails (cable + kill); time until the client reaches them (TCP connect probes)",
        many::PER_NODE
    ));
    let bound = GOAL_DEFAULT_MS + GOAL_MANY_EXTRA_MS;
    let mut table = Table::new(&LATENCY_HEADER);
    let pass = result.all.summary().map(|s| result.all.failed == 0 && s.max < bound);
    table.row(latency_row(&result.all, "every run <1200", pass));
    table.row(latency_row(&result.half, "", None));
    table.row(latency_row(&result.first, "", None));
    table.print();
    for series in [&result.all, &result.half, &result.first] {
        values.series(series);
    }
    Ok(())
}

fn run_footprint(options: &BenchOptions, fast: &Profile, values: &mut KeyValues) -> Result<()> {
    let footprints: Vec<Footprint> = footprint::measure(fast, options.footprint_seconds)?;
    say("");
    say(&format!(
        "footprint: per daemon instance, idle, measured over {} s at the same time (fechterd logging at info)",
        options.footprint_seconds
    ));
    let mut table = Table::new(&[
        "daemon",
        "processes",
        "RSS MB (mean)",
        "RSS MB (max)",
        "CPU s/min (mean)",
        "CPU s/min (max)",
    ]);
    for footprint in &footprints {
        let mean = |list: &[f64]| list.iter().sum::<f64>() / list.len().max(1) as f64;
        let max = |list: &[f64]| list.iter().copied().fold(0.0, f64::max);
        table.row(vec![
            footprint.label.clone(),
            footprint.processes.to_string(),
            format!("{:.1}", mean(&footprint.rss_mb)),
            format!("{:.1}", max(&footprint.rss_mb)),
            format!("{:.3}", mean(&footprint.cpu_s_per_min)),
            format!("{:.3}", max(&footprint.cpu_s_per_min)),
        ]);
        values.put(&format!("footprint_{}_rss_mb", footprint.key), format!("{:.1}", mean(&footprint.rss_mb)));
        values.put(
            &format!("footprint_{}_cpu_s_per_min", footprint.key),
            format!("{:.3}", mean(&footprint.cpu_s_per_min)),
        );
    }
    table.print();
    Ok(())
}

fn run_idle(options: &BenchOptions, fast: &Profile, values: &mut KeyValues) -> Result<()> {
    let results: Vec<IdleResult> = idle::run(fast, options.idle_minutes)?;
    say("");
    say(&format!(
        "idle: 5 nodes, 10 addresses, {} minutes, 2 busy loops on the 2 cores; goal: 0 reassignments",
        options.idle_minutes
    ));
    let mut table = Table::new(&["profile", "samples", "reassignments", "verdict"]);
    for result in &results {
        table.row(vec![
            result.profile.to_owned(),
            result.samples.to_string(),
            result.reassignments.to_string(),
            if result.reassignments == 0 { "met".to_owned() } else { "MISSED".to_owned() },
        ]);
        values.put(&format!("idle_{}_reassignments", result.profile), result.reassignments);
        values.put(&format!("idle_{}_samples", result.profile), result.samples);
    }
    table.print();
    for result in &results {
        for change in &result.changes {
            say(&format!("  {}: {change}", result.profile));
        }
    }
    Ok(())
}
