//! # tumbler-consul
//!
//! tumbler's Consul backend: distributed mutexes, semaphores, read-write locks and leader elections on a Consul
//! agent's sessions and KV store, through its HTTP API.
//!
//! ```no_run
//! # async fn demo() -> tumbler_core::Result<()> {
//! let locks = tumbler_consul::connect_url("consul://127.0.0.1:8500?lock_delay=1s").await?;
//! let guard = locks.mutex("jobs/nightly")?.lock().await?;
//! println!("fencing token {}", guard.fencing_token());
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! # URL grammar
//!
//! `consul://HOST[:PORT][/][?PARAMS]` (plain http, default port 8500) or
//! `consuls://HOST[:PORT][/][?PARAMS]` (https, default port 8501), parsed by lockcore's
//! [`tumbler_core::url::StoreUrl`]: one agent, no port 0, no path, no user info (the ACL token is
//! `?token=`, given once). Parameters:
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `ttl` | `15s` | session TTL, 1s..=24h (a real agent requires ≥ its `session_ttl_min`, 10s by default); renewed every TTL/2 |
//! | `lock_delay` | `15s` | lock-delay of this client's session, 0s..=60s (`0s` allowed: fast hand-off after a crash) |
//! | `prefix` | `tumbler/` | KV prefix of every key (may be empty: `prefix=`) |
//! | `token` | none | ACL token, sent as `X-Consul-Token` |
//! | `session_name` | `tumbler (pid N)` | the session's name in the UI |
//! | `dc` | the agent's | datacenter |
//! | `connect_timeout` | `5s` | TCP/TLS connect timeout |
//! | `request_timeout` | `10s` | timeout of one request (blocking queries get their wait on top) |
//! | `query_wait` | `60s` | longest single blocking query |
//! | `tls_ca` (alias `ca_file`) | system roots | PEM CA certificate(s) to trust (`consuls://` only) |
//! | `tls_cert`, `tls_key` (aliases `cert_file`, `key_file`) | none | client certificate and key for `verify_incoming` agents (`consuls://` only) |
//!
//! The TLS names are lockcore's ([`tumbler_core::tls::TlsParams`]), the same on every store;
//! `tls_insecure=true` is refused (the agent's certificate is always verified).
//!
//! Durations are written `500ms`, `10s`, `2m`, `1h`. Unknown parameters are errors. For code,
//! [`ConsulConfig`] has a builder with the same settings and [`ConsulConfig::from_env`] reads
//! the `CONSUL_HTTP_*` variables the `consul` CLI reads.
//!
//! # Keys, and working with `consul lock` and Go clients
//!
//! A lock name `NAME` lives under `<prefix>NAME/` (each `:` in the name becomes `,`, since
//! Consul 1.21.5+ refuses `:` in keys; [`tumbler_core::LockName`] refuses segments starting with
//! `.`, which are this layout's own):
//!
//! - **Mutex**: the api.Lock protocol on the key `<prefix>NAME/.lock` with flags
//!   `0x2ddccbc058a50c18` — the key `consul lock <prefix>NAME …` uses. So
//!   `consul lock tumbler/jobs/nightly ./run.sh` excludes with `locks.mutex("jobs/nightly")`,
//!   and a Go service excludes with us using `client.LockKey("tumbler/jobs/nightly/.lock")`.
//!   With `prefix=` (empty) the name is the `consul lock` prefix itself. Each `consul lock` and
//!   api.Lock session has its own lock-delay (api.Lock's default is 15s).
//! - **Semaphore**: api.Semaphore's layout under the prefix `<prefix>NAME/`: contender keys
//!   `<prefix>NAME/<session>` and the holders record `<prefix>NAME/.lock`
//!   (`{"Limit":n,"Holders":{…}}`, flags `0xe0f69a2baa414de0`), so `consul lock -n N
//!   <prefix>NAME …` and Go's `SemaphorePrefix` share it. Each lease has its own session; a
//!   lease of n permits is one holder entry whose contender value records n. Go clients count
//!   each holder as one permit: mix them only with leases of one permit.
//! - **RwLock**: tumbler's own design (see the `rwlock` module docs): a CAS-updated record
//!   `<prefix>NAME/.rwlock` and contender keys `<prefix>NAME/.rw/<lease>`.
//! - Mutex waiters queue in `<prefix>NAME/.queue/<session>` so that a release wakes one waiter,
//!   not all of them (api.Lock's waiters all wake on every release).
//!
//! - **Election**: Consul's leader-election guide on the key `<prefix>NAME/leader` (flags 0,
//!   as the guide sets none): a campaign `PUT`s it with `?acquire=<the backend's session>` and
//!   its value as the body; `true` elects it. The guide recommends the key
//!   `service/<service name>/leader`: with `prefix=service/`, `locks.election("web")` is that
//!   key (`service/web/leader`), shared with every client that follows the guide (our
//!   [`tumbler_core::Election::leader`] reports their body and session, and they see ours).
//!   [`ConsulBackend::election_key`] tells the key. The leader's value is the key's value;
//!   [`tumbler_core::Leadership::proclaim`] acquires the key again with the new body (Consul
//!   keeps the lock, and its LockIndex, for the session that holds it). tumbler's waiting
//!   candidates queue in `<prefix>NAME/.candidates/<session>` so a resignation wakes one of
//!   them (the guide's followers all watch the key and try `?acquire=` whenever it has no
//!   `Session`; they compete with our queue's head as Go clients do with our mutex waiters).
//!   A resigning leader releases the key (`?release=`, empty body) and deletes it if nobody
//!   took it meanwhile. A key carrying api.Lock's or api.Semaphore's flags is in use as a
//!   mutex or semaphore by a Go client: [`tumbler_core::Error::Conflict`] naming both kinds.
//!   Values may be up to [`MAX_VALUE_LEN`] (512 KiB, Consul's default `kv_max_value_size`;
//!   an agent configured lower answers a larger value with an error). Revocation requests do
//!   not reach leaders (the key's value is the leader's data, with no room for a marker):
//!   `request_revoke` on an election counts 0.
//!
//! # One name, one kind
//!
//! While a name is held or waited on by one primitive (mutex, semaphore, read-write lock,
//! election),
//! asking for it as another gives [`tumbler_core::Error::Conflict`] naming both kinds and the key
//! that shows the other use; once it is free, any kind may use it (an unused semaphore record
//! or released mutex key is taken over). Each acquisition puts its own key first and then
//! lists the name's folder, so of two acquisitions of different kinds at least one sees the
//! other (both may be refused; they never both hold). A semaphore's limit is recorded in its
//! holders record: while the semaphore is in use, another limit is a `Conflict`. Nested names
//! (`a` and `a/b`) are independent locks: a folder's listing includes longer names' keys, and
//! they are ignored. Data at a name's keys that neither tumbler nor Consul's lock clients wrote
//! (unknown flags at `.lock` or `.rwlock`, a record that does not decode) is a `Conflict`
//! naming the key: delete the key or use another name.
//!
//! # Sessions
//!
//! One session per backend instance (TTL and lock-delay from the URL, `Behavior=release`, like
//! api.Lock's) carries every mutex and read-write hold of that instance, so holding many locks
//! costs one renewal every TTL/2, not one per lock. Because Consul grants `?acquire=` again to
//! the session that already holds a key, the instance lets only one of its own tasks at a time
//! use a given mutex key (the others wait locally; a `try_lock` that finds the key taken by
//! another task reads it from the agent once, so it says "busy" only if the agent answers). Each semaphore lease, and each queued mutex
//! waiter, has a session of its own (`Behavior=delete`, no lock-delay), as api.Semaphore does:
//! its keys vanish when it is destroyed, which is also how a cancelled acquisition cleans up.
//! When the backend's session is lost, a new one is created in the background at once.
//!
//! # State and revocation
//!
//! [`tumbler_core::LockBackend::state`] lists one folder: the mutex holder (session ID and token),
//! semaphore holders (session ID and permits), read-write holders (lease ID and side), an
//! election's leader (session ID and term), and as
//! waiters tumbler's queued mutex waiters and candidates and the live semaphore / read-write contenders that
//! hold nothing (a Go api.Lock client waiting on a key is invisible). The listing includes the
//! keys of longer names below `NAME/`, so keep such trees small.
//! [`tumbler_core::LockBackend::request_revoke`] writes a marker with `?cas=` into the held mutex
//! key's value (the holder's session stays; the next acquisition clears it), or a nonce into
//! the semaphore / read-write record; the holders' blocking queries see it.
//!
//! # Guarantees and their bounds
//!
//! - **Terms** of an election strictly increase from leader to leader, ours and the guide's
//!   clients' alike: the term is `CreateIndex + LockIndex` of the election key, the same for
//!   every reader and across proclaims. LockIndex grows with each new holder of the key; a key
//!   deleted and created again starts over at a CreateIndex above every earlier acquisition's
//!   index. A key rewritten without `?acquire=` (which restarts LockIndex at 0) is a
//!   `Conflict` naming the key, as is one rewritten while we acquired it.
//! - **Fencing tokens** strictly increase per name: a hold's token is the ModifyIndex of its
//!   key (mutex) or record (semaphore, read-write lock) read right after it was granted, while
//!   it was still held. Consul's index is global and grows with every write, and the next
//!   holder can only be granted by a later write, so its token is larger. (LockIndex is not
//!   used: it restarts at 0 when a key is rewritten.)
//! - **`lost()`** fires with [`tumbler_core::LostReason::SessionExpired`] when the agent reports
//!   the session gone (a renewal answers 404, or the hold's keys were released because the
//!   agent invalidated the session), with [`tumbler_core::LostReason::RenewalFailed`] when no
//!   renewal has succeeded for 0.9 × TTL since it was sent (the agent cannot be reached;
//!   lockcore's keeper, [`tumbler_core::keeper::Validity::consul`]), and with
//!   [`tumbler_core::LostReason::Deleted`] when a blocking query on the hold's keys shows them
//!   deleted or held by another session while the session lives. The deadline is on the hold
//!   from its grant, so a holder stalled right after `lock()` sees the loss on its next look.
//! - **Connection events**: `Connected`; `Suspended` as soon as a request fails, answers "not
//!   now" (no leader, 429, 5xx gateway) or goes unanswered for half the request timeout (at
//!   most 1 s); `Reconnected` when the agent answers again and the session was kept; `Lost`
//!   when the backend's session is gone, then `Reconnected` once a new one (created in the
//!   background at once) is usable.
//! - **Unreachable agent**: every request has a timeout (`request_timeout`, also reported as
//!   [`tumbler_core::Capabilities::request_timeout`]); a failed one is
//!   [`tumbler_core::Error::Connection`] or [`tumbler_core::Error::Timeout`] stating the real elapsed
//!   time, never "busy". A waiter whose session runs out while the agent is unreachable ends
//!   with one of them.
//!   Consul invalidates a session only after 2 × TTL without renewal and then keeps its locks
//!   unacquirable for the lock-delay, so the holder gives up at least 1.1 × TTL + lock-delay
//!   before a rival can be granted (with clocks whose rates differ by less than 10%). When
//!   someone else invalidates the session (an operator, a failed health check), only the
//!   lock-delay separates the server-side release from a rival's grant: with `lock_delay=0s`
//!   the old holder's `lost()` then races the rival. Semaphores and read-write locks have no
//!   lock-delay (api.Semaphore prunes a dead holder at once), so there that race always exists
//!   for an externally invalidated session; the holder's blocking query usually wins it, as the
//!   rival needs two more round trips after the same wake-up.
//! - **Crash**: a killed holder's locks are free again within 2 × TTL (session invalidation)
//!   plus the lock-delay, and not before the invalidation; see
//!   [`ConsulConfig::crash_release_bound`].
//! - **Hand-off** uses blocking queries (`?index=&wait=`); an acquire refused while the key is
//!   free (a lock-delay) waits out our configured lock-delay with a blocking query, then backs
//!   off from 100ms. No fixed-interval polling.
//! - **Cancellation**: dropping an acquisition (a cancelled or timed-out wait) destroys its
//!   waiter or lease session (Consul deletes its keys) and releases a key that was being
//!   acquired, keeping the key's local gate closed until that is done; the destroy runs on
//!   another runtime if the acquisition's runtime ends first.
//! - **Killed waiters**: a waiter that dies keeps its keys until Consul invalidates its
//!   session (2 × TTL), but it keeps a free lock from waiting acquisitions for at most
//!   [`DEAD_WAITER_GRACE`] plus one request, whatever the TTL (see
//!   [`ConsulConfig::waiter_release_bound`]).
//! - **Shutdown**: [`tumbler_core::LockBackend::shutdown`] releases every mutex hold with
//!   `?release=` (no lock-delay), destroys every session of the backend (its own, every lease's
//!   and waiter's), so every hold reports `lost()` and every waiter ends with
//!   [`tumbler_core::Error::Closed`]. Call it before the process exits: a session that is not
//!   destroyed keeps its locks until Consul invalidates it (2 × TTL) plus the lock-delay.
//!   Guards dropped outside any runtime are released on lockcore's background runtime.
//! - **ACLs and TLS**: a refused token gives [`tumbler_core::Error::Auth`]; `consuls://` uses rustls
//!   (ring) with the system's roots or `ca_file`. The `tls` feature (on by default) builds
//!   reqwest with `rustls-no-provider` and hands it an explicit ring configuration; other
//!   reqwest clients in the same program that rely on reqwest's built-in provider then need one
//!   installed (`rustls::crypto::ring::default_provider().install_default()`) or reqwest's
//!   `rustls` feature. Without the `tls` feature, `consuls://` is refused with a message.
//! - **Leader elections**: answers such as `No cluster leader`, RPC failures, 429 and gateway
//!   errors are connection errors (transient): renewals and monitors retry them, a failed
//!   release is retried in the background by lockcore, and the session's validity bounds how
//!   long a hold survives without the servers.
//!
//! # What is not supported
//!
//! Sessions tied to health checks other than the agent's default `serfHealth` (sessions here
//! use TTLs), Consul Enterprise namespaces and admin partitions, and FIFO order (a new
//! acquisition may take a lock that was just released before the first queued waiter does).
#![warn(missing_docs)]

