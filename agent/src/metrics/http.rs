//! The metrics endpoint: `GET /metrics` over HTTP/1.x, one request per connection. Kept
//! to what Prometheus needs (it sends a plain GET and reads to the end), with bounds on
//! everything a client controls: request size, time to send it, concurrent connections.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Recorder;
use crate::supervisor::Views;

/// A request head larger than this is refused; Prometheus sends a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CLIENTS: usize = 8;

/// What a request asks for, judged from its head.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Metrics,
    /// `/` — a pointer to `/metrics` for a human with a browser.
    Index,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Parses the request line of `head` (bytes up to the blank line).
pub fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let mut parts = text.lines().next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Route::Metrics,
        ("GET" | "HEAD", "/") => Route::Index,
        ("GET" | "HEAD", _) => Route::NotFound,
        _ => Route::MethodNotAllowed,
    }
}

/// Serves scrapes until the task is dropped.
pub async fn serve(listener: TcpListener, views: Views, recorder: Recorder) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let views = views.clone();
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let answering = answer(stream, &views, &recorder);
                    let _ = tokio::time::timeout(CLIENT_TIMEOUT, answering).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, views: &Views, recorder: &Recorder) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                false,
            )
            .await;
        }
    }
    let is_head = head.starts_with(b"HEAD ");
    match route(&head) {
        Route::Metrics => {
            let view = views.borrow().clone();
            let body = super::render(recorder, &view.status);
            respond(&mut stream, "200 OK", &body, is_head).await
        }
        Route::Index => {
            let body = "crosslink: metrics are at /metrics\n";
            respond(&mut stream, "200 OK", body, is_head).await
        }
        Route::NotFound => respond(&mut stream, "404 Not Found", "not found\n", is_head).await,
        Route::MethodNotAllowed => respond(&mut stream, "405 Method Not Allowed", "", false).await,
        Route::BadRequest => respond(&mut stream, "400 Bad Request", "", false).await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}
