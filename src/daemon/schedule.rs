//! Pure scheduling arithmetic: which tick a firing belongs to (in the configured time zone,
//! DST-correct), deterministic jitter, and exponential backoff. No clock inside.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use sha2::{Digest, Sha256};

/// A 6-field cron expression (seconds first; day-of-month AND day-of-week) in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub text: String,
    pub tz: chrono_tz::Tz,
    cron: Cron,
}

impl Schedule {
    pub fn new(text: &str, tz: chrono_tz::Tz) -> Result<Schedule, String> {
        crate::config::validate_schedule(text)?;
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(text)
            .map_err(|e| format!("'{text}': {e}"))?;
        Ok(Schedule { text: text.to_string(), tz, cron })
    }

    /// The scheduled tick a firing at `now` belongs to: the latest occurrence at or before
    /// `now`, computed in the zone (so 06:00 Europe/Berlin is 06:00 local in summer and winter).
    pub fn tick_at_or_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Ticks are whole seconds; a firing arrives a little after its tick.
        let now = chrono::SubsecRound::trunc_subsecs(now, 0);
        self.cron.find_previous_occurrence(&now.with_timezone(&self.tz), true).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The next occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t.with_timezone(&self.tz), false).ok().map(|t| t.with_timezone(&Utc))
    }
}

fn hash_u64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// Random-looking but deterministic delay in `[0, max_secs]` for one (job, tick): spreads
/// sources over the jitter window, the same on every replica.
pub fn jitter(job_key: &str, tick: DateTime<Utc>, max_secs: u64) -> Duration {
    if max_secs == 0 {
        return Duration::ZERO;
    }
    let h = hash_u64(&[job_key.as_bytes(), &tick.timestamp().to_le_bytes()]);
    Duration::from_millis(h % (max_secs * 1000 + 1))
}

/// Retries of retriable failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after failed attempt `n` (1-based): the provider's Retry-After when given
    /// (capped at `max`), else base × 2^(n−1) capped at `max`, plus up to 25% jitter from `seed`.
    pub fn delay(&self, n: u32, retry_after: Option<Duration>, seed: u64) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max);
        }
        let exp = self.base.saturating_mul(1u32 << (n.saturating_sub(1)).min(20)).min(self.max);
        let quarter = exp / 4;
        let extra = if quarter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(hash_u64(&[&seed.to_le_bytes(), &n.to_le_bytes()]) % (quarter.as_nanos() as u64 + 1))
        };
        (exp + extra).min(self.max + quarter)
    }
}