mod api;
mod backend;
mod config;
mod election;
mod gates;
mod kinds;
mod layout;
mod mutex;
mod queue;
mod record;
mod rwlock;
mod semaphore;
mod session;
mod state;
mod watch;

pub use backend::{ConsulBackend, MAX_VALUE_LEN};
pub use config::{
    ConsulConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_LOCK_DELAY, DEFAULT_QUERY_WAIT,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SESSION_TTL, MAX_LOCK_DELAY, MAX_SESSION_TTL, MIN_SESSION_TTL,
    URL_PARAMETERS,
};
pub use layout::{DEFAULT_PREFIX, LOCK_FLAGS, QUEUE_FLAGS, RWLOCK_FLAGS, SEMAPHORE_FLAGS};
pub use queue::DEAD_WAITER_GRACE;

/// Connects to the agent named by a `consul://` or `consuls://` URL (see the crate docs for the
/// grammar) and returns a shared backend.
///
/// Fails with [`tumbler_core::Error::InvalidArgument`] for a malformed URL or setting,
/// [`tumbler_core::Error::Connection`] or [`tumbler_core::Error::Timeout`] when the agent cannot be
/// reached, and [`tumbler_core::Error::Auth`] when it refuses the token.
pub async fn connect_url(url: &str) -> tumbler_core::Result<tumbler_core::SharedBackend> {
    ConsulConfig::from_url(url)?.connect().await
}
