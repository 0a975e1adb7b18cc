//! Authentication and TLS: the right credentials connect; a wrong one is a
//! startup error naming the server and the cause, never a fallback.

mod common;

use busline::Bus;
use busline_nats::{Auth, ConnectCause, NatsConfig, NatsError, NatsTransport, Tls};
use common::*;

async fn connect(cfg: NatsConfig<Ev>) -> Result<NatsTransport<Ev>, NatsError> {
    let bus: Bus<Ev> = Bus::new();
    // Exports too: core exports have a connection of their own, made with
    // the same credentials.
    NatsTransport::connect(&bus, cfg.import("a.>").export("b.>")).await
}

/// With these settings an event goes from one process to another: the
/// exporter's own connection and the importer's client both got in.
async fn flows(cfg: impl Fn() -> NatsConfig<Ev>) {
    let a: Bus<Ev> = Bus::new();
    let ta = NatsTransport::connect(&a, cfg().export("f.>"))
        .await
        .unwrap();
    let b: Bus<Ev> = Bus::new();
    let mut sub = b.subscribe("f.>").unwrap();
    let _tb = NatsTransport::connect(&b, cfg().import("f.>"))
        .await
        .unwrap();
    a.publish_to("f.x", ev(0, 7)).await.unwrap();
    ta.flush().await.unwrap();
    assert_eq!(recv_n(&mut sub, 1).await[0].payload, ev(0, 7));
}

fn expect_connect_error(
    r: Result<NatsTransport<Ev>, NatsError>,
    url: &str,
    want: ConnectCause,
) -> String {
    match r {
        Err(e @ NatsError::Connect { .. }) => {
            let NatsError::Connect { server, cause, .. } = &e else {
                unreachable!()
            };
            assert_eq!(server, url);
            assert_eq!(*cause, want, "{e}");
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("cannot connect to nats server `{url}`: {want}")),
                "{msg}"
            );
            msg
        }
        Err(e) => panic!("wanted a connect error, got {e}"),
        Ok(_) => panic!("connected with bad credentials to {url}"),
    }
}

#[tokio::test]
async fn user_and_password() {
    let srv = server_with("authorization { user: alice, password: wonderland }");
    let url = srv.url();
    let ok = connect(NatsConfig::new(&url).auth(Auth::UserPassword {
        user: "alice".into(),
        password: "wonderland".into(),
    }))
    .await;
    assert!(ok.is_ok(), "{:?}", ok.err());
    flows(|| {
        NatsConfig::new(&url).auth(Auth::UserPassword {
            user: "alice".into(),
            password: "wonderland".into(),
        })
    })
    .await;
    let bad = connect(NatsConfig::new(&url).auth(Auth::UserPassword {
        user: "alice".into(),
        password: "guess".into(),
    }))
    .await;
    expect_connect_error(bad, &url, ConnectCause::Authorization);
    // No credentials at all is no better.
    expect_connect_error(
        connect(NatsConfig::new(&url)).await,
        &url,
        ConnectCause::Authorization,
    );
}

#[tokio::test]
async fn token() {
    let srv = server_with("authorization { token: s3cret }");
    let url = srv.url();
    assert!(
        connect(NatsConfig::new(&url).auth(Auth::Token("s3cret".into())))
            .await
            .is_ok()
    );
    flows(|| NatsConfig::new(&url).auth(Auth::Token("s3cret".into()))).await;
    expect_connect_error(
        connect(NatsConfig::new(&url).auth(Auth::Token("nope".into()))).await,
        &url,
        ConnectCause::Authorization,
    );
}

#[tokio::test]
async fn nkey() {
    let user = nkeys::KeyPair::new_user();
    let other = nkeys::KeyPair::new_user();
    let srv = server_with(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}",
        user.public_key()
    ));
    let url = srv.url();
    let ok = connect(NatsConfig::new(&url).auth(Auth::NKey(user.seed().unwrap()))).await;
    assert!(ok.is_ok(), "{:?}", ok.err());
    flows(|| NatsConfig::new(&url).auth(Auth::NKey(user.seed().unwrap()))).await;
    expect_connect_error(
        connect(NatsConfig::new(&url).auth(Auth::NKey(other.seed().unwrap()))).await,
        &url,
        ConnectCause::Authorization,
    );
}

#[tokio::test]
async fn missing_credentials_file_is_a_startup_error_naming_it() {
    let srv = server();
    let url = srv.url();
    let msg = expect_connect_error(
        connect(
            NatsConfig::new(&url).auth(Auth::CredentialsFile("/nonexistent/user.creds".into())),
        )
        .await,
        &url,
        ConnectCause::Authentication,
    );
    assert!(msg.contains("/nonexistent/user.creds"), "{msg}");
}

#[tokio::test]
async fn tls_with_a_private_ca_and_untrusted_certificates() {
    let certs = std::env::temp_dir().join(format!("busline-nats-certs-{}", std::process::id()));
    std::fs::create_dir_all(&certs).unwrap();
    busline_nats::server::make_test_certs(&certs).expect("the tls test needs the openssl command");
    let srv = server_with(&format!(
        "tls {{ cert_file: {:?}, key_file: {:?} }}",
        certs.join("server.pem").display().to_string(),
        certs.join("server.key").display().to_string()
    ));
    let url = srv.url();
    let tls = |ca: &str| Tls {
        ca_file: Some(certs.join(ca)),
        ..Tls::default()
    };

    let ok = connect(NatsConfig::new(&url).tls(tls("ca.pem"))).await;
    assert!(ok.is_ok(), "{:?}", ok.err());
    flows(|| NatsConfig::new(&url).tls(tls("ca.pem"))).await;
    // Signed by a CA we do not trust.
    expect_connect_error(
        connect(NatsConfig::new(&url).tls(tls("other.pem"))).await,
        &url,
        ConnectCause::Tls,
    );
    // No private CA: the system roots do not trust it either.
    expect_connect_error(
        connect(NatsConfig::new(&url)).await,
        &url,
        ConnectCause::Tls,
    );
    // A CA file that does not exist is a startup error naming it.
    let e = connect(NatsConfig::new(&url).tls(tls("missing.pem")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");

    // TLS required but the server speaks plaintext: no fallback.
    let plain = server();
    let purl = plain.url();
    let r = connect(NatsConfig::new(&purl).tls(Tls {
        required: true,
        ..Tls::default()
    }))
    .await;
    expect_connect_error(r, &purl, ConnectCause::Tls);
    let _ = std::fs::remove_dir_all(&certs);
}
