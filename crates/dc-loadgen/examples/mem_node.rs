//! The tests' in-memory node as a process, to try the binary against:
//! `cargo run --release -p dc-loadgen --example mem_node -- [SECONDS]` prints its address and
//! serves `PUT/GET /v1/objects/{name}` for SECONDS (default 60).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SECONDS"))
        .unwrap_or(60);
    let (addr, node) = common::start_node(common::Fault::None).await;
    println!("{addr}");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    eprintln!(
        "mem_node: {} connections accepted",
        node.connections.load(std::sync::atomic::Ordering::SeqCst)
    );
}
