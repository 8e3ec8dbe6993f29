//! A loopback OCI server (Usage API and Object Storage) that verifies every request's
//! signature with the test key's public half.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Request, Response};
use costledger_oci::signer::{RsaPublicKey, Signer, verify};

pub const TENANCY: &str = "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq";
pub const USER: &str = "ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq";
pub const FP: &str = "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34";

pub fn oci_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("connectors/oci/tests/fixtures").join(name)
}

#[derive(Default)]
pub struct MockState {
    pub key: Option<RsaPublicKey>,
    /// Usage API pages: raw JSON items (numbers kept as written).
    pub pages: Mutex<Vec<Vec<String>>>,
    /// Faults served before the next answers: (status, code, retry-after seconds).
    pub faults: Mutex<VecDeque<(u16, &'static str, Option<u64>)>>,
    pub objects: Mutex<BTreeMap<String, Vec<u8>>>,
    pub calls: AtomicU64,
    pub rejected: AtomicU64,
    pub bodies: Mutex<Vec<String>>,
}

pub type Mock = Arc<MockState>;

fn json(status: u16, body: String, headers: &[(&str, String)]) -> Response<Body> {
    let mut r = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("opc-request-id", "mock-1");
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Body::from(body)).expect("response")
}

fn query_param(q: &str, name: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

async fn handle(m: Mock, req: Request<Body>) -> Response<Body> {
    m.calls.fetch_add(1, Ordering::SeqCst);
    let method = req.method().as_str().to_string();
    let pq = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let headers: HeaderMap = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let key = m.key.clone().expect("key");
    if let Err(why) = verify(&key, &method, &pq, &header, &body) {
        m.rejected.fetch_add(1, Ordering::SeqCst);
        return json(401, format!("{{\"code\":\"NotAuthenticated\",\"message\":\"{why}\"}}"), &[]);
    }
    if let Some((status, code, after)) = m.faults.lock().expect("lock").pop_front() {
        let h: Vec<(&str, String)> = after.map(|a| vec![("retry-after", a.to_string())]).unwrap_or_default();
        return json(status, format!("{{\"code\":\"{code}\",\"message\":\"injected\"}}"), &h);
    }
    let (path, query) = pq.split_once('?').unwrap_or((&pq, ""));
    if method == "POST" && path == "/20200107/usage" {
        m.bodies.lock().expect("lock").push(String::from_utf8_lossy(&body).into_owned());
        let pages = m.pages.lock().expect("lock").clone();
        let i: usize = query_param(query, "page").and_then(|p| p.trim_start_matches('p').parse().ok()).unwrap_or(0);
        let items = pages.get(i).cloned().unwrap_or_default();
        let next: Vec<(&str, String)> =
            if i + 1 < pages.len() { vec![("opc-next-page", format!("p{}", i + 1))] } else { vec![] };
        return json(200, format!("{{\"groupBy\":[\"service\"],\"items\":[{}]}}", items.join(",")), &next);
    }
    if method == "GET"
        && let Some(rest) = path.strip_prefix("/n/bling/b/")
    {
        let (_bucket, after) = rest.split_once("/o").unwrap_or((rest, ""));
        let objects = m.objects.lock().expect("lock").clone();
        if after.is_empty() {
            let prefix = query_param(query, "prefix").unwrap_or_default();
            let start = query_param(query, "start").unwrap_or_default();
            let names: Vec<&String> = objects.keys().filter(|n| n.starts_with(&prefix) && **n >= start).collect();
            let page: Vec<String> = names.iter().take(2).map(|n| format!("{{\"name\":\"{n}\",\"size\":1}}")).collect();
            let next = names.get(2).map(|n| format!("\"{n}\"")).unwrap_or_else(|| "null".into());
            return json(200, format!("{{\"objects\":[{}],\"nextStartWith\":{next}}}", page.join(",")), &[]);
        }
        let name = percent_encoding::percent_decode_str(after.trim_start_matches('/')).decode_utf8_lossy().into_owned();
        return match objects.get(&name) {
            Some(b) => Response::builder().status(200).body(Body::from(b.clone())).expect("r"),
            None => json(404, "{\"code\":\"ObjectNotFound\",\"message\":\"no such object\"}".into(), &[]),
        };
    }
    json(404, "{\"code\":\"NotFound\",\"message\":\"no route\"}".into(), &[])
}

pub async fn serve() -> (Mock, String) {
    let pem = std::fs::read_to_string(oci_fixture("oracle_test_key.pem")).expect("key");
    let key = Signer::new(TENANCY, USER, FP, &pem).expect("signer").public_key();
    let m: Mock = Arc::new(MockState { key: Some(key), ..Default::default() });
    let app = axum::Router::new().fallback({
        let m = m.clone();
        move |req: Request<Body>| handle(m.clone(), req)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (m, format!("http://{addr}"))
}

/// A Usage API item of 2024-03-DAY (amount written as given: JSON number text).
pub fn usage_item(day: u32, service: &str, amount: &str) -> String {
    format!(
        "{{\"tenantId\":null,\"compartmentName\":\"payments\",\"service\":\"{service}\",\"region\":\"us-ashburn-1\",\"resourceId\":null,\
         \"timeUsageStarted\":\"2024-03-{day:02}T00:00:00.000Z\",\"timeUsageEnded\":\"2024-03-{:02}T00:00:00.000Z\",\
         \"computedAmount\":{amount},\"computedQuantity\":48.0,\"currency\":\"USD\",\"isForecast\":false,\
         \"tags\":[{{\"namespace\":\"Finance\",\"key\":\"team\",\"value\":\"payments\"}}]}}",
        day + 1
    )
}
