//! A token bucket per client address (DESIGN §12: per instance, so N admin instances
//! allow N times the rate): `--rate-limit` requests a second, bursts of twice that;
//! past it a 429 with `Retry-After`. `/healthz`, `/readyz` and `/metrics` are not
//! limited (probes and scrapers must always get through).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept before idle (full) ones are dropped.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` requests a second per address; 0 disables the limit.
    pub fn new(rate: u32) -> RateLimiter {
        RateLimiter { rate: f64::from(rate), burst: 2.0 * f64::from(rate), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `addr`: `Ok` or `Err(seconds to wait)`.
    pub fn take(&self, addr: IpAddr) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(addr).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_others_are_unaffected() {
        let limiter = RateLimiter::new(5);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..10 {
            assert!(limiter.take(a).is_ok());
        }
        assert_eq!(limiter.take(a), Err(1));
        assert!(limiter.take(b).is_ok());
        assert!(RateLimiter::new(0).take(a).is_ok());
    }
}
