//! The conformance suite: one set of delivery tests that every Herald transport must pass.
