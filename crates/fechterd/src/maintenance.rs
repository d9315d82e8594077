//! Cluster-wide maintenance mode: every assignment frozen while an operator upgrades or
//! reconfigures the cluster.
//!
//! The flag is a [`MaintenanceRecord`] under the gossip key `maintenance`. Like a pool record, it
//! carries a hybrid-clock stamp, and across every node's key, alive or dead, the record with the
//! greatest stamp wins, so `fechter maintenance on` through any node reaches the whole cluster and
//! a later `off` through any other node ends it. Every node keeps the winning record in
//! `<state-dir>/maintenance.json`, re-publishes it at start, and the leader re-publishes it when
//! no live node does any more, so the flag survives a restart of the whole cluster.
//!
//! While the flag is on:
//! - the leader publishes no decision, so the last assignment stands, even a dead node's;
//! - no node acquires or releases an address, whether it dies, loses its gateway, goes admin
//!   down, or the pool changes. Since nobody acquires, nobody needs to release to keep an address
//!   on one machine, and the split-brain guard has nothing to guard;
//! - a daemon stopped with SIGTERM leaves its addresses on its interfaces, and one that starts
//!   keeps the addresses it finds there, so fechterd itself can be upgraded without moving traffic.
//!
//! Pool changes are accepted and replicated, and take effect when maintenance ends. When it ends,
//! the leader decides again from the actual holdings, so addresses stay where they are unless a
//! node is dead or ineligible: those move as they would have.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hlc::Stamp;
use crate::persist::{PersistError, write_atomically};

/// The gossip key of a node's [`MaintenanceRecord`].
pub const MAINTENANCE_KEY: &str = "maintenance";

/// The file the winning record is kept in, inside the state directory.
pub const MAINTENANCE_FILE: &str = "maintenance.json";

/// Whether maintenance mode is on, and when that was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceRecord {
    /// Whether maintenance mode is on.
    pub on: bool,
    /// When an operator said so; the greatest stamp wins.
    pub changed: Stamp,
}

/// The cluster-wide flag as this node knows it: the winning record, if any was ever written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    record: Option<MaintenanceRecord>,
}

impl Maintenance {
    /// The flag starting from a saved record (or none: off).
    pub fn new(record: Option<MaintenanceRecord>) -> Maintenance {
        Maintenance { record }
    }

    /// Whether maintenance mode is on.
    pub fn is_on(&self) -> bool {
        self.record.as_ref().is_some_and(|record| record.on)
    }

    /// The winning record.
    pub fn record(&self) -> Option<&MaintenanceRecord> {
        self.record.as_ref()
    }

    /// Keeps `record` if it is newer than the one known; returns whether it was.
    pub fn merge(&mut self, record: MaintenanceRecord) -> bool {
        if self.record.as_ref().is_some_and(|known| known.changed >= record.changed) {
            return false;
        }
        self.record = Some(record);
        true
    }
}

/// Decodes the `maintenance` key among one node's keys: `None` without one, an error message for
/// one that does not decode (it comes from a peer, so it is skipped, never trusted).
pub fn decode(keys: &BTreeMap<String, Vec<u8>>) -> Option<Result<MaintenanceRecord, String>> {
    let value = keys.get(MAINTENANCE_KEY)?;
    Some(serde_json::from_slice(value).map_err(|error| error.to_string()))
}

/// What loading the saved flag found.
#[derive(Debug, PartialEq, Eq)]
pub enum LoadedMaintenance {
    /// No file: maintenance was never set here.
    Missing,
    /// The saved record.
    Record(MaintenanceRecord),
    /// The file was unreadable; it was moved aside, and the node relearns the flag from peers.
    Corrupt {
        /// Where the bad file is now.
        moved_to: PathBuf,
        /// Why it could not be read.
        reason: String,
    },
}

