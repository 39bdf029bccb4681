//! The toll-fraud (IRSF) guard: which numbers may be called at all
//! ([`numbers`]) and how fast ([`velocity`]).
//!
//! A calling API invites international revenue share fraud: an attacker
//! submits numbers in ranges that pay out per minute and lets the service
//! run up the bill. Both halves are on by default. The number rules are pure
//! and run twice: at the API, so a refused number is never stored, and in the
//! engine right before dialling, so a row written by an older node or under
//! an older configuration ends `blocked` instead of ringing. The velocity
//! limits are counted in the store, inside the transaction that inserts the
//! verification, so nodes sharing a database share them exactly.

pub mod numbers;
pub mod velocity;

pub use numbers::{NumberRefusal, NumberRules};
pub use velocity::VelocityLimits;
