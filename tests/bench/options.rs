//! The command line of `fechter-bench`, parsed by hand: the root package does not depend on clap,
//! and a handful of flags do not justify adding it.

use std::fmt;

/// The measurements the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Scenario {
    /// Unplanned failover: cable pulled and process killed, fechter and keepalived side by side.
    Failover,
    /// Planned handover: `fechter down` and SIGTERM on the holder.
    Handover,
    /// A node holding 200 addresses fails; time until all of them answer again.
    Many,
    /// Idle memory and CPU per daemon, fechterd next to keepalived.
    Footprint,
    /// Five idle nodes under CPU load for minutes; any reassignment is a false failover.
    Idle,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub(crate) const ALL: [Scenario; 5] =
        [Scenario::Failover, Scenario::Handover, Scenario::Many, Scenario::Footprint, Scenario::Idle];

    /// The name used on the command line and in the `key=value` lines.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Failover => "failover",
            Scenario::Handover => "handover",
            Scenario::Many => "many",
            Scenario::Footprint => "footprint",
            Scenario::Idle => "idle",
        }
    }

    /// Whether the scenario belongs to the default set; `idle` takes ten minutes and does not.
    pub(crate) fn is_short(self) -> bool {
        self != Scenario::Idle
    }

    fn parse(text: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|scenario| scenario.name() == text)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The fast profile's daemon arguments unless `--fast-args` says otherwise: half the gossip
/// interval of the default, so heartbeats arrive twice as often and a silence shows sooner.
pub(crate) const DEFAULT_FAST_ARGS: &str = "--gossip-interval-ms 50";

/// What a benchmark run measures and how often.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BenchOptions {
    /// Runs per fechter configuration in `failover` and `handover`.
    pub(crate) runs: usize,
    /// Runs per keepalived configuration in `failover`; 0 leaves keepalived out.
    pub(crate) keepalived_runs: usize,
    /// Runs of `many`, whose setup is slower.
    pub(crate) many_runs: usize,
    /// The scenarios to run, in [`Scenario::ALL`] order, without repeats.
    pub(crate) scenarios: Vec<Scenario>,
    /// How long `idle` lasts.
    pub(crate) idle_minutes: f64,
    /// How long `footprint` measures CPU time.
    pub(crate) footprint_seconds: u64,
    /// The extra daemon arguments of fechter's fast profile.
    pub(crate) fast_args: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Invocation {
    /// Print the usage and exit.
    Help,
    /// Run the benchmark.
    Run(BenchOptions),
    /// Internal: probe addresses by TCP connect from inside the client's namespace.
    ConnectHelper,
}

/// The usage text of `--help`.
pub(crate) const USAGE: &str = "\
fechter-bench: fechter's failover measured side by side with keepalived in a namespace LAN (needs root)

USAGE: fechter-bench [OPTIONS]

OPTIONS:
  --runs N               runs per fechter configuration (default 10)
  --keepalived-runs N    runs per keepalived configuration (default: --runs; 0 leaves keepalived out)
  --many-runs N          runs of the 200-address scenario (default: --runs, at most 5)
  --scenario NAME        failover, handover, many, footprint or idle; repeatable
                         (default: all but idle, which lasts minutes)
  --idle-minutes M       length of the idle scenario (default 10; fractions allowed)
  --footprint-seconds S  CPU measuring interval of the footprint scenario (default 30)
  --fast-args \"ARGS\"     fechterd arguments of the fast profile (default \"--gossip-interval-ms 50\")
  -h, --help             this text

The binaries fechterd and fechter are taken from the directory of fechter-bench (or $FECHTER_BIN_DIR).";

