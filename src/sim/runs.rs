//! Time-driven simulator behaviour, deterministic given the instants it is fed: event runs
//! (ordered steps with delays) and live variables (counters, random walks).

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::config::{EventRun, Live, LiveVariable, Step};
use crate::gem::items::{convert, number};
use crate::secs2::{Format, Item};

/// One started run: where it is and when its next step is due.
#[derive(Debug, Clone)]
struct Active {
    run: usize,
    step: usize,
    round: u32,
    due: Instant,
}

/// The event runs: their definitions, schedules and the ones under way.
#[derive(Debug)]
pub struct Runs {
    defs: Vec<EventRun>,
    active: Vec<Active>,
    /// Next scheduled start of each run with `every`.
    scheduled: Vec<Option<Instant>>,
}

impl Runs {
    /// The runs of a config at `now`: `autostart` ones start now, `every` ones are
    /// scheduled.
    pub fn new(defs: Vec<EventRun>, now: Instant) -> Runs {
        let scheduled = defs.iter().map(|r| r.every.map(|e| now + e)).collect();
        let mut runs = Runs {
            defs,
            active: Vec::new(),
            scheduled,
        };
        for i in 0..runs.defs.len() {
            if runs.defs[i].autostart {
                runs.start_index(i, now);
            }
        }
        runs
    }

    /// Whether a run of that name exists.
    pub fn has(&self, name: &str) -> bool {
        self.defs.iter().any(|r| r.name == name)
    }

    /// Starts run `name` (again, beside any earlier start still under way). False if there
    /// is no such run.
    pub fn start(&mut self, name: &str, now: Instant) -> bool {
        match self.defs.iter().position(|r| r.name == name) {
            Some(i) => {
                self.start_index(i, now);
                true
            }
            None => false,
        }
    }

    fn start_index(&mut self, run: usize, now: Instant) {
        if let Some(first) = self.defs[run].steps.first() {
            self.active.push(Active {
                run,
                step: 0,
                round: 0,
                due: now + first.delay,
            });
        }
    }

    /// Runs under way.
    pub fn running(&self) -> usize {
        self.active.len()
    }

    /// When the next step or scheduled start is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let steps = self.active.iter().map(|a| a.due);
        let starts = self.scheduled.iter().flatten().copied();
        steps.chain(starts).min()
    }

    /// Starts the scheduled runs due at `now`.
    pub fn start_scheduled(&mut self, now: Instant) {
        for i in 0..self.defs.len() {
            let (Some(at), Some(every)) = (self.scheduled[i], self.defs[i].every) else {
                continue;
            };
            if at <= now {
                self.start_index(i, now);
                let mut next = at + every;
                if next <= now {
                    next = now + every;
                }
                self.scheduled[i] = Some(next);
            }
        }
    }

    /// The earliest step due at `now`, taken (its run moves on); `None` if none is due.
    pub fn next_step(&mut self, now: Instant) -> Option<Step> {
        let (index, _) = self
            .active
            .iter()
            .enumerate()
            .filter(|(_, a)| a.due <= now)
            .min_by_key(|(_, a)| a.due)?;
        let a = &mut self.active[index];
        let def = &self.defs[a.run];
        let step = def.steps[a.step].clone();
        a.step += 1;
        if a.step == def.steps.len() {
            a.step = 0;
            a.round += 1;
        }
        if a.round >= def.repeat {
            self.active.swap_remove(index);
        } else {
            // Delays add up from when the step was due, so a run keeps its pace.
            a.due += def.steps[a.step].delay;
        }
        Some(step)
    }
}

/// The live variables and their next update.
#[derive(Debug)]
pub struct LiveVariables {
    vars: Vec<(LiveVariable, Instant)>,
    rng: SmallRng,
}

