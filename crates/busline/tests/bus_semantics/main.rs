//! Tests that try to break the bus: loss, duplication, ordering, closing.

mod backpressure;
mod closing;
mod counters;
mod loss_and_order;
mod queue_groups;
mod request_reply;
mod routing;
mod shared_rings;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
