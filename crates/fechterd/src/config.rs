//! Options from a TOML file as well as from the command line, and what a reload may change.
//!
//! `--config FILE` names a TOML file whose keys are the long option names, with their dashes:
//! `listen-address = "198.18.0.11"`, `attach = ["198.18.0.12", "198.18.0.13:4000"]`, `up = true`,
//! `dead-at = 8.0`. Every option can be set there except `config` itself. The command line (and
//! an option's environment variable, such as `FECHTER_SOCKET`) overrides the file, option by
//! option; a list given on the command line replaces the file's list instead of adding to it.
//!
//! The file is turned into command-line arguments placed before the real ones, and the result is
//! parsed by the one clap definition of [`Options`]: a value from the file is checked exactly as
//! the same value on the command line would be, and an option added to [`Options`] is at once
//! accepted in the file, with no second list to keep in step.
//!
//! On SIGHUP the daemon loads its options again the same way and compares them with the running
//! ones by their textual values ([`diff`]). The options in [`RELOADABLE`] take effect at once;
//! every other change is reported and ignored until a restart (the gossip driver takes its
//! interval, phi threshold, keys, port and cluster id at start, for example).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches};
use thiserror::Error;

use crate::options::Options;

/// The options a SIGHUP applies without a restart.
pub const RELOADABLE: &[&str] = &[
    "log-level",
    "announce-count",
    "announce-interval-ms",
    "refresh-interval-s",
    "ping-interval-ms",
    "ping-timeout-ms",
    "quorum",
];

/// The long name of the option naming the file; the file cannot set it.
const CONFIG_OPTION: &str = "config";

/// Every option's effective value(s) as text, by long name: what a reload compares.
pub type OptionValues = BTreeMap<String, Vec<String>>;

/// Options as loaded from the command line and the file.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The parsed options.
    pub options: Options,
    /// Their values as text, for [`diff`].
    pub values: OptionValues,
}

/// Why the options could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The command line, or a value from the file, is not valid (or help was asked for).
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// The configuration file could not be read.
    #[error("reading the configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML, or a key or value in it does not fit.
    #[error("the configuration file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Parses `args` (the program name first), reading the file `--config` names, if any.
pub fn load(args: &[OsString]) -> Result<Loaded, ConfigError> {
    // A first, lenient pass finds `--config` and which options the command line sets, even when
    // required options are left to the file.
    let command_line = Options::command().ignore_errors(true).try_get_matches_from(args)?;
    let Some(path) = command_line.get_one::<PathBuf>(&id_of(CONFIG_OPTION)).cloned() else {
        return parse(args.iter().cloned());
    };
    let text =
        std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
    let explicit = |long: &str| {
        command_line
            .value_source(&id_of(long))
            .is_some_and(|source| matches!(source, ValueSource::CommandLine | ValueSource::EnvVariable))
    };
    let file_args = file_arguments(&text, explicit)
        .map_err(|message| ConfigError::File { path: path.clone(), message })?;
    let mut merged = Vec::with_capacity(args.len() + file_args.len());
    merged.extend(args.first().cloned());
    merged.extend(file_args.into_iter().map(OsString::from));
    merged.extend(args.iter().skip(1).cloned());
    parse(merged)
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Loaded, ConfigError> {
    let matches = Options::command().try_get_matches_from(args)?;
    let options = Options::from_arg_matches(&matches)?;
    let mut values = OptionValues::new();
    for arg in Options::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == CONFIG_OPTION || !arg.get_action().takes_values() && !is_flag(arg.get_action()) {
            continue;
        }
        let texts = matches
            .get_raw(arg.get_id().as_str())
            .map(|raw| raw.map(|value| value.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        values.insert(long.to_owned(), texts);
    }
    Ok(Loaded { options, values })
}

/// The clap id of the option with long name `long` (derive names it after the field).
fn id_of(long: &str) -> String {
    Options::command()
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .map_or_else(|| long.replace('-', "_"), |arg| arg.get_id().to_string())
}

fn is_flag(action: &ArgAction) -> bool {
    matches!(action, ArgAction::SetTrue | ArgAction::SetFalse)
}

/// The command-line arguments the TOML `text` stands for, leaving out the options for which
/// `explicit` says the command line has its own value.
pub fn file_arguments(text: &str, explicit: impl Fn(&str) -> bool) -> Result<Vec<String>, String> {
    let table: toml::Table = text.parse().map_err(|error: toml::de::Error| error.message().to_owned())?;
    let command = Options::command();
    let mut args = Vec::new();
    for (key, value) in &table {
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()) && key != CONFIG_OPTION)
            .ok_or_else(|| format!("unknown option `{key}`"))?;
        if explicit(key) {
            continue;
        }
        let action = arg.get_action();
        if is_flag(action) {
            match value {
                toml::Value::Boolean(true) => args.push(format!("--{key}")),
                toml::Value::Boolean(false) => {}
                _ => return Err(format!("`{key}` is a switch: write `{key} = true` or `false`")),
            }
            continue;
        }
        let items = match value {
            toml::Value::Array(items) if matches!(action, ArgAction::Append) => items.as_slice(),
            toml::Value::Array(_) => return Err(format!("`{key}` takes one value, not a list")),
            single => std::slice::from_ref(single),
        };
        for item in items {
            let text = match item {
                toml::Value::String(text) => text.clone(),
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::Float(number) => number.to_string(),
                _ => return Err(format!("`{key}` takes a string or a number, not {}", item.type_str())),
            };
            // `--key=value` keeps a value that starts with a dash from reading as an option.
            args.push(format!("--{key}={text}"));
        }
    }
    Ok(args)
}

