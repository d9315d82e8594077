//! Keeping the merged pool on disk, so that a restart of the whole cluster keeps it.
//!
//! The file is `<state-dir>/pool.json`. Saving writes a temporary file, syncs it, renames it over
//! the old one and syncs the directory, so a crash leaves either the old or the new pool, never a
//! torn one. A crash between creating and renaming the temporary file leaves it behind, possibly
//! half written; it is never read, and loading removes it. A file that cannot be read as a pool is
//! moved aside (`pool.json.corrupt-<ms>`) and the node starts empty: its peers still hold the pool
//! and gossip gives it back.

use std::fs::{self, File};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::info;

use crate::pool::{Pool, PoolRecord};

/// The name of the pool file inside the state directory.
pub const POOL_FILE: &str = "pool.json";

/// The format version written into the file.
const FORMAT_VERSION: u32 = 1;

/// A failure to read or write the state directory.
#[derive(Debug, Error)]
pub enum PersistError {
    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What loading the pool found.
#[derive(Debug)]
pub enum Loaded {
    /// There was no pool file: a first start.
    Missing,
    /// The pool as saved.
    Pool(Pool),
    /// The file was unreadable; it was moved aside and the node starts with an empty pool.
    Corrupt {
        /// Where the bad file is now.
        moved_to: PathBuf,
        /// Why it could not be read.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct PoolFile {
    version: u32,
    addresses: Vec<SavedRecord>,
}

#[derive(Serialize, Deserialize)]
struct SavedRecord {
    address: IpAddr,
    #[serde(flatten)]
    record: PoolRecord,
}

/// Loads `<dir>/pool.json`, removing the temporary file of a save that a crash interrupted.
/// `now_ms` names the file a corrupt pool is moved to.
pub fn load_pool(dir: &Path, now_ms: u64) -> Result<Loaded, PersistError> {
    remove_interrupted_write(dir, POOL_FILE)?;
    let path = dir.join(POOL_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(source) => return Err(PersistError::Io { action: "reading", path, source }),
    };
    match parse(&bytes) {
        Ok(pool) => Ok(Loaded::Pool(pool)),
        Err(reason) => {
            let moved_to = dir.join(format!("{POOL_FILE}.corrupt-{now_ms}"));
            fs::rename(&path, &moved_to).map_err(|source| PersistError::Io {
                action: "moving aside the corrupt",
                path: path.clone(),
                source,
            })?;
            Ok(Loaded::Corrupt { moved_to, reason })
        }
    }
}

fn parse(bytes: &[u8]) -> Result<Pool, String> {
    let file: PoolFile = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
    if file.version != FORMAT_VERSION {
        return Err(format!("unsupported format version {} (expected {FORMAT_VERSION})", file.version));
    }
    let mut pool = Pool::new();
    for saved in file.addresses {
        saved
            .record
            .validate(saved.address)
            .map_err(|error| format!("bad record for {}: {error}", saved.address))?;
        pool.merge(saved.address, saved.record);
    }
    Ok(pool)
}

/// Saves `pool` as `<dir>/pool.json` atomically, creating `dir` if needed.
pub fn save_pool(dir: &Path, pool: &Pool) -> Result<(), PersistError> {
    let file = PoolFile {
        version: FORMAT_VERSION,
        addresses: pool
            .records()
            .map(|(address, record)| SavedRecord { address, record: record.clone() })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|error| PersistError::Io {
        action: "encoding",
        path: dir.join(POOL_FILE),
        source: std::io::Error::other(error),
    })?;
    bytes.push(b'\n');
    write_atomically(dir, POOL_FILE, &bytes)
}

/// Removes the temporary file that [`write_atomically`] leaves behind when a crash interrupts it
/// before the rename; call it before reading `<dir>/<name>` at start.
pub fn remove_interrupted_write(dir: &Path, name: &str) -> Result<(), PersistError> {
    let temporary = dir.join(format!("{name}.tmp"));
    match fs::remove_file(&temporary) {
        Ok(()) => {
            info!(file = %temporary.display(), "removed the temporary file of an interrupted save");
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PersistError::Io { action: "removing the leftover", path: temporary, source }),
    }
}

/// Writes `bytes` as `<dir>/<name>` so that a crash leaves either the old or the new file: a
/// temporary file is written and synced, renamed into place, and the directory synced.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), PersistError> {
    fs::create_dir_all(dir).map_err(|source| PersistError::Io {
        action: "creating the state directory",
        path: dir.to_owned(),
        source,
    })?;
    let temporary = dir.join(format!("{name}.tmp"));
    let final_path = dir.join(name);
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| PersistError::Io { action, path, source }
    };
    let mut out = File::create(&temporary).map_err(io("creating", &temporary))?;
    out.write_all(bytes).map_err(io("writing", &temporary))?;
    out.sync_all().map_err(io("syncing", &temporary))?;
    drop(out);
    fs::rename(&temporary, &final_path).map_err(io("renaming into place", &final_path))?;
    // The rename is durable only once the directory entry is.
    File::open(dir).and_then(|directory| directory.sync_all()).map_err(io("syncing", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Stamp;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fechterd-persist-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn sample_pool() -> Pool {
        let mut pool = Pool::new();
        for (index, address) in ["198.18.0.20", "2001:db8::7"].iter().enumerate() {
            let address: IpAddr = address.parse().unwrap();
            let stamp = Stamp { wall_ms: 10 + index as u64, counter: 0, node: "n".into() };
            let record = pool.plan_add("eth0", address, None, stamp).unwrap();
            pool.merge(address, record);
        }
        pool
    }

    #[test]
    fn a_saved_pool_loads_back_identical() {
        let dir = scratch_dir("roundtrip");
        assert!(matches!(load_pool(&dir, 0).unwrap(), Loaded::Missing));
        let pool = sample_pool();
        save_pool(&dir, &pool).unwrap();
        save_pool(&dir, &pool).unwrap();
        match load_pool(&dir, 0).unwrap() {
            Loaded::Pool(loaded) => assert_eq!(loaded, pool),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!dir.join("pool.json.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_half_written_temporary_file_is_ignored_and_removed() {
        let dir = scratch_dir("leftover");
        let pool = sample_pool();
        save_pool(&dir, &pool).unwrap();
        fs::write(dir.join("pool.json.tmp"), "{\"version\":1,\"addr").unwrap();
        match load_pool(&dir, 0).unwrap() {
            Loaded::Pool(loaded) => assert_eq!(loaded, pool),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!dir.join("pool.json.tmp").exists());
        // A crash before the first rename leaves only the temporary file: that is no pool at all.
        fs::remove_file(dir.join(POOL_FILE)).unwrap();
        fs::write(dir.join("pool.json.tmp"), "{").unwrap();
        assert!(matches!(load_pool(&dir, 0).unwrap(), Loaded::Missing));
        assert!(!dir.join("pool.json.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        for (name, contents) in [
            ("garbage", "{ not json".to_owned()),
            ("version", r#"{"version":9,"addresses":[]}"#.to_owned()),
            (
                "record",
                r#"{"version":1,"addresses":[{"address":"127.0.0.1","interface":"eth0","prefix_len":32,
                "active":true,"added":{"wall_ms":1,"counter":0,"node":"n"},"changed":{"wall_ms":1,"counter":0,"node":"n"}}]}"#
                    .to_owned(),
            ),
        ] {
            let dir = scratch_dir(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(POOL_FILE), contents).unwrap();
            match load_pool(&dir, 42).unwrap() {
                Loaded::Corrupt { moved_to, reason } => {
                    assert_eq!(moved_to, dir.join("pool.json.corrupt-42"));
                    assert!(moved_to.exists());
                    assert!(!reason.is_empty());
                }
                other => panic!("unexpected {other:?}"),
            }
            assert!(matches!(load_pool(&dir, 43).unwrap(), Loaded::Missing));
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}
