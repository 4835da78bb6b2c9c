//! The seeded generator: the same seed and the same [`Profile`] always give the same
//! [`Schedule`].

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::schedule::{Fault, Foreign, Prim, Schedule, Step, TimedFault, WaitHow};

/// What a store offers, as far as the generator is concerned: only supported primitives and
/// hooks are generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The store's lock TTL or session timeout, in ms (stalls and cuts are sized from it).
    pub ttl_ms: u64,
    /// Read-write locks exist.
    pub rwlock: bool,
    /// Semaphores exist.
    pub semaphore: bool,
    /// `request_revoke` works.
    pub revocation: bool,
    /// `cut_connection`/`heal_connection` work.
    pub cut: bool,
    /// `expire_session` works.
    pub expire: bool,
    /// `spawn_holder` works.
    pub holder: bool,
    /// `spawn_waiter` works.
    pub waiter: bool,
    /// `pause_server`/`resume_server` work.
    pub pause: bool,
    /// `write_foreign` works.
    pub foreign: bool,
    /// `restart_server` works.
    pub restart: bool,
    /// Elections exist.
    pub election: bool,
}

/// Mixed into the seed for the stream that turns mutex names into elections.
const ELECTION_STREAM: u64 = 0x656c_6563_7469_6f6e;

/// The names every schedule draws from: two nested ones and one apart.
const NAMES: [&str; 3] = ["a", "a/b", "c"];

/// Generates the schedule of `seed` for a store with `profile`.
pub fn generate(seed: u64, profile: &Profile) -> Schedule {
    let mut rng = StdRng::seed_from_u64(seed);
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    // Each name has a home primitive; most acquisitions use it, some use another kind or a
    // different semaphore limit (which must be refused with Conflict, or be fine when free).
    let mut homes: Vec<Prim> = (0..names.len())
        .map(|_| home_prim(&mut rng, profile))
        .collect();
    if profile.election {
        // Some mutex names become elections. A stream of its own decides which, and a
        // leadership draws exactly what a mutex draws below, so the rest of every schedule
        // stays what it was before elections existed (the seeds that found defects still do).
        let mut elect = StdRng::seed_from_u64(seed ^ ELECTION_STREAM);
        for home in homes.iter_mut().filter(|h| **h == Prim::Mutex) {
            if elect.random_bool(0.5) {
                *home = Prim::Leader;
            }
        }
    }
    let client_count = rng.random_range(2..=4);
    let mut clients = Vec::with_capacity(client_count);
    let mut span_ms = 0;
    for _ in 0..client_count {
        let (steps, ms) = script(&mut rng, profile, &homes);
        span_ms = span_ms.max(ms);
        clients.push(steps);
    }
    let faults = faults(&mut rng, profile, client_count, names.len(), span_ms);
    Schedule {
        seed,
        names,
        clients,
        faults,
    }
}

fn home_prim(rng: &mut StdRng, profile: &Profile) -> Prim {
    let mut kinds = vec![Prim::Mutex, Prim::Reentrant];
    if profile.rwlock {
        kinds.push(Prim::Write);
    }
    if profile.semaphore {
        kinds.push(Prim::Permits { limit: 2, count: 1 });
    }
    kinds[rng.random_range(0..kinds.len())]
}

/// A primitive for one acquisition on a name whose home is `home`.
fn prim_for(rng: &mut StdRng, profile: &Profile, home: Prim) -> Prim {
    let roll = rng.random_range(0..100);
    if roll < 12 {
        // A different kind on the same name.
        return home_prim(rng, profile);
    }
    match home {
        Prim::Write | Prim::Read => {
            if rng.random_bool(0.5) {
                Prim::Read
            } else {
                Prim::Write
            }
        }
        Prim::Permits { limit, .. } => {
            let limit = if roll < 20 { limit + 1 } else { limit };
            Prim::Permits {
                limit,
                count: rng.random_range(1..=limit),
            }
        }
        other => other,
    }
}

