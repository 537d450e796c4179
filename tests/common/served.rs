//! The real `crossroads serve` binary as operators run it, on a loopback port.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `crossroads serve` process, killed when dropped.
pub struct Served {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends signal `name` (`HUP`, `TERM` ...) to `child`.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The gateway binary: `CROSSROADS_BIN` (a release build, for full-size runs), else
/// the one `cargo test` built.
pub fn binary() -> String {
    std::env::var("CROSSROADS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_crossroads").into())
}

/// Starts `crossroads serve --config CONFIG` on `port`, its stderr inherited, and waits
/// until it is ready.
pub async fn serve(config: &Path, port: u16) -> Served {
    serve_with(config, port, Stdio::inherit()).await
}

/// Like [`serve`], with the gateway's stderr sent to `stderr`; the admin key of the
/// test configs is in its environment.
pub async fn serve_with(config: &Path, port: u16, stderr: impl Into<Stdio>) -> Served {
    let served = Served {
        child: Command::new(binary())
            .args(["serve", "--config"])
            .arg(config)
            .env("CROSSROADS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env(super::ADMIN_KEY_ENV, super::ADMIN_KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
        addr: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{}/readyz", served.addr)).send().await
            && r.status() == 200
        {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("crossroads serve did not become ready");
}

/// A port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
