//! # backend-redis
//!
//! tumbler's Redis backend: every primitive of [`lockcore`] on one Redis server, and mutexes
//! on a majority of independent masters (Redlock).
//!
//! ```no_run
//! # async fn demo() -> lockcore::Result<()> {
//! let locks = backend_redis::connect_url("redis://127.0.0.1:6379?ttl=10s").await?;
//! let guard = locks.mutex("jobs/nightly")?.lock().await?;
//! println!("fencing token {}", guard.fencing_token());
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! ## URLs
//!
//! ```text
//! redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?PARAMS]            one server
//! rediss://...                                                    the same over TLS
//! redis+redlock://[[USER]:PASSWORD@]H1[:P1],H2[:P2],...[/DB][?PARAMS]   Redlock over masters
//! rediss+redlock://...                                            Redlock over TLS
//! ```
//!
//! `USER:PASSWORD@` logs in as an ACL user, `:PASSWORD@` with `requirepass`; percent-encode
//! special characters. IPv6 hosts go in brackets; the port defaults to 6379. Parameters:
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `ttl` | `30s` | lock TTL; the watchdog renews every third of it; a crashed holder's lock is free within it |
//! | `drift` | `ttl/50 + 5ms` | clock-drift allowance: `lost()` fires this long before the TTL would run out |
//! | `prefix` | empty | prefix of every key (empty: the lock `a/b` is the key `a/b`, as redis-py's `Lock("a/b")`) |
//! | `connect_timeout` | `5s` | one connection attempt |
//! | `request_timeout` | `min(ttl/4, 5s)` | one request |
//! | `restart_delay` | `ttl` | no grants this long after a server restart that lost its data (`0s`: off) |
//! | `retry_delay` | `50ms` | Redlock: longest random pause after a split vote |
//! | `tls_ca` | system roots | PEM file of CA certificates to trust (`rediss`) |
//! | `tls_insecure` | `false` | do not verify the server certificate (tests only) |
//!
//! Durations are written `500ms`, `10s`, `2m`, `1h`. Unknown parameters and bad values are
//! [`lockcore::Error::InvalidArgument`] naming the parameter; wrong credentials are
//! [`lockcore::Error::Auth`]; an unreachable server is [`lockcore::Error::Connection`] or
//! [`lockcore::Error::Timeout`] within the connect timeout. Needs Redis 6.0 or newer (RESP3).
//! An ACL user needs `+@scripting +@pubsub +time +info` and access to the lock keys (`~*`, or
//! `~PREFIX*` with a prefix) and channels (`&*`).
//!
//! ## How locks are kept
//!
//! A mutex is the key `PREFIX + NAME` set with `SET key value NX PX ttl` semantics, exactly as
//! redis-py's `Lock(name)` and rslock set it, so they exclude tumbler's holders and tumbler
//! excludes theirs. Acquire, release, renewal and every other change run as Lua scripts
//! (`EVALSHA`, loaded on `NOSCRIPT`): one round trip to acquire a free lock, one to release.
//! The read-write lock keeps its writer in the same key (a mutex and a writer of one name
//! exclude each other) and its readers in a sorted set; a semaphore keeps its leases in a sorted
//! set scored by expiry, so the leases of a crashed holder expire on their own. The key layout is
//! below.
//!
//! **Watchdog and `lost()`.** Every hold is renewed every `ttl/3` by a task the guard owns (it
//! stops on release and when the guard is dropped). A hold is vouched for until `sent + ttl -
//! drift`, where `sent` is when the last successful renewal was sent; if renewal cannot succeed
//! by then (connection cut, process stalled), `lost()` fires before the key can expire on the
//! server, hence before a rival can acquire, as long as the holder's clock does not run slower
//! than the server's by more than the drift. A renewal that finds the key gone or taken over,
//! and a forced release ([`RedisBackend::force_release`]), fire `lost()` at once.
//!
//! **Fencing tokens** come from a per-name counter updated inside the acquire scripts as
//! `max(last + 1, server time in µs)`: strictly increasing across every holder of the name,
//! and still increasing after a restart that lost the counter, or a failover to a replica that
//! missed the last updates (given server clocks that agree to within the failover time).
//!
//! **Restarts.** A Redis without persistence forgets every lock when it restarts, while the
//! holders still believe they hold them. So after a restart (detected from the server's
//! uptime when the `PREFIX#tumbler:epoch` key is missing) no lock is granted until
//! `restart_delay` (default: the TTL) has passed, by which time every forgotten hold has been
//! declared lost by its holder. On a brand-new server this delays the first locks by up to the
//! TTL after the server started; [`RedisBackend::declare_fresh_servers`] skips that. A failover
//! to a replica that missed recent writes can still lose locks (Redis replication is
//! asynchronous): use a single primary, or Redlock, or a consensus store where that matters.
//! Likewise `FLUSHALL` and memory eviction remove locks like a `DEL` does (their holders learn
//! it at their next renewal): run lock servers with `maxmemory-policy noeviction`.
//!
//! ## Keys
//!
//! For a lock `NAME` with prefix `P` (empty by default), `K = P + NAME`:
//!
//! | key | type | what |
//! |---|---|---|
//! | `K` | string | the mutex / write-lock holder's value (`SET K value NX PX ttl`, as redis-py and rslock do) |
//! | `K#tumbler:readers` | zset | read holders: value → expiry (ms) |
//! | `K#tumbler:queue`, `K#tumbler:queue-exp` | zset | mutex/rwlock waiters: member → arrival (µs), member → expiry (ms) |
//! | `K#tumbler:sem` | zset | semaphore leases: value → expiry (ms) |
//! | `K#tumbler:sem-limit` | string | the limit the semaphore is used with |
//! | `K#tumbler:sem-queue`, `K#tumbler:sem-queue-exp` | zset | semaphore waiters |
//! | `K#tumbler:fence` | string | the last fencing token handed out for `NAME` |
//! | `K#tumbler:revoked` | set | values of holds asked to release |
//! | `K#tumbler:events` | channel | `wake MEMBER`, `free`, `revoke VALUE…`, `gone VALUE…` |
//! | `P#tumbler:epoch` | string | when the server's data set began (restart detection) |
//!
//! Lock names cannot contain `#`, so no auxiliary key can be another lock's key.
//!
//! Values: `ID:MODE:TOKEN`, where `ID` is 32 hex digits unique per acquisition, `MODE` is `x`
//! (mutex), `w` (write), `r` (read) or `pN` (N permits), and `TOKEN` the fencing token.
//! Waiter members: `ID:MODE` (`x`, `w`, `r`, `p`).
//!
//! ## Hand-off and fairness
//!
//! Waiters never poll on a fixed interval. A waiter that finds the lock busy subscribes to the
//! lock's channel (`K#tumbler:events`, on the same RESP3 connection as its commands) and joins
//! a queue in Redis; each release publishes `wake MEMBER` to the head of the queue, which
//! acquires at once. A lost message is covered by a retry no later than the holder key's
//! remaining TTL (and at least every `ttl/3`, which also keeps the waiter's queue entry alive;
//! a waiter that vanishes is dropped from the queue after one TTL).
//!
//! **Fairness: FIFO.** Mutex, read-write and semaphore waiters are served strictly in arrival
//! order, and `try_lock` on a free lock with a queue fails rather than jumping it. Readers
//! that arrive while no writer holds or waits share the lock at once; a waiting writer keeps
//! later readers out, so writers do not starve. A semaphore waiter for `n` permits at the head
//! of the queue holds back later, smaller requests until its `n` permits are free. Clients that
//! do not queue (redis-py, rslock) may take a free key ahead of the queue.
//!
//! ## Redlock
//!
//! `redis+redlock://h1,h2,h3` (or [`RedisConfig::redlock`]) takes each mutex on a majority of
//! independent masters within `ttl - drift`, releases on all, and retries with jitter; mutexes
//! only, not fair, fencing tokens best effort: see the `redlock` module source for the
//! algorithm and why Redlock cannot give safe fencing tokens. When a majority of masters is
//! unreachable, acquisitions fail with [`lockcore::Error::Connection`].

#![warn(missing_docs)]

mod backend;
mod config;
mod error;
mod hold;
mod hub;
mod keys;
mod node;
mod redlock;
mod reply;
mod scripts;
mod single;
mod tls;
mod url;
mod watchdog;

pub use backend::RedisBackend;
pub use config::{RedisConfig, RedisNode, DEFAULT_TTL, MAX_TTL, MIN_TTL};

/// Connects by URL (see the crate docs for the grammar) and returns the shared backend.
///
/// ```no_run
/// # async fn demo() -> lockcore::Result<()> {
/// let locks = backend_redis::connect_url("redis://app:s3cret@127.0.0.1:6379?prefix=myapp:").await?;
/// # Ok(()) }
/// ```
pub async fn connect_url(url: &str) -> lockcore::Result<lockcore::SharedBackend> {
    RedisConfig::from_url(url)?.connect().await
}
