//! A small mutation fuzzer for the parser property tests (`tests/fuzz_*.rs`), on stable Rust and
//! without a fuzzing engine: seeded, so a run reproduces bit for bit; seeded with real messages and
//! mutated (byte flips, truncation, insertion, line duplication, huge numbers, non-UTF-8), because
//! random bytes rarely get past a first line.
//!
//! Each target checks, for every input it is given:
//! - never panics (a panic is shrunk, saved to `fixtures/fuzz/<target>/` and reported);
//! - bounded memory: the heap a case allocates on this thread stays under the target's bound;
//! - bounded time: no case runs longer than `POUND_FUZZ_HANG_SECONDS` (10 s; a hang, not a speed
//!   test: the input is saved and the process aborted, since a running case cannot be stopped);
//! - whatever the target's own closure asserts (round trips, invariants).
//!
//! Every file in `fixtures/fuzz/<target>/` is replayed first, on every run. The run then lasts
//! `POUND_FUZZ_SECONDS` (default 2) per target; `POUND_FUZZ_SEED` changes the seed.
#![allow(dead_code)] // each fuzz test crate uses its own subset

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Heap accounting per thread.

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// The system allocator, counting the bytes live on each thread and their peak.
pub struct CountingAllocator;

fn count_alloc(size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(size);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn count_free(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
}

// SAFETY: every method forwards its arguments unchanged to `System`, so the memory returned and
// freed is exactly what `System` guarantees. The bookkeeping only touches const-initialised
// thread-locals of `Copy` types without destructors (through `try_with`), which never allocate,
// never panic and never re-enter the allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_alloc(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_alloc(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count_free(layout.size());
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes through it).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_free(layout.size());
        count_alloc(new_size);
        // SAFETY: as for `dealloc`; `new_size` satisfies the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns the most heap it held at once on this thread beyond what was live before.
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let out = f();
    (out, PEAK.with(Cell::get).saturating_sub(base))
}

// ---------------------------------------------------------------------------------------------
// The seeded generator.

/// SplitMix64: tiny, fast, and every seed gives a full-period stream.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// Bytes that mean something to a text grammar (SIP, SDP, TOML, JSON).
const SPECIAL: &[u8] = b"\r\n:;,<>\"[]{} @=\\\t/#-+.0'";

/// Numbers at the edges of the integer types a parser may read into.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "127",
    "128",
    "255",
    "256",
    "32767",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999",
    "+5",
    "1e9",
    "0x10",
    "00000000000000000000000001",
];

