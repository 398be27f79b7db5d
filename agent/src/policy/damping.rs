//! Flap damping in the style of RFC 2439 §4.2, applied to a path instead of a route: each
//! down adds a fixed penalty, the penalty decays exponentially with a half-life, a path
//! whose penalty passes `suppress` stays out until the penalty decays below `reuse`, and
//! the penalty is capped so that no path stays suppressed longer than `max_suppress`.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub penalty: f64,
    pub half_life: Duration,
    pub suppress: f64,
    pub reuse: f64,
    pub max_suppress: Duration,
}

impl Settings {
    /// RFC 2439's ceiling: the penalty that decays to `reuse` in exactly `max_suppress`.
    fn ceiling(&self) -> f64 {
        let halvings = self.max_suppress.as_secs_f64() / self.half_life.as_secs_f64().max(1e-3);
        self.reuse * 2f64.powf(halvings)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalty {
    value: f64,
    at: Instant,
    suppressed: bool,
}

impl Penalty {
    pub fn new(now: Instant) -> Penalty {
        Penalty {
            value: 0.0,
            at: now,
            suppressed: false,
        }
    }

    /// A penalty of `value` at `now`, as a previous run left it (already decayed to now).
    pub fn restored(value: f64, suppressed: bool, now: Instant) -> Penalty {
        Penalty {
            value: value.max(0.0),
            at: now,
            suppressed,
        }
    }

    /// The value when last touched and when that was: it changes only with a flap, a
    /// clear or a restore, so it tells whether there is anything new to save.
    pub fn raw(&self) -> (f64, Instant) {
        (self.value, self.at)
    }

    /// The penalty at `now`, decayed since it was last touched.
    pub fn value(&self, s: &Settings, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.value * 0.5f64.powf(dt / s.half_life.as_secs_f64().max(1e-3))
    }

    /// One flap at `now`. Returns true when it made the path suppressed.
    pub fn flap(&mut self, s: &Settings, now: Instant) -> bool {
        self.value = (self.value(s, now) + s.penalty).min(s.ceiling());
        self.at = now;
        let was = self.suppressed;
        if self.value > s.suppress {
            self.suppressed = true;
        }
        self.suppressed && !was
    }

    /// Whether it was suppressed when last judged.
    pub fn is_suppressed(&self) -> bool {
        self.suppressed
    }

    /// Whether the path is suppressed at `now`; a suppressed path is released once its
    /// penalty decays below `reuse` (hysteresis between the two thresholds).
    pub fn suppressed(&mut self, s: &Settings, now: Instant) -> bool {
        if self.suppressed && self.value(s, now) < s.reuse {
            self.suppressed = false;
        }
        self.suppressed
    }

    /// When a suppressed path becomes reusable (None when it is not suppressed).
    pub fn reuse_at(&self, s: &Settings, now: Instant) -> Option<Instant> {
        if !self.suppressed {
            return None;
        }
        let v = self.value(s, now);
        if v < s.reuse {
            return Some(now);
        }
        let halvings = (v / s.reuse).log2();
        // A hair past the crossing, so that the wake-up finds it below.
        let wait = s.half_life.mul_f64(halvings) + Duration::from_millis(1);
        Some(now + wait)
    }

    /// Forgets every flap (operator `restore`).
    pub fn clear(&mut self, now: Instant) {
        *self = Penalty::new(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classic() -> Settings {
        Settings {
            penalty: 1000.0,
            half_life: Duration::from_secs(900),
            suppress: 2000.0,
            reuse: 750.0,
            max_suppress: Duration::from_secs(3600),
        }
    }

    #[test]
    fn the_third_quick_flap_suppresses_and_decay_releases_below_reuse() {
        let s = classic();
        let t0 = Instant::now();
        let mut p = Penalty::new(t0);
        assert!(!p.flap(&s, t0));
        assert!(!p.flap(&s, t0 + Duration::from_secs(10)));
        assert!(!p.suppressed(&s, t0 + Duration::from_secs(10)));
        let t = t0 + Duration::from_secs(20);
        assert!(p.flap(&s, t), "~2,970 > 2,000");
        assert!(p.suppressed(&s, t));
        // 2,970 halves to 750 after log2(2970/750) = 1.99 half-lives, ~29.7 minutes.
        let reuse = p.reuse_at(&s, t).unwrap();
        let wait = reuse - t;
        assert!(
            (wait.as_secs_f64() - 900.0 * (p.value(&s, t) / 750.0).log2()).abs() < 0.01,
            "{wait:?}"
        );
        assert!(p.suppressed(&s, reuse - Duration::from_secs(1)));
        assert!(!p.suppressed(&s, reuse));
    }

    #[test]
    fn the_penalty_halves_every_half_life() {
        let s = classic();
        let t0 = Instant::now();
        let mut p = Penalty::new(t0);
        p.flap(&s, t0);
        let v = p.value(&s, t0 + Duration::from_secs(900));
        assert!((v - 500.0).abs() < 1e-6, "{v}");
        let v = p.value(&s, t0 + Duration::from_secs(1800));
        assert!((v - 250.0).abs() < 1e-6, "{v}");
    }

    #[test]
    fn endless_flapping_is_capped_at_max_suppress() {
        let s = classic();
        let t0 = Instant::now();
        let mut p = Penalty::new(t0);
        let mut t = t0;
        for _ in 0..10_000 {
            p.flap(&s, t);
            t += Duration::from_secs(2);
        }
        // The ceiling is 750 x 2^(3600/900) = 12,000: reusable 1 h after the last flap.
        assert!((p.value(&s, t) - 12_000.0).abs() < 200.0);
        let wait = p.reuse_at(&s, t).unwrap() - t;
        assert!(
            wait <= Duration::from_secs(3600) + Duration::from_millis(1),
            "{wait:?}"
        );
        assert!(wait > Duration::from_secs(3500), "{wait:?}");
    }

    #[test]
    fn clear_forgets_the_flaps() {
        let s = classic();
        let t0 = Instant::now();
        let mut p = Penalty::new(t0);
        for i in 0..3 {
            p.flap(&s, t0 + Duration::from_secs(i));
        }
        assert!(p.suppressed(&s, t0 + Duration::from_secs(3)));
        p.clear(t0 + Duration::from_secs(3));
        assert!(!p.suppressed(&s, t0 + Duration::from_secs(3)));
        assert_eq!(p.reuse_at(&s, t0 + Duration::from_secs(3)), None);
    }
}
