//! The wire connection against a real `nats-server`: credentials, TLS,
//! what is not a NATS server, and a server list.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{WireConfig, WireConnection};
use crate::config::{Auth, Tls};
use crate::connection::Settings;
use crate::error::{ConnectCause, NatsError};
use crate::server::NatsServer;

fn cfg(server: &str, auth: Auth, tls: Tls) -> Result<WireConfig, NatsError> {
    Ok(WireConfig {
        settings: Arc::new(Settings::resolve(
            server,
            Duration::from_secs(10),
            &auth,
            &tls,
        )?),
        name: "test".into(),
        events: mpsc::unbounded_channel().0,
    })
}
fn srv(conf: &str) -> NatsServer {
    NatsServer::with_config(conf).expect("these tests need a real nats-server")
}

/// Connects, or returns the startup error's cause and text.
async fn try_connect(
    server: &str,
    auth: Auth,
    tls: Tls,
) -> Result<WireConnection, (ConnectCause, String)> {
    let connected = async { WireConnection::connect(cfg(server, auth, tls)?).await };
    match connected.await {
        Ok(d) => Ok(d),
        Err(e @ NatsError::Connect { .. }) => {
            let NatsError::Connect {
                cause,
                server: named,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(named, server, "{e}");
            Err((*cause, e.to_string()))
        }
        Err(e) => panic!("not a connect error: {e}"),
    }
}

/// One event through the connection: written, and confirmed by a round trip.
async fn publishes(d: &mut WireConnection) {
    d.buf
        .extend_from_slice(b"HPUB t.x 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
    d.pending += 1;
    assert_eq!(d.write().await, Ok(1));
    d.round_trip(Duration::from_secs(10)).await.unwrap();
    assert_eq!(d.connects, 1);
}

#[tokio::test]
async fn credentials_are_sent_and_refusals_are_startup_errors() {
    let up = |u: &str, p: &str| Auth::UserPassword {
        user: u.into(),
        password: p.into(),
    };
    let s = srv("authorization { user: alice, password: wonderland }");
    let url = s.url();
    let mut d = try_connect(&url, up("alice", "wonderland"), Tls::default())
        .await
        .unwrap();
    publishes(&mut d).await;
    for auth in [
        up("alice", "guess"),
        Auth::None,
        Auth::Token("wonderland".into()),
    ] {
        let (cause, msg) = try_connect(&url, auth, Tls::default()).await.err().unwrap();
        assert_eq!(cause, ConnectCause::Authorization, "{msg}");
    }

    let s = srv("authorization { token: s3cret }");
    let url = s.url();
    publishes(
        &mut try_connect(&url, Auth::Token("s3cret".into()), Tls::default())
            .await
            .unwrap(),
    )
    .await;
    let (cause, _) = try_connect(&url, Auth::Token("nope".into()), Tls::default())
        .await
        .err()
        .unwrap();
    assert_eq!(cause, ConnectCause::Authorization);

    let user = nkeys::KeyPair::new_user();
    let s = srv(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}",
        user.public_key()
    ));
    let url = s.url();
    let seed = user.seed().unwrap();
    publishes(
        &mut try_connect(&url, Auth::NKey(seed), Tls::default())
            .await
            .unwrap(),
    )
    .await;
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    let (cause, _) = try_connect(&url, Auth::NKey(other), Tls::default())
        .await
        .err()
        .unwrap();
    assert_eq!(cause, ConnectCause::Authorization);
    let (cause, msg) = try_connect(&url, Auth::NKey("SUNOTASEED".into()), Tls::default())
        .await
        .err()
        .unwrap();
    assert_eq!(cause, ConnectCause::Authentication, "{msg}");
    assert!(msg.contains("nkey seed is not valid"), "{msg}");
    // A creds file that is not one: named, never a fallback.
    let creds = s.dir().join("bad.creds");
    std::fs::write(&creds, "not a creds file").unwrap();
    let (cause, msg) = try_connect(&url, Auth::CredentialsFile(creds.clone()), Tls::default())
        .await
        .err()
        .unwrap();
    assert_eq!(cause, ConnectCause::Authentication, "{msg}");
    assert!(msg.contains(&creds.display().to_string()), "{msg}");
}

