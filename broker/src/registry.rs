//! The worker registry (being written).
