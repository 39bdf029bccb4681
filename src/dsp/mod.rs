//! Signal processing: G.711, DTMF tone generation and the in-band DTMF
//! detector. No I/O, no clocks: samples in, events out.

pub mod dtmf;
pub mod g711;
pub mod tone;
