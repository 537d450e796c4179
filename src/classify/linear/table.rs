//! The hashed-feature weights as classification reads them: one row per bucket, each
//! row a whole number of 64-byte aligned chunks (cache lines) holding the bucket's
//! quantization scale, its inverse document frequency, and its output weights as `i16`.
//!
//! Classification looks up a few thousand rows in random order, so the cost is memory
//! traffic: with 22 outputs a row is one cache line instead of 88 bytes of `f32`
//! (which straddle two), and the 2^17-bucket table is 8 MB instead of 12 MB. (`i8`
//! weights, a 4 MB table, cost the shipped model up to 0.01 of its routing and domain
//! scores, which sit right at their bars.) Each output column first gets a scale (the root mean square of its weights),
//! so that the heads, whose weights differ in size, use the `i16` range alike; then
//! each row gets its own scale (its largest column-scaled weight maps to ±32767). The column
//! scales are applied once, to the sums, so they cost nothing per feature.

/// The most weights a row holds (three chunks).
pub const MAX_LANES: usize = FIRST + 2 * LANES;

/// Bytes of a row before its weights: scale `f32`, idf `f32`.
const HEADER: usize = 8;
/// Bytes of one aligned chunk.
const CHUNK: usize = 64;
/// Weights in the first chunk of a row (after the header), and in each further one.
const FIRST: usize = (CHUNK - HEADER) / 2;
const LANES: usize = CHUNK / 2;
/// The largest quantized weight.
const MAX_Q: f32 = 32767.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
struct Chunk([u8; CHUNK]);

/// Quantized weight rows, one per hashed bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    chunks: Vec<Chunk>,
    /// Chunks per row: 1 for up to 28 outputs, 2 for up to 60, 3 for up to 92.
    width: usize,
    /// Outputs per row (the rest of the row is zero padding).
    stride: usize,
    /// Scale of each output column, applied to the sums (see [`Table::columns`]).
    columns: Vec<f32>,
}

/// One row as the file stores it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowRef<'a> {
    pub scale: f32,
    pub idf: f32,
    pub weights: &'a [i16],
}

impl Table {
    /// Chunks per row for `stride` outputs.
    pub fn width_for(stride: usize) -> usize {
        (HEADER + 2 * stride).div_ceil(CHUNK).max(1)
    }

    /// `rows` rows of zeros (idf 1).
    pub fn zeros(rows: usize, stride: usize) -> Table {
        let width = Self::width_for(stride);
        let mut table = Table {
            chunks: vec![Chunk([0; CHUNK]); rows * width],
            width,
            stride,
            columns: vec![1.0; stride],
        };
        for r in 0..rows {
            table.set_row(r, 0.0, 1.0, &[]);
        }
        table
    }

