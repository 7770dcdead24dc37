//! Placeholder: the in-memory broker is being written.

/// An in-memory broker (being written).
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker;
