//! The hashed-feature weights as classification reads them: one row per bucket, each
//! row a whole number of 64-byte aligned chunks (cache lines) of `i16`: the bucket's
//! output weights, then its squared inverse document frequency (for the length of the
//! tf-idf vector), then zero padding.
//!
//! Classification adds a few thousand rows picked at random, so both the memory traffic
//! and the arithmetic per row count:
//!
//! - with 22 outputs a row is one cache line instead of 88 bytes of `f32` (which
//!   straddle two), and the 2^17-bucket table is 8 MB instead of 12 MB;
//! - the weights are integers on one scale per column, with the bucket's idf folded
//!   in, and a feature's weight is a whole number of sixteenths (see
//!   [`FeatureSpec::weights_are_exact`](super::FeatureSpec::weights_are_exact)). So
//!   rows are added as integers, exactly: the same sums in any order. The column scales
//!   are applied once, to the sums;
//! - each column's scale maps its largest value to ±4095 (13 bits), so that [`RUN`]
//!   rows add in `i16` lanes without overflow: one vector add per eight weights, and a
//!   widening to `i32` once per run. (The shipped model scores the same to four digits
//!   at 13 bits as at 16; `i8` weights cost it up to 0.01 of its routing and domain
//!   scores, which sit right at their bars.)

use wide::{i16x8, i32x4};

/// Weights in one 64-byte chunk.
const CHUNK_LANES: usize = 32;
/// The largest stored value of a column (13 bits and a sign).
pub const MAX_Q: i16 = 4095;
/// Rows added in `i16` lanes before the sums are widened to `i32`.
const RUN: usize = 8;
const _: () = assert!(RUN as i32 * MAX_Q as i32 <= i16::MAX as i32);

/// Lanes in a row `width` chunks wide.
pub const fn lanes(width: usize) -> usize {
    CHUNK_LANES * width
}

/// The most lanes a row has (three chunks).
pub const MAX_LANES: usize = lanes(3);

/// One cache line: 32 lanes in groups of eight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
struct Chunk([i16x8; 4]);

impl Chunk {
    const ZERO: Chunk = Chunk([i16x8::ZERO; 4]);

    fn lanes(&self) -> [i16; CHUNK_LANES] {
        bytemuck::cast(self.0)
    }

    fn set_lanes(&mut self, lanes: [i16; CHUNK_LANES]) {
        self.0 = bytemuck::cast(lanes);
    }
}

/// Quantized weight rows, one per hashed bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    chunks: Vec<Chunk>,
    /// Chunks per row: 1 for up to 31 outputs, 2 for up to 63, 3 beyond.
    width: usize,
    /// Outputs per row; the row's next lane is the idf², the rest is zero padding.
    stride: usize,
    /// Scale of each column (the outputs, then the idf²), applied to the sums (see
    /// [`Table::columns`]).
    columns: Vec<f32>,
}

impl Table {
    /// Chunks per row for `stride` outputs (and the idf²).
    pub fn width_for(stride: usize) -> usize {
        (1..=3).find(|&w| lanes(w) > stride).unwrap_or(3)
    }

    /// `rows` rows of zeros.
    pub fn zeros(rows: usize, stride: usize) -> Table {
        let width = Self::width_for(stride);
        Table {
            chunks: vec![Chunk::ZERO; rows * width],
            width,
            stride,
            columns: vec![1.0; stride + 1],
        }
    }

