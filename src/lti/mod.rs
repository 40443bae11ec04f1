//! Pure LTI 1.1 protocol code: values in, values out, no I/O, no clock, no
//! randomness. Tested with published vectors and fuzzable.

pub mod cartridge;
pub mod encode;
pub mod launch;
pub mod oauth1;
pub mod outcomes;
pub mod roles;
