//! `pound bench`: benchmarks of a whole node on loopback, each printing one
//! JSON line. `load` holds many calls at once and measures the node's CPU and
//! memory per concurrent call; `rate` offers verifications at a fixed rate
//! through the API and measures what is accepted, how fast, and how it ends.

mod harness;
mod load;
mod rate;

pub use harness::CalleeKind;
pub use load::{LoadArgs, load};
pub use rate::{RateArgs, rate};

/// Why a benchmark could not run or measure.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The node or the callee did not start.
    #[error("start: {0}")]
    Start(String),
    /// A file, a process or `/proc` could not be used.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The node's API did not answer.
    #[error("API: {0}")]
    Http(#[from] reqwest::Error),
    /// The run cannot measure what was asked (e.g. the hold is too short).
    #[error("{0}")]
    Measure(String),
}
