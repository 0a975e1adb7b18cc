//! A reactive pipeline: classify orders by priority, keep the high-priority
//! ones, process each through retry + timeout, send the ones that still fail
//! to a dead-letter topic, and batch the results by 5.
//!
//! Runs in paused (virtual) time, so backoffs and timeouts cost nothing and
//! the example finishes at once.
//!
//! ```text
//! cargo run -p busline --example reactive_pipeline
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tower::{ServiceBuilder, ServiceExt};

use busline::middleware::{BoxError, DeadLetter, DeadLetterLayer, RetryLayer, TimeoutLayer};
use busline::stream::{Lanes, Priority, StreamOpsExt};
use busline::{Bus, Envelope};

#[derive(Debug, Clone)]
struct Order {
    id: u32,
    customer: &'static str,
    amount_cents: i64,
}

/// The handler: books an order, or fails on a negative amount (forever: a bad
/// event, which the retries cannot fix and the dead-letter topic keeps).
async fn book(env: Arc<Envelope<Order>>) -> Result<String, BoxError> {
    let o = &env.payload;
    if o.amount_cents < 0 {
        return Err(format!("order {} has a negative amount {}", o.id, o.amount_cents).into());
    }
    tokio::time::sleep(Duration::from_millis(5)).await; // pretend to call a payment service
    Ok(format!(
        "#{} {} {:.2}",
        o.id,
        o.customer,
        o.amount_cents as f64 / 100.0
    ))
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<Order>::new();
    let dead = Bus::<DeadLetter<Order>>::new();
    let mut dead_letters = dead.subscribe("dead_letter.>")?;
    let orders = bus.subscribe("orders.>")?;

    // Publish 20 orders on orders.<tier>; every 7th is malformed.
    let customers = ["acme", "globex", "initech", "umbrella"];
    for id in 0..20u32 {
        let tier = ["gold", "silver", "bronze"][id as usize % 3];
        let amount_cents = if id % 7 == 3 {
            -100
        } else {
            1_000 + id as i64 * 250
        };
        let order = Order {
            id,
            customer: customers[id as usize % 4],
            amount_cents,
        };
        bus.publish_to(&format!("orders.{tier}"), order).await?;
    }
    bus.close(); // the subscription ends once drained

    // The handler stack: dead letters ▸ retry ▸ timeout ▸ handler.
    let handler = ServiceBuilder::new()
        .layer(DeadLetterLayer::new(dead.clone()))
        .layer(RetryLayer::new(3).backoff(Duration::from_millis(50), 2.0, Duration::from_secs(1)))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(tower::service_fn(book));

    let classify = |env: &Arc<Envelope<Order>>| match env.topic.as_str() {
        "orders.gold" => Priority::High,
        "orders.silver" => Priority::Normal,
        _ => Priority::Low,
    };
    let events = orders.count_lag();
    let lagged = events.lag_counter();
    let mut skipped = 0u32;
    let mut batches = Box::pin(
        events
            .prioritize(Lanes::default(), classify)
            .filter(|env| {
                let keep = classify(env) == Priority::High;
                if !keep {
                    skipped += 1;
                }
                futures::future::ready(keep)
            })
            .then(|env| handler.clone().oneshot(env))
            .filter_map(|result| async move {
                match result {
                    Ok(Some(receipt)) => Some(receipt),
                    Ok(None) => None, // dead-lettered
                    Err(e) => {
                        eprintln!("dead-letter sink failed: {e}");
                        None
                    }
                }
            })
            .batch(5, Duration::from_secs(1)),
    );

    let mut booked = 0;
    while let Some(batch) = batches.next().await {
        booked += batch.len();
        println!("batch of {}: {}", batch.len(), batch.join(", "));
    }
    drop(batches);
    dead.close();
    let mut dead_count = 0;
    while let Ok(letter) = dead_letters.recv().await {
        let l = &letter.payload;
        dead_count += 1;
        println!(
            "dead letter on {}: event {} (order {}) after {} attempts: {}",
            letter.topic, l.envelope.id, l.envelope.payload.id, l.attempts, l.error
        );
    }
    println!(
        "booked {booked}, dead-lettered {dead_count}, not high priority {skipped}, lagged {}",
        lagged.get()
    );
    assert_eq!(
        booked + dead_count,
        7,
        "7 gold orders: ids 0, 3, 6, 9, 12, 15, 18"
    );
    assert_eq!(dead_count, 1, "order 3 is the only malformed gold order");
    Ok(())
}