/// Parses the arguments after the program name.
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Invocation, String> {
    let mut runs = 10;
    let mut keepalived_runs = None;
    let mut many_runs = None;
    let mut scenarios = Vec::new();
    let mut idle_minutes = 10.0;
    let mut footprint_seconds = 30;
    let mut fast_args = DEFAULT_FAST_ARGS.to_owned();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Invocation::Help),
            "--connect-helper" => return Ok(Invocation::ConnectHelper),
            "--runs" => runs = count(&flag, &value(&flag)?, 1)?,
            "--keepalived-runs" => keepalived_runs = Some(count(&flag, &value(&flag)?, 0)?),
            "--many-runs" => many_runs = Some(count(&flag, &value(&flag)?, 1)?),
            "--scenario" => {
                let name = value(&flag)?;
                let scenario = Scenario::parse(&name).ok_or_else(|| {
                    let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                    format!("unknown scenario {name:?}; known: {}", known.join(", "))
                })?;
                scenarios.push(scenario);
            }
            "--idle-minutes" => {
                let text = value(&flag)?;
                idle_minutes = text
                    .parse::<f64>()
                    .ok()
                    .filter(|minutes| minutes.is_finite() && *minutes > 0.0 && *minutes <= 24.0 * 60.0)
                    .ok_or_else(|| {
                        format!("--idle-minutes needs a positive number of minutes, not {text:?}")
                    })?;
            }
            "--footprint-seconds" => footprint_seconds = count(&flag, &value(&flag)?, 1)? as u64,
            "--fast-args" => fast_args = value(&flag)?,
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    if scenarios.is_empty() {
        scenarios = Scenario::ALL.into_iter().filter(|scenario| scenario.is_short()).collect();
    }
    scenarios.sort_unstable();
    scenarios.dedup();
    Ok(Invocation::Run(BenchOptions {
        runs,
        keepalived_runs: keepalived_runs.unwrap_or(runs),
        many_runs: many_runs.unwrap_or(runs.min(5)),
        scenarios,
        idle_minutes,
        footprint_seconds,
        fast_args: fast_args.split_whitespace().map(str::to_owned).collect(),
    }))
}

fn count(flag: &str, text: &str, minimum: usize) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (minimum..=1000).contains(n))
        .ok_or_else(|| format!("{flag} needs a whole number from {minimum} to 1000, not {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<BenchOptions, String> {
        match parse(args.iter().map(|arg| (*arg).to_owned()))? {
            Invocation::Run(options) => Ok(options),
            other => Err(format!("not a run: {other:?}")),
        }
    }

    #[test]
    fn defaults_run_the_short_scenarios_ten_times() {
        let options = run(&[]).unwrap();
        assert_eq!(options.runs, 10);
        assert_eq!(options.keepalived_runs, 10);
        assert_eq!(options.many_runs, 5);
        assert_eq!(
            options.scenarios,
            [Scenario::Failover, Scenario::Handover, Scenario::Many, Scenario::Footprint]
        );
        assert_eq!(options.fast_args, ["--gossip-interval-ms", "50"]);
    }

    #[test]
    fn flags_take_separate_or_inline_values() {
        let options = run(&[
            "--runs=3",
            "--keepalived-runs",
            "0",
            "--scenario",
            "idle",
            "--scenario=failover",
            "--scenario",
            "idle",
            "--idle-minutes",
            "0.5",
            "--fast-args",
            "--gossip-interval-ms 40 -D 6",
        ])
        .unwrap();
        assert_eq!(options.runs, 3);
        assert_eq!(options.keepalived_runs, 0);
        assert_eq!(options.many_runs, 3);
        assert_eq!(options.scenarios, [Scenario::Failover, Scenario::Idle]);
        assert!((options.idle_minutes - 0.5).abs() < 1e-9);
        assert_eq!(options.fast_args, ["--gossip-interval-ms", "40", "-D", "6"]);
    }

    #[test]
    fn bad_arguments_are_explained() {
        assert!(run(&["--runs", "0"]).unwrap_err().contains("--runs"));
        assert!(run(&["--runs"]).unwrap_err().contains("needs a value"));
        assert!(run(&["--scenario", "nope"]).unwrap_err().contains("failover"));
        assert!(run(&["--idle-minutes", "-1"]).unwrap_err().contains("positive"));
        assert!(run(&["--frobnicate"]).unwrap_err().contains("unknown argument"));
        assert_eq!(parse(["--help".to_owned()]), Ok(Invocation::Help));
    }
}
