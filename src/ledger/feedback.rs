//! Feedback on served requests (`POST /v1/feedback`), kept in the ledger beside the
//! requests it rates, and read back joined to them by `crossroads calibrate --ledger`
//! and `crossroads feedback export`. The SQL is written once for both backends
//! ([`super::db`]); the tables are ledger migrations (`sqlite.rs`, `postgres.rs`).

use serde::{Deserialize, Serialize};

use super::LedgerReader;
use super::db::{Cell, Kind, Param};
use super::error::{StoreError, StoreResult};
use super::query::Filter;

/// A thumbs-up or -down, stored as the score 1 or 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Thumbs {
    Up,
    Down,
}

impl Thumbs {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "up" => Some(Thumbs::Up),
            "down" => Some(Thumbs::Down),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Thumbs::Up => "up",
            Thumbs::Down => "down",
        }
    }

    pub fn score(self) -> f64 {
        match self {
            Thumbs::Up => 1.0,
            Thumbs::Down => 0.0,
        }
    }
}

/// One verdict on a request, as stored and as `POST /v1/feedback` answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feedback {
    pub request_id: String,
    /// Unix ms when it was given.
    pub ts_ms: i64,
    /// The key that gave it; `None` for the admin key or an anonymous caller.
    pub key_id: Option<String>,
    pub team: Option<String>,
    /// From 0 (bad) to 1 (good); a thumbs-up is 1, a thumbs-down 0.
    pub score: f64,
    pub thumbs: Option<Thumbs>,
    /// The caller's own label, e.g. the domain it thinks was right, or `needed_frontier`.
    pub label: Option<String>,
    pub comment: Option<String>,
}

/// The key and team a request was made with: who may rate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub key_id: Option<String>,
    pub team: Option<String>,
}

/// A feedback row joined to the request it rates: what the classifier said, where the
/// request went, and the verdict. One JSONL line of `crossroads feedback export`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rated {
    pub request_id: String,
    /// When the request arrived (Unix ms).
    pub ts_ms: i64,
    pub team: Option<String>,
    pub requested_model: String,
    /// The classifier's domain (the ledger's `label`).
    pub domain: Option<String>,
    pub task: Option<String>,
    pub confidence: Option<f32>,
    pub difficulty: Option<f32>,
    pub pii_kinds: String,
    pub rule: Option<String>,
    pub tier: Option<String>,
    pub deployment: Option<String>,
    pub status: i64,
    pub feedback_ts_ms: i64,
    pub score: f64,
    pub thumbs: Option<Thumbs>,
    pub feedback_label: Option<String>,
    pub comment: Option<String>,
}

/// How many later milliseconds a feedback may move to when its own is taken.
const SAME_MS_RETRIES: u8 = 16;

const RATED_KINDS: [Kind; 18] = [
    Kind::Text,
    Kind::Int,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Real,
    Kind::Real,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Int4,
    Kind::Int,
    Kind::Double,
    Kind::Text,
    Kind::Text,
    Kind::Text,
];

impl LedgerReader {
    /// The key and team a request was recorded with; `None` when the ledger has no
    /// request with this id (yet: records reach the ledger a few ms after the answer).
    pub fn owner(&self, request_id: &str) -> StoreResult<Option<Owner>> {
        let rows = self.db.query(
            "SELECT key_id, team FROM requests WHERE request_id = $1",
            vec![Param::Text(Some(request_id.to_owned()))],
            &[Kind::Text, Kind::Text],
        )?;
        Ok(rows.first().map(|row| Owner {
            key_id: row.first().and_then(Cell::text),
            team: row.get(1).and_then(Cell::text),
        }))
    }

    /// Stores a feedback row and returns it as stored. Feedback is keyed by request and
    /// time: a second one on the same request in the same millisecond is kept too, a
    /// millisecond later.
    pub fn add_feedback(&self, mut feedback: Feedback) -> StoreResult<Feedback> {
        for _ in 0..SAME_MS_RETRIES {
            let stored = self.db.execute(
                "INSERT INTO feedback (request_id, ts_ms, key_id, team, score, thumbs, label, comment)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                vec![
                    Param::Text(Some(feedback.request_id.clone())),
                    Param::Int(Some(feedback.ts_ms)),
                    Param::Text(feedback.key_id.clone()),
                    Param::Text(feedback.team.clone()),
                    Param::Real(Some(feedback.score)),
                    Param::Text(feedback.thumbs.map(|t| t.as_str().to_owned())),
                    Param::Text(feedback.label.clone()),
                    Param::Text(feedback.comment.clone()),
                ],
            );
            match stored {
                Ok(_) => return Ok(feedback),
                Err(e) if e.is_conflict() => feedback.ts_ms += 1,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::FeedbackBusy {
            request_id: feedback.request_id,
            retries: SAME_MS_RETRIES,
        })
    }

