//! A small HTTP/1.1 server for `GET /metrics` (Prometheus scrapes one
//! request per connection; keep-alive is not needed). Requests larger than
//! [`MAX_REQUEST`] or slower than [`READ_TIMEOUT`] are dropped; anything but
//! `GET`/`HEAD /metrics` gets 404 or 405.

use crate::core::Core;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics` on `listener` until the coordinator shuts down.
pub async fn serve(core: Arc<Core>, listener: TcpListener) {
    let mut shutdown = core.shutdown();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let core = core.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(&core, stream).await {
                        tracing::debug!(error = %e, "metrics request");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a request line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    Metrics { head: bool },
    NotFound,
    BadMethod,
}

fn parse(request: &str) -> Option<Ask> {
    let line = request.lines().next()?;
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    let path = target.split('?').next().unwrap_or_default();
    Some(match (method, path) {
        ("GET" | "HEAD", "/metrics") => Ask::Metrics {
            head: method == "HEAD",
        },
        ("GET" | "HEAD", _) => Ask::NotFound,
        _ => Ask::BadMethod,
    })
}

async fn answer(core: &Core, mut stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || buf.len() + n > MAX_REQUEST {
                return Ok(false);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(true)
    })
    .await;
    if !matches!(read, Ok(Ok(true))) {
        return Ok(());
    }
    let ask = parse(&String::from_utf8_lossy(&buf));
    let (status, body, head) = match ask {
        Some(Ask::Metrics { head }) => match core.metrics_text().await {
            Ok(text) => ("200 OK", text, head),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the store for /metrics");
                ("503 Service Unavailable", format!("{e}\n"), false)
            }
        },
        Some(Ask::NotFound) => ("404 Not Found", "only /metrics is here\n".into(), false),
        Some(Ask::BadMethod) | None => ("405 Method Not Allowed", String::new(), false),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_or_head_of_metrics_is_served() {
        let p = |s: &str| parse(s);
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Ask::Metrics { head: false })
        );
        assert_eq!(
            p("HEAD /metrics?x=1 HTTP/1.1\r\n\r\n"),
            Some(Ask::Metrics { head: true })
        );
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n"), Some(Ask::NotFound));
        assert_eq!(p("POST /metrics HTTP/1.1\r\n\r\n"), Some(Ask::BadMethod));
        assert_eq!(p(""), None);
    }
}
