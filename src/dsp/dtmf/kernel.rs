//! The hot loop: correlate each 32-sample block of input with the eight DTMF
//! frequencies (cosine and sine, so 16 dot products) and measure its energy.
//!
//! Everything here is integer arithmetic, so every implementation returns
//! bit-identical results and the choice of instruction set never changes what
//! the detector reports. The correlation table is 11-bit (|t| <= 2047): the
//! largest possible sum, 32 * 32768 * 2047 = 2_146_435_072, fits an `i32`, so
//! no accumulation can overflow whatever the input.

use std::sync::LazyLock;

use crate::dsp::tone::{COL_HZ, ROW_HZ, SAMPLE_RATE};

/// Samples per block: the detector's time step (4 ms).
pub const BLOCK: usize = 32;
/// Row and column frequencies, in that order.
pub const TONES: usize = 8;
/// Amplitude of the correlation table: sums are this many times the true DFT.
pub const TABLE_SCALE: f32 = 2047.0;

const QUADRATURES: usize = 2 * TONES;
const PAIRS: usize = BLOCK / 2;
const _: () = assert!(PAIRS.is_multiple_of(4), "the SIMD kernels take two or four pairs per step");

/// What the kernel measured over one block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BlockSums {
    /// `Σ x·cos` for each tone in `[0..8]`, `-Σ x·sin` in `[8..16]`, times
    /// [`TABLE_SCALE`]; all zero for a block quieter than the kernel's `quiet`
    /// (whose correlations could neither make nor break a key, so every
    /// kernel skips them the same way).
    pub dot: [i32; QUADRATURES],
    /// `Σ x²`, with -32768 counted as -32767 so the SIMD lanes cannot overflow.
    pub energy: i64,
}

/// The correlation table, in two layouts of the same coefficients.
#[repr(C, align(64))]
pub struct Table {
    /// For the SIMD kernels: row `p` holds, for each quadrature `q`, the
    /// coefficients of samples `2p` and `2p+1` side by side, so one broadcast
    /// sample pair times one row gives all 16 partial sums at once.
    rows: [[i16; 2 * QUADRATURES]; PAIRS],
    /// For the portable kernel: quadrature `q`'s coefficients for the block's
    /// samples in order, so each sum is a plain dot product of two `i16`
    /// arrays, the shape compilers turn into multiply-add instructions (on
    /// x86-64 `pmaddwd`, which every CPU has) without being told.
    by_quadrature: [[i16; BLOCK]; QUADRATURES],
}

/// The coefficient of sample `n` (0..BLOCK) for quadrature `q`: the cosine of
/// tone `q` for `q < TONES`, else minus the sine of tone `q - TONES`.
fn coefficient(q: usize, n: usize) -> i16 {
    let hz = if q % TONES < 4 { ROW_HZ[q % TONES] } else { COL_HZ[q % TONES - 4] };
    let angle = std::f64::consts::TAU * hz * n as f64 / SAMPLE_RATE as f64;
    let value = if q < TONES { angle.cos() } else { -angle.sin() };
    (TABLE_SCALE as f64 * value).round() as i16
}

static TABLE: LazyLock<Table> = LazyLock::new(|| Table {
    rows: std::array::from_fn(|pair| std::array::from_fn(|lane| coefficient(lane / 2, 2 * pair + lane % 2))),
    by_quadrature: std::array::from_fn(|q| std::array::from_fn(|n| coefficient(q, n))),
});

/// The correlation table, for the kernel functions. Fetched once per call of
/// the detector, not once per block: the lazy initialisation's check is not free.
pub fn table() -> &'static Table {
    &TABLE
}

/// An implementation of the block sums for one instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust, for any CPU.
    Portable,
    /// x86-64 AVX2 (Haswell and later).
    Avx2,
    /// x86-64 AVX-512 with VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later).
    Avx512Vnni,
}

