//! The web dashboard in a real headless browser (Chromium over WebDriver).
//!
//! Needs Debian's `chromium` and `chromium-driver`
//! (`apt-get install -y chromium chromium-driver`); without them the test
//! fails and says so. The screenshot is saved as `target/artifacts/dashboard.png`
//! (and as `docs/dashboard.png` with `BUSLINE_UPDATE_DOCS=1`).

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

const INSTALL: &str =
    "install them with `sudo apt-get update && sudo apt-get install -y chromium chromium-driver` \
                       (Debian/Ubuntu), or put `chromedriver` and a Chromium/Chrome binary on PATH";

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in names {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_driver(chromedriver: &Path) -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let profile =
        std::env::temp_dir().join(format!("busline-chromium-{}-{}", std::process::id(), port));
    std::fs::create_dir_all(&profile).unwrap();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL}", chromedriver.display()));
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: TempDir(profile),
    }
}

const READ_PAGE: &str = r##"
const t = (id) => document.getElementById(id).textContent;
return {
    conn: t("conn"),
    events: t("kpi-events"),
    requests: t("kpi-requests"),
    rps: t("kpi-rps"),
    latency: t("kpi-latency"),
    ingested: t("kpi-ingested"),
    points: Number(document.getElementById("chart-rps").dataset.points || 0),
    latest: document.getElementById("chart-latency").dataset.latest || "",
    errors: t("recent-errors"),
    subscribers: document.querySelectorAll("#subscribers tbody tr").length,
    modules: t("modules"),
    series: document.querySelectorAll("#series tbody tr[data-series]").length,
    seriesText: t("series"),
    rules: t("rules"),
    ingest: t("ingest"),
    pickedTitle: (document.querySelector("#picked figcaption") || {}).textContent || "",
    pickedPoints: Number((document.querySelector("#picked canvas") || {dataset: {}}).dataset.points || 0),
    pickedValues: Number((document.querySelector("#picked canvas") || {dataset: {}}).dataset.values || 0),
    pickedLatest: (document.querySelector("#picked canvas") || {dataset: {}}).dataset.latest || "",
};
"##;

async fn read(c: &fantoccini::Client) -> Value {
    c.execute(READ_PAGE, vec![]).await.expect("read the page")
}

async fn until(c: &fantoccini::Client, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = read(c).await;
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what}; last: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_updates_live_in_a_real_browser() {
    let chromedriver = which(&["chromedriver"])
        .unwrap_or_else(|| panic!("chromedriver is not installed: {INSTALL}"));
    let chromium = which(&["chromium", "chromium-browser", "google-chrome", "chrome"])
        .unwrap_or_else(|| panic!("no Chromium/Chrome binary found: {INSTALL}"));

    let monitor = Monitor::start(&[
        "--web",
        "127.0.0.1:0",
        "--interval-ms",
        "50",
        "--error-rate",
        "0.01",
        "--log-file",
        "/dev/null",
        "--duration",
        "120",
    ]);
    let driver = start_driver(&chromedriver);
    let profile = driver._profile.0.display().to_string();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium.display().to_string(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--hide-scrollbars", "--window-size=1440,2200",
                format!("--user-data-dir={profile}"),
            ],
        }),
    );
    // chromedriver speaks plain HTTP on loopback: no TLS needed.
    let c = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot start a browser session: {e}; {INSTALL}"));

    c.goto(monitor.base()).await.unwrap();
    let first = until(&c, "a live connection and data", |v| {
        v["conn"] == "live" && v["points"].as_u64() >= Some(1)
    })
    .await;

    // The numbers change over a few seconds: events counted, chart points added.
    let later = until(&c, "new data", |v| {
        v["events"] != first["events"]
            && v["points"].as_u64() > first["points"].as_u64()
            && v["requests"] != first["requests"]
    })
    .await;
    assert_ne!(later["latest"], "", "{later:#}");
    assert!(
        later["subscribers"].as_u64() >= Some(3),
        "bus health table: {later:#}"
    );
    assert!(
        later["modules"].as_str().unwrap().contains("running"),
        "{later:#}"
    );
    assert_eq!(later["ingested"], "0", "{later:#}");

    // An event posted through the API shows up on the page.
    let marker = format!("browser-test-{}", std::process::id());
    let body = json!([
        {"type": "error", "source": "checkout", "message": marker},
        {"type": "request", "path": "/browser-test", "latency_ms": 12.5, "status": 200},
    ])
    .to_string();
    let r = post(&monitor, "/api/events", &body);
    assert_eq!(r.status, 202, "{r:?}");
    let seen = until(&c, "the posted events", |v| {
        v["ingested"] == "2" && v["errors"].as_str().unwrap_or("").contains(&marker)
    })
    .await;
    assert!(
        seen["errors"].as_str().unwrap().contains("checkout"),
        "{seen:#}"
    );

    // Every series is listed by the name it was sent with; the filter
    // narrows the list; a click charts the series.
    let name = r#"request.latency_ms{path="/browser-test",status="200"}"#;
    until(&c, "the posted series in the list", |v| {
        v["seriesText"].as_str().unwrap_or("").contains(name)
    })
    .await;
    let filter = c.find(Locator::Id("series-filter")).await.unwrap();
    filter.send_keys("browser-test").await.unwrap();
    let v = until(&c, "the list filtered to the one series", |v| {
        v["series"] == 1
    })
    .await;
    assert!(v["seriesText"].as_str().unwrap().contains(name), "{v:#}");
    let row = c
        .find(Locator::Css("#series tbody tr[data-series]"))
        .await
        .unwrap();
    row.click().await.unwrap();
    // The service goes on sending: the chart shows its numbers.
    let one = json!({"type": "request", "path": "/browser-test", "latency_ms": 12.5}).to_string();
    let deadline = Instant::now() + PATIENCE;
    let picked = loop {
        let r = post(&monitor, "/api/events", &one);
        assert_eq!(r.status, 202, "{r:?}");
        let v = read(&c).await;
        if v["pickedValues"].as_u64() >= Some(2) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the picked chart never showed data: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        picked["pickedTitle"].as_str().unwrap().contains(name),
        "{picked:#}"
    );
    assert!(picked["pickedPoints"].as_u64() >= Some(2), "{picked:#}");
    assert_eq!(
        picked["pickedLatest"], "12.5,12.5",
        "mean and p99: {picked:#}"
    );
    // The built-in alert rule and the ingest counters are shown.
    assert!(
        picked["rules"].as_str().unwrap().contains("error-rate"),
        "{picked:#}"
    );
    assert!(
        picked["rules"]
            .as_str()
            .unwrap()
            .contains("count(error [1m]) > 10"),
        "{picked:#}"
    );
    assert!(
        picked["ingest"].as_str().unwrap().contains("statsd"),
        "{picked:#}"
    );
    // Back to the whole list for the screenshot.
    filter.clear().await.unwrap();
    until(&c, "the whole list again", |v| {
        v["series"].as_u64() > Some(1)
    })
    .await;

    // A few seconds of history for the screenshot, then save it.
    // (BUSLINE_UPDATE_DOCS=1 waits for more, for a picture worth showing.)
    let docs = std::env::var_os("BUSLINE_UPDATE_DOCS").is_some();
    let points = if docs { 50 } else { 6 };
    until(&c, "a few seconds of history", |v| {
        v["points"].as_u64() >= Some(points)
    })
    .await;
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let artifacts = target.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("dashboard.png"), &png).unwrap();
    if docs {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("dashboard.png"), &png).unwrap();
    }
    c.close().await.unwrap();
    drop(driver);
}
