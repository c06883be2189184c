//! A fake collector speaking the documented ingest protocol, and helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use errorflow_sdk::protocol::{Batch, BatchResponse, Event};
use errorflow_sdk::Transport;

/// Tests in one binary share the process-wide client; they take this lock.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the fake answers to the next request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    TooManyRequests { retry_after: &'static str },
    Delay(Duration),
}

#[derive(Default)]
struct Inner {
    plan: VecDeque<Reply>,
    events: Vec<Event>,
    /// Arrival time and status answered, per request.
    requests: Vec<(Instant, u16)>,
}

#[derive(Clone, Default)]
pub struct FakeCollector {
    inner: Arc<Mutex<Inner>>,
    pub addr: Option<SocketAddr>,
}

impl FakeCollector {
    pub fn start() -> FakeCollector {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        FakeCollector::serve(listener)
    }

    fn serve(listener: std::net::TcpListener) -> FakeCollector {
        listener.set_nonblocking(true).unwrap();
        let fake = FakeCollector {
            addr: Some(listener.local_addr().unwrap()),
            ..FakeCollector::default()
        };
        let state = fake.inner.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = Router::new()
                    .route("/api/v1/events", post(ingest))
                    .with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        fake
    }

    pub fn dsn(&self) -> String {
        format!("http://testkey@{}/1", self.addr.unwrap())
    }

    pub fn plan(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().plan.extend(replies);
    }

    pub fn events(&self) -> Vec<Event> {
        self.inner.lock().unwrap().events.clone()
    }

    pub fn requests(&self) -> Vec<(Instant, u16)> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Waits until `n` events arrived or `timeout` passed.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Event> {
        let start = Instant::now();
        loop {
            let events = self.events();
            if events.len() >= n || start.elapsed() > timeout {
                return events;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn ingest(
    State(state): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = state.lock().unwrap().plan.pop_front();
    if let Some(Reply::Delay(d)) = reply {
        tokio::time::sleep(d).await;
    }
    let record = |status: u16| {
        state
            .lock()
            .unwrap()
            .requests
            .push((Instant::now(), status))
    };
    match reply {
        Some(Reply::Status(code)) => {
            record(code);
            return StatusCode::from_u16(code).unwrap().into_response();
        }
        Some(Reply::TooManyRequests { retry_after }) => {
            record(429);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after)],
            )
                .into_response();
        }
        _ => {}
    }
    if headers.get("x-errorflow-key").and_then(|v| v.to_str().ok()) != Some("testkey") {
        record(401);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let json = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        body.to_vec()
    };
    let batch: Batch = match serde_json::from_slice(&json) {
        Ok(b) => b,
        Err(_) => {
            record(400);
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    record(200);
    let mut inner = state.lock().unwrap();
    let mut accepted = 0;
    let mut duplicates = 0;
    for event in batch.events {
        if inner.events.iter().any(|e| e.event_id == event.event_id) {
            duplicates += 1;
        } else {
            accepted += 1;
            inner.events.push(event);
        }
    }
    axum::Json(BatchResponse {
        accepted,
        duplicates,
        rejected: vec![],
    })
    .into_response()
}

/// An in-memory transport for tests that do not need HTTP.
#[derive(Default)]
pub struct Memory(pub Mutex<Vec<Event>>);

impl Memory {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

impl Transport for Memory {
    fn send(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

/// A port with nothing listening (bound then released).
/// A port the OS handed out, bound and not listening while the socket
/// lives: connections to it are refused, and nothing else can take it.
pub fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// Fast retries so that tests finish quickly.
pub fn fast_retry() -> errorflow_sdk::RetryPolicy {
    errorflow_sdk::RetryPolicy {
        max_elapsed: Duration::from_secs(20),
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(300),
    }
}