/// Why `POUND_DSP_KERNEL` cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("POUND_DSP_KERNEL={0:?} names no kernel; known: portable, avx2, avx512vnni")]
    Unknown(String),
    #[error("POUND_DSP_KERNEL={0}: this CPU lacks the instructions it needs; available: {1}")]
    Unavailable(&'static str, String),
}

/// The environment variable that forces a kernel (for benchmarks and tests).
pub const KERNEL_ENV: &str = "POUND_DSP_KERNEL";

static SELECTED: LazyLock<Result<Kernel, KernelError>> =
    LazyLock::new(|| Kernel::select_from(std::env::var(KERNEL_ENV).ok().as_deref()));

impl Kernel {
    const ALL: [Kernel; 3] = [Kernel::Portable, Kernel::Avx2, Kernel::Avx512Vnni];

    /// The kernel `POUND_DSP_KERNEL` names, or the fastest this CPU runs when
    /// it is unset or empty. Naming an unknown kernel, or one the CPU cannot
    /// run, is an error rather than a quiet fallback: a benchmark must measure
    /// what it says it measures. Read once per process.
    pub fn select() -> Result<Self, KernelError> {
        SELECTED.clone()
    }

    fn select_from(name: Option<&str>) -> Result<Self, KernelError> {
        let available = Self::available();
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok(Self::best());
        };
        let kernel =
            Self::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| KernelError::Unknown(name.into()))?;
        if available.contains(&kernel) {
            Ok(kernel)
        } else {
            let names: Vec<&str> = available.iter().map(|k| k.name()).collect();
            Err(KernelError::Unavailable(kernel.name(), names.join(", ")))
        }
    }

    /// The fastest kernel this CPU runs.
    pub fn best() -> Self {
        *Self::available().last().expect("the portable kernel is always available")
    }

    /// Every kernel this CPU runs, slowest first.
    pub fn available() -> Vec<Self> {
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                kernels.push(Kernel::Avx2);
            }
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                kernels.push(Kernel::Avx512Vnni);
            }
        }
        kernels
    }

    /// The name `POUND_DSP_KERNEL` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512Vnni => "avx512vnni",
        }
    }

    /// Fills `out[i]` from block `i` of `samples`, which must hold exactly
    /// `out.len()` blocks; blocks with less energy than `quiet` get no
    /// correlations (see [`BlockSums`]).
    pub fn block_sums(self, samples: &[i16], quiet: i64, out: &mut [BlockSums]) {
        assert_eq!(samples.len(), out.len() * BLOCK, "whole blocks only");
        let table = table();
        for (block, sums) in samples.chunks_exact(BLOCK).zip(out) {
            *sums = match self {
                Kernel::Portable => portable(table, block, quiet),
                // SAFETY: `Avx2` and `Avx512Vnni` are only returned by `available()`
                // after `is_x86_feature_detected!` confirmed every feature the
                // function enables, so the CPU executes all its instructions.
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => unsafe { x86::avx2(table, block, quiet) },
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512Vnni => unsafe { x86::avx512vnni(table, block, quiet) },
                #[cfg(not(target_arch = "x86_64"))]
                _ => portable(table, block, quiet),
            };
        }
    }
}

/// The kernel in plain Rust: the sums of one block of [`BLOCK`] samples.
/// One block per call, returned by value: a buffer of sums for a batch of
/// blocks had to be zeroed first, which cost more than the arithmetic it saved.
/// Never inlined, and each of its 16 dot products a call of [`dot`], compiled
/// alone: what LLVM makes of them then does not depend on what calls them.
#[inline(never)]
pub fn portable(table: &Table, block: &[i16], quiet: i64) -> BlockSums {
    let block: &[i16; BLOCK] = block.try_into().expect("the detector passes whole blocks");
    let energy = energy(block);
    if energy < quiet {
        return BlockSums { dot: [0; QUADRATURES], energy };
    }
    let dot = std::array::from_fn(|q| dot(&table.by_quadrature[q], block));
    BlockSums { dot, energy }
}