/// One option whose value differs between the running and the reloaded configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The long option name.
    pub option: String,
    /// The running value.
    pub from: String,
    /// The value now configured.
    pub to: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.option, self.from, self.to)
    }
}

/// What a reload does: the changes it applies and the ones that need a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Changes applied now.
    pub applied: Vec<Change>,
    /// Changes ignored until the daemon restarts.
    pub ignored: Vec<Change>,
}

impl Diff {
    /// Whether the option with long name `option` is among the applied changes.
    pub fn applies(&self, option: &str) -> bool {
        self.applied.iter().any(|change| change.option == option)
    }

    /// The one log line about the reload of `path`.
    pub fn summary(&self, path: Option<&Path>) -> String {
        let source = path.map_or_else(|| "the command line".to_owned(), |path| path.display().to_string());
        if self.applied.is_empty() && self.ignored.is_empty() {
            return format!("reloaded {source}: nothing changed");
        }
        let list = |changes: &[Change]| changes.iter().map(Change::to_string).collect::<Vec<_>>().join(", ");
        let mut line = format!("reloaded {source}: changed ");
        line.push_str(&if self.applied.is_empty() { "nothing".to_owned() } else { list(&self.applied) });
        if !self.ignored.is_empty() {
            line.push_str("; ignored until a restart: ");
            line.push_str(&list(&self.ignored));
        }
        line
    }
}

/// Compares the running option values with reloaded ones.
pub fn diff(running: &OptionValues, reloaded: &OptionValues) -> Diff {
    let mut result = Diff::default();
    let names = running.keys().chain(reloaded.keys()).collect::<std::collections::BTreeSet<_>>();
    for name in names {
        let (old, new) = (running.get(name), reloaded.get(name));
        if old == new {
            continue;
        }
        let show = |values: Option<&Vec<String>>| match values {
            Some(values) if !values.is_empty() => values.join(","),
            _ => "(unset)".to_owned(),
        };
        let change = Change { option: name.clone(), from: show(old), to: show(new) };
        if RELOADABLE.contains(&name.as_str()) {
            result.applied.push(change);
        } else {
            result.ignored.push(change);
        }
    }
    result
}