    /// Quantizes row-major `weights` (`idf.len()` rows of `stride`) row by row.
    pub fn quantize(weights: &[f32], idf: &[f32], stride: usize) -> Table {
        let mut table = Table::zeros(idf.len(), stride);
        let mut squares = vec![0.0f64; stride];
        let mut rows = 0usize;
        for row in weights.chunks_exact(stride) {
            if row.iter().any(|&w| w != 0.0) {
                rows += 1;
                for (s, &w) in squares.iter_mut().zip(row) {
                    *s += f64::from(w) * f64::from(w);
                }
            }
        }
        for (c, s) in table.columns.iter_mut().zip(&squares) {
            let rms = (s / rows.max(1) as f64).sqrt() as f32;
            *c = if rms > 0.0 && rms.is_finite() {
                rms
            } else {
                1.0
            };
        }
        let mut q = vec![0i16; stride];
        let mut scaled = vec![0.0f32; stride];
        for (r, (row, &idf)) in weights.chunks_exact(stride).zip(idf).enumerate() {
            for ((s, w), c) in scaled.iter_mut().zip(row).zip(&table.columns) {
                *s = w / c;
            }
            let row = &scaled;
            let max = row.iter().fold(0.0f32, |m, w| m.max(w.abs()));
            let scale = if max > 0.0 { max / MAX_Q } else { 0.0 };
            for (q, w) in q.iter_mut().zip(row) {
                *q = if scale > 0.0 {
                    (w / scale).round().clamp(-MAX_Q, MAX_Q) as i16
                } else {
                    0
                };
            }
            table.set_row(r, scale, idf, &q);
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
    pub fn set_row(&mut self, r: usize, scale: f32, idf: f32, weights: &[i16]) {
        let mut bytes = [0u8; 3 * CHUNK];
        bytes[..4].copy_from_slice(&scale.to_le_bytes());
        bytes[4..8].copy_from_slice(&idf.to_le_bytes());
        for (b, &w) in bytes[HEADER..]
            .chunks_exact_mut(2)
            .zip(weights.iter().take(self.stride))
        {
            b.copy_from_slice(&w.to_le_bytes());
        }
        let Some(chunks) = self.chunks.get_mut(r * self.width..(r + 1) * self.width) else {
            return;
        };
        for (chunk, bytes) in chunks.iter_mut().zip(bytes.chunks_exact(CHUNK)) {
            chunk.0.copy_from_slice(bytes);
        }
    }

    /// Row `r` as the file stores it (`None` past the end).
    pub fn row(&self, r: usize) -> Option<(f32, f32, [i16; MAX_LANES])> {
        let chunks = self.chunks.get(r * self.width..(r + 1) * self.width)?;
        let mut bytes = [0u8; 3 * CHUNK];
        for (bytes, chunk) in bytes.chunks_exact_mut(CHUNK).zip(chunks) {
            bytes.copy_from_slice(&chunk.0);
        }
        let mut weights = [0i16; MAX_LANES];
        for (w, b) in weights.iter_mut().zip(bytes[HEADER..].chunks_exact(2)) {
            *w = i16::from_le_bytes([b[0], b[1]]);
        }
        Some((f32_at(&bytes, 0), f32_at(&bytes, 4), weights))
    }

    /// Reads one byte of `bucket`'s row (0 past the end), to bring it into cache.
    #[inline(always)]
    pub fn touch<const W: usize>(&self, bucket: usize) -> u8 {
        self.chunks.get(bucket * W).map_or(0, |c| c.0[0])
    }

    /// Adds `weight × idf × row` of `bucket` into `acc` (whose length is the row's
    /// `W × 32 − 4` lanes) and returns `weight × idf`, the feature's tf-idf value.
    /// A bucket past the end adds nothing.
    #[inline(always)]
    pub fn add_row<const W: usize, const L: usize>(
        &self,
        bucket: usize,
        weight: f32,
        acc: &mut [f32; L],
    ) -> f32 {
        let Some(row) = self
            .chunks
            .get(bucket * W..(bucket + 1) * W)
            .and_then(|s| <&[Chunk; W]>::try_from(s).ok())
        else {
            return 0.0;
        };
        let first = &row[0].0;
        let x = weight * f32_at(first, 4);
        let m = x * f32_at(first, 0);
        // A local copy: the compiler cannot tell that `acc` and the table never
        // overlap, and without that it adds one lane at a time.
        let mut sum = *acc;
        let (head, tail) = sum.split_at_mut(FIRST);
        if let (Some(acc), Some(lanes)) = (
            head.first_chunk_mut::<FIRST>(),
            first[HEADER..].first_chunk::<{ 2 * FIRST }>(),
        ) {
            add_lanes(acc, lanes, m);
        }
        for (acc, chunk) in tail.chunks_exact_mut(LANES).zip(&row[1..]) {
            if let Some(acc) = acc.first_chunk_mut::<LANES>() {
                add_lanes(acc, &chunk.0, m);
            }
        }
        *acc = sum;
        x
    }
}

/// `acc[i] += m × lane i` for the `N` little-endian `i16` lanes of `bytes`; fixed sizes
/// so that the compiler turns it into whole-vector instructions.
#[inline(always)]
fn add_lanes<const N: usize, const B: usize>(acc: &mut [f32; N], bytes: &[u8; B], m: f32) {
    for (a, b) in acc.iter_mut().zip(bytes.chunks_exact(2)) {
        *a += m * dequantize(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// The `i16` weight stored in the bits `q`, as `f32`.
///
/// Written with integer bit operations (`2^23 + (q ^ 0x8000)` is exact as an `f32`
/// bit pattern) rather than `f32::from(q as i16)`: on baseline x86-64 (SSE2) the
/// compiler then converts 4 lanes per instruction instead of one lane at a time.
#[inline(always)]
fn dequantize(q: u16) -> f32 {
    const BIAS: f32 = 8_388_608.0 + 32_768.0;
    f32::from_bits(0x4B00_0000 | u32::from(q ^ 0x8000)) - BIAS
}

#[inline(always)]
fn f32_at(bytes: &[u8], at: usize) -> f32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    f32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequantize_is_exact() {
        for q in i16::MIN..=i16::MAX {
            assert_eq!(dequantize(q as u16), f32::from(q));
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
        assert_eq!(table.width(), 1);
        for (r, row) in weights.chunks_exact(stride).enumerate() {
            let mut acc = [0.0f32; 28];
            let x = table.add_row::<1, 28>(r, 1.0, &mut acc);
            assert_eq!(x, idf[r]);
            let c = table.columns();
            let max = row
                .iter()
                .zip(c)
                .fold(0.0f32, |m, (w, c)| m.max((w / c).abs()));
            for ((a, w), c) in acc.iter().zip(row).zip(c) {
                assert!((a * c - w * idf[r]).abs() <= c * max * idf[r] / 65534.0 + 1e-5);
            }
            assert!(acc[stride..].iter().all(|&a| a == 0.0));
        }
        let mut acc = [0.0f32; 28];
        assert_eq!(table.add_row::<1, 28>(99, 1.0, &mut acc), 0.0);
    }

    #[test]
    fn wide_rows_span_chunks() {
        let stride = 70;
        assert_eq!(Table::width_for(stride), 3);
        assert_eq!(Table::width_for(22), 1);
        let weights: Vec<f32> = (0..stride).map(|i| i as f32 - 35.0).collect();
        let table = Table::quantize(&weights, &[1.0], stride);
        let mut acc = [0.0f32; 92];
        table.add_row::<3, 92>(0, 1.0, &mut acc);
        // One row: every column's scale is its own weight's size.
        for ((a, w), c) in acc.iter().zip(&weights).zip(table.columns()) {
            assert!((a * c - w).abs() <= c / 65534.0 + 1e-4, "{a} vs {w}");
        }
        let (scale, idf, q) = table.row(0).unwrap_or((0.0, 0.0, [0; MAX_LANES]));
        assert_eq!((scale, idf), (1.0 / MAX_Q, 1.0));
        assert_eq!(q[0], -32767);
    }
}
