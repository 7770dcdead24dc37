//! The job store (being written).
