//! The open-loop core: a [`Schedule`] of due times (request `i` is due at
//! `start + i / rate`, whatever the replies do), a [`Pacer`] that waits for a due time,
//! and [`drive`], which sends each request at its due time through any async "send one
//! request" function and records its latency *from the due time*, so a stalled server
//! or a generator that falls behind shows up in the latencies instead of silently
//! lowering the rate (no coordinated omission). Nothing here knows gRPC, so tests drive
//! it with a fake server under tokio's paused clock.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::args::RequestKind;

/// Highest latency a histogram tells apart: one hour, in microseconds.
const HIGHEST_US: u64 = 3_600_000_000;

/// When request `i` is due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    rate: f64,
    count: u64,
}

impl Schedule {
    /// `rate * duration` requests (rounded down) from `start`.
    pub fn new(start: Instant, rate: f64, duration: Duration) -> Self {
        let count = (rate * duration.as_secs_f64()).floor();
        let count = if count.is_finite() && count > 0.0 {
            count as u64
        } else {
            0
        };
        Self { start, rate, count }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// The number of requests.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The due time of request `i`.
    pub fn due(&self, i: u64) -> Instant {
        let nanos = (i as f64) * 1e9 / self.rate;
        self.start + Duration::from_nanos(nanos as u64)
    }
}

/// Waits until a due time.
pub trait Pacer {
    fn wait_until(&mut self, due: Instant) -> impl Future<Output = ()> + Send;
}

/// tokio's timer: exact under a paused clock (tests); in real time it wakes on the next
/// millisecond tick, which adds up to 1 ms to every latency.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimerPacer;

impl Pacer for TimerPacer {
    fn wait_until(&mut self, due: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(due)
    }
}

/// Real-time pacing to tens of microseconds without burning a core. tokio's timer has
/// 1 ms slots and can wake up to about 2 ms after its deadline, so the coarse wait is an
/// OS sleep on a blocking thread (Linux wakes it within about 50 us) until `spin` before
/// the due time; the last `spin` is spent yielding to the runtime (replies are still
/// processed) until the due time comes. A sleeping thread also gets the CPU back
/// promptly on a busy machine, where a spinning one waits for its turn.
#[derive(Debug, Clone, Copy)]
pub struct SpinPacer {
    pub spin: Duration,
}

impl Default for SpinPacer {
    fn default() -> Self {
        Self {
            spin: Duration::from_micros(200),
        }
    }
}

impl Pacer for SpinPacer {
    fn wait_until(&mut self, due: Instant) -> impl Future<Output = ()> + Send {
        let spin = self.spin;
        async move {
            let now = Instant::now();
            if due > now + spin {
                let wake = (due - spin).into_std();
                let slept = tokio::task::spawn_blocking(move || {
                    let now = std::time::Instant::now();
                    if wake > now {
                        std::thread::sleep(wake - now);
                    }
                })
                .await;
                if slept.is_err() {
                    // No blocking thread (the runtime is shutting down): the timer.
                    tokio::time::sleep_until(due).await;
                }
            }
            while Instant::now() < due {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// What a request answered: how many answers were compared with `expected.txt` and
/// how many of them disagreed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answers {
    pub checked: u32,
    pub wrong: u32,
}

/// The result of one request: answers, or the name of a gRPC status code.
pub type RequestResult = Result<Answers, &'static str>;

/// The status recorded for a request that did not finish within the timeout.
pub const TIMEOUT_STATUS: &str = "DEADLINE_EXCEEDED";

/// How a run is driven.
#[derive(Debug, Clone)]
pub struct DriveConfig {
    /// Requests per second.
    pub rate: f64,
    pub duration: Duration,
    /// At most this many requests outstanding; when reached, sending waits (and the
    /// wait counts as send lag and in the latencies).
    pub max_in_flight: usize,
    /// A request not answered within this time counts as `DEADLINE_EXCEEDED`.
    pub timeout: Duration,
    /// A send more than this late counts as late; see [`Recorder::fell_behind`].
    pub lag_threshold: Duration,
    /// Print one progress line a second on stderr.
    pub progress: bool,
    /// When set (e.g. on Ctrl-C), no more requests are sent; those in flight finish.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Per-kind counts.
#[derive(Debug, Clone)]
pub struct KindStats {
    pub latency: Histogram<u64>,
    pub errors: u64,
}

/// Everything measured in a run. Latencies are in microseconds from each request's due
/// time to its answer (errors and timeouts included).
#[derive(Debug, Clone)]
pub struct Recorder {
    pub start: Instant,
    pub latency: Histogram<u64>,
    pub by_kind: BTreeMap<RequestKind, KindStats>,
    /// How late each request was sent, in microseconds.
    pub send_lag: Histogram<u64>,
    pub lag_threshold: Duration,
    /// Sends later than `lag_threshold`.
    pub late_sends: u64,
    /// Sends that had to wait for a free slot under `max_in_flight`.
    pub in_flight_waits: u64,
    pub sent: u64,
    pub completed: u64,
    pub errors_by_status: BTreeMap<&'static str, u64>,
    pub checked_answers: u64,
    pub wrong_answers: u64,
    /// The time of the last answer.
    pub last_completion: Instant,
    /// The run was stopped before its schedule ended.
    pub interrupted: bool,
    /// Since the last progress line.
    interval: Histogram<u64>,
    interval_completed: u64,
    interval_errors: u64,
}

fn histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Recorder {
    pub fn new(
        start: Instant,
        lag_threshold: Duration,
    ) -> Result<Self, hdrhistogram::CreationError> {
        Ok(Self {
            start,
            latency: histogram()?,
            by_kind: BTreeMap::new(),
            send_lag: histogram()?,
            lag_threshold,
            late_sends: 0,
            in_flight_waits: 0,
            sent: 0,
            completed: 0,
            errors_by_status: BTreeMap::new(),
            checked_answers: 0,
            wrong_answers: 0,
            last_completion: start,
            interrupted: false,
            interval: histogram()?,
            interval_completed: 0,
            interval_errors: 0,
        })
    }

    fn record_send(&mut self, lag: Duration, waited: bool) {
        self.sent += 1;
        self.send_lag.saturating_record(micros(lag));
        if lag > self.lag_threshold {
            self.late_sends += 1;
        }
        if waited {
            self.in_flight_waits += 1;
        }
    }

    fn record_completion(
        &mut self,
        kind: RequestKind,
        latency: Duration,
        result: RequestResult,
        now: Instant,
    ) -> Result<(), hdrhistogram::CreationError> {
        let us = micros(latency);
        self.completed += 1;
        self.interval_completed += 1;
        self.latency.saturating_record(us);
        self.interval.saturating_record(us);
        if now > self.last_completion {
            self.last_completion = now;
        }
        let stats = match self.by_kind.entry(kind) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(KindStats {
                latency: histogram()?,
                errors: 0,
            }),
        };
        stats.latency.saturating_record(us);
        match result {
            Ok(a) => {
                self.checked_answers += u64::from(a.checked);
                self.wrong_answers += u64::from(a.wrong);
            }
            Err(code) => {
                stats.errors += 1;
                self.interval_errors += 1;
                *self.errors_by_status.entry(code).or_insert(0) += 1;
            }
        }
        Ok(())
    }

    pub fn errors(&self) -> u64 {
        self.errors_by_status.values().sum()
    }

    /// The generator fell behind its schedule when more than 1% of the requests were
    /// sent more than `lag_threshold` (default 1 ms) after their due time: the rate
    /// asked for was then not really offered, whatever the server did.
    pub fn fell_behind(&self) -> bool {
        self.late_sends * 100 > self.sent
    }

    /// One progress line for the time since the last one, then starts a new interval.
    fn progress_line(&mut self, now: Instant) -> String {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let line = format!(
            "[{elapsed:6.1}s] sent {:>9}  done {:>9}  +{:<7} p50 {:>8}  p99 {:>8}  max {:>8}  errors +{}  late sends {:.1}%",
            self.sent,
            self.completed,
            self.interval_completed,
            crate::report::format_us(self.interval.value_at_quantile(0.5)),
            crate::report::format_us(self.interval.value_at_quantile(0.99)),
            crate::report::format_us(self.interval.max()),
            self.interval_errors,
            if self.sent == 0 {
                0.0
            } else {
                self.late_sends as f64 * 100.0 / self.sent as f64
            },
        );
        self.interval.reset();
        self.interval_completed = 0;
        self.interval_errors = 0;
        line
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends `rate * duration` requests on schedule. `send(i)` starts request `i` and tells
/// its kind; the future runs on its own task. Returns when every request has answered
/// or timed out.
pub async fn drive<P, S, F>(
    config: &DriveConfig,
    pacer: &mut P,
    mut send: S,
) -> Result<Recorder, hdrhistogram::CreationError>
where
    P: Pacer,
    S: FnMut(u64) -> (RequestKind, F),
    F: Future<Output = RequestResult> + Send + 'static,
{
    let start = Instant::now();
    let schedule = Schedule::new(start, config.rate, config.duration);
    let recorder = Arc::new(Mutex::new(Recorder::new(start, config.lag_threshold)?));
    let max_in_flight = config.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let progress = config.progress.then(|| {
        let recorder = recorder.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                tick.tick().await;
                let line = lock(&recorder).progress_line(Instant::now());
                eprintln!("{line}");
            }
        })
    });
    let stopped = || {
        config
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    };
    for i in 0..schedule.len() {
        let due = schedule.due(i);
        pacer.wait_until(due).await;
        if stopped() {
            lock(&recorder).interrupted = true;
            break;
        }
        let (slot, waited) = match slots.clone().try_acquire_owned() {
            Ok(s) => (s, false),
            Err(_) => match slots.clone().acquire_owned().await {
                Ok(s) => (s, true),
                Err(_) => break,
            },
        };
        let lag = Instant::now().saturating_duration_since(due);
        let (kind, request) = send(i);
        lock(&recorder).record_send(lag, waited);
        let recorder = recorder.clone();
        let timeout = config.timeout;
        tokio::spawn(async move {
            let result = tokio::time::timeout(timeout, request)
                .await
                .unwrap_or(Err(TIMEOUT_STATUS));
            let now = Instant::now();
            let latency = now.saturating_duration_since(due);
            // A histogram that cannot be created is out of memory; nothing to record.
            let _ = lock(&recorder).record_completion(kind, latency, result, now);
            drop(recorder);
            drop(slot);
        });
    }
    // Every slot free again means every request has been recorded.
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    if let Some(p) = progress {
        p.abort();
    }
    let result = lock(&recorder).clone();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: f64, duration: Duration, max_in_flight: usize) -> DriveConfig {
        DriveConfig {
            rate,
            duration,
            max_in_flight,
            timeout: Duration::from_secs(60),
            lag_threshold: Duration::from_millis(1),
            progress: false,
            stop: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_is_start_plus_i_over_rate() {
        let start = Instant::now();
        let s = Schedule::new(start, 4.0, Duration::from_millis(2500));
        assert_eq!(s.len(), 10);
        assert_eq!(s.due(0), start);
        assert_eq!(s.due(1), start + Duration::from_millis(250));
        assert_eq!(s.due(9), start + Duration::from_millis(2250));
        assert!(Schedule::new(start, 0.1, Duration::from_secs(1)).is_empty());
        let s = Schedule::new(start, 20_000.0, Duration::from_secs(3));
        assert_eq!(s.len(), 60_000);
        assert_eq!(s.due(59_999), start + Duration::from_micros(2_999_950));
    }

    // tokio's timer counts whole milliseconds, also under the paused clock: the fake
    // servers below take whole milliseconds.
    #[tokio::test(start_paused = true)]
    async fn a_fast_server_keeps_up() {
        let c = config(100.0, Duration::from_secs(10), 100);
        let rec = drive(&c, &mut TimerPacer, |_| {
            (RequestKind::Check, async {
                tokio::time::sleep(Duration::from_millis(3)).await;
                Ok(Answers {
                    checked: 1,
                    wrong: 0,
                })
            })
        })
        .await
        .unwrap();
        assert_eq!(rec.sent, 1000);
        assert_eq!(rec.completed, 1000);
        assert_eq!(rec.errors(), 0);
        assert_eq!(rec.checked_answers, 1000);
        assert!(!rec.fell_behind());
        assert_eq!(rec.late_sends, 0);
        // Under the paused clock every request takes its 3 ms (the timer rounds a
        // deadline up to its next tick, hence a microsecond more at times).
        assert!(rec.latency.min() >= 3_000, "min {}", rec.latency.min());
        assert!(rec.latency.max() <= 3_010, "max {}", rec.latency.max());
    }

    /// The server answers one request at a time, 50 ms each, and the generator may have
    /// only one request outstanding, so request `i` (due at `10 ms * i`) is only sent
    /// when request `i-1` has answered, at `50 ms * i`. Measured from its actual send it
    /// would take 50 ms; measured from its due time, as it must be, it takes
    /// `50 ms * (i+1) - 10 ms * i = 40 ms * i + 50 ms`.
    #[tokio::test(start_paused = true)]
    async fn latency_counts_from_the_due_time_not_the_send() {
        let c = config(100.0, Duration::from_secs(1), 1);
        let server = Arc::new(tokio::sync::Mutex::new(()));
        let rec = drive(&c, &mut TimerPacer, |_| {
            let server = server.clone();
            (RequestKind::Check, async move {
                let _busy = server.lock().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Answers::default())
            })
        })
        .await
        .unwrap();
        assert_eq!(rec.completed, 100);
        let expect_max_us = 40_000 * 99 + 50_000;
        assert!(
            rec.latency.equivalent(rec.latency.max(), expect_max_us),
            "max {} us",
            rec.latency.max()
        );
        assert!(rec.latency.equivalent(rec.latency.min(), 50_000));
        // The median request (i = 49 or 50) waited about two seconds.
        let p50 = rec.latency.value_at_quantile(0.5);
        assert!((1_990_000..=2_060_000).contains(&p50), "p50 {p50} us");
        // The sends themselves lagged: the generator could not keep its schedule.
        assert!(rec.fell_behind());
        assert_eq!(rec.in_flight_waits, 99);
        assert_eq!(rec.late_sends, 99);
        // The run lasted until the last answer, 100 * 50 ms.
        assert_eq!(
            rec.last_completion.duration_since(rec.start),
            Duration::from_millis(5000)
        );
    }

    /// A server that stalls for 2 s at the start (one request at a time) while the
    /// generator keeps sending on schedule: the requests queued behind the stall carry
    /// its delay in their latencies, although each was sent on time.
    #[tokio::test(start_paused = true)]
    async fn queueing_behind_a_stall_is_measured() {
        let c = config(100.0, Duration::from_secs(5), 10_000);
        let server = Arc::new(tokio::sync::Mutex::new(()));
        let start = Instant::now();
        let rec = drive(&c, &mut TimerPacer, |i| {
            let server = server.clone();
            (RequestKind::Check, async move {
                let _busy = server.lock().await;
                let cost = if i == 0 { 2_000 } else { 1 };
                tokio::time::sleep(Duration::from_millis(cost)).await;
                Ok(Answers::default())
            })
        })
        .await
        .unwrap();
        assert_eq!(rec.completed, 500);
        assert!(!rec.fell_behind(), "the sends were on time");
        assert_eq!(rec.late_sends, 0);
        // Request 1 was due at 10 ms and answered after the 2 s stall.
        assert!(rec.latency.max() >= 1_990_000, "max {}", rec.latency.max());
        // About 200 requests were due during the stall, so over 10% of all requests
        // took more than a second, although the server's own time was 1 ms.
        let slow = rec
            .latency
            .iter_recorded()
            .filter(|v| v.value_iterated_to() > 1_000_000)
            .map(|v| v.count_at_value())
            .sum::<u64>();
        assert!(slow > 50, "only {slow} requests were slow");
        // Once the queue drained, requests took their 1 ms again.
        assert!(rec.latency.equivalent(rec.latency.min(), 1_000));
        assert!(rec.last_completion.duration_since(start) >= Duration::from_millis(4_990));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_and_timeouts_are_counted_by_status() {
        let mut c = config(100.0, Duration::from_secs(1), 1000);
        c.timeout = Duration::from_millis(100);
        let rec = drive(&c, &mut TimerPacer, |i| {
            let kind = if i % 2 == 0 {
                RequestKind::Check
            } else {
                RequestKind::Write
            };
            (kind, async move {
                match i % 4 {
                    0 => Ok(Answers {
                        checked: 1,
                        wrong: 1,
                    }),
                    1 => Err("UNAVAILABLE"),
                    2 => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok(Answers::default())
                    }
                    _ => Ok(Answers::default()),
                }
            })
        })
        .await
        .unwrap();
        assert_eq!(rec.completed, 100);
        assert_eq!(rec.errors(), 50);
        assert_eq!(rec.errors_by_status.get("UNAVAILABLE"), Some(&25));
        assert_eq!(rec.errors_by_status.get(TIMEOUT_STATUS), Some(&25));
        assert_eq!(rec.wrong_answers, 25);
        assert_eq!(rec.by_kind[&RequestKind::Check].errors, 25);
        assert_eq!(rec.by_kind[&RequestKind::Write].errors, 25);
        // Timed-out requests are recorded at the timeout.
        assert!(rec.latency.equivalent(rec.latency.max(), 100_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_sending_and_waits_for_replies() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut c = config(100.0, Duration::from_secs(10), 1000);
        c.stop = Some(stop.clone());
        let rec = drive(&c, &mut TimerPacer, |i| {
            let stop = stop.clone();
            (RequestKind::Check, async move {
                if i == 49 {
                    stop.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(Answers::default())
            })
        })
        .await
        .unwrap();
        assert!(rec.interrupted);
        assert_eq!(rec.sent, 50);
        assert_eq!(rec.completed, 50);
    }

    #[tokio::test]
    async fn spin_pacer_never_wakes_early() {
        let mut p = SpinPacer::default();
        for ms in [0u64, 1, 3] {
            let due = Instant::now() + Duration::from_millis(ms);
            p.wait_until(due).await;
            assert!(Instant::now() >= due);
        }
    }
}
