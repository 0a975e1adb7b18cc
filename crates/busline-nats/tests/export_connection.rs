//! Exports go out on a connection of the exporter's own (see the
//! transport's docs): what it must do that the client did for it, and what
//! happens when it alone breaks.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use busline::Bus;
use busline_nats::{Auth, NatsConfig, NatsError, NatsTransport, StatusEvent};
use common::*;

fn user(name: &str, password: &str) -> Auth {
    Auth::UserPassword {
        user: name.into(),
        password: password.into(),
    }
}

fn status_ev(se: &StatusEvent) -> Option<Ev> {
    let body = match se {
        StatusEvent::Error { message, .. } => format!("{} {message}", se.topic()),
        _ => se.topic().to_string(),
    };
    Some(Ev {
        publisher: 0,
        n: 0,
        body,
    })
}

async fn core_importer(
    url: &str,
    pattern: &str,
) -> (Bus<Ev>, busline::Subscription<Ev>, NatsTransport<Ev>) {
    core_importer_with(NatsConfig::new(url), pattern).await
}

async fn core_importer_with(
    cfg: NatsConfig<Ev>,
    pattern: &str,
) -> (Bus<Ev>, busline::Subscription<Ev>, NatsTransport<Ev>) {
    let bus: Bus<Ev> = Bus::new();
    let sub = bus
        .subscriber(pattern)
        .lossless(100_000)
        .subscribe()
        .unwrap();
    let t = NatsTransport::connect(&bus, cfg.import(pattern))
        .await
        .unwrap();
    (bus, sub, t)
}

/// Publishes `ev(0, n)` for each `n` of `ns` on `topic`.
async fn publish(bus: &Bus<Ev>, topic: &str, ns: std::ops::Range<u64>) {
    for n in ns {
        bus.publish_to(topic, ev(0, n)).await.unwrap();
    }
}

/// An event larger than the server's `max_payload` (header block and
/// payload, as the server counts) is refused and counted; the next flows.
#[tokio::test]
async fn too_large_is_rejected_and_the_rest_flows() {
    let srv = server_with("max_payload: 2048");
    let url = srv.url();
    let (_b, mut sub, _tb) = core_importer(&url, "l.>").await;
    let a: Bus<Ev> = Bus::new();
    let ta = NatsTransport::connect(&a, NatsConfig::new(&url).export("l.>"))
        .await
        .unwrap();
    let big = |n: u64, len: usize| Ev {
        publisher: 0,
        n,
        body: "x".repeat(len),
    };
    a.publish_to("l.x", big(0, 4000)).await.unwrap();
    // The payload alone fits; with its header block it does not.
    a.publish_to("l.x", big(1, 2000)).await.unwrap();
    a.publish_to("l.x", ev(0, 2)).await.unwrap();
    ta.flush().await.unwrap();
    let s = ta.stats();
    assert_eq!((s.rejected, s.acked, s.exported), (2, 1, 1), "{s:?}");
    assert_eq!(recv_n(&mut sub, 1).await[0].payload, ev(0, 2));
}

