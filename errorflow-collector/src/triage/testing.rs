//! A scripted local HTTP server for the clients' tests: answers each
//! request with the next scripted reply (the last one repeats) and records
//! what it received.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

pub struct Server {
    pub base: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Server {
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

pub async fn serve(script: Vec<Reply>) -> Server {
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let script = Arc::new(script);
    let rec = received.clone();
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let rec = rec.clone();
        let script = script.clone();
        async move {
            let n = {
                let mut r = rec.lock().unwrap();
                r.push(Received {
                    path: uri.path().to_string(),
                    query: uri.query().map(str::to_string),
                    headers,
                    body,
                });
                r.len() - 1
            };
            let reply = script[n.min(script.len() - 1)].clone();
            tokio::time::sleep(reply.delay).await;
            let mut res: Response =
                (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
            for (k, v) in reply.headers {
                res.headers_mut().insert(k, v.parse().unwrap());
            }
            res
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server {
        base: format!("http://{addr}"),
        received,
    }
}
