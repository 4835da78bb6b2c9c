//! Placeholder: filled by its issue.
pub mod consul;