/// `Σ c·x` over one block: the shape LLVM turns into multiply-adds (`pmaddwd`
/// on x86-64) when it compiles it alone, so never inlined. With the sixteen
/// dot products inlined into one function (even one never inlined itself, as
/// before), its SLP vectoriser gathered the samples lane by lane (`pinsrw`)
/// and multiplied in 32 bits: about 2,100 instructions a block in `pound
/// dtmf --bench` instead of about 640, the portable kernel at 1.1× spandsp.
#[inline(never)]
fn dot(coefficients: &[i16; BLOCK], block: &[i16; BLOCK]) -> i32 {
    // Each product is below 2^26 and the sum of 32 fits an i32 (module docs),
    // so the wrapping adds never wrap; they only spare the overflow checks of
    // debug builds that would keep the loop from vectorising there.
    coefficients.iter().zip(block).map(|(&c, &x)| c as i32 * x as i32).fold(0, i32::wrapping_add)
}

/// `Σ x²` in 32-bit lanes (each square below 2^30, so pairs of them fit a
/// `u32`), widened once at the end, as the SIMD kernels do.
fn energy(block: &[i16; BLOCK]) -> i64 {
    let square = |x: i16| {
        let x = x.max(-i16::MAX) as i32;
        (x * x) as u32
    };
    let pairs: [u32; PAIRS] = std::array::from_fn(|p| square(block[2 * p]) + square(block[2 * p + 1]));
    pairs.iter().map(|&pair| pair as i64).sum()
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK, BlockSums, PAIRS, Table};

    /// The sample pair `2p, 2p+1` as one 32-bit lane, low sample first, as
    /// `vpmaddwd` expects: x86 is little-endian, so that is simply the 32 bits
    /// at sample `2p`, one load the broadcast can take straight from memory
    /// (assembling it from two 16-bit loads cost more than the multiply-adds).
    #[inline(always)]
    fn pair(block: &[i16], p: usize) -> i32 {
        assert!(2 * p + 1 < block.len());
        // SAFETY: the assertion keeps both samples, 4 bytes, inside `block`;
        // `read_unaligned` accepts the 2-byte alignment of an `i16` slice.
        unsafe { block.as_ptr().add(2 * p).cast::<i32>().read_unaligned() }
    }

    /// Writes a kernel on 256-bit registers: `$accumulate(acc, x, row)` adds
    /// the pairwise products of `x` and `row` to `acc`. The two kernels differ
    /// only there.
    macro_rules! kernel_256 {
        ($(#[$doc:meta])* $name:ident, $features:literal, $accumulate:expr) => {
            $(#[$doc])*
            #[target_feature(enable = $features)]
            #[inline]
            pub fn $name(table: &Table, block: &[i16], quiet: i64) -> BlockSums {
                assert_eq!(block.len(), BLOCK);
                let rows = table.rows.as_ptr() as *const __m256i;
                let clamp = _mm256_set1_epi16(-i16::MAX);
                let mut sums = BlockSums::default();
                // SAFETY: `block` holds BLOCK = 32 samples, two 32-byte loads;
                // unaligned loads accept any address.
                let (x0, x1) = unsafe {
                    let x = block.as_ptr() as *const __m256i;
                    (_mm256_loadu_si256(x), _mm256_loadu_si256(x.add(1)))
                };
                let sq0 = _mm256_madd_epi16(_mm256_max_epi16(x0, clamp), _mm256_max_epi16(x0, clamp));
                let sq1 = _mm256_madd_epi16(_mm256_max_epi16(x1, clamp), _mm256_max_epi16(x1, clamp));
                // Each lane is at most 2 * 32767² < 2^31, so two lanes added are
                // below 2^32: exact as unsigned 32-bit. Only then widen to 64 bits.
                let sq = _mm256_add_epi32(sq0, sq1);
                let wide = _mm256_add_epi64(
                    _mm256_cvtepu32_epi64(_mm256_castsi256_si128(sq)),
                    _mm256_cvtepu32_epi64(_mm256_extracti128_si256::<1>(sq)),
                );
                let halves = _mm_add_epi64(_mm256_castsi256_si128(wide), _mm256_extracti128_si256::<1>(wide));
                sums.energy = _mm_cvtsi128_si64(halves) + _mm_extract_epi64::<1>(halves);
                if sums.energy < quiet {
                    return sums;
                }
                // Four named accumulators (two sample pairs per step, low and high
                // half of each row): with an indexed array the compiler kept them
                // on the stack, and every add waited for a store.
                let (mut lo0, mut hi0, mut lo1, mut hi1) =
                    (_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256());
                for p in (0..PAIRS).step_by(2) {
                    let x0 = _mm256_set1_epi32(pair(block, p));
                    let x1 = _mm256_set1_epi32(pair(block, p + 1));
                    // SAFETY: `rows` points at PAIRS rows of 64 bytes, 64-byte aligned;
                    // 2q and 2q+1 index the two 32-byte halves of row q, and q = p + 1
                    // is at most PAIRS - 1 because PAIRS is even.
                    let (r0, r1, r2, r3) = unsafe {
                        (
                            _mm256_load_si256(rows.add(2 * p)),
                            _mm256_load_si256(rows.add(2 * p + 1)),
                            _mm256_load_si256(rows.add(2 * p + 2)),
                            _mm256_load_si256(rows.add(2 * p + 3)),
                        )
                    };
                    lo0 = $accumulate(lo0, x0, r0);
                    hi0 = $accumulate(hi0, x0, r1);
                    lo1 = $accumulate(lo1, x1, r2);
                    hi1 = $accumulate(hi1, x1, r3);
                    // Integer sums may be re-associated, and LLVM did: it turned
                    // the four chains into one tree of all 32 products, computed
                    // first and spilled to the stack (16 registers do not hold
                    // them beside the detector's state). Passing the accumulators
                    // through an empty `asm!` each step keeps them chains.
                    // SAFETY: the template is a comment: no instruction is emitted,
                    // no memory, stack or flag is touched, and each register
                    // comes out holding exactly the value it went in with.
                    unsafe {
                        std::arch::asm!(
                            "/* {0} {1} {2} {3} */",
                            inout(ymm_reg) lo0, inout(ymm_reg) hi0, inout(ymm_reg) lo1, inout(ymm_reg) hi1,
                            options(pure, nomem, nostack, preserves_flags),
                        );
                    }
                }
                let dot = sums.dot.as_mut_ptr() as *mut __m256i;
                // SAFETY: `dot` is 16 i32, two 32-byte stores; unaligned is allowed.
                unsafe {
                    _mm256_storeu_si256(dot, _mm256_add_epi32(lo0, lo1));
                    _mm256_storeu_si256(dot.add(1), _mm256_add_epi32(hi0, hi1));
                }
                sums
            }
        };
    }

    kernel_256!(
        /// The kernel for AVX2: the sums of one block of [`BLOCK`] samples.
        avx2,
        "avx2",
        |acc, x, row| _mm256_add_epi32(acc, _mm256_madd_epi16(x, row))
    );

    kernel_256!(
        /// The kernel for AVX-512 VNNI: the sums of one block of [`BLOCK`]
        /// samples. `vpdpwssd` fuses each multiply-add and its accumulation
        /// (32 instructions a block fewer than AVX2). On 256-bit registers
        /// (AVX-512 VL): on an AMD EPYC (Zen 4), which runs 512-bit operations
        /// as two halves, 16 `vpdpwssd` on 512 bits made the detector about
        /// 6 % slower than these 32 on 256 bits.
        avx512vnni,
        "avx2,avx512f,avx512bw,avx512vl,avx512vnni",
        |acc, x, row| _mm256_dpwssd_epi32(acc, x, row)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<i16> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 48) as i16
            })
            .collect()
    }

    #[test]
    fn a_kernel_is_chosen_by_name_and_a_wrong_name_is_an_error() {
        assert_eq!(Kernel::select_from(None), Ok(Kernel::best()));
        assert_eq!(Kernel::select_from(Some("")), Ok(Kernel::best()));
        assert_eq!(Kernel::select_from(Some("portable")), Ok(Kernel::Portable));
        assert_eq!(Kernel::select_from(Some("sse9")), Err(KernelError::Unknown("sse9".into())));
        for kernel in Kernel::ALL {
            let chosen = Kernel::select_from(Some(kernel.name()));
            if Kernel::available().contains(&kernel) {
                assert_eq!(chosen, Ok(kernel));
            } else {
                assert!(matches!(chosen, Err(KernelError::Unavailable(name, _)) if name == kernel.name()));
            }
        }
    }

    #[test]
    fn every_kernel_is_bit_identical_to_the_portable_one() {
        let mut inputs = vec![noise(BLOCK * 64, 1), vec![i16::MIN; BLOCK * 4], vec![i16::MAX; BLOCK * 4]];
        let mut alternating = vec![0i16; BLOCK * 4];
        for (i, x) in alternating.iter_mut().enumerate() {
            *x = if i % 2 == 0 { i16::MIN } else { i16::MAX };
        }
        inputs.push(alternating);
        for samples in &inputs {
            let mut expected = vec![BlockSums::default(); samples.len() / BLOCK];
            Kernel::Portable.block_sums(samples, 0, &mut expected);
            for kernel in Kernel::available() {
                let mut got = vec![BlockSums::default(); samples.len() / BLOCK];
                kernel.block_sums(samples, 0, &mut got);
                assert_eq!(got, expected, "{}", kernel.name());
            }
        }
    }

    #[test]
    fn every_kernel_leaves_a_quiet_block_uncorrelated_and_measures_the_rest() {
        let loud = noise(BLOCK, 3);
        let faint: Vec<i16> = noise(BLOCK, 4).iter().map(|x| x / 4096).collect();
        let samples = [loud.clone(), faint.clone(), loud].concat();
        let faint_energy: i64 = faint.iter().map(|&x| (x as i64).pow(2)).sum();
        let mut open = vec![BlockSums::default(); 3];
        Kernel::Portable.block_sums(&samples, 0, &mut open);
        assert!(open[1].dot.iter().any(|&d| d != 0), "the faint block has correlations of its own");
        for kernel in Kernel::available() {
            let mut gated = vec![BlockSums::default(); 3];
            kernel.block_sums(&samples, faint_energy + 1, &mut gated);
            assert_eq!(gated[1], BlockSums { dot: [0; QUADRATURES], energy: faint_energy }, "{}", kernel.name());
            assert_eq!((gated[0], gated[2]), (open[0], open[2]), "{}", kernel.name());
        }
    }

    #[test]
    fn sums_are_the_scaled_dft_of_the_block() {
        let samples = noise(BLOCK, 7);
        let mut sums = [BlockSums::default()];
        Kernel::Portable.block_sums(&samples, 0, &mut sums);
        let frequencies: Vec<f64> = ROW_HZ.iter().chain(COL_HZ.iter()).copied().collect();
        for (k, hz) in frequencies.iter().enumerate() {
            let (mut re, mut im) = (0.0, 0.0);
            for (n, &x) in samples.iter().enumerate() {
                let angle = std::f64::consts::TAU * hz * n as f64 / SAMPLE_RATE as f64;
                re += x as f64 * angle.cos();
                im -= x as f64 * angle.sin();
            }
            let tolerance = 32768.0 * BLOCK as f64 * 0.5;
            assert!((sums[0].dot[k] as f64 - re * TABLE_SCALE as f64).abs() < tolerance);
            assert!((sums[0].dot[TONES + k] as f64 - im * TABLE_SCALE as f64).abs() < tolerance);
        }
        let energy: i64 = samples.iter().map(|&x| (x.max(-32767) as i64).pow(2)).sum();
        assert_eq!(sums[0].energy, energy);
    }
}
