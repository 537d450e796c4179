//! The hashed-feature weights as classification reads them: one row per bucket, each
//! row a whole number of 64-byte aligned chunks (cache lines) holding the bucket's
//! output weights as `i16` and, in its last four bytes, the bucket's inverse document
//! frequency (`f32`).
//!
//! Classification adds a few thousand rows picked at random, so both the memory traffic
//! and the arithmetic per row count:
//!
//! - with 22 outputs a row is one cache line instead of 88 bytes of `f32` (which
//!   straddle two), and the 2^17-bucket table is 8 MB instead of 12 MB;
//! - the weights are integers on one scale per output column, with the bucket's idf
//!   folded in, and a feature's weight is a whole number of sixteenths (see
//!   [`FeatureSpec::weights_are_exact`](super::FeatureSpec::weights_are_exact)). So a
//!   row is added with integer multiply-adds (no conversion to `f32` per weight), and
//!   the sums are exact: the same in any order. The column scales are applied once, to
//!   the sums.
//!
//! Each column's scale maps its largest weight (times idf) to ±32767, so no weight is
//! clipped. (`i8` weights, a 4 MB table, cost the shipped model up to 0.01 of its
//! routing and domain scores, which sit right at their bars.)

use wide::{i16x8, i32x4};

/// Bytes of one aligned chunk.
const CHUNK: usize = 64;
/// Weights in every chunk of a row but the last.
const FULL: usize = CHUNK / 2;
/// Weights in a row's last chunk: it ends with the idf (4 bytes), and the weights stay
/// in whole groups of eight, so 12 bytes of padding sit between.
const LAST: usize = (CHUNK - 16) / 2;
/// The largest quantized weight.
const MAX_Q: f32 = 32767.0;

/// Weights a row `width` chunks wide holds.
pub const fn lanes(width: usize) -> usize {
    FULL * (width - 1) + LAST
}

/// The most weights a row holds (three chunks).
pub const MAX_LANES: usize = lanes(3);

/// One cache line: 32 weights in groups of eight, or 24 weights and the idf's bits in
/// the last two lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
struct Chunk([i16x8; 4]);

impl Chunk {
    const ZERO: Chunk = Chunk([i16x8::ZERO; 4]);

    fn lanes(&self) -> [i16; FULL] {
        bytemuck::cast(self.0)
    }

    fn set_lanes(&mut self, lanes: [i16; FULL]) {
        self.0 = bytemuck::cast(lanes);
    }
}

/// Quantized weight rows, one per hashed bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    chunks: Vec<Chunk>,
    /// Chunks per row: 1 for up to 24 outputs, 2 for up to 56, 3 for up to 88.
    width: usize,
    /// Outputs per row (the rest of the row is zero padding).
    stride: usize,
    /// Scale of each output column, applied to the sums (see [`Table::columns`]).
    columns: Vec<f32>,
}

impl Table {
    /// Chunks per row for `stride` outputs.
    pub fn width_for(stride: usize) -> usize {
        (1..=3).find(|&w| lanes(w) >= stride).unwrap_or(3)
    }

    /// `rows` rows of zeros (idf 1).
    pub fn zeros(rows: usize, stride: usize) -> Table {
        let width = Self::width_for(stride);
        let mut table = Table {
            chunks: vec![Chunk::ZERO; rows * width],
            width,
            stride,
            columns: vec![1.0; stride],
        };
        for r in 0..rows {
            table.set_row(r, 1.0, &[]);
        }
        table
    }

