//! The model file: a versioned little-endian binary with a checksum, so that a corrupt,
//! truncated or foreign file is refused at start-up with a clear reason.
//!
//! ```text
//! magic "XROADLIN" | version u32 | hash_bits u8 | char_min u8 | char_max u8 | dense u8
//! | last_user_weight f32 | context_weight f32 | word_weight f32 | temperatures 3 × f32
//! | domain labels: count u16, then (length u16, UTF-8 bytes) each | task labels: same
//! | outcomes u16 | rows u32 | stride u32 | bias stride × f32
//! | dense signal weights dense × stride × f32 | column scales (stride + 1) × f32
//! | per bucket: (stride + 1) × i16, each at most 4095 in size
//! |   (weight × idf = column × i16, then idf² = column × i16)
//! | checksum u64 of every byte before it
//! ```
//!
//! The rows are stored as classification reads them (see [`super::table`]), 6.0 MB.
//! Version 1 stored every bucket weight as `f32` (12 MB); it is refused. Versions 2
//! and 3 are still read and quantized again: version 3 stored each bucket's idf as
//! `f32`, then its weights × idf on 16-bit column scales (|i16| up to 32767); version 2
//! also put a row scale before the idf (weight = column × scale × i16).

use std::fmt;
use std::path::Path;

use super::ngrams::{DENSE, FeatureSpec};
use super::table::{self, Table};
use super::{LinearModel, MAX_OUTPUTS, OUTCOMES};

const MAGIC: &[u8; 8] = b"XROADLIN";
/// The format version this build reads and writes.
pub const VERSION: u32 = 4;
/// The oldest format version this build reads.
const OLDEST: u32 = 2;

/// How the bucket rows of a file are laid out, by format version.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Version 2: per bucket a row scale, the idf, then `weight = column × scale × i16`.
    RowScaled,
    /// Version 3: per bucket the idf, then `weight × idf = column × i16` (16 bits).
    Idf,
    /// Version 4, the current one: `stride + 1` values per bucket, as the table holds
    /// them (13 bits; the last is the idf²).
    Current,
}

impl Rows {
    fn of(version: u32) -> Option<Rows> {
        match version {
            2 => Some(Rows::RowScaled),
            3 => Some(Rows::Idf),
            VERSION => Some(Rows::Current),
            _ => None,
        }
    }

    /// Column scales the file stores: the current format scales the idf² too.
    fn columns(self, stride: usize) -> usize {
        match self {
            Rows::Current => stride + 1,
            Rows::RowScaled | Rows::Idf => stride,
        }
    }

    /// Bytes of one bucket's row.
    fn bytes(self, stride: usize) -> usize {
        match self {
            Rows::RowScaled => 8 + 2 * stride,
            Rows::Idf => 4 + 2 * stride,
            Rows::Current => 2 * (stride + 1),
        }
    }
}
/// Largest hash space a file may declare (2^22 buckets).
const MAX_HASH_BITS: u8 = 22;

/// Why a model file cannot be used.
#[derive(Debug)]
pub enum LoadError {
    Io(std::io::Error),
    /// The file does not start with the model magic.
    NotAModel,
    /// Written by another format version.
    Version {
        found: u32,
    },
    /// The checksum does not match: the file is damaged.
    Checksum,
    /// The file ends early or its sizes disagree.
    Malformed(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "cannot read the model file: {e}"),
            LoadError::NotAModel => f.write_str(
                "not a crossroads model file (bad magic); make one with `crossroads train`",
            ),
            LoadError::Version { found } => write!(
                f,
                "model file format version {found} is not supported (this build reads versions {OLDEST} to {VERSION}); retrain it with `crossroads train`"
            ),
            LoadError::Checksum => f.write_str("the model file is corrupt (checksum mismatch)"),
            LoadError::Malformed(why) => write!(f, "the model file is malformed: {why}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Reads and checks a model file.
pub fn read(path: &Path) -> Result<LinearModel, LoadError> {
    let bytes = std::fs::read(path).map_err(LoadError::Io)?;
    decode(&bytes)
}

/// Writes `model` to `path` (through a temporary file, so a crash leaves no half file).
pub fn write(path: &Path, model: &LinearModel) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, encode(model))?;
    std::fs::rename(&tmp, path)
}