impl LiveVariables {
    /// Live variables first updated one period after `now`; `seed` drives the random walks.
    pub fn new(vars: Vec<LiveVariable>, now: Instant, seed: u64) -> LiveVariables {
        LiveVariables {
            vars: vars
                .into_iter()
                .map(|v| (v.clone(), now + v.every))
                .collect(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// When the next update is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.vars.iter().map(|(_, t)| *t).min()
    }

    /// The updates due at `now`: (VID, new value) given a way to read current values.
    pub fn due(&mut self, now: Instant, current: impl Fn(u32) -> Option<Item>) -> Vec<(u32, Item)> {
        let mut out = Vec::new();
        for (var, next) in &mut self.vars {
            if *next > now {
                continue;
            }
            *next += var.every;
            if *next <= now {
                *next = now + var.every;
            }
            let Some(value) = current(var.id) else {
                continue;
            };
            let delta = match var.kind {
                Live::Counter { step } => step,
                Live::RandomWalk { step, .. } => self.rng.random_range(-step..=step),
            };
            if let Some(v) = step_value(&value, &var.kind, delta) {
                out.push((var.id, v));
            }
        }
        out
    }
}

/// The next value of a live variable: `value + delta`, clamped for a random walk, wrapped to
/// zero for a counter that no longer fits its format.
fn step_value(value: &Item, kind: &Live, delta: f64) -> Option<Item> {
    let format = value.format();
    let current = number(value)?;
    let next = match kind {
        Live::Counter { .. } => current + delta,
        Live::RandomWalk { min, max, .. } => (current + delta).clamp(*min, *max),
    };
    let rounded = if matches!(format, Format::F4 | Format::F8) {
        next
    } else {
        next.round()
    };
    convert(&Item::F8(vec![rounded]), format).or_else(|| match kind {
        Live::Counter { .. } => convert(&Item::F8(vec![0.0]), format),
        Live::RandomWalk { .. } => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(name: &str, delays: &[u64], repeat: u32) -> EventRun {
        EventRun {
            name: name.into(),
            autostart: false,
            every: None,
            repeat,
            steps: delays
                .iter()
                .enumerate()
                .map(|(i, d)| Step {
                    delay: Duration::from_millis(*d),
                    event: Some(i as u32),
                    ..Step::default()
                })
                .collect(),
        }
    }

    #[test]
    fn steps_follow_their_delays_and_repeat() {
        let t0 = Instant::now();
        let mut runs = Runs::new(vec![run("a", &[0, 100], 2)], t0);
        assert_eq!(runs.next_deadline(), None);
        assert!(runs.start("a", t0));
        assert!(!runs.start("nope", t0));
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(runs.next_step(t0).unwrap().event, Some(0));
        assert!(runs.next_step(ms(99)).is_none());
        assert_eq!(runs.next_deadline(), Some(ms(100)));
        assert_eq!(runs.next_step(ms(100)).unwrap().event, Some(1));
        assert_eq!(runs.next_step(ms(100)).unwrap().event, Some(0));
        assert_eq!(runs.next_step(ms(200)).unwrap().event, Some(1));
        assert_eq!(runs.running(), 0);
    }

    #[test]
    fn scheduled_runs_start_every_period() {
        let t0 = Instant::now();
        let mut r = run("tick", &[0], 1);
        r.every = Some(Duration::from_secs(1));
        let mut runs = Runs::new(vec![r], t0);
        assert_eq!(runs.next_deadline(), Some(t0 + Duration::from_secs(1)));
        runs.start_scheduled(t0 + Duration::from_secs(1));
        assert_eq!(runs.running(), 1);
        assert!(runs.next_step(t0 + Duration::from_secs(1)).is_some());
        assert_eq!(runs.next_deadline(), Some(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn live_values_step() {
        assert_eq!(
            step_value(&Item::U1(vec![255]), &Live::Counter { step: 1.0 }, 1.0),
            Some(Item::U1(vec![0]))
        );
        let walk = Live::RandomWalk {
            step: 1.0,
            min: 0.0,
            max: 10.0,
        };
        assert_eq!(
            step_value(&Item::F4(vec![9.5]), &walk, 1.0),
            Some(Item::F4(vec![10.0]))
        );
        let t0 = Instant::now();
        let mut live = LiveVariables::new(
            vec![LiveVariable {
                id: 7,
                every: Duration::from_secs(1),
                kind: Live::Counter { step: 2.0 },
            }],
            t0,
            1,
        );
        assert!(live.due(t0, |_| Some(Item::U4(vec![1]))).is_empty());
        let got = live.due(t0 + Duration::from_secs(1), |_| Some(Item::U4(vec![1])));
        assert_eq!(got, vec![(7, Item::U4(vec![3]))]);
    }
}