/// Binary values at the edges of 8, 16 and 32 bits.
const WORDS: &[u32] =
    &[0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x1_0000, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

/// Byte sequences that are not UTF-8: a lone continuation, a truncated lead, an overlong form.
const NOT_UTF8: &[&[u8]] = &[b"\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80", b"\x00"];

/// Inputs never grow past this, so that one case stays cheap; the size limits of the parsers
/// (64 KiB SIP, 16 KiB SDP) are still crossed.
const MAX_INPUT: usize = 96 * 1024;

fn line_spans(input: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, &b) in input.iter().enumerate() {
        if b == b'\n' {
            spans.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < input.len() {
        spans.push((start, input.len()));
    }
    spans
}

/// Applies one random mutation to `input`; `others` are inputs to splice from.
pub fn mutate_once(rng: &mut Rng, input: &mut Vec<u8>, others: &[Vec<u8>]) {
    let len = input.len();
    let at = rng.below(len + 1);
    match rng.below(15) {
        0 if len > 0 => input[at.min(len - 1)] ^= 1 << rng.below(8),
        1 if len > 0 => input[at.min(len - 1)] = *rng.pick(SPECIAL),
        2 if len > 0 => input[at.min(len - 1)] = rng.next_u64() as u8,
        3 => input.truncate(at),
        4 => {
            let extra = if rng.one_in(2) {
                vec![*rng.pick(SPECIAL)]
            } else {
                let count = 1 + rng.below(8);
                rng.bytes(count)
            };
            input.splice(at..at, extra);
        }
        5 => {
            let end = (at + 1 + rng.below(16)).min(len);
            input.drain(at.min(end)..end);
        }
        6..=8 => {
            let lines = line_spans(input);
            if lines.is_empty() {
                return;
            }
            let (start, end) = *rng.pick(&lines);
            match rng.below(3) {
                // Duplicate a line (a header twice, an attribute twice) next to itself or elsewhere.
                0 => {
                    let copy = input[start..end].to_vec();
                    let (to, _) = *rng.pick(&lines);
                    input.splice(to..to, copy);
                }
                1 => {
                    input.drain(start..end);
                }
                _ => {
                    let (other_start, other_end) = *rng.pick(&lines);
                    if other_start > end {
                        let other = input[other_start..other_end].to_vec();
                        let this = input[start..end].to_vec();
                        input.splice(other_start..other_end, this);
                        input.splice(start..end, other);
                    }
                }
            }
        }
        9 => {
            // Replace a run of digits (or insert at random) with an edge number.
            let number = rng.pick(NUMBERS).as_bytes().to_vec();
            let digits: Vec<usize> = (0..len).filter(|&i| input[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                input.splice(at..at, number);
            } else {
                let inside = *rng.pick(&digits);
                let end = (inside..len).find(|&i| !input[i].is_ascii_digit()).unwrap_or(len);
                let start = (0..inside).rev().find(|&i| !input[i].is_ascii_digit()).map_or(0, |i| i + 1);
                input.splice(start..end, number);
            }
        }
        10 => {
            let bytes = rng.pick(NOT_UTF8);
            input.splice(at..at, bytes.iter().copied());
        }
        11 if !others.is_empty() => {
            let other = rng.pick(others);
            let from = rng.below(other.len());
            let to = (from + 1 + rng.below(64)).min(other.len());
            input.splice(at..at, other[from..to].to_vec());
        }
        12 if len > 0 => {
            // Repeat a range many times: lengths and counts past every limit.
            let start = at.min(len - 1);
            let end = (start + 1 + rng.below(32)).min(len);
            let piece = input[start..end].to_vec();
            // Mostly a few times (cheap cases), sometimes up to the input limit.
            let most = if rng.one_in(4) { MAX_INPUT / piece.len() / 2 } else { 8 };
            let times = 1 + rng.below(most);
            let repeated: Vec<u8> = piece.iter().copied().cycle().take(piece.len() * times).collect();
            input.splice(end..end, repeated);
        }
        13 => {
            let choice = rng.below(3);
            let ends: &[u8] = match choice {
                0 => b"\r\n\r\n",
                1 => b"\n",
                _ => b"\r",
            };
            input.splice(at..at, ends.iter().copied());
        }
        _ if len > 0 => {
            // Overwrite 1, 2 or 4 bytes with an edge value, either byte order: binary lengths.
            let width = *rng.pick(&[1usize, 2, 4]);
            let value = *rng.pick(WORDS);
            let bytes = if rng.one_in(2) { value.to_be_bytes() } else { value.to_le_bytes() };
            let bytes = if rng.one_in(2) { &bytes[4 - width..] } else { &bytes[..width] };
            let start = at.min(len.saturating_sub(width));
            for (i, &b) in bytes.iter().enumerate() {
                if let Some(slot) = input.get_mut(start + i) {
                    *slot = b;
                }
            }
        }
        _ => input.push(rng.next_u64() as u8),
    }
    input.truncate(MAX_INPUT);
}

/// A seed with one to five mutations stacked.
pub fn mutated(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = rng.pick(seeds).clone();
    for _ in 0..1 + rng.below(5) {
        mutate_once(rng, &mut input, seeds);
    }
    input
}

// ---------------------------------------------------------------------------------------------
// Configuration and files.

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file in `dir` (relative to the crate root) whose name ends with `suffix`, sorted.
pub fn files(dir: &str, suffix: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|err| panic!("{dir}: {err}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file() && path.to_string_lossy().ends_with(suffix))
        .collect();
    paths.sort();
    paths.iter().map(|path| std::fs::read(path).unwrap()).collect()
}

/// The regression corpus of a target: (file name, contents), sorted by name.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = root().join("fixtures/fuzz").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut found: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap()))
        .collect();
    found.sort();
    found
}

fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// How long each target runs after replaying its corpus.
pub fn budget() -> Duration {
    Duration::from_secs_f64(env_f64("POUND_FUZZ_SECONDS", 2.0).max(0.0))
}

/// The seed: `POUND_FUZZ_SEED`, else a fixed one per target (FNV-1a of its name).
pub fn seed(target: &str) -> u64 {
    if let Ok(value) = std::env::var("POUND_FUZZ_SEED") {
        return value.parse().unwrap_or_else(|_| panic!("POUND_FUZZ_SEED={value:?} is not a u64"));
    }
    target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn fnv_hex(bytes: &[u8]) -> String {
    format!(
        "{:016x}",
        bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    )
}

fn save(target: &str, kind: &str, input: &[u8]) -> PathBuf {
    let dir = root().join("fixtures/fuzz").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{kind}-{}", fnv_hex(input)));
    std::fs::write(&path, input).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Running a target.

/// Panics inside a case being shrunk are expected: print nothing for them.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
}

fn panics(check: &dyn Fn(&[u8]), input: &[u8]) -> bool {
    QUIET.with(|quiet| quiet.set(true));
    let failed = panic::catch_unwind(AssertUnwindSafe(|| check(input))).is_err();
    QUIET.with(|quiet| quiet.set(false));
    failed
}

/// The smallest input found by deleting ever smaller ranges that still panics (a few thousand
/// tries or 30 s at most).
fn shrink(check: &dyn Fn(&[u8]), input: &[u8], dog: &Watchdog) -> Vec<u8> {
    let started = Instant::now();
    let more = |tries: u32| tries < 4000 && started.elapsed() < Duration::from_secs(30);
    let mut best = input.to_vec();
    let mut tries = 0;
    let mut chunk = best.len().div_ceil(2).max(1);
    while more(tries) {
        let mut at = 0;
        while at < best.len() && more(tries) {
            let mut candidate = best.clone();
            candidate.drain(at..(at + chunk).min(best.len()));
            tries += 1;
            dog.begin(&candidate);
            if panics(check, &candidate) {
                best = candidate;
            } else {
                at += chunk;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk /= 2;
    }
    best
}

/// Aborts the process when one case runs past the hang limit, after saving its input.
struct Watchdog {
    done: Arc<AtomicBool>,
    case: Arc<AtomicU64>,
    input: Arc<Mutex<Vec<u8>>>,
}

impl Watchdog {
    fn start(target: &'static str) -> Watchdog {
        let limit = Duration::from_secs_f64(env_f64("POUND_FUZZ_HANG_SECONDS", 10.0));
        let dog = Watchdog {
            done: Arc::new(AtomicBool::new(false)),
            case: Arc::new(AtomicU64::new(0)),
            input: Arc::new(Mutex::new(Vec::new())),
        };
        let (done, case, input) = (dog.done.clone(), dog.case.clone(), dog.input.clone());
        std::thread::spawn(move || {
            let (mut seen, mut since) = (u64::MAX, Instant::now());
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let now = case.load(Ordering::Relaxed);
                if now != seen {
                    (seen, since) = (now, Instant::now());
                } else if since.elapsed() > limit {
                    let path = save(target, "hang", &input.lock().unwrap());
                    eprintln!("fuzz {target}: one case ran over {limit:?}; input saved as {}", path.display());
                    std::process::abort();
                }
            }
        });
        dog
    }

    fn begin(&self, input: &[u8]) {
        let mut held = self.input.lock().unwrap();
        held.clear();
        held.extend_from_slice(input);
        self.case.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// One fuzz target.
pub struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    max_heap: fn(usize) -> usize,
}

/// What a run did, for the summary line and for targets that assert coverage.
#[derive(Debug, Default)]
pub struct Summary {
    pub cases: u64,
    pub peak_heap: usize,
}

impl Summary {
    /// Fails when a run of a second or more tried fewer than `least` cases: a generator or a
    /// harness that stopped producing. A replay-only run (`POUND_FUZZ_SECONDS=0`) is not judged.
    pub fn assert_ran(&self, least: u64) {
        if budget() >= Duration::from_secs(1) {
            assert!(self.cases >= least, "only {} cases ran", self.cases);
        }
    }
}

impl Target {
    /// A target called `name` (its corpus folder) mutating `seeds`, with the default heap bound: a
    /// mebibyte plus 256 bytes per input byte. Parsers keep a few structures per element of their
    /// input (a header, a parameter, a table), so their heap is linear with a large factor; the
    /// bound catches what matters, an allocation sized by a number read from the input (a length,
    /// a count) or growth faster than the input.
    pub fn new(name: &'static str, seeds: Vec<Vec<u8>>) -> Target {
        assert!(!seeds.is_empty(), "{name}: no seeds");
        Target { name, seeds, max_heap: |len| (1 << 20) + len.saturating_mul(256) }
    }

    /// The most heap one case may hold at once, as a function of its input length.
    pub fn max_heap(mut self, bound: fn(usize) -> usize) -> Target {
        self.max_heap = bound;
        self
    }

    /// Replays the corpus and the seeds, then mutated seeds until the budget is spent. `check`
    /// must panic when a property fails.
    pub fn run(self, check: impl Fn(&[u8])) -> Summary {
        self.run_with(mutated, check)
    }

    /// [`run`](Self::run) with a generator of its own (structure-aware inputs).
    pub fn run_with(self, mut generate: impl FnMut(&mut Rng, &[Vec<u8>]) -> Vec<u8>, check: impl Fn(&[u8])) -> Summary {
        install_quiet_hook();
        let seed = seed(self.name);
        let mut rng = Rng::new(seed);
        let dog = Watchdog::start(self.name);
        let mut summary = Summary::default();
        let started = Instant::now();
        let mut one = |input: &[u8], origin: &str| {
            dog.begin(input);
            let (outcome, heap) = peak_heap(|| panic::catch_unwind(AssertUnwindSafe(|| check(input))));
            summary.cases += 1;
            summary.peak_heap = summary.peak_heap.max(heap);
            let limit = (self.max_heap)(input.len());
            if outcome.is_err() || heap > limit {
                let (kind, kept) =
                    if outcome.is_err() { ("crash", shrink(&check, input, &dog)) } else { ("oom", input.to_vec()) };
                let path = if origin == "generated" { Some(save(self.name, kind, &kept)) } else { None };
                let what =
                    if kind == "crash" { "panic".to_string() } else { format!("{heap} bytes of heap (bound {limit})") };
                let saved = path.map(|p| format!("; saved as {}", p.display())).unwrap_or_default();
                let shown = String::from_utf8_lossy(&kept[..kept.len().min(400)]);
                panic!("fuzz {}: {what} on {origin} input {shown:?}{saved}; seed {seed}", self.name);
            }
        };
        for input in &self.seeds {
            one(input, "seed");
        }
        // Inputs that once failed are replayed, then mutated like the seeds: their neighbourhood
        // is where the next bug is likeliest.
        let mut seeds = self.seeds.clone();
        for (name, input) in corpus(self.name) {
            one(&input, &format!("corpus file {name}"));
            seeds.push(input);
        }
        let budget = budget();
        while started.elapsed() < budget {
            let input = generate(&mut rng, &seeds);
            one(&input, "generated");
        }
        eprintln!(
            "fuzz {}: {} cases in {:.1} s (seed {seed}), peak heap of one case {} bytes",
            self.name,
            summary.cases,
            started.elapsed().as_secs_f64(),
            summary.peak_heap
        );
        summary
    }
}
