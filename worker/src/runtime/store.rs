//! The job store the runtime writes to, when one is compiled in.
//!
//! With the `store` feature this is the sqlx [`JobStore`]. Without it,
//! [`Store`] has no values, so no store can be configured and the calls
//! that write to one compile to nothing, while the settle and report paths
//! stay written once.
//!
//! [`JobStore`]: spool_broker::store::JobStore

#[cfg(feature = "store")]
pub(crate) type Store = spool_broker::store::JobStore;

#[cfg(not(feature = "store"))]
pub(crate) use self::absent::Store;

#[cfg(not(feature = "store"))]
mod absent {
    use spool_broker::Result;
    use spool_broker::store::{Finished, ProgressUpdate, Started};

    /// No job store: a type without values.
    #[derive(Debug, Clone)]
    pub(crate) enum Store {}

    impl Store {
        pub(crate) async fn record_started(&self, _: &[Started]) -> Result<()> {
            match *self {}
        }

        pub(crate) async fn record_progress_many(&self, _: &[ProgressUpdate]) -> Result<()> {
            match *self {}
        }

        pub(crate) async fn record_outcomes(&self, _: &[Finished]) -> Result<()> {
            match *self {}
        }
    }
}
