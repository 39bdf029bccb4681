//! The hot loop: correlate each 32-sample block of input with the eight DTMF
//! frequencies (cosine and sine, so 16 dot products) and measure its energy.
//!
//! The correlation is taken about the block's centre (sample 15.5), where
//! each cosine is symmetric and each sine antisymmetric: the block is first
//! folded onto its first half, `sum[n] = (x[n] + x[31-n]) / 2` and
//! `difference[n] = (x[n] - x[31-n]) / 2`, so each cosine needs 16 products
//! of `sum` and each sine 16 of `difference`: half the multiply-adds of the
//! 32-sample dot products. The halving (rounded down) keeps the folded
//! samples 16-bit; it drops only their lowest bit, noise about 95 dB below
//! full scale. The window ([`super::window`]) turns the centred, halved sums
//! back into sums from the block's start in the phase alignment it does anyway.
//!
//! Everything here is integer arithmetic, so every implementation returns
//! bit-identical results and the choice of instruction set never changes what
//! the detector reports. The correlation table is 11-bit (|t| <= 2047): the
//! largest possible sum, 16 * 32767 * 2047 = 1_073_479_664, fits an `i32`, so
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
/// Samples of a folded block: its first half.
const FOLDED: usize = BLOCK / 2;
/// The block's centre, in samples from its start: where the fold's mirror is.
pub const CENTRE: f64 = (BLOCK - 1) as f64 / 2.0;
const PAIRS: usize = BLOCK / 2;
/// Groups of four folded samples: what one 64-bit broadcast carries.
const FOLDED_QUADS: usize = FOLDED / 4;
/// Where the SIMD kernels keep folded sample `n`: the halves of the folded
/// vector swapped, because they load the block's first 16 samples that way
/// (a load instead of a lane permutation, one of the slowest steps).
fn simd_position(n: usize) -> usize {
    (n + FOLDED / 2) % FOLDED
}

/// What the kernel measured over one block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BlockSums {
    /// `Σ x·cos` for each tone in `[0..8]`, `-Σ x·sin` in `[8..16]`, taken
    /// about the block's [`CENTRE`], times [`TABLE_SCALE`] / 2 (the fold
    /// halves the samples); all zero for a block quieter than the kernel's
    /// `quiet` (whose correlations could neither make nor break a key, so
    /// every kernel skips them the same way).
    pub dot: [i32; QUADRATURES],
    /// `Σ x²`, with -32768 counted as -32767 so the SIMD lanes cannot overflow.
    pub energy: i64,
}

/// The correlation table, in two layouts of the same coefficients.
#[repr(C, align(64))]
pub struct Table {
    /// For the SIMD kernels: rows `[g][0]` and `[g][1]` of `cos_rows` are
    /// multiplied by folded positions `4g..4g+4` of `sum` (broadcast as one
    /// 64-bit lane) and hold, in 32-bit lanes `2j` and `2j+1`, the cosine
    /// coefficients of positions `4g, 4g+1` and `4g+2, 4g+3` for tone
    /// `4(j/2) + 2h + j%2` of row `h`: tones 0 1 4 5 in row 0 and 2 3 6 7 in
    /// row 1, so that adding adjacent lanes within each 128-bit half (`vphaddd`)
    /// leaves tones 0 to 7 in order. `sin_rows` likewise for `difference`.
    cos_rows: [[[i16; 2 * TONES]; 2]; FOLDED_QUADS],
    sin_rows: [[[i16; 2 * TONES]; 2]; FOLDED_QUADS],
    /// For the portable kernel: quadrature `q`'s coefficients for the folded
    /// samples in order, so each sum is a plain dot product of two `i16`
    /// arrays, the shape compilers turn into multiply-add instructions (on
    /// x86-64 `pmaddwd`, which every CPU has) without being told.
    by_quadrature: [[i16; FOLDED]; QUADRATURES],
}

