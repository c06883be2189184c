//! The errorflow collector.
pub mod model;
pub mod pipeline;
pub mod store;