fn wait_how(rng: &mut StdRng, holds_nothing: bool) -> WaitHow {
    match rng.random_range(0..100) {
        0..35 => WaitHow::Try,
        35..62 => WaitHow::Timeout(rng.random_range(20..900)),
        62..82 => WaitHow::Cancel(rng.random_range(0..300)),
        // Waiting without a limit only while holding nothing, so two clients cannot deadlock
        // each other (a real deadlock, not a defect).
        _ if holds_nothing => WaitHow::Forever,
        _ => WaitHow::Timeout(rng.random_range(20..900)),
    }
}

/// One client's script and roughly how long it takes to run, in ms.
fn script(rng: &mut StdRng, profile: &Profile, homes: &[Prim]) -> (Vec<Step>, u64) {
    let stall_ms = profile.ttl_ms * 3 / 2;
    let mut steps = Vec::new();
    let mut ms = 0;
    // Guards the client may hold (every acquisition counts as if granted).
    let mut maybe_held = 0usize;
    let length = rng.random_range(4..=14);
    while steps.len() < length {
        let roll = rng.random_range(0..100);
        match roll {
            0..30 => {
                let name = rng.random_range(0..homes.len());
                let prim = prim_for(rng, profile, homes[name]);
                let wait = wait_how(rng, maybe_held == 0);
                steps.push(Step::Acquire { name, prim, wait });
                maybe_held += 1;
                if rng.random_bool(0.12) {
                    // A stall right after the grant, past the TTL.
                    steps.push(Step::Stall { ms: stall_ms });
                    ms += stall_ms;
                }
                if prim == Prim::Write && rng.random_bool(0.3) {
                    steps.push(Step::Downgrade {
                        slot: rng.random_range(0..4),
                    });
                }
            }
            30..36 => {
                let first = rng.random_range(0..homes.len());
                let second = (first + rng.random_range(1..homes.len())) % homes.len();
                let parts = [first, second]
                    .into_iter()
                    .map(|n| {
                        // A multi-lock takes locks, not leaderships: on an election's name a
                        // mutex part is a kind conflict, which must be refused.
                        let prim = match prim_for(rng, profile, homes[n]) {
                            Prim::Leader => Prim::Mutex,
                            prim => prim,
                        };
                        (n, prim)
                    })
                    .collect();
                let wait = wait_how(rng, maybe_held == 0);
                steps.push(Step::Multi { parts, wait });
                maybe_held += 1;
            }
            36..48 => steps.push(Step::Use),
            48..62 => {
                if rng.random_bool(0.12) {
                    // A stall right before the release.
                    steps.push(Step::Stall { ms: stall_ms });
                    ms += stall_ms;
                }
                steps.push(Step::Release {
                    slot: rng.random_range(0..4),
                });
                maybe_held = maybe_held.saturating_sub(1);
            }
            62..67 => {
                steps.push(Step::Drop {
                    slot: rng.random_range(0..4),
                });
                maybe_held = maybe_held.saturating_sub(1);
            }
            67..70 if profile.rwlock => steps.push(Step::Downgrade {
                slot: rng.random_range(0..4),
            }),
            70..74 if profile.revocation => steps.push(Step::Revoke {
                name: rng.random_range(0..homes.len()),
            }),
            74..80 => steps.push(Step::State {
                name: rng.random_range(0..homes.len()),
            }),
            80..94 => {
                let pause = rng.random_range(0..400);
                steps.push(Step::Pause { ms: pause });
                ms += pause;
            }
            94..100 => {
                steps.push(Step::Stall { ms: stall_ms });
                ms += stall_ms;
            }
            _ => {}
        }
        ms += 20;
    }
    (steps, ms)
}

