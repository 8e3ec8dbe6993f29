//! Parse-only throughput of the FOCUS connector (no database): `cargo run --release --example parse_only FILE`.
use costledger_core::{Connector, Context, PeriodWindow};
use costledger_focus::FocusConnector;
use futures::StreamExt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let path = std::env::args().nth(1).expect("FILE");
    let c = FocusConnector::new(vec![path.into()]);
    let cx = Context::new("bench");
    let p = "2026-10".parse().expect("p");
    let d = c.deliveries(PeriodWindow { from: p, to: p }, &cx).await.expect("deliveries");
    let start = std::time::Instant::now();
    let mut n = 0usize;
    let mut s = c.fetch(&d[0], &cx);
    while let Some(b) = s.next().await {
        n += b.expect("batch").lines.len();
    }
    println!("{n} lines parsed in {:?}", start.elapsed());
}