/// The file bytes of `model`.
pub fn encode(model: &LinearModel) -> Vec<u8> {
    let stride = model.stride();
    let mut out = Vec::with_capacity(
        1024 + 4 * (model.dense.len() + model.bias.len()) + model.table.rows() * 2 * (stride + 1),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let spec = &model.spec;
    out.extend_from_slice(&[spec.hash_bits, spec.char_min, spec.char_max, DENSE as u8]);
    out.extend_from_slice(&spec.last_user_weight.to_le_bytes());
    out.extend_from_slice(&spec.context_weight.to_le_bytes());
    out.extend_from_slice(&spec.word_weight.to_le_bytes());
    for t in model.temperatures {
        out.extend_from_slice(&t.to_le_bytes());
    }
    for labels in [&model.domains, &model.tasks] {
        out.extend_from_slice(&(labels.len() as u16).to_le_bytes());
        for label in labels {
            out.extend_from_slice(&(label.len() as u16).to_le_bytes());
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.extend_from_slice(&(OUTCOMES.len() as u16).to_le_bytes());
    out.extend_from_slice(&(spec.rows() as u32).to_le_bytes());
    out.extend_from_slice(&(stride as u32).to_le_bytes());
    for v in model
        .bias
        .iter()
        .chain(&model.dense)
        .chain(model.table.columns())
    {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for r in 0..model.table.rows() {
        if let Some(values) = model.table.row(r) {
            for v in values.iter().take(stride + 1) {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Parses and checks file bytes.
pub fn decode(bytes: &[u8]) -> Result<LinearModel, LoadError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(LoadError::NotAModel);
    }
    let mut r = Reader {
        bytes,
        at: MAGIC.len(),
    };
    let version = r.u32()?;
    let Some(layout) = Rows::of(version) else {
        return Err(LoadError::Version { found: version });
    };
    let Some(body_len) = bytes.len().checked_sub(8) else {
        return Err(malformed("shorter than its checksum"));
    };
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&bytes[body_len..]);
    if checksum(&bytes[..body_len]) != u64::from_le_bytes(stored) {
        return Err(LoadError::Checksum);
    }
    let r = &mut Reader {
        bytes: &bytes[..body_len],
        at: r.at,
    };
    let [hash_bits, char_min, char_max, dense] = r.array::<4>()?;
    if !(1..=MAX_HASH_BITS).contains(&hash_bits) || char_min > char_max || char_max > 8 {
        return Err(malformed("feature settings out of range"));
    }
    if usize::from(dense) != DENSE {
        return Err(malformed(&format!(
            "it has {dense} structural signals, this build computes {DENSE}"
        )));
    }
    let spec = FeatureSpec {
        hash_bits,
        char_min,
        char_max,
        last_user_weight: r.f32()?,
        context_weight: r.f32()?,
        word_weight: r.f32()?,
    };
    if !spec.weights_are_exact() {
        return Err(malformed(
            "feature weights must be whole sixteenths from 0 to 8",
        ));
    }
    let temperatures = [r.f32()?, r.f32()?, r.f32()?];
    if temperatures.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
        return Err(malformed("temperatures must be positive"));
    }
    let domains = r.labels()?;
    let tasks = r.labels()?;
    let outcomes = r.u16()?;
    if usize::from(outcomes) != OUTCOMES.len() {
        return Err(malformed(&format!(
            "{outcomes} frontier outcomes, expected {}",
            OUTCOMES.len()
        )));
    }
    if domains.is_empty() || tasks.is_empty() {
        return Err(malformed("a head has no labels"));
    }
    let rows = r.u32()? as usize;
    let stride = r.u32()? as usize;
    let expected = domains.len() + tasks.len() + OUTCOMES.len();
    if stride != expected || stride > MAX_OUTPUTS {
        return Err(malformed(&format!(
            "rows are {stride} wide, the labels need {expected} (at most {MAX_OUTPUTS})"
        )));
    }
    if rows != spec.rows() {
        return Err(malformed(&format!(
            "{rows} weight rows, the feature settings need {}",
            spec.rows()
        )));
    }
    let bias = r.floats(stride)?;
    let dense = r.floats(DENSE * stride)?;
    let columns = r.floats(layout.columns(stride))?;
    if bias
        .iter()
        .chain(&dense)
        .chain(&columns)
        .any(|w| !w.is_finite())
    {
        return Err(malformed("a weight is not a finite number"));
    }
    if layout == Rows::Current && columns.last().is_none_or(|&c| c <= 0.0) {
        return Err(malformed("the idf² column's scale must be positive"));
    }
    // The rows' size is known: check it before allocating the table (then the rows
    // end the file).
    let expected = spec.buckets() * layout.bytes(stride);
    if r.remaining() != expected {
        return Err(malformed(&format!(
            "{} bytes of weight rows, the sizes need {expected}",
            r.remaining()
        )));
    }
    let table = match layout {
        Rows::Current => read_rows(r, spec.buckets(), stride, &columns)?,
        Rows::RowScaled | Rows::Idf => read_older_rows(r, layout, spec.buckets(), &columns)?,
    };
    Ok(LinearModel {
        spec,
        domains,
        tasks,
        temperatures,
        table,
        dense,
        bias,
    })
}

/// The bucket rows of a current file; `columns` has the idf²'s scale last.
fn read_rows(
    r: &mut Reader<'_>,
    buckets: usize,
    stride: usize,
    columns: &[f32],
) -> Result<Table, LoadError> {
    let mut table = Table::zeros(buckets, stride);
    table.set_columns(columns);
    let mut values = vec![0i16; stride + 1];
    for bucket in 0..buckets {
        for (v, q) in values.iter_mut().zip(r.i16s(stride + 1)?) {
            if q.unsigned_abs() > table::MAX_Q.unsigned_abs() {
                return Err(malformed(&format!(
                    "bucket {bucket} holds {q}, beyond ±{}",
                    table::MAX_Q
                )));
            }
            *v = q;
        }
        if values.last().is_some_and(|&idf_square| idf_square < 0) {
            return Err(malformed(&format!("bucket {bucket} has a negative idf²")));
        }
        table.set_row(bucket, &values);
    }
    Ok(table)
}

/// The bucket rows of a version 2 or 3 file (see [`Rows`]), quantized again on the
/// current scales.
fn read_older_rows(
    r: &mut Reader<'_>,
    layout: Rows,
    buckets: usize,
    columns: &[f32],
) -> Result<Table, LoadError> {
    let stride = columns.len();
    let mut weights = Vec::with_capacity(buckets * stride);
    let mut idf = Vec::with_capacity(buckets);
    for _ in 0..buckets {
        let row_scale = match layout {
            Rows::RowScaled => Some(finite(r.f32()?)?),
            Rows::Idf | Rows::Current => None,
        };
        let row_idf = finite(r.f32()?)?;
        idf.push(row_idf);
        // Version 3 stored the weights times the idf.
        let scale = match row_scale {
            Some(scale) => scale,
            None if row_idf != 0.0 => row_idf.recip(),
            None => 0.0,
        };
        for (q, c) in r.i16s(stride)?.zip(columns) {
            weights.push(c * scale * f32::from(q));
        }
    }
    Ok(Table::quantize(&weights, &idf, stride))
}

fn finite(v: f32) -> Result<f32, LoadError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(malformed("a weight is not a finite number"))
    }
}

fn malformed(why: &str) -> LoadError {
    LoadError::Malformed(why.to_owned())
}

/// A 64-bit FNV-1a style hash over 8-byte words: a damaged byte changes it.
pub(super) fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0x100_0000_01b3);
        h ^= h >> 29;
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// A bounds-checked cursor over the file bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], LoadError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| malformed("the file ends early"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], LoadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, LoadError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, LoadError> {
        self.array().map(u32::from_le_bytes)
    }

    fn f32(&mut self) -> Result<f32, LoadError> {
        self.array().map(f32::from_le_bytes)
    }

    /// The next `n` little-endian `i16`s.
    fn i16s(&mut self, n: usize) -> Result<impl Iterator<Item = i16> + '_, LoadError> {
        let bytes = self.take(n.checked_mul(2).ok_or_else(|| malformed("too large"))?)?;
        Ok(bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]])))
    }

    fn floats(&mut self, n: usize) -> Result<Vec<f32>, LoadError> {
        let bytes = self.take(n.checked_mul(4).ok_or_else(|| malformed("too large"))?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn labels(&mut self) -> Result<Vec<String>, LoadError> {
        let n = self.u16()?;
        (0..n)
            .map(|_| {
                let len = usize::from(self.u16()?);
                let raw = self.take(len)?;
                let s = std::str::from_utf8(raw).map_err(|_| malformed("a label is not UTF-8"))?;
                if s.is_empty() {
                    return Err(malformed("a label is empty"));
                }
                Ok(s.to_owned())
            })
            .collect()
    }
}