/// Loads `<dir>/maintenance.json`; `now_ms` names the file a corrupt one is moved to.
pub fn load(dir: &Path, now_ms: u64) -> Result<LoadedMaintenance, PersistError> {
    let path = dir.join(MAINTENANCE_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(LoadedMaintenance::Missing),
        Err(source) => return Err(PersistError::Io { action: "reading", path, source }),
    };
    match serde_json::from_slice(&bytes) {
        Ok(record) => Ok(LoadedMaintenance::Record(record)),
        Err(error) => {
            let moved_to = dir.join(format!("{MAINTENANCE_FILE}.corrupt-{now_ms}"));
            fs::rename(&path, &moved_to).map_err(|source| PersistError::Io {
                action: "moving aside the corrupt",
                path: path.clone(),
                source,
            })?;
            Ok(LoadedMaintenance::Corrupt { moved_to, reason: error.to_string() })
        }
    }
}

/// Loads the saved flag at start, logging a corrupt file (moved aside: the flag is relearned from
/// peers) instead of failing; `None` when maintenance was never set here.
pub fn load_at_start(dir: &Path, now_ms: u64) -> Result<Option<MaintenanceRecord>, PersistError> {
    Ok(match load(dir, now_ms)? {
        LoadedMaintenance::Missing => None,
        LoadedMaintenance::Record(record) => Some(record),
        LoadedMaintenance::Corrupt { moved_to, reason } => {
            tracing::error!(
                moved_to = %moved_to.display(),
                %reason,
                "the saved maintenance flag is corrupt; relearning it from peers"
            );
            None
        }
    })
}

/// Saves `record` as `<dir>/maintenance.json` atomically.
pub fn save(dir: &Path, record: &MaintenanceRecord) -> Result<(), PersistError> {
    let mut bytes = serde_json::to_vec_pretty(record).map_err(|error| PersistError::Io {
        action: "encoding",
        path: dir.join(MAINTENANCE_FILE),
        source: std::io::Error::other(error),
    })?;
    bytes.push(b'\n');
    write_atomically(dir, MAINTENANCE_FILE, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(on: bool, wall_ms: u64, node: &str) -> MaintenanceRecord {
        MaintenanceRecord { on, changed: Stamp { wall_ms, counter: 0, node: node.into() } }
    }

    #[test]
    fn the_latest_stamp_wins_in_any_order() {
        let records = [record(true, 10, "a"), record(false, 20, "b"), record(true, 20, "c")];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let mut flag = Maintenance::default();
            assert!(!flag.is_on());
            for index in order {
                flag.merge(records[index].clone());
            }
            assert_eq!(flag.record(), Some(&records[2]), "{order:?}");
            assert!(flag.is_on());
        }
        let mut flag = Maintenance::new(Some(record(true, 30, "a")));
        assert!(!flag.merge(record(false, 29, "z")));
        assert!(!flag.merge(record(true, 30, "a")));
        assert!(flag.merge(record(false, 31, "a")));
        assert!(!flag.is_on());
    }

    #[test]
    fn keys_decode_or_report_their_problem() {
        let mut keys = BTreeMap::new();
        assert_eq!(decode(&keys), None);
        keys.insert(MAINTENANCE_KEY.to_owned(), crate::cluster::encode(&record(true, 5, "n")));
        assert_eq!(decode(&keys), Some(Ok(record(true, 5, "n"))));
        keys.insert(MAINTENANCE_KEY.to_owned(), b"{\"on\":\"yes\"}".to_vec());
        assert!(matches!(decode(&keys), Some(Err(_))));
    }

    #[test]
    fn the_flag_is_saved_loaded_and_a_corrupt_file_moved_aside() {
        let dir = std::env::temp_dir().join(format!("fechterd-maintenance-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(load(&dir, 0).unwrap(), LoadedMaintenance::Missing);
        save(&dir, &record(true, 7, "n")).unwrap();
        assert_eq!(load(&dir, 0).unwrap(), LoadedMaintenance::Record(record(true, 7, "n")));
        fs::write(dir.join(MAINTENANCE_FILE), "{ torn").unwrap();
        match load(&dir, 42).unwrap() {
            LoadedMaintenance::Corrupt { moved_to, reason } => {
                assert_eq!(moved_to, dir.join("maintenance.json.corrupt-42"));
                assert!(moved_to.exists() && !reason.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(load(&dir, 43).unwrap(), LoadedMaintenance::Missing);
        fs::remove_dir_all(&dir).unwrap();
    }
}
