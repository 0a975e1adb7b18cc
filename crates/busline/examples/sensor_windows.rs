//! Sensor readings in 60-second windows: min / mean / max (and p90) per
//! sensor, using per-key tumbling windows and a bound on live keys.
//!
//! The sensors run in paused (virtual) time: ten simulated minutes pass in a
//! blink, so the example finishes at once.
//!
//! ```text
//! cargo run -p busline --example sensor_windows
//! ```

use std::time::Duration;

use futures::StreamExt;

use busline::stream::StreamOpsExt;
use busline::Bus;

#[derive(Debug, Clone)]
struct Reading {
    sensor: String,
    celsius: f64,
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<Reading>::new();
    let readings = bus.subscribe("sensors.*.temperature")?.count_lag();
    let lagged = readings.lag_counter();
    let minute = Duration::from_secs(60);
    let windows = readings.keyed_tumbling(minute, 16, |env| env.payload.sensor.clone());
    let overflow = windows.overflow_counter();
    let mut windows = Box::pin(windows);

    // Three sensors, one reading every 10 s each, for ten minutes.
    let publisher = bus.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        for step in 0..60u32 {
            tick.tick().await;
            for (i, sensor) in ["boiler", "attic", "cellar"].iter().enumerate() {
                let base = [70.0, 25.0, 12.0][i];
                let wobble = ((step * 7 + i as u32 * 3) % 11) as f64 / 2.0; // deterministic noise
                let reading = Reading {
                    sensor: sensor.to_string(),
                    celsius: base + wobble,
                };
                publisher
                    .publish_to(&format!("sensors.{sensor}.temperature"), reading)
                    .await
                    .unwrap();
            }
        }
        publisher.close();
    });

    let mut minutes = 0;
    while let Some(w) = windows.next().await {
        minutes += 1;
        println!("minute {minutes}:");
        for (sensor, events) in &w.groups {
            let s = busline::stream::Summary::of(events.iter().map(|e| e.payload.celsius));
            println!(
                "  {sensor:<7} n={:<2} min={:>5.1} mean={:>5.1} max={:>5.1} p90={:>5.1}",
                s.count,
                s.min.unwrap_or(f64::NAN),
                s.mean.unwrap_or(f64::NAN),
                s.max.unwrap_or(f64::NAN),
                s.p90.unwrap_or(f64::NAN),
            );
            assert_eq!(s.count, 6, "6 readings per sensor per minute");
        }
    }
    println!(
        "{minutes} windows; overflowed keys {}, lagged {}",
        overflow.get(),
        lagged.get()
    );
    assert_eq!(overflow.get(), 0);
    Ok(())
}
