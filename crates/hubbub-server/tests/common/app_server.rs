//! A recording app server on 127.0.0.1 for event handlers and webhooks: it keeps every request
//! it gets and answers each as the test's behaviour says.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub type Behaviour = Arc<dyn Fn(&Recorded) -> Response + Send + Sync>;

/// An app server on 127.0.0.1 that records every request and answers with `behaviour`.
pub struct AppServer {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
}

impl AppServer {
    pub async fn start(behaviour: Behaviour) -> Self {
        let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let record = Arc::clone(&seen);
        let app = axum::Router::new().fallback(
            move |method: Method, uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let record = Arc::clone(&record);
                let behaviour = Arc::clone(&behaviour);
                async move {
                    let request = Recorded {
                        method,
                        path: uri.path().to_string(),
                        headers,
                        body,
                    };
                    let response = behaviour(&request);
                    record.lock().unwrap().push(request);
                    response
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, seen }
    }

    pub fn posts(&self) -> Vec<Recorded> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == Method::POST)
            .cloned()
            .collect()
    }

    pub fn events(&self, event: &str) -> Vec<Recorded> {
        self.posts()
            .into_iter()
            .filter(|r| r.header("ce-eventName") == Some(event))
            .collect()
    }

    pub async fn wait_for(&self, event: &str, count: usize) -> Vec<Recorded> {
        assert!(
            super::eventually(Duration::from_secs(10), || async {
                self.events(event).len() >= count
            })
            .await,
            "{count} '{event}' events expected, got {}",
            self.events(event).len()
        );
        self.events(event)
    }
}

/// The abuse-protection answer the official middlewares give.
pub fn allow_origin() -> Response {
    (StatusCode::OK, [("WebHook-Allowed-Origin", "*")]).into_response()
}
