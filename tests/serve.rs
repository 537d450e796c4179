//! The `crossroads serve` binary as operators run it: it serves, reloads on SIGHUP, and
//! on SIGTERM finishes its requests and flushes every ledger record before exiting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::served::*;
use common::*;

#[tokio::test]
async fn serves_reloads_on_sighup_and_flushes_on_sigterm() {
    let local = Upstream::start(Scripted::json(completion("local-model", "l", 3, 2))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "f", 3, 2))).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("routes.toml");
    let ledger = dir.path().join("ledger.db");
    let base = standard_config(&local.base_url(), &fa.base_url(), &fa.base_url())
        .replace("config_poll_ms = 100", "config_poll_ms = 0");
    let write = |toml: &str| {
        std::fs::write(
            &config_path,
            format!(
                "{toml}\n[ledger]\nurl = \"sqlite://{}\"\n",
                ledger.display()
            ),
        )
        .unwrap()
    };
    write(&base);
    let served = serve(&config_path, free_port()).await;
    let client = reqwest::Client::new();
    let chat = |body: serde_json::Value| {
        client
            .post(format!("{}/v1/chat/completions", served.addr))
            .json(&body)
            .send()
    };

    let r = chat(user("auto", "Tell me about Rome.")).await.unwrap();
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-a");

    write(&base.replace(
        "[[rules]]\nid = \"default\"\npool = \"frontier\"",
        "[[rules]]\nid = \"default\"\npool = \"local\"",
    ));
    signal(&served.child, "HUP");
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = chat(user("auto", "Tell me about Rome.")).await.unwrap();
        if r.headers()["x-crossroads-deployment"] == "local-a" {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "SIGHUP did not reload the config");

    for _ in 0..25 {
        assert_eq!(chat(user("auto", "hi")).await.unwrap().status(), 200);
    }
    let mut served = served;
    signal(&served.child, "TERM");
    let status = tokio::task::spawn_blocking(move || served.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let rows = read_ledger(&ledger);
    assert!(
        rows.len() >= 27,
        "only {} ledger rows after SIGTERM",
        rows.len()
    );
    assert!(rows.iter().all(|r| r["status"] == 200));
}

/// What the fake Redis below saw: a `SET` arrived, and when it was answered.
#[derive(Default)]
struct FakeRedis {
    set_received: std::sync::atomic::AtomicBool,
    set_answered: std::sync::atomic::AtomicBool,
}

/// A Redis stand-in that misses every `GET` and answers `SET` only after `delay`, so a
/// cache write is still in flight when the gateway is told to stop.
async fn start_fake_redis(delay: Duration) -> (u16, std::sync::Arc<FakeRedis>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(FakeRedis::default());
    let state = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                let mut line = String::new();
                loop {
                    // One RESP command: `*N`, then N bulk strings `$len` + bytes.
                    line.clear();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let n: usize = line.trim().trim_start_matches('*').parse().unwrap();
                    let mut args = Vec::new();
                    for _ in 0..n {
                        line.clear();
                        read.read_line(&mut line).await.unwrap();
                        let len: usize = line.trim().trim_start_matches('$').parse().unwrap();
                        let mut arg = vec![0; len + 2];
                        read.read_exact(&mut arg).await.unwrap();
                        arg.truncate(len);
                        args.push(String::from_utf8_lossy(&arg).to_uppercase());
                    }
                    let reply: &[u8] = match args.first().map(String::as_str) {
                        Some("GET") => b"$-1\r\n",
                        Some("SET") => {
                            state.set_received.store(true, Ordering::SeqCst);
                            tokio::time::sleep(delay).await;
                            b"+OK\r\n"
                        }
                        _ => b"+OK\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                    if args.first().is_some_and(|a| a == "SET") {
                        state.set_answered.store(true, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn sigterm_waits_for_cache_writes_in_flight() {
    use std::sync::atomic::Ordering;

    let upstream = Upstream::start(Scripted::json(completion("gpt-4.1", "f", 3, 2))).await;
    let (redis_port, redis) = start_fake_redis(Duration::from_millis(800)).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("routes.toml");
    let url = upstream.base_url();
    std::fs::write(
        &config_path,
        format!(
            "{}\n[ledger]\nurl = \"sqlite://{}\"\n\n[cache]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{redis_port}\"\nredis_timeout_ms = 5000\n",
            standard_config(&url, &url, &url).replace("config_poll_ms = 100", "config_poll_ms = 0"),
            dir.path().join("ledger.db").display()
        ),
    )
    .unwrap();
    let mut served = serve(&config_path, free_port()).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", served.addr))
        .json(&user("auto", "Tell me about Rome."))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-cache"], "miss");
    for _ in 0..100 {
        if redis.set_received.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        redis.set_received.load(Ordering::SeqCst),
        "no SET reached redis"
    );
    assert!(!redis.set_answered.load(Ordering::SeqCst));

    signal(&served.child, "TERM");
    let status = tokio::task::spawn_blocking(move || served.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        redis.set_answered.load(Ordering::SeqCst),
        "the gateway exited before its cache write was answered"
    );
}