/// The coefficient of folded sample `n` (0..FOLDED) for quadrature `q`: the
/// cosine of tone `q` at `n - CENTRE` for `q < TONES`, else minus the sine of
/// tone `q - TONES` there.
fn coefficient(q: usize, n: usize) -> i16 {
    let hz = if q % TONES < 4 { ROW_HZ[q % TONES] } else { COL_HZ[q % TONES - 4] };
    let angle = std::f64::consts::TAU * hz * (n as f64 - CENTRE) / SAMPLE_RATE as f64;
    let value = if q < TONES { angle.cos() } else { -angle.sin() };
    (TABLE_SCALE as f64 * value).round() as i16
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let rows = |offset: usize| {
        std::array::from_fn(|g| {
            std::array::from_fn(|h| {
                std::array::from_fn(|i| {
                    let lane = i / 2;
                    let tone = 4 * (lane / 4) + 2 * h + (lane / 2) % 2;
                    let position = 4 * g + 2 * (lane % 2) + i % 2;
                    coefficient(offset + tone, simd_position(position))
                })
            })
        })
    };
    Table {
        cos_rows: rows(0),
        sin_rows: rows(TONES),
        by_quadrature: std::array::from_fn(|q| std::array::from_fn(|n| coefficient(q, n))),
    }
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
    let (sum, difference) = fold(block);
    let dot = std::array::from_fn(|q| dot(&table.by_quadrature[q], if q < TONES { &sum } else { &difference }));
    BlockSums { dot, energy }
}

/// The block folded about its centre: `(x[n] + x[31-n]) / 2` and
/// `(x[n] - x[31-n]) / 2` for `n < 16`, rounded down, with -32768 counted as
/// -32767 as in the energy (the SIMD kernels fold the samples they square).
fn fold(block: &[i16; BLOCK]) -> ([i16; FOLDED], [i16; FOLDED]) {
    let clamped = |n: usize| block[n].max(-i16::MAX) as i32;
    let sum = std::array::from_fn(|n| ((clamped(n) + clamped(BLOCK - 1 - n)) >> 1) as i16);
    let difference = std::array::from_fn(|n| ((clamped(n) - clamped(BLOCK - 1 - n)) >> 1) as i16);
    (sum, difference)
}