    /// Quantizes row-major `weights` (`idf.len()` rows of `stride`): the stored weight
    /// of row `r`, column `c` is `idf[r] × weights[r][c] / columns[c]`, rounded, and
    /// the last column holds `idf[r]² / columns[stride]`.
    pub fn quantize(weights: &[f32], idf: &[f32], stride: usize) -> Table {
        let mut table = Table::zeros(idf.len(), stride);
        let mut largest = vec![0.0f32; stride + 1];
        for (row, &idf) in weights.chunks_exact(stride).zip(idf) {
            for (m, v) in largest.iter_mut().zip(values(row, idf)) {
                *m = m.max(v.abs());
            }
        }
        for (c, m) in table.columns.iter_mut().zip(&largest) {
            let scale = m / f32::from(MAX_Q);
            *c = if scale > 0.0 && scale.is_finite() {
                scale
            } else {
                1.0
            };
        }
        let mut q = vec![0i16; stride + 1];
        for (r, (row, &idf)) in weights.chunks_exact(stride).zip(idf).enumerate() {
            for ((q, v), c) in q.iter_mut().zip(values(row, idf)).zip(&table.columns) {
                let max = f32::from(MAX_Q);
                *q = (v / c).round().clamp(-max, max) as i16;
            }
            table.set_row(r, &q);
        }
        table
    }

    pub fn rows(&self) -> usize {
        self.chunks.len() / self.width
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Groups of eight lanes that hold the outputs and the idf² (the rest of a row is
    /// zero).
    pub fn groups(&self) -> usize {
        (self.stride + 1).div_ceil(8)
    }

    /// The scale of each column, the outputs' and then the idf²'s: the sums of
    /// [`Table::add_rows`] times these are the model's scores.
    pub fn columns(&self) -> &[f32] {
        &self.columns
    }

    /// Sets the column scales (from a file); missing ones are 1.
    pub fn set_columns(&mut self, columns: &[f32]) {
        for (c, &v) in self
            .columns
            .iter_mut()
            .zip(columns.iter().chain(std::iter::repeat(&1.0)))
        {
            *c = v;
        }
    }

    /// Writes row `r`: the outputs' weights, then the idf², each clamped to
    /// ±[`MAX_Q`]; lanes beyond `values.len()` are zero.
    pub fn set_row(&mut self, r: usize, values: &[i16]) {
        let width = self.width;
        let Some(chunks) = self.chunks.get_mut(r * width..(r + 1) * width) else {
            return;
        };
        let mut values = values.iter().take(self.stride + 1);
        for chunk in chunks {
            let mut lanes = [0; CHUNK_LANES];
            for (lane, &v) in lanes.iter_mut().zip(&mut values) {
                *lane = v.clamp(-MAX_Q, MAX_Q);
            }
            chunk.set_lanes(lanes);
        }
    }

    /// Row `r`'s lanes: the outputs' weights, the idf², then zeros (`None` past the
    /// end).
    pub fn row(&self, r: usize) -> Option<[i16; MAX_LANES]> {
        let chunks = self.chunks.get(r * self.width..(r + 1) * self.width)?;
        let mut lanes = [0i16; MAX_LANES];
        for (out, chunk) in lanes.chunks_exact_mut(CHUNK_LANES).zip(chunks) {
            out.copy_from_slice(&chunk.lanes());
        }
        Some(lanes)
    }

    /// What starts loading rows into the cache.
    pub fn prefetcher<const W: usize>(&self) -> Prefetcher<'_, W> {
        Prefetcher(&self.chunks)
    }

    /// Adds the rows of `buckets` into `sums`, the first `G` groups of each row
    /// (`W` chunks wide). Buckets past the end add nothing.
    ///
    /// Runs of [`RUN`] rows are added in `i16` lanes (they cannot overflow), then
    /// widened; the caller keeps the number of rows it adds into `sums`, times 4095,
    /// within `i32`.
    #[inline(always)]
    pub(super) fn add_rows<const W: usize, const G: usize>(
        &self,
        buckets: &[u32],
        sums: &mut RowSums<G>,
    ) {
        const { assert!(G <= 4 * W) };
        for run in buckets.chunks(RUN) {
            let mut lanes = [i16x8::ZERO; G];
            for &bucket in run {
                let bucket = bucket as usize;
                let Some(row) = self
                    .chunks
                    .get(bucket * W..(bucket + 1) * W)
                    .and_then(|s| <&[Chunk; W]>::try_from(s).ok())
                else {
                    continue;
                };
                for (g, lane) in lanes.iter_mut().enumerate() {
                    *lane += row[g / 4].0[g % 4];
                }
            }
            sums.widen(&lanes);
        }
    }
}

/// A row's values before scaling: its weights times its idf, then the idf².
fn values(row: &[f32], idf: f32) -> impl Iterator<Item = f32> + '_ {
    let weights = row.iter().map(move |w| w * idf);
    weights.chain(std::iter::once(idf * idf))
}