#[tokio::test]
async fn tls_is_verified_and_never_given_up() {
    let certs = std::env::temp_dir().join(format!("busline-direct-certs-{}", std::process::id()));
    std::fs::create_dir_all(&certs).unwrap();
    crate::server::make_test_certs(&certs).expect("the tls test needs the openssl command");
    let s = srv(&format!(
        "tls {{ cert_file: {:?}, key_file: {:?} }}",
        certs.join("server.pem").display().to_string(),
        certs.join("server.key").display().to_string()
    ));
    let url = s.url();
    let ca = |f: &str| Tls {
        ca_file: Some(certs.join(f)),
        ..Tls::default()
    };
    publishes(&mut try_connect(&url, Auth::None, ca("ca.pem")).await.unwrap()).await;
    for (tls, what) in [
        (ca("other.pem"), "UnknownIssuer"),
        (Tls::default(), "UnknownIssuer"),
        (ca("missing.pem"), "missing.pem"),
    ] {
        let (cause, msg) = try_connect(&url, Auth::None, tls).await.err().unwrap();
        assert_eq!(cause, ConnectCause::Tls, "{msg}");
        assert!(msg.contains(what), "{msg}");
    }
    // TLS required here, plaintext there.
    let plain = srv("");
    let required = Tls {
        required: true,
        ..Tls::default()
    };
    let (cause, msg) = try_connect(&plain.url(), Auth::None, required)
        .await
        .err()
        .unwrap();
    assert_eq!(cause, ConnectCause::Tls, "{msg}");
    let tls_url = plain.url().replace("nats://", "tls://");
    let (cause, msg) = try_connect(&tls_url, Auth::None, Tls::default())
        .await
        .err()
        .unwrap();
    assert_eq!(cause, ConnectCause::Tls, "{msg}");
    let _ = std::fs::remove_dir_all(&certs);
}

#[tokio::test]
async fn what_is_not_a_nats_server_is_named() {
    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("nats://127.0.0.1:{port}");
    let (cause, _) = try_connect(&url, Auth::None, Tls::default())
        .await
        .err()
        .unwrap();
    assert_eq!(cause, ConnectCause::Unreachable);
    // Something that speaks another protocol.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("nats://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut c, _) = l.accept().await.unwrap();
        let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let (cause, msg) = try_connect(&url, Auth::None, Tls::default())
        .await
        .err()
        .unwrap();
    assert_eq!(cause, ConnectCause::Unreachable);
    assert!(msg.contains("did not answer with a NATS INFO"), "{msg}");
    let (cause, _) = try_connect("http://x", Auth::None, Tls::default())
        .await
        .err()
        .unwrap();
    assert_eq!(cause, ConnectCause::Address);
}

/// Several servers: the first that answers is used, and after it dies
/// the connection moves on to the next.
#[tokio::test]
async fn a_server_list_is_tried_in_turn() {
    let mut a = srv("");
    let b = srv("");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let list = format!("nats://127.0.0.1:{dead}, {}, {}", a.url(), b.url());
    let mut d = try_connect(&list, Auth::None, Tls::default())
        .await
        .unwrap();
    publishes(&mut d).await;
    a.kill();
    // The reader notices, the next write reconnects (to b).
    let shared = d.conn.as_ref().unwrap().shared.clone();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let woken = shared.wake.notified();
            if shared.dead.load(Ordering::Acquire) {
                break;
            }
            woken.await;
        }
    })
    .await
    .expect("the connection's end is noticed");
    d.round_trip(Duration::from_secs(30)).await.unwrap();
    assert_eq!(d.connects, 2);
}
