//! The worker registry on Redis (being written).
