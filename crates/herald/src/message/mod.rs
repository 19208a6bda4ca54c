//! What flows through Herald: the envelope, subjects and patterns, priorities, timestamps.

pub(crate) mod event;
pub(crate) mod glob;
pub mod hop;
pub(crate) mod pattern;
pub(crate) mod priority;
pub(crate) mod subject;
pub(crate) mod timestamp;
pub(crate) mod trace;