/// The option values in force after a reload: the reloadable ones as reloaded, the others as
/// they were, so that a change still waiting for a restart is reported again by the next reload.
pub fn in_force_after(running: &OptionValues, reloaded: &OptionValues) -> OptionValues {
    let mut values = running.clone();
    for name in RELOADABLE {
        match reloaded.get(*name) {
            Some(value) => values.insert((*name).to_owned(), value.clone()),
            None => values.remove(*name),
        };
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        std::iter::once("fechterd").chain(list.iter().copied()).map(OsString::from).collect()
    }

    fn scratch(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("fechterd-config-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn every_option_can_come_from_the_file() {
        let path = scratch(
            "all",
            r#"
            listen-address = "198.18.0.11"
            gateway = "198.18.0.1"
            port = 5000
            attach = ["198.18.0.12", "node-c:4000"]
            dead-at = 9.5
            state-dir = "/tmp/state"
            up = true
            quorum = 2
            refresh-interval-s = 0
            "#,
        );
        let loaded = load(&args(&["--config", path.to_str().unwrap()])).unwrap();
        let options = loaded.options;
        assert_eq!(options.node_id(), "198.18.0.11:5000");
        assert_eq!(options.gateway.to_string(), "198.18.0.1");
        assert_eq!(options.attach.len(), 2);
        assert_eq!(options.attach[1].to_string(), "node-c:4000");
        assert_eq!(options.dead_at, 9.5);
        assert_eq!(options.state_dir, PathBuf::from("/tmp/state"));
        assert!(options.up);
        assert_eq!((options.quorum, options.refresh_interval()), (2, None));
        assert_eq!(loaded.values["attach"], ["198.18.0.12", "node-c:4000"]);
        assert_eq!(loaded.values["up"], ["true"]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn the_command_line_overrides_the_file_option_by_option() {
        let path = scratch(
            "override",
            r#"
            listen-address = "198.18.0.11"
            gateway = "198.18.0.1"
            attach = ["198.18.0.12", "198.18.0.13"]
            quorum = 2
            announce-count = 5
            "#,
        );
        let file = path.to_str().unwrap();
        let loaded =
            load(&args(&["-a", "10.0.0.5", "--config", file, "-s", "10.0.0.6", "--quorum=3"])).unwrap();
        let options = loaded.options;
        assert_eq!(options.listen_address.to_string(), "10.0.0.5");
        assert_eq!(options.gateway.to_string(), "198.18.0.1");
        // A list on the command line replaces the file's list.
        assert_eq!(options.attach.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.0.6:4573"]);
        assert_eq!((options.quorum, options.announce_count), (3, 5));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases = [
            ("syntax", "listen-address = ", "the configuration file"),
            ("unknown", "listen-adress = \"10.0.0.1\"", "unknown option `listen-adress`"),
            ("itself", "config = \"/etc/x\"", "unknown option `config`"),
            ("switch", "up = \"yes\"", "is a switch"),
            ("list", "gateway = [\"10.0.0.1\", \"10.0.0.2\"]", "one value, not a list"),
            ("table", "quorum = { n = 2 }", "a string or a number"),
        ];
        for (name, text, expected) in cases {
            let path = scratch(name, text);
            let error = load(&args(&["--config", path.to_str().unwrap()])).unwrap_err();
            assert!(matches!(error, ConfigError::File { .. }), "{name}: {error}");
            assert!(error.to_string().contains(expected), "{name}: {error}");
            std::fs::remove_file(path).unwrap();
        }
        // Values are checked by the same parser as on the command line.
        let path = scratch("value", "listen-address = \"10.0.0.1\"\ngateway = \"10.0.0.2\"\ndead-at = 0\n");
        let error = load(&args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(matches!(error, ConfigError::Usage(_)), "{error}");
        std::fs::remove_file(path).unwrap();
        let missing = load(&args(&["--config", "/nonexistent/fechterd.toml"])).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/fechterd.toml"), "{missing}");
    }

    #[test]
    fn without_a_file_the_command_line_alone_counts() {
        let loaded = load(&args(&["-a", "10.0.0.5", "-g", "10.0.0.1"])).unwrap();
        assert_eq!(loaded.values["quorum"], ["0"]);
        assert_eq!(loaded.values["attach"], Vec::<String>::new());
        assert!(load(&args(&["-a", "10.0.0.5"])).is_err());
    }

    fn values(pairs: &[(&str, &[&str])]) -> OptionValues {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect())).collect()
    }

    #[test]
    fn a_reload_applies_what_it_can_and_reports_the_rest() {
        let running = values(&[
            ("quorum", &["0"]),
            ("log-level", &["info"]),
            ("dead-at", &["8"]),
            ("attach", &["10.0.0.2"]),
            ("ping-interval-ms", &["1000"]),
        ]);
        let reloaded = values(&[
            ("quorum", &["2"]),
            ("log-level", &["info"]),
            ("dead-at", &["9"]),
            ("attach", &[]),
            ("ping-interval-ms", &["1000"]),
        ]);
        let result = diff(&running, &reloaded);
        assert_eq!(result.applied, [Change { option: "quorum".into(), from: "0".into(), to: "2".into() }]);
        assert_eq!(
            result.ignored.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["attach 10.0.0.2 -> (unset)", "dead-at 8 -> 9"]
        );
        assert!(result.applies("quorum") && !result.applies("dead-at"));
        assert_eq!(
            result.summary(Some(Path::new("/etc/fechter/fechterd.toml"))),
            "reloaded /etc/fechter/fechterd.toml: changed quorum 0 -> 2; \
             ignored until a restart: attach 10.0.0.2 -> (unset), dead-at 8 -> 9"
        );
        // What is in force keeps the ignored values, so the next reload reports them again.
        let in_force = in_force_after(&running, &reloaded);
        assert_eq!(in_force["quorum"], ["2"]);
        assert_eq!(in_force["dead-at"], ["8"]);
        let again = diff(&in_force, &reloaded);
        assert!(again.applied.is_empty() && again.ignored.len() == 2);
        assert_eq!(diff(&reloaded, &reloaded).summary(None), "reloaded the command line: nothing changed");
    }

    #[test]
    fn every_reloadable_name_is_a_real_option() {
        let command = Options::command();
        for name in RELOADABLE {
            assert!(command.get_arguments().any(|arg| arg.get_long() == Some(name)), "{name}");
        }
    }
}