/// A publish the server refuses (no permission for the subject) is not
/// silent: its `-ERR` becomes a `$sys.nats.error` event naming it, and the
/// connection goes on carrying the rest.
#[tokio::test]
async fn a_refused_publish_is_reported_and_the_rest_flows() {
    let srv = server_with(
        "authorization { users = [ \
           { user: alice, password: pw1, permissions: { publish: { deny: [\"p.secret\"] } } }, \
           { user: bob, password: pw2 } ] }",
    );
    let url = srv.url();
    let (_b, mut sub, _tb) =
        core_importer_with(NatsConfig::new(&url).auth(user("bob", "pw2")), "p.>").await;
    let a: Bus<Ev> = Bus::new();
    let mut errors = a.subscribe("$sys.nats.error").unwrap();
    let ta = NatsTransport::connect(
        &a,
        NatsConfig::new(&url)
            .auth(user("alice", "pw1"))
            .export("p.>")
            .status_events(status_ev),
    )
    .await
    .unwrap();
    a.publish_to("p.secret", ev(0, 0)).await.unwrap();
    a.publish_to("p.open", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    let got = recv_n(&mut sub, 1).await;
    assert_eq!(got[0].payload, ev(0, 1));
    assert_eq!(got[0].topic.as_str(), "p.open");
    let e = tokio::time::timeout(Duration::from_secs(30), errors.recv())
        .await
        .expect("the refusal is reported")
        .unwrap();
    assert!(
        e.payload.body.contains("Permissions Violation") && e.payload.body.contains("p.secret"),
        "{}",
        e.payload.body
    );
}

/// Requests leave on the exporter's connection, their reply inbox is
/// subscribed on the client's: the subscription must be in place first,
/// or the first answer would go nowhere. Every request of a fresh
/// transport is answered.
#[tokio::test]
async fn the_first_requests_are_answered() {
    let srv = server();
    let url = srv.url();
    for round in 0..5u64 {
        // The answering side: imports requests, exports its replies.
        let b: Bus<Ev> = Bus::new();
        let mut reqs = b.subscribe("q.>").unwrap();
        let _tb = NatsTransport::connect(&b, NatsConfig::new(&url).import("q.>"))
            .await
            .unwrap();
        let answerer = tokio::spawn(async move {
            while let Ok(r) = reqs.recv().await {
                let mut p = r.payload.clone();
                p.n += 1000;
                b.reply(&r, p).await.unwrap();
            }
        });
        let a: Bus<Ev> = Bus::new();
        let _ta = NatsTransport::connect(&a, NatsConfig::new(&url).export("q.>"))
            .await
            .unwrap();
        let answer = tokio::time::timeout(
            Duration::from_secs(30),
            a.request("q.ask", ev(0, round), Duration::from_secs(20)),
        )
        .await
        .expect("an answer or a timeout error")
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(answer.payload.n, round + 1000);
        answerer.abort();
    }
}

/// The server restarted under a steady stream: the exporter's connection
/// comes back by itself, a flush says events may have been lost (core NATS
/// is at-most-once), and what is published afterwards arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_comes_back_after_a_restart() {
    let mut srv = server();
    let url = srv.url();
    let a: Bus<Ev> = Bus::new();
    let ta = NatsTransport::connect(&a, NatsConfig::new(&url).export("r.>"))
        .await
        .unwrap();
    publish(&a, "r.x", 0..1000).await;
    ta.flush().await.unwrap();
    srv.kill();
    srv.restart().unwrap();
    // Published while the connection is down or coming back.
    publish(&a, "r.x", 1000..2000).await;
    let r = tokio::time::timeout(Duration::from_secs(120), ta.flush())
        .await
        .expect("flush ends");
    match r {
        Ok(()) | Err(NatsError::Reconnected { .. }) => {}
        Err(e) => panic!("flush after a restart: {e}"),
    }
    let (_b, mut sub, _tb) = core_importer(&url, "r.>").await;
    publish(&a, "r.x", 2000..2100).await;
    tokio::time::timeout(Duration::from_secs(120), ta.flush())
        .await
        .expect("flush ends")
        .expect("nothing lost once the connection is back");
    let got = recv_n(&mut sub, 100).await;
    let ns: Vec<u64> = got.iter().map(|e| e.payload.n).collect();
    assert_eq!(ns, (2000..2100).collect::<Vec<_>>());
}

/// A TCP proxy in front of a server: it carries each connection it accepts
/// and can cut one (both sides closed at once, whatever was in flight lost)
/// or freeze it (open, but nothing read from either side any more).
struct Proxy {
    addr: SocketAddr,
    conns: Conns,
    accept: JoinHandle<()>,
}

/// The connections a proxy carries, in the order it accepted them: the task
/// carrying each, and its freeze switch.
type Conns = Arc<Mutex<Vec<(JoinHandle<()>, watch::Sender<bool>)>>>;

/// Copies `r` to `w` while not frozen.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if w.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns: Conns = Arc::default();
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((down, _)) = l.accept().await {
                let (freeze, frozen) = watch::channel(false);
                let carry = tokio::spawn(async move {
                    if let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let (dr, dw) = down.into_split();
                        let (ur, uw) = up.into_split();
                        // Either direction ending ends both.
                        tokio::select! {
                            _ = pump(dr, uw, frozen.clone()) => {}
                            _ = pump(ur, dw, frozen) => {}
                        }
                    }
                });
                list.lock().push((carry, freeze));
            }
        });
        Proxy {
            addr,
            conns,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.conns.lock().len()
    }

    /// Cuts the `i`-th connection accepted (from 0).
    fn cut(&self, i: usize) {
        self.conns.lock()[i].0.abort();
    }

    /// Freezes the `i`-th connection accepted.
    fn freeze(&self, i: usize) {
        self.conns.lock()[i].1.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for (c, _) in self.conns.lock().iter() {
            c.abort();
        }
    }
}

