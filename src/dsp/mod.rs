//! Signal processing: G.711, DTMF tone generation, the in-band DTMF
//! detector, and the recognisers of network announcements (SIT) and
//! voicemail boxes. No I/O, no clocks: samples in, events out.

pub mod dtmf;
pub mod g711;
pub mod sit;
pub mod steady;
pub mod tone;
pub mod voicemail;
