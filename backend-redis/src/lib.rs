//! # tumbler-redis
//!
//! tumbler's Redis backend: every primitive of [`tumbler_core`] (mutexes, read-write locks,
//! semaphores, leader elections) on one Redis server (directly, or the master that Redis
//! Sentinel names, followed across failovers), on a Redis Cluster (each lock on the shard of its
//! slot), and mutexes on a majority of independent masters (Redlock).
//!
//! ```no_run
//! # async fn demo() -> tumbler_core::Result<()> {
//! let locks = tumbler_redis::connect_url("redis://127.0.0.1:6379?ttl=10s").await?;
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
//! redis+cluster://[[USER]:PASSWORD@]H1[:P1],H2[:P2],...[?PARAMS]  a Redis Cluster (some of its nodes)
//! rediss+cluster://...                                            the same over TLS
//! redis+sentinel://[[USER]:PASSWORD@]S1[:P1],S2[:P2],.../MASTER_NAME[/DB][?PARAMS]  via Sentinel
//! ```
//!
//! `USER:PASSWORD@` logs in as an ACL user, `:PASSWORD@` with `requirepass`; percent-encode
//! special characters. IPv6 hosts go in brackets; the port defaults to 6379. Parameters:
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `ttl` | `30s` | lock TTL; the watchdog renews every third of it; a crashed holder's lock is free within it |
//! | `drift` | `ttl/100 + 2ms` | clock-drift allowance: `lost()` fires this long before the TTL would run out |
//! | `prefix` | empty | prefix of every key (empty: the lock `a/b` is the key `a/b`, as redis-py's `Lock("a/b")`) |
//! | `connect_timeout` | `5s` | one connection attempt |
//! | `request_timeout` | `min(ttl/4, 5s)` | one request |
//! | `restart_delay` | `ttl` | no grants this long after the server's data set began, unless it persists every write (`0s`: off); see Restarts |
//! | `retry_delay` | `50ms` | Redlock: longest random pause after a split vote |
//! | `tls_ca` | system roots | PEM file of CA certificates to trust (`rediss`) |
//! | `tls_insecure` | `false` | do not verify the server certificate (tests only) |
//! | `user`, `password` | none | credentials, instead of `USER:PASSWORD@` (giving both is refused) |
//! | `min_replicas` | `0` | replicas that must acknowledge every grant and renewal (`WAIT`); see below |
//! | `min_replicas_timeout` | `request_timeout / 2` | how long that `WAIT` may take (below `request_timeout`) |
//! | `sentinel_user`, `sentinel_password` | none | Sentinel: credentials of the sentinels themselves |
//!
//! Durations are written `500ms`, `10s`, `2m`, `1h`. Unknown parameters and bad values are
//! [`tumbler_core::Error::InvalidArgument`] naming the parameter, and so are port 0, credentials
//! given twice and a Redlock master or cluster node listed twice (also as `localhost`, `127.0.0.1` and `[::1]`
//! for one machine); all checked at connect. Wrong credentials are
//! [`tumbler_core::Error::Auth`]; an unreachable server is [`tumbler_core::Error::Connection`] or
//! [`tumbler_core::Error::Timeout`] within the connect timeout. Needs Redis 6.0 or newer (RESP3).
//! An ACL user needs `+@scripting +@pubsub +time +info` and access to the lock keys (`~*`, or
//! `~PREFIX* ~{PREFIX*` with a prefix: the companion keys start with `{`) and channels (`&*`).
//!
//! ## Sentinel
//!
//! `redis+sentinel://S1:26379,S2:26379/mymaster` lists the sentinels (port 26379 when left out)
//! and, as the path, the name they monitor the master under; `/mymaster/2` selects database 2.
//! The URL's credentials (or `user`, `password`) are the master's (and its replicas'), the
//! other parameters are those of `redis://`. The backend asks the sentinels for the master at
//! connect and whenever it needs a new connection: after the connection broke (the sentinels
//! close the demoted master's clients), or after a request met a replica (`READONLY`, or a
//! reply saying the server is a replica). That request fails with a transient
//! [`tumbler_core::Error::Connection`]; waiting acquisitions ride it out and every primitive
//! works on the new master as on a single server. Until the sentinels have reconfigured the old
//! master, a grant can still land on it and be lost with it (see `min_replicas`). At connect, a
//! master name the sentinels do not monitor is [`tumbler_core::Error::InvalidArgument`] listing
//! the names they do, no reachable sentinel (or a data server listed as one) is
//! [`tumbler_core::Error::Connection`], a malformed host list, an empty master name or a sentinel
//! listed twice is `InvalidArgument`. TLS through Sentinel (`rediss+sentinel://`) is refused
//! for now. In code: [`RedisConfig::sentinel`].
//!
//! ## Redis Cluster
//!
//! `redis+cluster://H1:7000,H2:7001` lists some nodes of a cluster (one is enough; list a few
//! in case one is down); the other parameters are those of `redis://`, and the path must be
//! empty (a cluster has only database 0). At connect the backend reads the slot map
//! (`CLUSTER SLOTS`) from the first node that answers and connects to every master. Every key
//! and channel of one lock hashes to the lock key's slot (see Keys), so each lock lives on the
//! shard that serves its slot, with every primitive, the fencing counter, the FIFO hand-off and
//! the inbox channels exactly as on a single server (the restart epoch is the lock's own there,
//! `T#tumbler:epoch`). redis-py's `RedisCluster(...).lock(NAME)` and a tumbler mutex exclude
//! each other, as on one server.
//!
//! **Failover and resharding.** When a shard's master dies, its connection breaks and requests
//! on it fail with a transient [`tumbler_core::Error::Connection`] (waiting acquisitions ride
//! it out); the next connection goes to the master the cluster names for the shard's slots then
//! (asked of the last master and then of the URL's nodes), which is the promoted replica once
//! the failover is done. A `MOVED` reply (a demoted master, or a slot moved by resharding) is
//! the same transient error; it is recorded, so that later requests on that slot go to the
//! master named, if the backend has a connection to it (a master added after connect is not
//! used until the backend is made again). `ASK`, `TRYAGAIN` and `CLUSTERDOWN` (a slot being
//! migrated, a cluster without a majority) are transient too. A hold whose slot moved to
//! another shard is not followed: its renewals fail there and `lost()` fires, which is safe
//! but ends the hold; reshard while no locks of the moved slots are held. As with Sentinel,
//! Redis replication is asynchronous: a grant the replica had not received when its master
//! died is forgotten by the promoted replica (see `min_replicas`, and fence).
//!
//! **Connection events** cover all shards: `Suspended` when a request on any shard failed,
//! `Lost` when one stayed unreachable for a whole TTL, `Reconnected` when every shard answers.
//!
//! At connect, a `redis+cluster://` URL at a server without cluster support, and a `redis://`
//! or `redis+sentinel://` URL at a cluster node (which would reach that node's slots only), are
//! [`tumbler_core::Error::InvalidArgument`] saying which URL to write; a cluster that does not
//! serve every slot is `InvalidArgument` too; no reachable node is
//! [`tumbler_core::Error::Connection`]. In code: [`RedisConfig::cluster`].
//!
//! ## Replica acknowledgement (`min_replicas`)
//!
//! With `min_replicas=N` (`redis://`, `redis+sentinel://` and `redis+cluster://`, where every
//! shard's master is checked and waited on; refused with Redlock), a grant
//! or a renewal counts only once `WAIT N min_replicas_timeout`, sent on the connection that
//! wrote it, confirms that N replicas received it. A grant they did not confirm is undone
//! (released) and the acquisition fails with a transient [`tumbler_core::Error::Connection`]
//! naming N and how many did acknowledge; its source is a [`ReplicasMissing`]. A renewal they
//! did not confirm counts as failed, so `lost()` fires with `RenewalFailed` when the hold's
//! validity runs out. A lock handed over by a release (written on the releaser's connection)
//! is first extended on the new holder's connection, which is then waited on. At connect, a
//! master with fewer than N connected replicas, or a replica, is
//! [`tumbler_core::Error::InvalidArgument`] on `min_replicas` saying how many there are.
//!
//! What it does **not** promise: Redis replication is asynchronous and `WAIT` is not
//! consensus. It tells that N replicas received the write, not that they persisted it or that a
//! failover promotes one of them; per the Redis documentation of `WAIT`, a failover can still
//! lose an acknowledged write in rare cases. It narrows the window in which a failover forgets
//! a hold; it does not close it (fencing tokens are the answer where that matters). While
//! replicas lag, `WAIT` blocks the backend's shared connection for up to the timeout, delaying
//! its other requests. The default, `min_replicas=0`, sends no `WAIT` and keeps the six-command
//! lock/unlock cycle below. See [`RedisConfig::min_replicas`].
//!
//! ## How locks are kept
//!
//! A mutex is the key `PREFIX + NAME` set with `SET key value NX PX ttl` semantics, exactly as
//! redis-py's `Lock(name)` and rslock set it, so they exclude tumbler's holders and tumbler
//! excludes theirs. Acquire, release, renewal and every other change run as Lua scripts
//! (`EVALSHA`, loaded on `NOSCRIPT`): one round trip to acquire a free lock, one to release.
//! Taking and releasing a free mutex costs the server six commands in all, counting those
//! inside the scripts (`EVALSHA`, `INCRBY` of the fencing counter and `SET NX PX`; `EVALSHA`,
//! `GET` and `DEL`), as long as nobody waits, reads or holds permits under the name; anything
//! else takes the scripts' slow path.
//! The read-write lock keeps its writer in the same key (a mutex and a writer of one name
//! exclude each other) and its readers in a sorted set; a semaphore keeps its leases in a sorted
//! set scored by expiry, so the leases of a crashed holder expire on their own. The key layout is
//! below.
//!
//! **Renewal and `lost()`.** Every hold is renewed every `ttl/3` by a
//! [`tumbler_core::keeper::Keeper`] the guard owns (it stops on release and when the guard is
//! dropped). A hold is vouched for until `sent + ttl - drift`
//! ([`tumbler_core::keeper::Validity::redis`]), where `sent` is when the acquiring request or the
//! last successful renewal was sent; that deadline is on the guard from the moment `lock()`
//! returns, so a holder stalled right after it (GC pause, SIGSTOP, a blocked thread) sees
//! `lost_reason()` as `Some` on its first look when it runs again. If renewal cannot succeed by
//! then (connection cut, server stalled), `lost()` fires with `RenewalFailed` before the key
//! can expire on the server, hence before a rival can acquire, as long as the holder's clock
//! does not run slower than the server's by more than the drift. A renewal that finds the key
//! gone or taken over, and a forced release ([`RedisBackend::force_release`]), fire `lost()`
//! with `Deleted` at once; a key forgotten by a server restart (the server's run id changed)
//! with `ServerRestarted`.
//!
//! **Connection events.** `Connected` at first; `Suspended` as soon as a request fails or times
//! out (within `request_timeout`: a stalled server is [`tumbler_core::Error::Timeout`], never
//! "busy"); `Lost` once the server (in Redlock: more masters than a majority can spare) stayed
//! unreachable for a whole TTL, by when every hold on it has expired; `Reconnected` when every
//! server answers again.
//!
//! **One name, one kind.** A name is used by one primitive at a time: while it is held or
//! waited on as a mutex, a read-write lock, a semaphore or an election, asking for it as another kind is
//! [`tumbler_core::Error::Conflict`] naming both kinds; a semaphore's limit is recorded with it, and
//! another limit is `Conflict` too. Nested names (`a`, `a/b`) are independent locks.
//!
//! **Foreign data.** A key of a lock that holds data tumbler did not write (a hash at the lock
//! key, a value without expiry, garbage or an overflowing number in the fencing counter or the
//! restart epoch) makes every request on that name [`tumbler_core::Error::Conflict`] naming the key,
//! until it is removed: never "busy" for ever, never a Lua error, never a fencing token lower
//! than one handed out. (A value with a TTL written by redis-py or rslock is a holder like any
//! other: busy until it is released or expires.)
//!
//! **Fencing tokens** come from a per-name counter updated inside the acquire scripts: strictly
//! increasing across every holder of the name. Tokens are even; the counter's lowest bit marks
//! a name with waiters, readers or semaphore leases (which keeps free mutexes of that name off
//! the fast path). A grant on the fast path adds 2; every other grant sets
//! `max(last + 2, 2 × server time in µs)`, and so does the first grant after the counter went
//! missing (a restart that lost it, an hour without grants), so tokens keep increasing then
//! too. After a failover to a replica that missed the last updates, clients that were
//! connected take the slow path for their first grant (their connection broke), which lifts
//! the counter of that name above the server time; a name whose next grant is on the fast
//! path of a client that connected after the failover can get a token below one handed out
//! before it (given server clocks that agree to within the failover time, the slow path would
//! not). Use a single primary, Redlock or a consensus store where that matters.
//!
//! **Restarts.** A Redis that does not persist every write forgets locks when it restarts,
//! while their holders still believe they hold them. So while the server's data set is younger
//! than `restart_delay` (default: the TTL; detected from the server's uptime when the
//! `PREFIX#tumbler:epoch` key is missing), no lock is granted, by when every forgotten hold has
//! been declared lost by its holder. This is skipped on a server with `appendonly yes` and
//! `appendfsync always` (read with `CONFIG GET` at connect), where a restart forgets nothing.
//! Where it applies it says so: a `tracing` warning names the time left and the
//! `restart_delay` parameter, `try_lock` fails with [`tumbler_core::Error::Recovering`] (time left,
//! what to do) instead of "busy", waiting acquisitions wait it out, and
//! [`tumbler_core::LockBackend::recovering`] tells how long is left (`tumbler status` shows it).
//! `restart_delay=0s` turns it off: safe only on a server provisioned empty just now. A failover
//! to a replica that missed recent writes can still lose locks (Redis replication is
//! asynchronous): use a single primary, or Redlock, or a consensus store where that matters.
//! Likewise `FLUSHALL` and memory eviction remove locks like a `DEL` does (their holders learn
//! it at their next renewal): run lock servers with `maxmemory-policy noeviction`.
//!
//! **Shutdown.** Call [`tumbler_core::LockBackend::shutdown`] before the process exits: it stops
//! every waiting acquisition (they return `Closed`) and removes their queue entries, then
//! releases every hold. A guard still alive at exit without it (say after an early `?` in
//! `main`) stays held until its TTL runs out.
//!
//! ## Keys
//!
//! For a lock `NAME` with prefix `P` (empty by default), `K = P + NAME`, and `T = {K}`: the lock
//! key as a Redis Cluster hash tag, so that every key and channel of one lock hashes to `K`'s
//! slot:
//!
//! | key | type | what |
//! |---|---|---|
//! | `K` | string | the mutex / write-lock holder's value (`SET K value NX PX ttl`, as redis-py and rslock do) |
//! | `T#tumbler:readers` | zset | read holders: value → expiry (ms) |
//! | `T#tumbler:queue`, `T#tumbler:queue-exp` | zset | mutex/rwlock waiters: member → arrival (µs), member → expiry (ms) |
//! | `T#tumbler:sem` | zset | semaphore leases: value → expiry (ms) |
//! | `T#tumbler:sem-limit` | string | the limit the semaphore is used with |
//! | `T#tumbler:sem-queue`, `T#tumbler:sem-queue-exp` | zset | semaphore waiters |
//! | `T#tumbler:fence` | string | the last fencing token handed out for `NAME` (+1 while crowded, see above) |
//! | `T#tumbler:revoked` | set | values of holds asked to release |
//! | `T#tumbler:leader` | hash | an election's leader record: `value` (what it advertises), `term`, `owner` (its value at `K`); see Elections |
//! | `T#tumbler:candidates` | hash | an election's waiting candidates: member → the value each would advertise |
//! | `T#tumbler:leader` | channel | `leader`: the leadership changed (elected, proclaimed, resigned, removed) |
//! | `T#tumbler:to:CLIENT` | channel | one client's inbox for `NAME`: `grant VALUE`, `wake MEMBER`, `revoke VALUE`, `gone VALUE` |
//! | `T#tumbler:events` | channel | `free` (Redlock waiters only) |
//! | `P#tumbler:epoch` | string | when the server's data set began (restart detection; one per prefix, read only by slow paths; recomputed from the uptime when missing, kept a day) |
//! | `T#tumbler:epoch` | string | the same, on a Redis Cluster: one per lock, in the lock's slot |
//!
//! Lock names cannot contain `#` or braces, so no auxiliary key can be another lock's key and
//! the names never change a key's slot. A prefix can: one with a hash tag of its own
//! (`prefix={app}:`) keeps it, so `T` is `K` itself and every lock of the prefix shares one
//! slot; a prefix with a `}` that closes no non-empty `{...}` is refused at connect
//! ([`tumbler_core::Error::InvalidArgument`] on `prefix`), as the slots could not stay together.
//! (The restart epoch is one key per prefix on a single server; on a cluster each lock has its own.)
//!
//! Values: `ID:MODE:TOKEN`, where `ID` is 32 hex digits unique per acquisition (the first 16 name
//! the client, `CLIENT` above), `MODE` is `x` (mutex), `w` (write), `r` (read), `l` (leader of
//! an election) or `pN` (N permits), and `TOKEN` the fencing token. A mutex or writer value is stored with a trailing
//! `~` while its release must look at the queue or the revocations. Waiter members: `ID:MODE`
//! (`x`, `w`, `r`, `l`, `p`).
//!
//! ## Hand-off and fairness
//!
//! Waiters never poll on a fixed interval. A waiter that finds the lock busy subscribes to its
//! client's inbox for the lock (`T#tumbler:to:CLIENT`, on the same RESP3 connection as its
//! commands) and joins a queue in Redis. The release script itself hands the lock to a mutex
//! or writer at the head of the queue (it sets the head's value and fencing token) and sends
//! `grant VALUE` to that waiter's inbox alone: a hand-off is one release round trip plus one
//! message, whatever the number of waiters. The grant lives on the server only for what was
//! left of the waiter's queue entry (under 3 s), and so does the new holder's deadline,
//! counted from its last queueing request; the holder renews it to a whole TTL halfway to that
//! deadline (a hold released before then costs no renewal). A
//! reader at the head is woken instead (`wake MEMBER`) and takes the lock itself. A lost
//! message is covered by a retry no later than the holder key's remaining TTL, and at least
//! every 0.8 s (a third of the waiter entry's lifetime), which also refreshes the waiter's
//! queue entry and finds a grant that was made meanwhile.
//!
//! **Waiters that stop.** A waiter that is cancelled or times out removes its queue entry
//! before its future's drop returns (on a connection of the crate's own cleanup thread, so also
//! when the caller's runtime ends right after), or in the background if a request was in
//! flight; `shutdown()` waits for those. A waiter that vanishes without a word (killed, cut
//! off) is dropped from the queue [`MAX_WAITER_TTL`] (3 s) after its last refresh at the most,
//! whatever the lock TTL ([`tumbler_core::Capabilities::waiter_release_bound`]); a lock handed to
//! it meanwhile expires when its queue entry would have.
//!
//! **Fairness: FIFO.** Mutex, read-write and semaphore waiters are served strictly in arrival
//! order, and `try_lock` on a free lock with a queue fails rather than jumping it. Readers
//! that arrive while no writer holds or waits share the lock at once; a waiting writer keeps
//! later readers out, so writers do not starve. A semaphore waiter for `n` permits at the head
//! of the queue holds back later, smaller requests until its `n` permits are free. Clients that
//! do not queue (redis-py, rslock) may take a free key ahead of the queue.
//!
//! ## Elections
//!
//! `locks.election(NAME)` ([`tumbler_core::Election`]) keeps its leadership as a mutex is kept:
//! a campaign is an acquisition of the lock key `K` in mode `l` (`SET K ID:l:TOKEN NX PX ttl`,
//! so a redis-py or rslock `Lock(NAME)` and an election on one name exclude each other), with
//! the mutex's FIFO queue, hand-off, watchdog, restart delay and cancel safety. The term is the
//! hold's fencing token, strictly increasing from one leader to the next.
//!
//! What the leader advertises lives in its record `T#tumbler:leader`, a hash of `value` (any
//! bytes, at most [`MAX_VALUE_LEN`] = 512 KiB), `term` and `owner` (the value at `K`). The
//! script that grants the leadership writes it with the same expiry as `K`: the acquire script
//! (an uncontended campaign costs 7 commands: `EVALSHA`, `EXISTS` of the record, `INCRBY`,
//! `SET NX PX`, `HSET`, `PEXPIRE`, `PUBLISH`), or the release that hands the leadership to the
//! candidate at the head of the queue (waiting candidates keep their values in
//! `T#tumbler:candidates` for that). Every renewal extends both keys; the owner-checked release
//! deletes both (4 commands uncontended: `EVALSHA`, `GET`, `DEL`, `PUBLISH`), and a forced
//! release or a cancelled campaign that had been elected unknowingly removes the record too.
//! `Leadership::proclaim` replaces `value` in a script that first checks that `K` still holds
//! the leader's own value ([`tumbler_core::Error::NotOwner`] otherwise, nothing written).
//!
//! `Election::leader` reads `K` and the record in one script: `None` when `K` is free; the
//! record's value and term, with the acquisition id as `LeaderInfo::id`, when `K` holds a
//! leader. A name held as another kind is [`tumbler_core::Error::Conflict`] naming both kinds;
//! a `K` held by a client that is not tumbler (a redis-py lock leads no election) and a record
//! tumbler did not write (another type, other fields) are `Conflict` naming the key; a
//! campaign meeting such a record is refused before anything is written.
//!
//! Every script that changes the leadership (grant, hand-off, proclaim, release, forced
//! release, cancel) publishes `leader` on the channel `T#tumbler:leader`. Followers
//! (`Election::observe`, [`tumbler_core::LockBackend::leader_changed`]) subscribe to it
//! through the backend's shared connection, read, and read again when it speaks, when the
//! leader's hold would expire (a crashed leader's key expires without a message), and at least
//! every quarter of `request_timeout`, so that an unreachable server is a
//! [`tumbler_core::Error::Connection`] or [`tumbler_core::Error::Timeout`] within about one
//! request timeout. A follower may skip leaders that came and went between two reads.
//!
//! Redlock mode has no elections: [`tumbler_core::Capabilities::election`] is false there and
//! campaigns and leader reads are [`tumbler_core::Error::Unsupported`] (`election`). A leader on
//! Redlock would need its record on a majority of masters and a term that no master can
//! reorder, which Redlock's best-effort fencing cannot give.
//!
//! ## Redlock
//!
//! `redis+redlock://h1,h2,h3` (or [`RedisConfig::redlock`]) takes each mutex on a majority of
//! independent masters within `ttl - drift`, releases on all, and retries with jitter; mutexes
//! only, not fair, fencing tokens best effort: see the `redlock` module source for the
//! algorithm and why Redlock cannot give safe fencing tokens. When a majority of masters is
//! unreachable, acquisitions fail with [`tumbler_core::Error::Connection`].

#![warn(missing_docs)]

mod backend;
mod client;
mod cluster;
mod config;
mod election;
mod error;
mod health;
mod hold;
mod hub;
mod keys;
mod node;
mod redlock;
mod reply;
mod scripts;
mod single;
mod undo;
mod url;

pub use backend::RedisBackend;
pub use config::{RedisConfig, RedisNode, DEFAULT_TTL, MAX_TTL, MAX_WAITER_TTL, MIN_TTL};
pub use election::MAX_VALUE_LEN;
pub use error::ReplicasMissing;

/// Connects by URL (see the crate docs for the grammar) and returns the shared backend.
///
/// ```no_run
/// # async fn demo() -> tumbler_core::Result<()> {
/// let locks = tumbler_redis::connect_url("redis://app:s3cret@127.0.0.1:6379?prefix=myapp:").await?;
/// # Ok(()) }
/// ```
pub async fn connect_url(url: &str) -> tumbler_core::Result<tumbler_core::SharedBackend> {
    RedisConfig::from_url(url)?.connect().await
}
