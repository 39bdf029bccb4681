//! The subcommands of the `pound` binary, each a function from parsed
//! arguments to output; `main.rs` only parses the command line.

pub mod audit;
pub mod bench;
pub mod call;
pub mod demo;
pub mod dtmf;
pub mod keys;
pub mod phone;
pub mod replay;
pub mod serve;
