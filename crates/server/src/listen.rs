//! The HTTP listener: hyper under our own accept loop, so that
//! - a request's headers must arrive within a time limit (a connection that sends half a header
//!   and stalls is closed; on a kept-alive connection the limit also bounds the idle time);
//! - the open connections are capped (past the cap a new connection is answered 503 at once and
//!   closed), so stalled clients cannot use up the process's file descriptors;
//! - hyper's own answers to requests it cannot parse (400, 414, 431, sent with an empty body)
//!   come out in the API's `{"id", "message"}` JSON shape like every other error;
//! - a shutdown closes idle connections at once and lets requests in progress finish.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::error::error_body_json;

/// Limits of the listener, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct ListenLimits {
    /// Longest wait for a request's headers (and for the next request on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// Serves `app` until `stop` turns true, then stops accepting, closes idle connections and waits
/// for the requests in progress (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenLimits,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(JsonErrors::new(stream));
            let conn = builder.serve_connection_with_upgrades(io, service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    // Every connection holds a slot until it ends: taking them all means all have ended.
    let _all = slots
        .acquire_many(limits.max_connections.max(1) as u32)
        .await;
    Ok(())
}

/// Resolves once `stop` is true. (The guard `wait_for` returns is not `Send`: it is dropped
/// here, before the caller's next await.)
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Answers a connection over the cap with a 503 and closes it (without reading its request),
/// giving up quickly on a peer that does not read.
async fn refuse(mut stream: TcpStream, cap: usize) {
    let body = error_body_json(&format!(
        "the server has reached its limit of {cap} open connections, please retry later"
    ));
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The status and message of an automatic answer hyper writes for a request it cannot parse.
/// Those are the only responses with a 400, 414 or 431 status and no body: every response of
/// the application carries a JSON body and a content type.
fn parse_error_answer(buf: &[u8]) -> Option<(&'static str, &'static str)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let (status, message) = if head.starts_with("HTTP/1.1 400 ") {
        (
            "400 Bad Request",
            "invalid request: the HTTP request could not be parsed",
        )
    } else if head.starts_with("HTTP/1.1 414 ") {
        ("414 URI Too Long", "the request URI is too long")
    } else if head.starts_with("HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "the request headers are too large",
        )
    } else {
        return None;
    };
    let lower = head.to_ascii_lowercase();
    let empty = lower.contains("\r\ncontent-length: 0") && !lower.contains("\r\ncontent-type:");
    empty.then_some((status, message))
}

/// A connection whose outgoing bytes are checked for hyper's automatic error answers, which are
/// replaced by the same status with a JSON body (and `connection: close`, as hyper closes the
/// connection after them).
struct JsonErrors {
    inner: TcpStream,
    /// A replacement answer being written, and how much of it is out.
    replacing: Option<(Vec<u8>, usize)>,
}

impl JsonErrors {
    fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            replacing: None,
        }
    }
}

impl AsyncRead for JsonErrors {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonErrors {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            match parse_error_answer(buf) {
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
                Some((status, message)) => {
                    let body = error_body_json(message);
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    this.replacing = Some((answer.into_bytes(), 0));
                }
            }
        }
        let (answer, written) = this.replacing.as_mut().expect("set above");
        while *written < answer.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // hyper's bytes count as written: they were answered in full by ours.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each response head as one contiguous buffer, which is what
    // `parse_error_answer` looks at.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Raises the soft limit on open files to the hard limit (as servers commonly do) and returns
/// how many connections fit under it, keeping room for the model files, the listener and logs.
pub fn connection_capacity(wanted: usize) -> usize {
    #[cfg(unix)]
    {
        // SAFETY: plain syscalls on a properly sized struct.
        unsafe {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                if limit.rlim_cur < limit.rlim_max {
                    let raised = libc::rlimit {
                        rlim_cur: limit.rlim_max,
                        rlim_max: limit.rlim_max,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                        limit.rlim_cur = limit.rlim_max;
                    }
                }
                let room = (limit.rlim_cur as usize).saturating_sub(64).max(16);
                return wanted.min(room);
            }
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_error_answers_are_replaced() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(
            parse_error_answer(hyper_431).map(|a| a.0),
            Some("431 Request Header Fields Too Large")
        );
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_error_answer(hyper_400).is_some());
        // Our own errors have a JSON body and a content type.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_error_answer(ours).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_error_answer(ok).is_none());
        // Body bytes of a stream are never a head.
        assert!(parse_error_answer(b"data: {\"type\":\"content-delta\"}\n\n").is_none());
    }
}
