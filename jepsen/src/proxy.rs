//! A userspace TCP proxy in front of each node's peer port, adding delay and jitter (the
//! kernel here has no netem). Nodes advertise the proxy's port
//! ([`cairn_tests::ClusterOptions::advertise_peer_ports`]), so every peer message *to* node `i`
//! passes through proxy `i`; with a delay `d` on it, both directions of those connections are
//! delayed by `d` (± jitter). Order within a connection is kept: chunks queue with a due time
//! and are written in order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The delay of one proxy (milliseconds), changed at run time by the nemesis.
#[derive(Default)]
pub struct Delay {
    pub base_ms: AtomicU64,
    pub jitter_ms: AtomicU64,
}

impl Delay {
    fn sample(&self) -> Duration {
        let base = self.base_ms.load(Ordering::Relaxed);
        let jitter = self.jitter_ms.load(Ordering::Relaxed);
        let extra = if jitter > 0 { rand::rng().random_range(0..=jitter) } else { 0 };
        Duration::from_millis(base + extra)
    }

    pub fn set(&self, base_ms: u64, jitter_ms: u64) {
        self.base_ms.store(base_ms, Ordering::Relaxed);
        self.jitter_ms.store(jitter_ms, Ordering::Relaxed);
    }
}

/// A running proxy: `listen` → `upstream`.
pub struct Proxy {
    pub listen: SocketAddr,
    pub delay: Arc<Delay>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Binds `listen` now; forwards every accepted connection to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind(listen).await.with_context(|| format!("proxy bind {listen}"))?;
        let delay = Arc::new(Delay::default());
        let d = delay.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                let d = d.clone();
                tokio::spawn(async move {
                    // Connect from the node's own address (as the dialing node would).
                    let outbound = async {
                        let sock = TcpSocket::new_v4()?;
                        sock.bind(SocketAddr::new(listen.ip(), 0))?;
                        sock.connect(upstream).await
                    };
                    let Ok(outbound) = outbound.await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    pipe_pair(inbound, outbound, d).await;
                });
            }
        });
        Ok(Proxy { listen, delay, task })
    }
}

async fn pipe_pair(a: TcpStream, b: TcpStream, delay: Arc<Delay>) {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let one = tokio::spawn(pipe(ar, bw, delay.clone()));
    let two = tokio::spawn(pipe(br, aw, delay));
    let _ = tokio::join!(one, two);
}

/// Copies `r` to `w`, each chunk written no earlier than its arrival plus the current delay.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<Delay>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if w.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_due = Instant::now();
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Never schedule before an earlier chunk (jitter must not reorder bytes).
                let due = (Instant::now() + delay.sample()).max(last_due);
                last_due = due;
                if tx.send((due, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_in_order_with_the_configured_delay() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let port = cairn_tests::free_port("127.0.0.1".parse().unwrap()).unwrap();
        let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port)), up_addr).await.unwrap();
        proxy.delay.set(100, 20);
        let started = std::time::Instant::now();
        let mut c = TcpStream::connect(proxy.listen).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        // Delayed both ways.
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    }
}
