//! The spill file: records the store could not take at shutdown, one JSON object a
//! line beside the ledger, written back into the store at the next start.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::error::{StoreError, StoreResult};
use super::{LedgerRecord, LedgerStore};

/// `ledger.db` → `ledger.db.spill.jsonl`.
pub fn path_for(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".spill.jsonl");
    PathBuf::from(name)
}

/// Appends `records` to the spill file (there may be one left from an earlier run);
/// true when they are on disk.
pub fn save(path: Option<&Path>, records: &[LedgerRecord]) -> bool {
    if records.is_empty() {
        return true;
    }
    let Some(path) = path else {
        tracing::error!(
            records = records.len(),
            "the ledger store failed at shutdown and the ledger is in memory: records lost"
        );
        return false;
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| {
            for r in records {
                serde_json::to_writer(&mut file, r)?;
                file.write_all(b"\n")?;
            }
            file.sync_all()
        });
    match written {
        Ok(()) => {
            tracing::warn!(records = records.len(), path = %path.display(), "ledger store failing at shutdown: records spilled, replayed at the next start");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, records = records.len(), "cannot write the ledger spill file: records lost");
            false
        }
    }
}

/// Writes spilled records into `store` and removes the file. The store ignores
/// records it already has, so a replay interrupted halfway can simply run again.
pub fn replay(path: &Path, store: &mut dyn LedgerStore) -> StoreResult<()> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let mut records = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let record: LedgerRecord =
            serde_json::from_str(&line).map_err(|source| StoreError::Spill {
                path: path.to_owned(),
                line: i + 1,
                source,
            })?;
        records.push(record);
    }
    for batch in records.chunks(512) {
        store
            .write(batch)
            .map_err(|e| StoreError::Replay(Box::new(e)))?;
    }
    std::fs::remove_file(path).map_err(io)?;
    tracing::info!(records = records.len(), "replayed spilled ledger records");
    Ok(())
}