    /// Quantizes row-major `weights` (`idf.len()` rows of `stride`): the stored weight
    /// of row `r`, column `c` is `idf[r] × weights[r][c] / columns[c]`, rounded.
    pub fn quantize(weights: &[f32], idf: &[f32], stride: usize) -> Table {
        let mut table = Table::zeros(idf.len(), stride);
        let mut largest = vec![0.0f32; stride];
        for (row, &idf) in weights.chunks_exact(stride).zip(idf) {
            for (m, w) in largest.iter_mut().zip(row) {
                *m = m.max((w * idf).abs());
            }
        }
        for (c, m) in table.columns.iter_mut().zip(&largest) {
            let scale = m / MAX_Q;
            *c = if scale > 0.0 && scale.is_finite() {
                scale
            } else {
                1.0
            };
        }
        let mut q = vec![0i16; stride];
        for (r, (row, &idf)) in weights.chunks_exact(stride).zip(idf).enumerate() {
            for ((q, w), c) in q.iter_mut().zip(row).zip(&table.columns) {
                *q = (w * idf / c).round().clamp(-MAX_Q, MAX_Q) as i16;
            }
            table.set_row(r, idf, &q);
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

    /// The scale of each output column: the sums of [`Table::add_row`] times these
    /// are the model's scores.
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

    /// Writes row `r`; weights beyond `weights.len()` are zero.
    pub fn set_row(&mut self, r: usize, idf: f32, weights: &[i16]) {
        let width = self.width;
        let Some(chunks) = self.chunks.get_mut(r * width..(r + 1) * width) else {
            return;
        };
        let mut weights = weights.iter().take(self.stride);
        for (i, chunk) in chunks.iter_mut().enumerate() {
            let n = if i + 1 == width { LAST } else { FULL };
            let mut lanes = [0; FULL];
            for (lane, &w) in lanes[..n].iter_mut().zip(&mut weights) {
                *lane = w;
            }
            if i + 1 == width {
                let bits = idf.to_bits();
                lanes[FULL - 2] = bits as u16 as i16;
                lanes[FULL - 1] = (bits >> 16) as u16 as i16;
            }
            chunk.set_lanes(lanes);
        }
    }

    /// Row `r`'s idf and weights (`None` past the end).
    pub fn row(&self, r: usize) -> Option<(f32, [i16; MAX_LANES])> {
        let chunks = self.chunks.get(r * self.width..(r + 1) * self.width)?;
        let mut weights = [0i16; MAX_LANES];
        let mut out = weights.iter_mut();
        for (i, chunk) in chunks.iter().enumerate() {
            let n = if i + 1 == self.width { LAST } else { FULL };
            // The chunk's lanes first: `zip` stops on them without taking a weight.
            for (&lane, w) in chunk.lanes()[..n].iter().zip(&mut out) {
                *w = lane;
            }
        }
        Some((idf(chunks.last()?), weights))
    }

    /// Starts loading `bucket`'s row into the cache. A prefetch does not hold up the
    /// instructions after it, where a plain read that misses the cache would (see
    /// BENCHMARKS.md); other targets read one weight of each chunk.
    #[inline(always)]
    pub fn prefetch<const W: usize>(&self, bucket: usize) {
        for i in 0..W {
            if let Some(chunk) = self.chunks.get(bucket * W + i) {
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                safe_arch::prefetch_t0(chunk);
                #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
                std::hint::black_box(chunk.0[0].to_array()[0]);
            }
        }
    }

    /// Adds `k × row` of `bucket` into `sums` and returns the row's idf. A bucket past
    /// the end adds nothing.
    ///
    /// The caller keeps `|k| × 32767 × rows added` within `i32`.
    #[inline(always)]
    pub(super) fn add_row<const W: usize, const G: usize>(
        &self,
        bucket: usize,
        k: i16,
        sums: &mut RowSums<G>,
    ) -> f32 {
        let Some(row) = self
            .chunks
            .get(bucket * W..(bucket + 1) * W)
            .and_then(|s| <&[Chunk; W]>::try_from(s).ok())
        else {
            return 0.0;
        };
        // `dot` multiplies lane pairs and adds each pair: with `k` in every other lane
        // it gives k × the even lanes, or k × the odd ones, as `i32`. (Built once per
        // block: `k` is the block's.)
        let even = i16x8::new([k, 0, k, 0, k, 0, k, 0]);
        let odd = i16x8::new([0, k, 0, k, 0, k, 0, k]);
        for g in 0..G.min(4 * W - 1) {
            let q = row[g / 4].0[g % 4];
            sums.even[g] += q.dot(even);
            sums.odd[g] += q.dot(odd);
        }
        idf(&row[W - 1])
    }
}

/// Sums of weighted rows `8 × G` weights wide, in vector registers: for each group of
/// eight weights, the sum of its even lanes and of its odd lanes.
#[derive(Clone, Copy, Debug)]
pub(super) struct RowSums<const G: usize> {
    even: [i32x4; G],
    odd: [i32x4; G],
}

impl<const G: usize> RowSums<G> {
    pub(super) fn new() -> Self {
        RowSums {
            even: [i32x4::ZERO; G],
            odd: [i32x4::ZERO; G],
        }
    }

    /// Adds the sums, in weight order, into `total`. (Kept out of line: inlined, the
    /// compiler interleaves it with the adding loop's registers.)
    #[inline(never)]
    pub(super) fn add_to(self, total: &mut [i64]) {
        let lanes = self.even.iter().zip(&self.odd).flat_map(|(e, o)| {
            let (e, o) = (e.to_array(), o.to_array());
            [e[0], o[0], e[1], o[1], e[2], o[2], e[3], o[3]]
        });
        for (t, s) in total.iter_mut().zip(lanes) {
            *t += i64::from(s);
        }
    }
}

/// Groups of eight weights in a row `width` chunks wide.
pub const fn groups(width: usize) -> usize {
    lanes(width) / 8
}

/// The idf in the last two lanes of a row's last chunk.
#[inline(always)]
fn idf(last: &Chunk) -> f32 {
    let lanes = last.0[3].to_array();
    let bits = |lane: i16| u32::from(lane as u16);
    f32::from_bits(bits(lanes[6]) | bits(lanes[7]) << 16)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `k × row r` as the table adds it, scaled back by the columns.
    fn added(table: &Table, r: usize, k: i16) -> (Vec<f32>, f32) {
        fn add<const W: usize, const G: usize>(table: &Table, r: usize, k: i16) -> (Vec<i32>, f32) {
            let mut sums = RowSums::<G>::new();
            let idf = table.add_row::<W, G>(r, k, &mut sums);
            let mut total = vec![0; 8 * G];
            sums.add_to(&mut total);
            (total.into_iter().map(|t| t as i32).collect(), idf)
        }
        let (sums, idf) = match table.width() {
            1 => add::<1, { groups(1) }>(table, r, k),
            2 => add::<2, { groups(2) }>(table, r, k),
            _ => add::<3, { groups(3) }>(table, r, k),
        };
        let columns = table.columns().iter().chain(std::iter::repeat(&0.0));
        let mut sums: Vec<f32> = sums
            .iter()
            .zip(columns)
            .map(|(&a, c)| a as f32 * c)
            .collect();
        sums.resize(MAX_LANES, 0.0);
        (sums, idf)
    }

    #[test]
    fn quantized_rows_stay_close_to_the_weights() {
        let stride = 22;
        let weights: Vec<f32> = (0..3 * stride)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let idf = [1.0, 2.0, 0.5];
        let table = Table::quantize(&weights, &idf, stride);
        assert_eq!(table.width(), 1);
        for (r, row) in weights.chunks_exact(stride).enumerate() {
            let (sums, x) = added(&table, r, 3);
            assert_eq!(x, idf[r]);
            for ((s, w), c) in sums.iter().zip(row).zip(table.columns()) {
                // Within half a step of the column's scale, three times.
                assert!((s - 3.0 * w * idf[r]).abs() <= 1.5 * c + 1e-5, "{s} vs {w}");
            }
            assert!(sums[stride..].iter().all(|&s| s == 0.0));
        }
        // Each column's largest weight × idf is the largest quantized value.
        for c in 0..stride {
            let largest = (0..3).map(|r| table.row(r).unwrap().1[c].abs()).max();
            assert_eq!(largest, Some(32767), "column {c}");
        }
        assert_eq!(added(&table, 99, 1), (vec![0.0; MAX_LANES], 0.0));
    }

    #[test]
    fn wide_rows_span_chunks() {
        assert_eq!(Table::width_for(22), 1);
        assert_eq!(Table::width_for(24), 1);
        assert_eq!(Table::width_for(25), 2);
        let stride = 70;
        assert_eq!(Table::width_for(stride), 3);
        let weights: Vec<f32> = (0..stride).map(|i| i as f32 - 35.0).collect();
        let table = Table::quantize(&weights, &[1.0], stride);
        let (sums, idf) = added(&table, 0, 1);
        assert_eq!(idf, 1.0);
        // One row: every column's scale is its own weight's size.
        for (s, w) in sums.iter().zip(&weights) {
            assert!((s - w).abs() <= 1e-4 * w.abs().max(1.0), "{s} vs {w}");
        }
        let (idf, q) = table.row(0).unwrap();
        assert_eq!((idf, q[0], q[69], q[70]), (1.0, -32767, 32767, 0));
    }

    #[test]
    fn rows_read_back_as_written() {
        for stride in [4, 24, 40, 88] {
            let mut table = Table::zeros(3, stride);
            let weights: Vec<i16> = (0..stride as i16).map(|i| i * 301 - 9000).collect();
            table.set_row(1, 2.5, &weights);
            let (idf, q) = table.row(1).unwrap();
            assert_eq!(idf, 2.5);
            assert_eq!(&q[..stride], &weights[..]);
            assert!(q[stride..].iter().all(|&w| w == 0));
            assert_eq!(table.row(0).unwrap().0, 1.0);
            assert!(table.row(3).is_none());
        }
    }
}