/// `Σ c·x` over one folded block: the shape LLVM turns into multiply-adds
/// (`pmaddwd` on x86-64) when it compiles it alone, so never inlined. With the
/// dot products inlined into one function (even one never inlined itself),
/// its SLP vectoriser gathered the samples lane by lane (`pinsrw`) and
/// multiplied in 32 bits, about three times the instructions.
#[inline(never)]
fn dot(coefficients: &[i16; FOLDED], folded: &[i16; FOLDED]) -> i32 {
    // Each product is below 2^26 and the sum of 16 fits an i32 (module docs),
    // so the wrapping adds never wrap; they only spare the overflow checks of
    // debug builds that would keep the loop from vectorising there.
    coefficients.iter().zip(folded).map(|(&c, &x)| c as i32 * x as i32).fold(0, i32::wrapping_add)
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

    use super::{BLOCK, BlockSums, FOLDED, FOLDED_QUADS, Table};

    /// The folded block, `sum` then `difference`, where the broadcasts read it.
    #[repr(C, align(32))]
    struct Folded([i16; BLOCK]);

    impl Folded {
        /// The samples' address passed through an empty `asm!`, so the
        /// compiler no longer knows what the reads through it return and
        /// must load them (see the kernel).
        #[inline(always)]
        fn opaque(&self) -> OpaqueFolded<'_> {
            let mut samples = self.0.as_ptr();
            // SAFETY: the template is a comment: no instruction is emitted, no
            // memory, stack or flag is touched, and the register comes out
            // holding the address it went in with. `readonly` (rather than
            // `nomem`) tells the compiler the block may be read here, so the
            // stores that fill it stay before the reads through the result.
            unsafe {
                std::arch::asm!("/* {0} */", inout(reg) samples, options(pure, readonly, nostack, preserves_flags));
            }
            OpaqueFolded { samples, folded: std::marker::PhantomData }
        }
    }

    /// A folded block read through an address the compiler cannot see through.
    struct OpaqueFolded<'a> {
        samples: *const i16,
        folded: std::marker::PhantomData<&'a Folded>,
    }

    impl OpaqueFolded<'_> {
        /// Folded positions `4g..4g+4` (those of `sum` first, then of
        /// `difference`) as one 64-bit lane, two sample pairs low sample
        /// first, as `vpmaddwd` expects: on little-endian x86 simply the 64
        /// bits at position `4g`, one load the broadcast takes straight from
        /// memory (broadcasting lanes of a register costs a shuffle each).
        #[inline(always)]
        fn quad(&self, g: usize) -> i64 {
            assert!(4 * g + 3 < 2 * FOLDED);
            // SAFETY: `samples` is the address of a live `Folded` (the borrow
            // `'a` keeps it), BLOCK samples; the assertion keeps the four
            // samples, 8 bytes, inside it; `read_unaligned` accepts the
            // 2-byte alignment.
            unsafe { self.samples.add(4 * g).cast::<i64>().read_unaligned() }
        }
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
                let clamp = _mm256_set1_epi16(-i16::MAX);
                let mut sums = BlockSums::default();
                // The first 16 samples with their 8-sample halves swapped (see
                // `simd_position`), the last 16 in order.
                // SAFETY: `block` holds BLOCK = 32 samples, 64 bytes: two 16-byte
                // loads and one 32-byte load within it; unaligned loads accept
                // any address.
                let (x0, x1) = unsafe {
                    let x = block.as_ptr() as *const __m128i;
                    let swapped = _mm256_castsi128_si256(_mm_loadu_si128(x.add(1)));
                    (_mm256_inserti128_si256::<1>(swapped, _mm_loadu_si128(x)), _mm256_loadu_si256(x.add(2) as *const __m256i))
                };
                let (x0, x1) = (_mm256_max_epi16(x0, clamp), _mm256_max_epi16(x1, clamp));
                let sq0 = _mm256_madd_epi16(x0, x0);
                let sq1 = _mm256_madd_epi16(x1, x1);
                // Each lane is at most 2 * 32767² < 2^31, so two lanes added are
                // below 2^32: exact as unsigned 32-bit. Only then widen to 64
                // bits, the even and odd lanes of each 64-bit pair added (a
                // mask and a shift: cheaper than zero-extending each half).
                let sq = _mm256_add_epi32(sq0, sq1);
                let wide = _mm256_add_epi64(
                    _mm256_and_si256(sq, _mm256_set1_epi64x(u32::MAX as i64)),
                    _mm256_srli_epi64::<32>(sq),
                );
                let halves = _mm_add_epi64(_mm256_castsi256_si128(wide), _mm256_extracti128_si256::<1>(wide));
                sums.energy = _mm_cvtsi128_si64(_mm_add_epi64(halves, _mm_unpackhi_epi64(halves, halves)));
                if sums.energy < quiet {
                    return sums;
                }
                // The mirror of each of x0's samples: x1's words reversed within
                // each 128-bit lane. x0's lane 0 holds samples 8..16, whose
                // mirrors 23..16 are x1's lane 0 reversed; likewise lane 1.
                let reverse_words = _mm256_setr_epi8(
                    14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1, 14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1,
                );
                let mirror = _mm256_shuffle_epi8(x1, reverse_words);
                // (a + b) / 2 rounded down, without leaving 16 bits:
                // a + b = 2 (a & b) + (a ^ b). Then (a - b) / 2 rounded down is
                // that minus b, which fits 16 bits, so the wrapping subtraction
                // is exact.
                let half_sum =
                    _mm256_add_epi16(_mm256_and_si256(x0, mirror), _mm256_srai_epi16::<1>(_mm256_xor_si256(x0, mirror)));
                let half_difference = _mm256_sub_epi16(half_sum, mirror);
                let mut folded = Folded([0; BLOCK]);
                // SAFETY: `Folded` is 64 bytes aligned to 32: two aligned 32-byte stores.
                unsafe {
                    let out = folded.0.as_mut_ptr() as *mut __m256i;
                    _mm256_store_si256(out, half_sum);
                    _mm256_store_si256(out.add(1), half_difference);
                }
                // Broadcasts from memory, not shuffles of the registers just
                // stored: on an AMD EPYC (Zen 3) the shuffles (one or two per
                // pair) made the block slower (llvm-mca and A/B runs agreed).
                // Seeing through the stores, LLVM shuffles unless the address
                // it reads through is opaque to it.
                let folded = folded.opaque();
                let cos_rows = table.cos_rows.as_ptr() as *const __m256i;
                let sin_rows = table.sin_rows.as_ptr() as *const __m256i;
                // Four named accumulators (the two rows of tones, cosines and
                // sines): with an indexed array the compiler kept them on the
                // stack, and every add waited for a store.
                let (mut cos0, mut cos1, mut sin0, mut sin1) =
                    (_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256());
                for g in 0..FOLDED_QUADS {
                    let sum = _mm256_set1_epi64x(folded.quad(g));
                    let difference = _mm256_set1_epi64x(folded.quad(FOLDED_QUADS + g));
                    // SAFETY: each row table holds FOLDED_QUADS x 2 rows of 32
                    // bytes, 64-byte aligned; 2g + 1 < 2 FOLDED_QUADS.
                    let (c0, c1, s0, s1) = unsafe {
                        (
                            _mm256_load_si256(cos_rows.add(2 * g)),
                            _mm256_load_si256(cos_rows.add(2 * g + 1)),
                            _mm256_load_si256(sin_rows.add(2 * g)),
                            _mm256_load_si256(sin_rows.add(2 * g + 1)),
                        )
                    };
                    cos0 = $accumulate(cos0, sum, c0);
                    cos1 = $accumulate(cos1, sum, c1);
                    sin0 = $accumulate(sin0, difference, s0);
                    sin1 = $accumulate(sin1, difference, s1);
                    // Integer sums may be re-associated, and LLVM did: it turned
                    // the four chains into one tree of all the products, computed
                    // first and spilled to the stack (16 registers do not hold
                    // them beside the detector's state). Passing the accumulators
                    // through an empty `asm!` each step keeps them chains.
                    // SAFETY: the template is a comment: no instruction is emitted,
                    // no memory, stack or flag is touched, and each register
                    // comes out holding exactly the value it went in with.
                    unsafe {
                        std::arch::asm!(
                            "/* {0} {1} {2} {3} */",
                            inout(ymm_reg) cos0, inout(ymm_reg) cos1, inout(ymm_reg) sin0, inout(ymm_reg) sin1,
                            options(pure, nomem, nostack, preserves_flags),
                        );
                    }
                }
                // Adjacent lanes hold one tone's sums over two sample pairs:
                // `vphaddd` adds them within each 128-bit half, and the rows'
                // order of tones (see `Table`) leaves tones 0 to 7 in order.
                let dot = sums.dot.as_mut_ptr() as *mut __m256i;
                // SAFETY: `dot` is 16 i32, two 32-byte stores; unaligned is allowed.
                unsafe {
                    _mm256_storeu_si256(dot, _mm256_hadd_epi32(cos0, cos1));
                    _mm256_storeu_si256(dot.add(1), _mm256_hadd_epi32(sin0, sin1));
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
                let angle = std::f64::consts::TAU * hz * (n as f64 - CENTRE) / SAMPLE_RATE as f64;
                re += x as f64 * angle.cos();
                im -= x as f64 * angle.sin();
            }
            // Table rounding (half a unit per product) and the fold's dropped
            // bit (half a sample per product, times the table).
            let tolerance = (32768.0 * 0.5 + 0.5 * TABLE_SCALE as f64) * FOLDED as f64;
            let halved = TABLE_SCALE as f64 / 2.0;
            assert!((sums[0].dot[k] as f64 - re * halved).abs() < tolerance, "{k}");
            assert!((sums[0].dot[TONES + k] as f64 - im * halved).abs() < tolerance, "{k}");
        }
        let energy: i64 = samples.iter().map(|&x| (x.max(-32767) as i64).pow(2)).sum();
        assert_eq!(sums[0].energy, energy);
    }
}
