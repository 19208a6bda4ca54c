//! One module per `herald` verb.

pub(crate) mod bench;
pub(crate) mod demo;
