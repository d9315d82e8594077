//! Finding the `fechterd` and `fechter` binaries under test, and refusing stale ones.
//!
//! `cargo test --workspace` builds the binaries of a package only when that package has
//! integration tests of its own, so a test run can meet binaries older than their sources. Testing
//! a daemon that is not the one in the working tree passes or fails for the wrong reasons, so the
//! lab reads the dep-info file cargo writes beside each binary (`fechterd.d`: the binary, a colon,
//! and every source file it was built from) and refuses a binary older than one of those files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

/// The real binaries the lab runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// The daemon, `fechterd`.
    pub daemon: PathBuf,
    /// The command-line client, `fechter`.
    pub cli: PathBuf,
}

const BUILD_HINT: &str = "run `cargo build --workspace --bins` (with --release for a release build) first, \
                          or point FECHTER_BIN_DIR at the directory holding fechterd and fechter";

impl Binaries {
    /// Finds both binaries in `$FECHTER_BIN_DIR` when set, else next to the running executable or
    /// one directory up: a test binary lives in `target/<profile>/deps/`, the demo in
    /// `target/<profile>/`, and cargo puts the workspace's binaries in `target/<profile>/`. Fails
    /// when they are missing or older than a source file they were built from.
    pub fn locate() -> Result<Binaries> {
        let candidates = match std::env::var_os("FECHTER_BIN_DIR") {
            Some(dir) => vec![PathBuf::from(dir)],
            None => {
                let exe = std::env::current_exe().context("cannot find the running executable")?;
                exe.ancestors().skip(1).take(2).map(Path::to_path_buf).collect()
            }
        };
        let Some(binaries) = candidates.iter().find_map(|dir| {
            let (daemon, cli) = (dir.join("fechterd"), dir.join("fechter"));
            (daemon.is_file() && cli.is_file()).then_some(Binaries { daemon, cli })
        }) else {
            let searched: Vec<String> = candidates.iter().map(|dir| dir.display().to_string()).collect();
            bail!("fechterd and fechter were not found in {}; {BUILD_HINT}", searched.join(" or "));
        };
        for binary in [&binaries.daemon, &binaries.cli] {
            if let Some(newer) = source_newer_than(binary)? {
                bail!("{} is older than its source {}; {BUILD_HINT}", binary.display(), newer.display());
            }
        }
        Ok(binaries)
    }
}

fn modified(path: &Path) -> Result<SystemTime> {
    fs::metadata(path)
        .and_then(|meta| meta.modified())
        .with_context(|| format!("cannot stat {}", path.display()))
}

/// A source file listed in `binary`'s dep-info that was modified after `binary`; `None` also when
/// there is no dep-info (binaries not built by cargo) or a listed file is gone (then cargo would
/// rebuild, but a deleted file is not worth failing over here).
fn source_newer_than(binary: &Path) -> Result<Option<PathBuf>> {
    let mut dep_info = binary.as_os_str().to_owned();
    dep_info.push(".d");
    let Ok(text) = fs::read_to_string(&dep_info) else { return Ok(None) };
    let built = modified(binary)?;
    for source in dep_info_sources(&text) {
        if let Ok(changed) = fs::metadata(&source).and_then(|meta| meta.modified())
            && changed > built
        {
            return Ok(Some(source));
        }
    }
    Ok(None)
}

/// The prerequisites of the first rule of a Makefile-style dep-info text (`target: a b\ c`).
fn dep_info_sources(text: &str) -> Vec<PathBuf> {
    let Some(rule) = text.lines().next() else { return Vec::new() };
    let Some((_, prerequisites)) = rule.split_once(": ") else { return Vec::new() };
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut chars = prerequisites.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => {
                if !current.is_empty() {
                    sources.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            other => current.push(other),
        }
    }
    if !current.is_empty() {
        sources.push(PathBuf::from(current));
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_prerequisites_of_a_dep_info_rule() {
        let text = "/t/debug/fechterd: /w/crates/a.rs /w/my\\ dir/b.rs\n\n/w/crates/a.rs:\n";
        assert_eq!(
            dep_info_sources(text),
            vec![PathBuf::from("/w/crates/a.rs"), PathBuf::from("/w/my dir/b.rs")]
        );
        assert!(dep_info_sources("").is_empty());
    }
}
