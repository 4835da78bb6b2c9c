//! The Lua scripts: every change to a lock's keys happens inside one of them, atomically.
//!
//! The sources are the `.lua` files in `src/lua/`: helper groups (`clock`, `queue`, `grant`,
//! `leader`, `handoff`, `values`) that a script starts with, and one file per script with its keys, arguments and
//! replies at the top. They are sent with `EVALSHA` and loaded on `NOSCRIPT` (the redis
//! crate's [`Script`]). Times come from the server's `TIME` (read by `tick()` where a script
//! needs them; the fast paths of acquiring and releasing a free mutex never do), so client
//! clocks never meet server clocks. Numbers that leave a script are formatted with `%d` (Lua would print large ones in
//! exponent form).
//!
//! Data tumbler did not write (a key of another type, a counter that is not a decimal number
//! below 2^53) stops a script with the error `TUMBLERCONFLICT key K ...`, which the client
//! turns into [`tumbler_core::Error::Conflict`] (see [`crate::error`]).

use std::sync::LazyLock;

use redis::Script;

/// A script made of helper groups and a body, each a file in `src/lua/`.
macro_rules! script {
    ($name:ident, [$($part:literal),*], $body:literal) => {
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                $(include_str!(concat!("lua/", $part, ".lua")),)*
                include_str!(concat!("lua/", $body, ".lua"))
            ))
        });
    };
}

script!(
    ACQUIRE_LOCK,
    ["clock", "queue", "grant", "leader"],
    "acquire_lock"
);
script!(
    RELEASE_LOCK,
    ["clock", "queue", "grant", "leader", "handoff"],
    "release_lock"
);
script!(EXTEND_LOCK, ["clock"], "extend_lock");
script!(DOWNGRADE, ["clock", "queue", "grant"], "downgrade");
script!(
    CANCEL_LOCK,
    ["clock", "queue", "grant", "leader", "handoff"],
    "cancel_lock"
);
script!(ACQUIRE_SEM, ["clock", "queue", "grant"], "acquire_sem");
script!(RELEASE_SEM, ["clock", "queue"], "release_sem");
script!(EXTEND_SEM, ["clock"], "extend_sem");
script!(CANCEL_SEM, ["clock", "queue"], "cancel_sem");
script!(REVOKE, ["clock", "queue", "values"], "revoke");
script!(
    FORCE_RELEASE,
    ["clock", "queue", "grant", "leader", "handoff", "values"],
    "force_release"
);
script!(STATE, ["clock"], "state");
script!(READ_LEADER, ["clock", "leader"], "read_leader");
script!(PROCLAIM, ["clock", "leader"], "proclaim");
script!(RECOVERING, ["clock", "grant"], "recovering");
#[cfg(feature = "test-hooks")]
script!(DECLARE_FRESH, [], "declare_fresh");