/// A transport connected through a proxy: the client's connection is the
/// proxy's first, the exporter's its second.
async fn behind_a_proxy(
    srv: &busline_nats::server::NatsServer,
    cfg: impl FnOnce(NatsConfig<Ev>) -> NatsConfig<Ev>,
) -> (Proxy, Bus<Ev>, NatsTransport<Ev>) {
    let proxy = Proxy::start(srv.port()).await;
    let a: Bus<Ev> = Bus::new();
    let ta = NatsTransport::connect(&a, cfg(NatsConfig::new(proxy.url())))
        .await
        .unwrap();
    assert_eq!(proxy.accepted(), 2);
    (proxy, a, ta)
}

/// Messages in the transport's stream, asked of the server directly.
async fn stored(srv: &busline_nats::server::NatsServer) -> u64 {
    let nc = async_nats::connect(srv.url()).await.unwrap();
    stream_messages(&async_nats::jetstream::new(nc), "BUSLINE").await
}

/// JetStream: the exporter's connection (not the client's) is cut again and
/// again under a stream of publishes. Publishes it took with it get no
/// ack; they are sent again, and the server stores every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_publishes_lost_with_the_exporters_connection_are_sent_again() {
    let srv = server();
    let (proxy, a, ta) = behind_a_proxy(&srv, |c| c.export("j.>").jetstream(js("exp"))).await;
    let total = 20_000u64;
    let a2 = a.clone();
    let (prog_tx, mut prog) = tokio::sync::watch::channel(0u64);
    let publisher = tokio::spawn(async move {
        for n in 0..total {
            a2.publish_to("j.x", ev(0, n)).await.unwrap();
            prog_tx.send_replace(n + 1);
        }
    });
    // Each cut hits the exporter's newest connection.
    for k in 1..=3u64 {
        prog.wait_for(|&c| c >= total * k / 4).await.unwrap();
        let newest = proxy.accepted() - 1;
        assert!(newest >= 1);
        proxy.cut(newest);
        eventually("the exporter connects again", || {
            proxy.accepted() > newest + 1
        })
        .await;
    }
    tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("publisher finished")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), ta.flush())
        .await
        .expect("all acked in time")
        .unwrap();
    let s = ta.stats();
    assert_eq!(s.acked, total, "{s:?}");
    assert!(
        proxy.accepted() >= 5,
        "the exporter reconnected after each cut"
    );
    // Straight from the server: each event stored once.
    assert_eq!(stored(&srv).await, total, "{s:?}");
    let (_b, mut sub, _tb) = importer(&srv.url(), "j.>", "check").await;
    let want: HashSet<(u32, u64)> = (0..total).map(|n| (0, n)).collect();
    let dups = recv_all(&mut sub, &want).await;
    assert_eq!(dups, 0);
    eprintln!(
        "{total} events, 3 cuts: retried {}, server-side duplicates {}",
        s.retried, s.publish_duplicates
    );
}

/// Core NATS: the exporter's connection cut under a stream of publishes.
/// What it took with it may be lost (at-most-once), and the next flush
/// says so; nothing hangs, and what follows arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_a_cut_exporters_connection_is_reported_and_replaced() {
    let srv = server();
    let (proxy, a, ta) = behind_a_proxy(&srv, |c| c.export("c.>")).await;
    let (_b, mut sub, _tb) = core_importer(&srv.url(), "c.>").await;
    publish(&a, "c.x", 0..5000).await;
    ta.flush().await.unwrap();
    assert_eq!(recv_n(&mut sub, 5000).await.len(), 5000);
    publish(&a, "c.x", 5000..7000).await;
    // Written to the connection, not yet confirmed: then it is cut.
    eventually("written", || ta.stats().acked >= 7000).await;
    proxy.cut(1);
    publish(&a, "c.x", 7000..10_000).await;
    let r = tokio::time::timeout(Duration::from_secs(120), ta.flush())
        .await
        .expect("flush ends");
    match r {
        Err(NatsError::Reconnected { .. }) => {}
        other => panic!("a flush across the cut must report it, got {other:?}"),
    }
    assert!(proxy.accepted() >= 3, "the exporter connected again");
    publish(&a, "c.x", 10_000..10_100).await;
    ta.flush()
        .await
        .expect("nothing lost once the connection is back");
    // What came through before the cut, in order; then the last hundred.
    let mut last = None;
    loop {
        let e = recv_n(&mut sub, 1).await.remove(0);
        assert!(last.is_none_or(|l| e.payload.n > l), "in order");
        last = Some(e.payload.n);
        if e.payload.n == 10_099 {
            break;
        }
    }
}

