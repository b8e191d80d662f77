//! Injected failures: scripted errors, a deterministic busy rate, latency, bogus images in
//! place of codes, and answers lost on the way back.

use std::time::Duration;

use crate::error::{self, WxError};
use crate::{BogusImage, Faults};

#[derive(Debug, Default)]
pub(crate) struct FaultGate {
    faults: Faults,
    /// WeChat-path calls since the faults were last set: the `k` of the busy rule.
    calls: u64,
}

impl FaultGate {
    /// Replaces the faults and restarts the busy pattern at call 1.
    pub(crate) fn set(&mut self, faults: Faults) {
        self.faults = faults;
        self.calls = 0;
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.faults.latency_ms)
    }

    /// Decides whether a counted call to `path` fails before reaching its logic.
    pub(crate) fn admit(&mut self, path: &str) -> Result<(), WxError> {
        self.calls += 1;
        if let Some(script) = self
            .faults
            .scripted
            .iter_mut()
            .find(|s| s.count > 0 && same_path(&s.path, path))
        {
            script.count -= 1;
            return Err(WxError::scripted(script.errcode));
        }
        if is_busy(self.calls, self.faults.busy_rate) {
            return Err(error::SYSTEM_BUSY);
        }
        Ok(())
    }

    /// For a getwxacodeunlimit call that succeeded: the bogus answer to send instead of the
    /// image, while its count lasts.
    pub(crate) fn take_bogus_image(&mut self) -> Option<BogusImage> {
        let bogus = self.faults.bogus_image.as_mut().filter(|b| b.count > 0)?;
        bogus.count -= 1;
        Some(bogus.clone())
    }

    /// After a call to `path` (a force refresh if `force`) has been carried out: whether its
    /// answer is lost on the way back.
    pub(crate) fn take_lost_answer(&mut self, path: &str, force: bool) -> bool {
        let lost = self
            .faults
            .lost_answers
            .iter_mut()
            .find(|l| l.count > 0 && same_path(&l.path, path) && (force || !l.only_force));
        match lost {
            Some(lost) => {
                lost.count -= 1;
                true
            }
            None => false,
        }
    }
}

/// Paths match with or without their leading '/'.
fn same_path(configured: &str, path: &str) -> bool {
    configured.trim_start_matches('/') == path.trim_start_matches('/')
}

/// Call `k` (1-based) is busy iff floor(k·rate) > floor((k−1)·rate): exactly `rate` of the
/// calls, evenly spread, with no randomness.
fn is_busy(k: u64, rate: f64) -> bool {
    let rate = if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    };
    (k as f64 * rate).floor() > ((k - 1) as f64 * rate).floor()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LostAnswer, ScriptedError};

    fn pattern(rate: f64, n: u64) -> Vec<u64> {
        (1..=n).filter(|k| is_busy(*k, rate)).collect()
    }

    #[test]
    fn busy_rate_is_an_even_deterministic_pattern() {
        assert_eq!(pattern(0.0, 50), Vec::<u64>::new());
        assert_eq!(pattern(1.0, 5), vec![1, 2, 3, 4, 5]);
        assert_eq!(pattern(0.5, 8), vec![2, 4, 6, 8]);
        assert_eq!(pattern(0.1, 30), vec![10, 20, 30]);
        assert_eq!(pattern(0.25, 12), vec![4, 8, 12]);
        assert_eq!(pattern(7.0, 3), vec![1, 2, 3], "clamped to 1");
        assert_eq!(pattern(f64::NAN, 3), Vec::<u64>::new());
    }

    #[test]
    fn scripted_errors_come_first_and_run_out() {
        let mut gate = FaultGate::default();
        gate.set(Faults {
            busy_rate: 1.0,
            scripted: vec![ScriptedError {
                path: "cgi-bin/token".into(),
                errcode: 45009,
                count: 1,
            }],
            ..Faults::default()
        });
        assert_eq!(gate.admit("/sns/jscode2session"), Err(error::SYSTEM_BUSY));
        assert_eq!(gate.admit("/cgi-bin/token").unwrap_err().code, 45009);
        assert_eq!(gate.admit("/cgi-bin/token"), Err(error::SYSTEM_BUSY));
    }

    #[test]
    fn bogus_images_run_out() {
        let mut gate = FaultGate::default();
        assert!(gate.take_bogus_image().is_none());
        gate.set(Faults {
            bogus_image: Some(BogusImage {
                content_type: "image/jpeg".into(),
                body: "{}".into(),
                count: 2,
            }),
            ..Faults::default()
        });
        for left in [1, 0] {
            let bogus = gate.take_bogus_image().unwrap();
            assert_eq!(
                (bogus.content_type.as_str(), bogus.body.as_str()),
                ("image/jpeg", "{}")
            );
            assert_eq!(gate.faults().bogus_image.as_ref().unwrap().count, left);
        }
        assert!(gate.take_bogus_image().is_none());
    }

    #[test]
    fn lost_answers_are_per_path_and_run_out() {
        let mut gate = FaultGate::default();
        gate.set(Faults {
            lost_answers: vec![
                LostAnswer {
                    only_force: false,
                    path: "cgi-bin/stable_token".into(),
                    count: 1,
                },
                LostAnswer {
                    only_force: false,
                    path: "/sns/jscode2session".into(),
                    count: 2,
                },
            ],
            ..Faults::default()
        });
        assert!(!gate.take_lost_answer("/cgi-bin/token", false));
        gate.faults.lost_answers[0].only_force = true;
        assert!(
            !gate.take_lost_answer("/cgi-bin/stable_token", false),
            "only a force refresh loses its answer"
        );
        gate.faults.lost_answers[0].only_force = false;
        assert!(gate.take_lost_answer("/cgi-bin/stable_token", false));
        assert!(!gate.take_lost_answer("/cgi-bin/stable_token", false));
        assert!(gate.take_lost_answer("/sns/jscode2session", false));
        assert!(gate.take_lost_answer("/sns/jscode2session", false));
        assert!(!gate.take_lost_answer("/sns/jscode2session", false));
    }
}
