//! Shrinks a failing [`Schedule`]: drops clients, faults and steps while the failure still
//! reproduces, within a bounded number of runs.

use std::future::Future;
use std::time::Instant;

use super::schedule::{Fault, Schedule};

/// Smaller variants of `s`, biggest cuts first: whole clients, faults, halves of scripts,
/// single steps.
fn candidates(s: &Schedule) -> Vec<Schedule> {
    let mut out = Vec::new();
    if s.clients.len() > 1 {
        for drop in 0..s.clients.len() {
            out.push(without_client(s, drop));
        }
    }
    for i in 0..s.faults.len() {
        let mut c = s.clone();
        c.faults.remove(i);
        out.push(c);
    }
    for (client, steps) in s.clients.iter().enumerate() {
        let len = steps.len();
        if len >= 4 {
            for (from, to) in [(0, len / 2), (len / 2, len)] {
                let mut c = s.clone();
                c.clients[client].drain(from..to);
                out.push(c);
            }
        }
        for i in 0..len {
            let mut c = s.clone();
            c.clients[client].remove(i);
            out.push(c);
        }
    }
    out
}

/// `s` without client `drop`; faults on it go, faults on later clients are renumbered.
fn without_client(s: &Schedule, drop: usize) -> Schedule {
    let mut c = s.clone();
    c.clients.remove(drop);
    c.faults.retain_mut(|f| match &mut f.fault {
        Fault::Cut { client, .. } | Fault::Expire { client } => {
            if *client == drop {
                return false;
            }
            if *client > drop {
                *client -= 1;
            }
            true
        }
        _ => true,
    });
    c
}

/// Shrinks `failing` while `reproduces` says the smaller schedule still fails, trying at
/// most `max_runs` candidates and stopping at `deadline`. Returns the smallest failing
/// schedule found and how many runs it took.
pub async fn shrink<F, Fut>(
    failing: Schedule,
    max_runs: usize,
    deadline: Instant,
    mut reproduces: F,
) -> (Schedule, usize)
where
    F: FnMut(Schedule) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut best = failing;
    let mut runs = 0;
    'progress: loop {
        for candidate in candidates(&best) {
            if runs >= max_runs || Instant::now() >= deadline {
                break 'progress;
            }
            runs += 1;
            if reproduces(candidate.clone()).await {
                best = candidate;
                continue 'progress;
            }
        }
        break;
    }
    (best, runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::schedule::{Step, TimedFault};
    use std::time::Duration;

    #[tokio::test]
    async fn shrinks_to_the_step_that_fails() {
        let failing = Schedule {
            seed: 7,
            names: vec!["a".into()],
            clients: vec![
                vec![
                    Step::Use,
                    Step::Pause { ms: 1 },
                    Step::State { name: 0 },
                    Step::Use,
                ],
                vec![Step::Use, Step::Stall { ms: 5 }],
            ],
            faults: vec![TimedFault {
                at_ms: 3,
                fault: Fault::Expire { client: 1 },
            }],
        };
        // "Fails" whenever some client still stalls.
        let fails = |s: Schedule| async move {
            s.clients
                .iter()
                .flatten()
                .any(|step| matches!(step, Step::Stall { .. }))
        };
        let (small, runs) = shrink(
            failing,
            100,
            Instant::now() + Duration::from_secs(10),
            fails,
        )
        .await;
        assert_eq!(small.clients, vec![vec![Step::Stall { ms: 5 }]]);
        assert!(small.faults.is_empty());
        assert!(runs > 0);
    }
}