    /// Every feedback row on the requests `filter` selects, joined to its request,
    /// oldest request first, and each request's feedback oldest first.
    pub fn rated(&self, filter: &Filter) -> StoreResult<Vec<Rated>> {
        let (clause, values) = filter.sql(None);
        let sql = format!(
            "SELECT r.request_id, r.ts_ms, r.team, r.requested_model, r.label, r.task,
                    r.confidence, r.difficulty, r.pii_kinds, r.rule, r.tier, r.deployment,
                    r.status, f.ts_ms, f.score, f.thumbs, f.label, f.comment
             FROM (SELECT * FROM requests {clause}) r
             JOIN feedback f ON f.request_id = r.request_id
             ORDER BY r.ts_ms, r.request_id, f.ts_ms"
        );
        let rows = self.db.query(&sql, values, &RATED_KINDS)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let text = |i: usize| row.get(i).and_then(Cell::text);
                let int = |i: usize| row.get(i).and_then(Cell::int).unwrap_or(0);
                let real = |i: usize| row.get(i).and_then(Cell::real);
                Rated {
                    request_id: text(0).unwrap_or_default(),
                    ts_ms: int(1),
                    team: text(2),
                    requested_model: text(3).unwrap_or_default(),
                    domain: text(4),
                    task: text(5),
                    // Written from an f32: converting back is exact.
                    confidence: real(6).map(|c| c as f32),
                    difficulty: real(7).map(|d| d as f32),
                    pii_kinds: text(8).unwrap_or_default(),
                    rule: text(9),
                    tier: text(10),
                    deployment: text(11),
                    status: int(12),
                    feedback_ts_ms: int(13),
                    score: real(14).unwrap_or(0.0),
                    thumbs: text(15).as_deref().and_then(Thumbs::parse),
                    feedback_label: text(16),
                    comment: text(17),
                }
            })
            .collect())
    }

    /// The recorded difficulty of every request `filter` selects that has one.
    pub fn difficulties(&self, filter: &Filter) -> StoreResult<Vec<f32>> {
        let (clause, values) = filter.sql(None);
        let sql = format!("SELECT difficulty FROM requests {clause}");
        let rows = self.db.query(&sql, values, &[Kind::Real])?;
        Ok(rows
            .iter()
            .filter_map(|row| row.first().and_then(Cell::real))
            .map(|d| d as f32)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ledger::{LedgerRecord, LedgerStore, SqliteStore};

    fn ledger_with(records: &[LedgerRecord]) -> (tempfile::TempDir, LedgerReader) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        SqliteStore::open(&path).unwrap().write(records).unwrap();
        let reader = LedgerReader {
            db: Box::new(crate::ledger::SqliteDb::open(&path).unwrap()),
        };
        (dir, reader)
    }

    fn feedback(id: &str, ts_ms: i64, score: f64) -> Feedback {
        Feedback {
            request_id: id.into(),
            ts_ms,
            key_id: Some("k".into()),
            team: Some("search".into()),
            score,
            thumbs: None,
            label: None,
            comment: None,
        }
    }

    #[test]
    fn feedback_is_joined_to_its_request_and_same_millisecond_feedback_is_kept() {
        let request = LedgerRecord {
            request_id: "r1".into(),
            ts_ms: 1_000,
            team: Some("search".into()),
            endpoint: "chat.completions".into(),
            requested_model: "auto".into(),
            label: Some("math".into()),
            difficulty: Some(0.25),
            tier: Some("local".into()),
            status: 200,
            ..LedgerRecord::default()
        };
        let (_dir, reader) = ledger_with(&[request]);
        assert_eq!(
            reader.owner("r1").unwrap(),
            Some(Owner {
                key_id: None,
                team: Some("search".into())
            })
        );
        assert_eq!(reader.owner("r2").unwrap(), None);
        let first = reader.add_feedback(feedback("r1", 5_000, 0.5)).unwrap();
        let second = reader
            .add_feedback(Feedback {
                thumbs: Some(Thumbs::Up),
                ..feedback("r1", 5_000, 1.0)
            })
            .unwrap();
        assert_eq!((first.ts_ms, second.ts_ms), (5_000, 5_001));
        let rated = reader.rated(&Filter::default()).unwrap();
        assert_eq!(rated.len(), 2);
        assert_eq!(rated[0].difficulty, Some(0.25));
        assert_eq!(rated[0].domain.as_deref(), Some("math"));
        assert_eq!((rated[0].score, rated[1].score), (0.5, 1.0));
        assert_eq!(rated[1].thumbs, Some(Thumbs::Up));
        let later = Filter {
            from_ms: Some(2_000),
            ..Filter::default()
        };
        assert!(reader.rated(&later).unwrap().is_empty(), "by request time");
        assert_eq!(reader.difficulties(&Filter::default()).unwrap(), [0.25]);
    }
}
