//! Order fulfilment as a saga: order placed → reserve stock → charge
//! payment → ship. A payment that fails releases the stock (compensation);
//! a payment that does not answer in time does too, from the saga's
//! durable timeout.
//!
//! The stock, payment and shipping services de-duplicate commands by id
//! ([`Dedup`]) and count what they did per order, so the last line can say
//! whether any effect happened twice.
//!
//! Run with `cargo run -p busline-es --example order_saga`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busline::{Bus, EventId, Message, Runtime};
use busline_es::saga::{Decision, Dedup, Route, Saga, SagaManager};
use busline_log::Log;
use serde::{Deserialize, Serialize};

/// How long the saga waits for the payment service.
const PAYMENT_TIMEOUT: Duration = Duration::from_millis(300);
const ORDERS: u64 = 6;

/// Everything on the shop's bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shop {
    OrderPlaced { order: String, amount: u64 },
    ReserveStock { order: String },
    StockReserved { order: String },
    ReleaseStock { order: String },
    ChargePayment { order: String, amount: u64 },
    PaymentCharged { order: String },
    PaymentFailed { order: String, reason: String },
    Ship { order: String },
    Shipped { order: String },
    OrderCompleted { order: String },
    OrderCompensated { order: String, reason: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
enum Phase {
    #[default]
    New,
    Reserving,
    Charging,
    Shipping,
    Completed,
    Compensated,
}

/// The saga's own events.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum OrderEvent {
    Placed { order: String, amount: u64 },
    Reserved,
    Charged,
    Shipped,
    Compensated { reason: String },
}

/// One order's fulfilment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OrderSaga {
    order: String,
    amount: u64,
    phase: Phase,
}

impl OrderSaga {
    /// Undo the reservation and close the order as compensated.
    fn compensate(&self, reason: &str) -> Decision<Self> {
        let order = self.order.clone();
        Decision::new()
            .apply(OrderEvent::Compensated {
                reason: reason.into(),
            })
            .cancel("payment")
            .emit(
                "stock.release",
                Shop::ReleaseStock {
                    order: order.clone(),
                },
            )
            .emit(
                "orders.compensated",
                Shop::OrderCompensated {
                    order,
                    reason: reason.into(),
                },
            )
            .finish()
    }
}

impl Saga for OrderSaga {
    const NAME: &'static str = "order";
    type Message = Shop;
    type Event = OrderEvent;
    type Timeout = ();

    fn topics() -> Vec<String> {
        [
            "orders.placed",
            "stock.reserved",
            "payment.charged",
            "payment.failed",
            "shipping.shipped",
        ]
        .map(String::from)
        .to_vec()
    }

    fn route(message: &Shop) -> Route {
        match message {
            Shop::OrderPlaced { order, .. } => Route::Start(order.clone()),
            Shop::StockReserved { order }
            | Shop::PaymentCharged { order }
            | Shop::PaymentFailed { order, .. }
            | Shop::Shipped { order } => Route::Handle(order.clone()),
            _ => Route::Ignore,
        }
    }

    fn handle(&self, message: &Shop) -> Decision<Self> {
        match (self.phase, message) {
            (Phase::New, Shop::OrderPlaced { order, amount }) => Decision::new()
                .apply(OrderEvent::Placed {
                    order: order.clone(),
                    amount: *amount,
                })
                .emit(
                    "stock.reserve",
                    Shop::ReserveStock {
                        order: order.clone(),
                    },
                ),
            (Phase::Reserving, Shop::StockReserved { order }) => Decision::new()
                .apply(OrderEvent::Reserved)
                .emit(
                    "payment.charge",
                    Shop::ChargePayment {
                        order: order.clone(),
                        amount: self.amount,
                    },
                )
                .schedule("payment", PAYMENT_TIMEOUT, ()),
            (Phase::Charging, Shop::PaymentCharged { order }) => Decision::new()
                .apply(OrderEvent::Charged)
                .cancel("payment")
                .emit(
                    "shipping.ship",
                    Shop::Ship {
                        order: order.clone(),
                    },
                ),
            (Phase::Charging, Shop::PaymentFailed { reason, .. }) => {
                self.compensate(&format!("payment failed: {reason}"))
            }
            (Phase::Shipping, Shop::Shipped { order }) => Decision::new()
                .apply(OrderEvent::Shipped)
                .emit(
                    "orders.completed",
                    Shop::OrderCompleted {
                        order: order.clone(),
                    },
                )
                .finish(),
            // Late or repeated answers change nothing.
            _ => Decision::new(),
        }
    }

    fn on_timeout(&self, _: &()) -> Decision<Self> {
        self.compensate("payment did not answer in time")
    }

    fn apply(&mut self, event: &OrderEvent) {
        self.phase = match event {
            OrderEvent::Placed { order, amount } => {
                self.order = order.clone();
                self.amount = *amount;
                Phase::Reserving
            }
            OrderEvent::Reserved => Phase::Charging,
            OrderEvent::Charged => Phase::Shipping,
            OrderEvent::Shipped => Phase::Completed,
            OrderEvent::Compensated { .. } => Phase::Compensated,
        };
    }
}