fn faults(
    rng: &mut StdRng,
    profile: &Profile,
    clients: usize,
    names: usize,
    span_ms: u64,
) -> Vec<TimedFault> {
    let mut kinds = Vec::new();
    if profile.cut {
        kinds.push(0);
    }
    if profile.expire {
        kinds.push(1);
    }
    if profile.holder {
        kinds.push(2);
    }
    if profile.pause {
        kinds.push(3);
    }
    if profile.foreign {
        kinds.push(4);
    }
    let mut faults = Vec::new();
    if !kinds.is_empty() {
        let count = rng.random_range(0..=3);
        for _ in 0..count {
            let at_ms = rng.random_range(0..span_ms.max(1));
            let fault = match kinds[rng.random_range(0..kinds.len())] {
                0 => Fault::Cut {
                    client: rng.random_range(0..clients),
                    for_ms: rng.random_range(50..=profile.ttl_ms * 2),
                    probe: rng.random_bool(0.5).then(|| rng.random_range(0..names)),
                },
                1 => Fault::Expire {
                    client: rng.random_range(0..clients),
                },
                2 => {
                    let kill_after_ms = rng.random_range(100..=2_000);
                    let waiter = (profile.waiter && kill_after_ms > 600 && rng.random_bool(0.5))
                        .then(|| rng.random_range(100..kill_after_ms - 400));
                    Fault::Holder {
                        name: rng.random_range(0..names),
                        kill_after_ms,
                        waiter,
                    }
                }
                3 => Fault::PauseServer {
                    for_ms: rng.random_range(100..=profile.ttl_ms * 2),
                },
                _ => Fault::Foreign {
                    name: rng.random_range(0..names),
                    what: Foreign::ALL[rng.random_range(0..Foreign::ALL.len())],
                },
            };
            faults.push(TimedFault { at_ms, fault });
        }
    }
    if profile.restart && rng.random_bool(0.08) {
        faults.push(TimedFault {
            at_ms: rng.random_range(0..span_ms.max(1)),
            fault: Fault::Restart,
        });
    }
    faults.sort_by_key(|f| f.at_ms);
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            ttl_ms: 1000,
            rwlock: true,
            semaphore: true,
            revocation: true,
            cut: true,
            expire: true,
            holder: true,
            waiter: true,
            pause: true,
            foreign: true,
            restart: true,
            election: true,
        }
    }

    #[test]
    fn elections_change_nothing_but_the_primitive() {
        let without = Profile {
            election: false,
            ..profile()
        };
        let mut leaders = 0;
        for seed in 0..200 {
            let mut elected = generate(seed, &profile());
            for step in elected.clients.iter_mut().flatten() {
                if let Step::Acquire { prim, .. } = step {
                    if *prim == Prim::Leader {
                        leaders += 1;
                        *prim = Prim::Mutex;
                    }
                }
            }
            assert_eq!(elected, generate(seed, &without), "seed {seed}");
        }
        assert!(leaders > 100, "only {leaders} campaigns in 200 schedules");
    }

    #[test]
    fn same_seed_same_schedule() {
        for seed in 0..50 {
            assert_eq!(generate(seed, &profile()), generate(seed, &profile()));
        }
        assert_ne!(generate(1, &profile()), generate(2, &profile()));
    }

    #[test]
    fn unsupported_hooks_and_kinds_are_not_generated() {
        let bare = Profile {
            rwlock: false,
            semaphore: false,
            revocation: false,
            cut: false,
            expire: false,
            holder: false,
            waiter: false,
            pause: false,
            foreign: false,
            restart: false,
            election: false,
            ..profile()
        };
        for seed in 0..200 {
            let s = generate(seed, &bare);
            assert!(s.faults.is_empty(), "seed {seed}: {s}");
            for step in s.clients.iter().flatten() {
                let prims: Vec<Prim> = match step {
                    Step::Acquire { prim, .. } => vec![*prim],
                    Step::Multi { parts, .. } => parts.iter().map(|p| p.1).collect(),
                    Step::Revoke { .. } | Step::Downgrade { .. } => {
                        panic!("seed {seed}: {step} generated without the capability")
                    }
                    _ => vec![],
                };
                for prim in prims {
                    assert!(
                        matches!(prim, Prim::Mutex | Prim::Reentrant),
                        "seed {seed}: {prim} without rwlock/semaphore"
                    );
                }
            }
        }
    }
}
