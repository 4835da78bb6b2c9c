//! # conformance
//!
//! One suite for every tumbler backend. Each case checks one of the ten promises
//! (`docs/promises.md` in the repository) on a
//! [`Harness`] (how to connect fresh clients and inject faults), reading recorded
//! [histories](history) rather than trusting "it didn't crash". A hook a backend lacks makes
//! the cases that need it report `SKIPPED <backend>::<case>: <reason>`.
//!
//! - `conformance::suite!(harness_fn)` instantiates every case as a `#[tokio::test]`
//!   (see `tests/memory.rs` and one file per store).
//! - [`mutants`] are deliberately broken backends; `tests/mutants.rs` runs the suite on each and
//!   prints which cases kill which mutant (promise 10: the suite itself can fail).
//! - [`ProxiedClients`] keeps a real-store harness's clients and the fault proxies in front of
//!   them, and serves the connection-cut hooks ([`routes`]).
//! - The `holder` binary takes a lock by URL and waits to be killed, for real crash tests
//!   ([`ProcessHolder`]).

pub mod cases;
pub mod explore;
pub mod harness;
pub mod history;
pub mod memory;
pub mod mutants;
pub mod process_holder;
pub mod routes;
pub mod runner;
pub mod util;

pub use harness::{Foreign, Harness, Holder, HookError, HookResult, TestClient};
pub use process_holder::ProcessHolder;
pub use routes::ProxiedClients;
pub use util::{CaseResult, Verdict};
