//! `fechter`: the command-line client of fechterd.
//!
//! Exit codes: 0 on success, 1 when the command failed (invalid argument, daemon unreachable, error
//! reply), 2 for usage errors (clap's own code). Nothing is printed on the success of a changing
//! command, as in the original Fechter.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use serde::Serialize;

use fechter_cli::cli::{self, Cli, CliCommand, Switch};
use fechter_cli::proto::{Body, Command, Outcome, Request};
use fechter_cli::{client, keygen, output, resource};

fn main() -> ExitCode {
    // Clap prints usage errors itself and exits with 2, and exits with 0 after --help or --version.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report_error(&error);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let socket = cli.socket.as_path();
    match cli.command {
        CliCommand::AddAddress { resource } => {
            let spec = resource::parse_add_argument(&resource)?;
            let command = Command::AddAddress {
                interface: spec.interface,
                address: spec.address,
                prefix_len: spec.prefix_len,
            };
            expect_done(request(socket, command)?)
        }
        CliCommand::RemoveAddress { resource } => {
            let entry = resource::parse_remove_argument(&resource)?;
            let command = Command::RemoveAddress { interface: entry.interface, address: entry.address };
            expect_done(request(socket, command)?)
        }
        CliCommand::Up => expect_done(request(socket, Command::Up)?),
        CliCommand::Down => expect_done(request(socket, Command::Down)?),
        CliCommand::Maintenance { state } => {
            expect_done(request(socket, Command::Maintenance { on: state == Switch::On })?)
        }
        CliCommand::Status(args) => {
            let Body::Status(report) = request(socket, Command::Status)? else {
                bail!(unexpected_reply("status"));
            };
            if args.json {
                write_json(&report)
            } else {
                write_lines(&output::status_lines(&report, args.naming()))
            }
        }
        CliCommand::Info(args) => {
            let Body::Info(report) = request(socket, Command::Info)? else {
                bail!(unexpected_reply("info"));
            };
            if args.json {
                write_json(&report)
            } else {
                write_lines(&output::info_lines(&report, args.naming()))
            }
        }
        CliCommand::Connectivity => {
            let Body::Connectivity(report) = request(socket, Command::Connectivity)? else {
                bail!(unexpected_reply("connectivity"));
            };
            write_lines(&[output::connectivity_line(&report)])
        }
        CliCommand::Keygen => {
            let key =
                keygen::new_cluster_key().context("cannot read random bytes from the operating system")?;
            write_lines(&[key])
        }
        CliCommand::Completions { shell } => write_stdout(&cli::completion_script(shell)),
        CliCommand::Man => write_stdout(&cli::man_page().context("cannot render the man page")?),
    }
}

/// Sends one command and returns the body of a successful reply; an error reply becomes an error
/// carrying the daemon's message.
fn request(socket: &Path, command: Command) -> anyhow::Result<Body> {
    let reply = client::exchange(socket, &Request::new(command))?;
    match reply.outcome {
        Outcome::Ok(body) => Ok(body),
        Outcome::Error { message, .. } => Err(anyhow!(message)),
    }
}

fn expect_done(body: Body) -> anyhow::Result<()> {
    match body {
        Body::Done => Ok(()),
        _ => bail!(unexpected_reply("a changing command")),
    }
}

fn unexpected_reply(command: &str) -> String {
    format!("fechterd answered {command} with a reply of another kind")
}

fn write_json(report: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(report).context("cannot encode the report as JSON")?;
    text.push('\n');
    write_stdout(text.as_bytes())
}

fn write_lines(lines: &[impl AsRef<str>]) -> anyhow::Result<()> {
    let mut text = String::new();
    for line in lines {
        text.push_str(line.as_ref());
        text.push('\n');
    }
    write_stdout(text.as_bytes())
}

/// Writes the whole output at once; a reader that went away (`fechter status | head -1`) is not an
/// error, just as it is not for the usual Unix tools.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => {
            Err(error).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

fn report_error(error: &anyhow::Error) {
    // With stderr gone there is nowhere left to report to; the exit code still tells.
    let _ = writeln!(io::stderr(), "error: {error:#}");
}
