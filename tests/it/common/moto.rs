//! moto's server (PyPI `moto[server]`) on a free loopback port, one per test: S3 and Cost
//! Explorer with their real wire protocols. `.ci/run` installs it and sets
//! `COSTLEDGER_TEST_MOTO=1`, which makes a missing moto a failure instead of a skip.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MOTO_ENV: &str = "COSTLEDGER_TEST_MOTO";

pub struct Moto {
    child: Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> String {
    std::env::var("COSTLEDGER_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Start a moto server, or `None` (skip) when moto is not installed and not required.
pub fn start() -> Option<Moto> {
    let required = std::env::var(MOTO_ENV).is_ok_and(|v| v == "1");
    let has = Command::new(python())
        .args(["-c", "import moto.server, flask, werkzeug"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(!required, "{MOTO_ENV}=1 but moto's server is not importable: pip install 'moto[server]'");
        eprintln!("skipping: moto's server is not installed (pip install 'moto[server]')");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new(python())
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_ALLOW_NONEXISTENT_REGION", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn moto");
    let moto = Moto { child, url: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start on port {port} within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

impl Moto {
    /// An S3 client for setting up buckets (path-style, static test keys).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .endpoint_url(&self.url)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        self.s3()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    }

    pub async fn bucket(&self, bucket: &str) {
        self.s3().create_bucket().bucket(bucket).send().await.expect("create bucket");
    }

    /// Queue Cost Explorer answers: each new request body takes the next one
    /// (`/moto-api/static/ce/cost-and-usage-results`).
    pub async fn queue_ce(&self, results: Vec<serde_json::Value>) {
        let r = reqwest::Client::new()
            .post(format!("{}/moto-api/static/ce/cost-and-usage-results", self.url))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "results": results }).to_string())
            .send()
            .await
            .expect("moto api");
        assert_eq!(r.status().as_u16(), 201, "moto accepted the CE results");
    }
}
