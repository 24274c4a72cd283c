//! One clock for every decision. hubwatch reads the wall clock once, when it starts, and counts on from
//! there with the monotonic clock: a wall-clock step (an NTP correction, a VM resumed) then changes no
//! duration — not a retry, a held page, the detection window nor a grace — and never makes an incident key
//! twice. The cost: after a step, the times hubwatch writes differ from the host's by the step until it
//! restarts (reported by [`Clock::wall_offset`], exported as `hubwatch_clock_offset_seconds`).
//!
//! It counts on tokio's clock, so a test that pauses time (`tokio::time::pause`) moves this clock too.

use std::time::SystemTime;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_start: SystemTime,
    started: Instant,
}

impl Clock {
    /// Anchored to the wall clock now.
    pub fn start() -> Clock {
        Clock::starting_at(SystemTime::now())
    }

    /// Anchored to `wall` now (tests: a scripted start).
    pub fn starting_at(wall: SystemTime) -> Clock {
        Clock { wall_at_start: wall, started: Instant::now() }
    }

    /// hubwatch's time: the wall time at start plus the monotonic time since.
    pub fn now(&self) -> SystemTime {
        self.wall_at_start + self.started.elapsed()
    }

    /// How far the host's wall clock is from [`Clock::now`] (positive: the wall clock is ahead), in seconds.
    pub fn wall_offset(&self) -> f64 {
        let (wall, ours) = (SystemTime::now(), self.now());
        match wall.duration_since(ours) {
            Ok(ahead) => ahead.as_secs_f64(),
            Err(behind) => -behind.duration().as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_clock_counts_monotonic_time_from_its_anchor() {
        let anchor = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let clock = Clock::starting_at(anchor);
        assert_eq!(clock.now(), anchor);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), anchor + Duration::from_secs(90));
        // The anchor is far from the host's wall clock: the offset says so.
        assert!(clock.wall_offset() > 1e6);
    }
}