/// Run `attempt(n)` (n = 1, 2, …) until it succeeds, fails for good, the attempts are used
/// up or `stop` is cancelled. `attempt` returns its result and, for a retriable failure,
/// `Some(retry_after)`. Waits are `policy.delay` (tokio time: tests pause it). Returns the last
/// result and the number of attempts made.
pub async fn retrying<R, Fut>(
    policy: Backoff,
    seed: u64,
    stop: &tokio_util::sync::CancellationToken,
    mut attempt: impl FnMut(u32) -> Fut,
) -> (R, u32)
where
    Fut: std::future::Future<Output = (R, Option<Option<Duration>>)>,
{
    let mut n = 0u32;
    loop {
        n += 1;
        let (r, retry) = attempt(n).await;
        match retry {
            Some(after) if n < policy.attempts && !stop.is_cancelled() => {
                let wait = policy.delay(n, after, seed);
                tracing::warn!(attempt = n, wait_ms = wait.as_millis() as u64, "retriable failure; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return (r, n),
                }
            }
            _ => return (r, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        costledger_core::parse_timestamp(s).expect("ts")
    }

    #[test]
    fn ticks_follow_the_zone_across_dst() {
        let s = Schedule::new("0 0 6 * * *", chrono_tz::Europe::Berlin).expect("schedule");
        // Winter: 06:00 CET = 05:00 UTC; summer: 06:00 CEST = 04:00 UTC.
        assert_eq!(s.tick_at_or_before(utc("2026-01-15T05:00:00.300Z")), Some(utc("2026-01-15T05:00:00Z")));
        assert_eq!(s.tick_at_or_before(utc("2026-07-15T04:00:01Z")), Some(utc("2026-07-15T04:00:00Z")));
        // The night DST starts (2026-03-29): the next tick after Saturday's is 04:00 UTC.
        assert_eq!(s.next_after(utc("2026-03-28T05:00:00Z")), Some(utc("2026-03-29T04:00:00Z")));
        let mon = Schedule::new("0 0 6 * * Mon", chrono_tz::UTC).expect("schedule");
        assert_eq!(mon.next_after(utc("2026-11-25T00:00:00Z")), Some(utc("2026-11-30T06:00:00Z")));
        assert!(Schedule::new("0 6 * * *", chrono_tz::UTC).is_err(), "5 fields");
        let _ = chrono::Utc.timestamp_opt(0, 0);
    }

    #[test]
    fn jitter_is_bounded_and_stable() {
        let t = utc("2026-11-25T06:00:00Z");
        for k in ["ingest:a", "ingest:b", "ingest:c", "report"] {
            let j = jitter(k, t, 300);
            assert!(j <= Duration::from_secs(300));
            assert_eq!(j, jitter(k, t, 300), "same on every replica");
        }
        assert_ne!(jitter("ingest:a", t, 300), jitter("ingest:b", t, 300));
        assert_eq!(jitter("x", t, 0), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_with_tokio_time_and_honour_retry_after() {
        let b = Backoff { attempts: 5, base: Duration::from_secs(10), max: Duration::from_secs(60) };
        let stop = tokio_util::sync::CancellationToken::new();
        let t0 = tokio::time::Instant::now();
        let (r, n) = retrying(b, 3, &stop, |n| async move {
            match n {
                1 => ("throttled", Some(Some(Duration::from_secs(7)))),
                2 => ("server error", Some(None)),
                _ => ("ok", None),
            }
        })
        .await;
        assert_eq!((r, n), ("ok", 3));
        // Retry-After, then the backoff (tokio's timer rounds each sleep up to the millisecond).
        let want = Duration::from_secs(7) + b.delay(2, None, 3);
        assert!(
            t0.elapsed() >= want && t0.elapsed() <= want + Duration::from_millis(2),
            "{:?} vs {want:?}",
            t0.elapsed()
        );
        // A permanent failure is not retried; the budget bounds the attempts.
        let (_, n) = retrying(b, 3, &stop, |_| async { ("bad input", None::<Option<Duration>>) }).await;
        assert_eq!(n, 1);
        let (_, n) = retrying(b, 3, &stop, |_| async { ("down", Some(None)) }).await;
        assert_eq!(n, 5);
        stop.cancel();
        let (_, n) = retrying(b, 3, &stop, |_| async { ("down", Some(None)) }).await;
        assert_eq!(n, 1, "no retry once stopping");
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let b = Backoff { attempts: 5, base: Duration::from_secs(10), max: Duration::from_secs(60) };
        let d1 = b.delay(1, None, 7);
        let d2 = b.delay(2, None, 7);
        let d5 = b.delay(5, None, 7);
        assert!(d1 >= Duration::from_secs(10) && d1 <= Duration::from_millis(12_500), "{d1:?}");
        assert!(d2 >= Duration::from_secs(20) && d2 <= Duration::from_secs(25), "{d2:?}");
        assert!(d5 >= Duration::from_secs(60) && d5 <= Duration::from_secs(75), "{d5:?}");
        assert_eq!(b.delay(1, Some(Duration::from_secs(3)), 7), Duration::from_secs(3));
        assert_eq!(b.delay(1, Some(Duration::from_secs(3600)), 7), Duration::from_secs(60));
    }
}
