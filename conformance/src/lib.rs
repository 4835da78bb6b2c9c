//! The conformance suite (under construction).
pub mod harness;
pub mod process_holder;
pub use harness::{HookError, HookResult, Holder, Harness, TestClient};
pub use process_holder::ProcessHolder;
