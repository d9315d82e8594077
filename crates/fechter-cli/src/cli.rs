//! The command line of `fechter`, declared once with clap so that the parser, the help text, the
//! shell completions and the man page can never disagree.

use std::io;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

use crate::output::NodeNaming;
use crate::proto::{DEFAULT_SOCKET, SOCKET_ENV};

/// The program name in help, completions and the man page.
pub const BIN_NAME: &str = "fechter";

/// Control a fechter high-availability cluster through the local fechterd.
#[derive(Debug, Parser)]
#[command(name = BIN_NAME, version)]
pub struct Cli {
    /// The control socket of the local fechterd.
    #[arg(long, global = true, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The subcommands of `fechter`.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Add an address to the cluster's pool; some node will hold it.
    AddAddress {
        /// The interface to install it on and the address, e.g. eth0:10.0.0.20/24 or eth0:2001:db8::20/64.
        /// Without a prefix length the address is a /32 or /128.
        #[arg(value_name = "IFNAME:ADDRESS[/PREFIX]")]
        resource: String,
    },
    /// Remove an address from the cluster's pool; whichever node holds it releases it.
    RemoveAddress {
        /// The interface and address as they were added, e.g. eth0:10.0.0.20.
        #[arg(value_name = "IFNAME:ADDRESS")]
        resource: String,
    },
    /// Declare this node ready to hold addresses.
    Up,
    /// Declare this node not ready: its addresses move to other nodes.
    Down,
    /// Show each address in the pool and the node it is assigned to.
    Status(ReportArgs),
    /// Show the other nodes of the cluster and their state.
    Info(ReportArgs),
    /// Show whether this node can reach its gateway.
    Connectivity,
    /// Freeze every assignment cluster-wide (on) or resume failover (off). While it is on, no
    /// node acquires or releases an address, even when a node dies; use it for upgrades.
    Maintenance {
        /// `on` or `off`.
        #[arg(value_enum)]
        state: Switch,
    },
    /// Print a new cluster key for fechterd's --cluster-key-file.
    Keygen,
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// The argument of `maintenance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Turn it on.
    On,
    /// Turn it off.
    Off,
}

/// The options of the reporting commands `status` and `info`.
#[derive(Debug, Clone, Copy, Args)]
pub struct ReportArgs {
    /// Show node ids (ip:port) instead of addresses.
    #[arg(short = 'n', long)]
    pub numeric: bool,
    /// Print the daemon's whole report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ReportArgs {
    /// How nodes are named in the text output.
    pub fn naming(self) -> NodeNaming {
        if self.numeric { NodeNaming::Id } else { NodeNaming::Address }
    }
}

/// The completion script for `shell`.
pub fn completion_script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN_NAME, &mut script);
    script
}

/// The man page, in roff.
pub fn man_page() -> io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn socket_defaults_and_can_follow_the_command() {
        let cli = Cli::try_parse_from(["fechter", "up"]).unwrap();
        // The environment of the test run may set FECHTER_SOCKET; the default applies only without it.
        if std::env::var_os(SOCKET_ENV).is_none() {
            assert_eq!(cli.socket, PathBuf::from(DEFAULT_SOCKET));
        }
        let cli = Cli::try_parse_from(["fechter", "status", "-n", "--socket", "/tmp/s"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/s"));
        assert!(matches!(cli.command, CliCommand::Status(ReportArgs { numeric: true, json: false })));
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        let cases: [&[&str]; 9] = [
            &["fechter"],
            &["fechter", "reboot"],
            &["fechter", "add-address"],
            &["fechter", "add-address", "eth0:10.0.0.1", "extra"],
            &["fechter", "up", "now"],
            &["fechter", "connectivity", "-n"],
            &["fechter", "completions", "cmd.exe"],
            &["fechter", "maintenance"],
            &["fechter", "maintenance", "maybe"],
        ];
        for args in cases {
            let error = Cli::try_parse_from(args).expect_err(&args.join(" "));
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn completions_and_man_page_are_generated() {
        let script = String::from_utf8(completion_script(Shell::Bash)).unwrap();
        assert!(script.contains("add-address"));
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.contains(".TH fechter"));
        assert!(page.contains("remove\\-address"));
    }
}