/// Starts loading the rows of a table `W` chunks wide into the cache. It is two words
/// (the chunks' address and length), so a loop keeps it in registers.
///
/// A prefetch does not hold up the instructions after it, where a plain read that
/// misses the cache would (see BENCHMARKS.md); other targets read one weight of each
/// chunk.
#[derive(Clone, Copy)]
pub struct Prefetcher<'a, const W: usize>(&'a [Chunk]);

impl<const W: usize> super::ngrams::Prefetch for Prefetcher<'_, W> {
    #[inline(always)]
    fn bucket(self, bucket: usize) {
        for i in 0..W {
            if let Some(chunk) = self.0.get(bucket * W + i) {
                #[cfg(all(
                    any(target_arch = "x86", target_arch = "x86_64"),
                    target_feature = "sse"
                ))]
                safe_arch::prefetch_t0(chunk);
                #[cfg(not(all(
                    any(target_arch = "x86", target_arch = "x86_64"),
                    target_feature = "sse"
                )))]
                std::hint::black_box(chunk.0[0].to_array()[0]);
            }
        }
    }
}

/// Sums of rows `8 × G` lanes wide, in vector registers: for each group of eight lanes,
/// the sum of its even lanes and of its odd lanes.
#[derive(Clone, Copy, Debug)]
pub(super) struct RowSums<const G: usize> {
    even: [i32x4; G],
    odd: [i32x4; G],
}

/// `dot` multiplies lane pairs and adds each pair: with these it picks the even lanes,
/// or the odd ones, widened to `i32`.
const EVEN: i16x8 = i16x8::new([1, 0, 1, 0, 1, 0, 1, 0]);
const ODD: i16x8 = i16x8::new([0, 1, 0, 1, 0, 1, 0, 1]);

impl<const G: usize> RowSums<G> {
    pub(super) fn new() -> Self {
        RowSums {
            even: [i32x4::ZERO; G],
            odd: [i32x4::ZERO; G],
        }
    }

    /// Adds a run's `i16` sums.
    #[inline(always)]
    fn widen(&mut self, lanes: &[i16x8; G]) {
        for ((e, o), l) in self.even.iter_mut().zip(&mut self.odd).zip(lanes) {
            *e += l.dot(EVEN);
            *o += l.dot(ODD);
        }
    }

