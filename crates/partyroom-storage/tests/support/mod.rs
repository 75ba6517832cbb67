//! Shared by the integration tests of this crate.

#[cfg(feature = "postgres")]
pub mod postgres;