/// The exporter's connection goes quiet (open, but the far side reads
/// nothing, as when a network drops packets instead of closing): its
/// writes stall, and after four connect timeouts it counts as broken and
/// is made again. JetStream then sends again what was lost, and nothing
/// waits for TCP to give up (which takes many minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_exporters_connection_is_replaced() {
    let srv = server();
    let (proxy, a, ta) = behind_a_proxy(&srv, |c| {
        c.connect_timeout(Duration::from_millis(500))
            .export("s.>")
            .jetstream(js("exp"))
    })
    .await;
    publish(&a, "s.x", 0..1000).await;
    ta.flush().await.unwrap();
    proxy.freeze(1);
    // Enough to fill the socket buffers on the way, several times over.
    let total = 60_000u64;
    let body = "y".repeat(1000);
    let run = async {
        for n in 1000..total {
            let e = Ev {
                publisher: 0,
                n,
                body: body.clone(),
            };
            // Waits while the exporter's queue is full (backpressure).
            a.publish_to("s.x", e).await.unwrap();
        }
        ta.flush().await
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("everything published and acked, not stuck behind the stalled connection")
        .unwrap();
    assert!(
        proxy.accepted() >= 3,
        "a new connection replaced the stalled one"
    );
    let s = ta.stats();
    assert_eq!(s.acked, total, "{s:?}");
    assert_eq!(stored(&srv).await, total, "{s:?}");
}

/// Shutdown gives up while the exporter's connection is stalled mid-write
/// (its deadline before the stall limit): the events of that write are
/// counted as abandoned, not lost from the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_giving_up_mid_write_counts_the_write() {
    let srv = server();
    let (proxy, a, ta) = behind_a_proxy(&srv, |c| {
        c.connect_timeout(Duration::from_secs(30))
            .shutdown_timeout(Duration::from_secs(2))
            .buffer(50_000)
            .export("g.>")
    })
    .await;
    proxy.freeze(1);
    let body = "z".repeat(1000);
    // Enough to fill the socket buffers several times over (the writes
    // stall), not the exporter's queue (the publishes never wait).
    let mut handed = 0u64;
    for n in 0..40_000 {
        let e = Ev {
            publisher: 0,
            n,
            body: body.clone(),
        };
        handed += a.publish_to("g.x", e).await.unwrap().subscribers as u64;
    }
    assert_eq!(handed, 40_000);
    eventually("the exporter is stuck in a write", || {
        ta.stats().exported > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = tokio::time::timeout(Duration::from_secs(60), ta.shutdown())
        .await
        .expect("shutdown ends by its deadline");
    match r {
        Err(NatsError::ShutdownTimedOut {
            abandoned, stats, ..
        }) => {
            // Each event written (acked on core NATS) or counted.
            assert!(abandoned > 0, "{stats:?}");
            assert_eq!(stats.acked + stats.abandoned, handed, "{stats:?}");
            assert!(stats.exported >= stats.acked, "{stats:?}");
        }
        other => panic!("wanted ShutdownTimedOut, got {other:?}"),
    }
}

/// The exporter's connection goes quiet while idle: no write finds out,
/// but its keepalive `PING` goes unanswered, and the connection is given
/// up and made again before the next event, which then arrives (instead of
/// vanishing into the quiet connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_exporters_connection_gone_quiet_is_replaced() {
    let srv = server();
    let (proxy, a, ta) = behind_a_proxy(&srv, |c| {
        c.connect_timeout(Duration::from_millis(250)).export("i.>")
    })
    .await;
    let (_b, mut sub, _tb) = core_importer(&srv.url(), "i.>").await;
    a.publish_to("i.x", ev(0, 0)).await.unwrap();
    ta.flush().await.unwrap();
    assert_eq!(recv_n(&mut sub, 1).await[0].payload, ev(0, 0));
    proxy.freeze(1);
    // Keepalive every 4 connect timeouts (1 s): given up within two.
    // (Generous: a late keepalive makes the flush below fail, not hang.)
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.publish_to("i.x", ev(0, 1)).await.unwrap();
    ta.flush()
        .await
        .expect("the event went out on a new connection, not the quiet one");
    assert!(proxy.accepted() >= 3);
    assert_eq!(recv_n(&mut sub, 1).await[0].payload, ev(0, 1));
}