    /// Calls `f(lane, sum)` for every lane, in order.
    #[inline(always)]
    pub(super) fn for_each_lane(&self, mut f: impl FnMut(usize, i32)) {
        for (g, (e, o)) in self.even.iter().zip(&self.odd).enumerate() {
            let (e, o) = (e.to_array(), o.to_array());
            for i in 0..4 {
                f(8 * g + 2 * i, e[i]);
                f(8 * g + 2 * i + 1, o[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The sums of the rows of `buckets` as the table adds them.
    fn added(table: &Table, buckets: &[u32]) -> [i32; MAX_LANES] {
        fn add<const W: usize, const G: usize>(table: &Table, buckets: &[u32]) -> [i32; MAX_LANES] {
            let mut sums = RowSums::<G>::new();
            table.add_rows::<W, G>(buckets, &mut sums);
            let mut lanes = [0; MAX_LANES];
            sums.for_each_lane(|i, s| lanes[i] = s);
            lanes
        }
        match table.width() {
            1 => add::<1, 4>(table, buckets),
            2 => add::<2, 8>(table, buckets),
            _ => add::<3, 12>(table, buckets),
        }
    }

    #[test]
    fn quantized_rows_stay_close_to_the_weights() {
        let stride = 22;
        let weights: Vec<f32> = (0..3 * stride)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let idf = [1.0, 2.0, 0.5];
        let table = Table::quantize(&weights, &idf, stride);
        assert_eq!((table.width(), table.groups()), (1, 3));
        let columns = table.columns();
        for (r, row) in weights.chunks_exact(stride).enumerate() {
            let sums = added(&table, &[r as u32]);
            for ((&s, w), c) in sums.iter().zip(row).zip(columns) {
                // Within half a step of the column's scale.
                let value = s as f32 * c;
                assert!(
                    (value - w * idf[r]).abs() <= 0.5 * c + 1e-5,
                    "{value} vs {w}"
                );
            }
            let square = sums[stride] as f32 * columns[stride];
            assert!((square - idf[r] * idf[r]).abs() <= 0.5 * columns[stride]);
            assert!(sums[stride + 1..].iter().all(|&s| s == 0));
        }
        // Each column's largest value is the largest quantized value.
        for c in 0..=stride {
            let largest = (0..3).map(|r| table.row(r).unwrap()[c].abs()).max();
            assert_eq!(largest, Some(MAX_Q), "column {c}");
        }
        assert_eq!(added(&table, &[99]), [0; MAX_LANES]);
    }

    #[test]
    fn runs_of_rows_add_without_overflow() {
        // Every row at the largest value: any number of them sums exactly, in runs.
        let stride = 5;
        let weights = vec![1.0; 40 * stride];
        let table = Table::quantize(&weights, &[1.0; 40], stride);
        for n in [1, 7, 8, 9, 17, 40] {
            let buckets: Vec<u32> = (0..n).collect();
            let sums = added(&table, &buckets);
            assert!(
                sums[..=stride]
                    .iter()
                    .all(|&s| s == n as i32 * i32::from(MAX_Q))
            );
        }
        let mut negative = Table::zeros(2, stride);
        negative.set_row(1, &[i16::MIN; 6]);
        assert_eq!(negative.row(1).unwrap()[0], -MAX_Q, "clamped when written");
        let sums = added(&negative, &[1; 128]);
        assert_eq!(sums[0], -128 * i32::from(MAX_Q));
    }

    #[test]
    fn wide_rows_span_chunks() {
        assert_eq!(Table::width_for(22), 1);
        assert_eq!(Table::width_for(31), 1);
        assert_eq!(Table::width_for(32), 2);
        assert_eq!(Table::width_for(63), 2);
        assert_eq!(Table::width_for(64), 3);
        let stride = 70;
        assert_eq!(Table::width_for(stride), 3);
        let weights: Vec<f32> = (0..stride).map(|i| i as f32 - 35.0).collect();
        let table = Table::quantize(&weights, &[1.0], stride);
        let sums = added(&table, &[0]);
        // One row: every column's scale is its own value's size.
        for ((&s, w), c) in sums.iter().zip(&weights).zip(table.columns()) {
            let value = s as f32 * c;
            assert!(
                (value - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{value} vs {w}"
            );
        }
        let q = table.row(0).unwrap();
        assert_eq!((q[0], q[69], q[70], q[71]), (-MAX_Q, MAX_Q, MAX_Q, 0));
    }

    #[test]
    fn rows_read_back_as_written() {
        for stride in [4, 24, 40, 88] {
            let mut table = Table::zeros(3, stride);
            let values: Vec<i16> = (0..=stride as i16).map(|i| i * 91 - 4000).collect();
            table.set_row(1, &values);
            let q = table.row(1).unwrap();
            assert_eq!(&q[..=stride], &values[..]);
            assert!(q[stride + 1..].iter().all(|&w| w == 0));
            assert_eq!(table.row(0).unwrap(), [0; MAX_LANES]);
            assert!(table.row(3).is_none());
        }
    }
}