/// What a service did with a command: the effect, the order, and the
/// answer to publish (topic, message), if any.
type Outcome = Option<(&'static str, String, Option<(String, Shop)>)>;

/// What the services did, per (effect, order).
type Effects = Arc<Mutex<BTreeMap<(String, String), u32>>>;

/// A service: takes commands on `pattern`, performs each once (by command
/// id), counts the effect and answers with what `act` returns.
fn service(
    bus: &Bus<Shop>,
    pattern: &str,
    dedup: Dedup,
    effects: Effects,
    act: fn(&Shop) -> Outcome,
) -> Result<tokio::task::JoinHandle<()>, Box<dyn std::error::Error>> {
    let mut commands = bus.subscribe(pattern)?;
    let bus = bus.clone();
    Ok(tokio::spawn(async move {
        while let Ok(cmd) = commands.recv().await {
            let Some((effect, order, answer)) = act(&cmd.payload) else {
                continue;
            };
            if dedup
                .once(cmd.id, &(effect, &order))
                .await
                .expect("dedup log")
            {
                println!("  {effect:<15} {order}");
                *effects
                    .lock()
                    .unwrap()
                    .entry((effect.into(), order))
                    .or_default() += 1;
            }
            // Answer every time (a repeated command gets the same answer, same id).
            if let Some((topic, reply)) = answer {
                let id = EventId::from_u128(cmd.id.as_u128() ^ 1);
                let _ = bus.send(Message::new(reply).topic(topic).id(id)).await;
            }
        }
    }))
}

fn stock(cmd: &Shop) -> Outcome {
    match cmd {
        Shop::ReserveStock { order } => Some((
            "stock reserved",
            order.clone(),
            Some((
                "stock.reserved".into(),
                Shop::StockReserved {
                    order: order.clone(),
                },
            )),
        )),
        Shop::ReleaseStock { order } => Some(("stock released", order.clone(), None)),
        _ => None,
    }
}

/// Order 1, 4: charged; 2, 5: declined; 3, 6: no answer at all.
fn payment(cmd: &Shop) -> Outcome {
    let Shop::ChargePayment { order, .. } = cmd else {
        return None;
    };
    let n: u64 = order.trim_start_matches('o').parse().unwrap_or(0);
    let o = order.clone();
    Some(match n % 3 {
        1 => (
            "payment charged",
            o.clone(),
            Some(("payment.charged".into(), Shop::PaymentCharged { order: o })),
        ),
        2 => {
            let reply = Shop::PaymentFailed {
                order: o.clone(),
                reason: "card declined".into(),
            };
            (
                "payment declined",
                o,
                Some(("payment.failed".into(), reply)),
            )
        }
        _ => ("payment pending", o, None),
    })
}

fn shipping(cmd: &Shop) -> Outcome {
    let Shop::Ship { order } = cmd else {
        return None;
    };
    let reply = Shop::Shipped {
        order: order.clone(),
    };
    Some((
        "shipped",
        order.clone(),
        Some(("shipping.shipped".into(), reply)),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let bus: Bus<Shop> = Bus::new();
    let effects = Effects::default();
    let mut services = Vec::new();
    let open = |name: &str| Log::open(tmp.path().join(name), Default::default());
    for (pattern, act) in [
        ("stock.*", stock as fn(&Shop) -> _),
        ("payment.charge", payment),
        ("shipping.ship", shipping),
    ] {
        let dir = pattern.split('.').next().unwrap_or("svc");
        services.push(service(
            &bus,
            pattern,
            Dedup::open(open(dir)?)?,
            effects.clone(),
            act,
        )?);
    }
    let mut outcomes = bus.subscribe("orders.*")?;

    let manager = SagaManager::<OrderSaga>::open(open("sagas")?)?;
    let mut runtime = Runtime::new(bus.clone()).handle_signals(false);
    runtime.add(manager.clone());
    let handle = runtime.handle();
    let run = tokio::spawn(runtime.run());
    manager.ready().await;

    for n in 1..=ORDERS {
        let order = format!("o{n}");
        println!("order placed     {order}");
        bus.publish_to(
            "orders.placed",
            Shop::OrderPlaced {
                order,
                amount: 10 * n,
            },
        )
        .await?;
    }
    let (mut completed, mut compensated) = (0u64, 0u64);
    while completed + compensated < ORDERS {
        match outcomes.recv().await?.payload.clone() {
            Shop::OrderCompleted { order } => {
                completed += 1;
                println!("order completed  {order}");
            }
            Shop::OrderCompensated { order, reason } => {
                compensated += 1;
                println!("order compensated {order}: {reason}");
            }
            _ => {}
        }
    }
    handle.shutdown();
    run.await??;
    // Closing the bus lets the services finish what is queued, then stop.
    bus.close();
    for s in services {
        s.await?;
    }

    let effects = effects.lock().unwrap();
    let duplicated: u32 = effects.values().map(|n| n - 1).sum();
    // Every compensated order released what it reserved.
    let released = effects
        .keys()
        .filter(|(e, _)| e == "stock released")
        .count() as u64;
    assert_eq!(
        released, compensated,
        "a compensation did not release its stock"
    );
    println!("order_saga: {ORDERS} orders, {completed} completed, {compensated} compensated, {duplicated} duplicated effects");
    Ok(())
}
