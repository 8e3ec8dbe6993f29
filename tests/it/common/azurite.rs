//! azurite's Blob service (npm `azurite`) on a free loopback port, one per test, and a tiny
//! Shared Key client to lay out export blobs. `.ci/run` installs it and sets
//! `COSTLEDGER_TEST_AZURITE` to its `azurite-blob` executable; without it, `azurite-blob` on
//! PATH is used, else the tests are skipped.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use costledger_azure::store::{STORAGE_VERSION, SharedKeyPolicy};

pub const AZURITE_ENV: &str = "COSTLEDGER_TEST_AZURITE";
/// azurite's well-known development account.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>/devstoreaccount1`
    pub endpoint: String,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start() -> Option<Azurite> {
    let exe = std::env::var(AZURITE_ENV).ok().filter(|s| !s.is_empty());
    let required = exe.is_some();
    let exe = exe.unwrap_or_else(|| "azurite-blob".into());
    let dir = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new(&exe)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--location",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(!required, "{AZURITE_ENV} is set but {exe} does not start: {e}");
            eprintln!("skipping: azurite is not installed (npm install azurite)");
            return None;
        }
    };
    let a = Azurite { child, _dir: dir, endpoint: format!("http://127.0.0.1:{port}/{ACCOUNT}") };
    let deadline = Instant::now() + Duration::from_secs(60);
    // Ready when it answers HTTP (a listening socket alone is not enough).
    while !answers_http(port) {
        assert!(Instant::now() < deadline, "azurite did not start on port {port} within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(a)
}

fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    if c.write_all(
        format!("GET /{ACCOUNT}?comp=list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(c.read(&mut buf), Ok(n) if n >= 8 && buf.starts_with(b"HTTP/1.1"))
}

impl Azurite {
    async fn put(&self, path_and_query: &str, body: Vec<u8>, blob: bool) {
        let url = azure_core::http::Url::parse(&format!("{}/{path_and_query}", self.endpoint)).expect("url");
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let mut headers = vec![
            ("content-length".to_string(), body.len().to_string()),
            ("x-ms-date".to_string(), date),
            ("x-ms-version".to_string(), STORAGE_VERSION.to_string()),
        ];
        if blob {
            headers.push(("x-ms-blob-type".into(), "BlockBlob".into()));
        }
        let policy = SharedKeyPolicy::new(ACCOUNT, KEY).expect("key");
        let sig = policy.sign(&policy.string_to_sign("PUT", &url, &headers));
        let mut req = reqwest::Client::new().put(url.as_str()).body(body);
        for (k, v) in &headers {
            if k != "content-length" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let r = req.header("authorization", format!("SharedKey {ACCOUNT}:{sig}")).send().await.expect("azurite");
        assert!(r.status().is_success(), "PUT {path_and_query}: {} {}", r.status(), r.text().await.unwrap_or_default());
    }

    pub async fn container(&self, name: &str) {
        self.put(&format!("{name}?restype=container"), Vec::new(), false).await;
    }

    pub async fn blob(&self, container: &str, name: &str, body: Vec<u8>) {
        self.put(&format!("{container}/{name}"), body, true).await;
    }
}
