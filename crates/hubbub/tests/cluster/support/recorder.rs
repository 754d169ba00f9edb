//! A tiny HTTP server standing in for a webhook receiver or an app server: it records every
//! request it gets and answers each with the raw response the test chose.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request as the recorder got it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    /// A header's value, the name compared without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The raw HTTP response (status line, headers and body) to a request.
pub type Answer = fn(&Request) -> &'static str;

pub struct Recorder {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Recorder {
    /// Listens on a free loopback port and answers every request with `answer`.
    pub async fn start(answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let record = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, answer, Arc::clone(&record)));
            }
        });
        Self { url, requests }
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads the requests of one connection (several when the client keeps it open), recording
/// and answering each, until the client closes it.
async fn serve(mut socket: TcpStream, answer: Answer, record: Arc<Mutex<Vec<Request>>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((request, length)) = parse(&buffer) {
            let response = answer(&request);
            record.lock().unwrap().push(request);
            if socket.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            buffer.drain(..length);
            continue;
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The first whole request in `buffer` and the number of bytes it takes; None until the
/// head and the `content-length` bytes of body have arrived.
fn parse(buffer: &[u8]) -> Option<(Request, usize)> {
    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buffer[..end]);
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_string();
    let path = request_line.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            Some((name.to_string(), value.trim().to_string()))
        })
        .collect();
    let mut request = Request {
        method,
        path,
        headers,
        body: String::new(),
    };
    let length = request
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let whole = end + 4 + length;
    if buffer.len() < whole {
        return None;
    }
    request.body = String::from_utf8_lossy(&buffer[end + 4..whole]).into_owned();
    Some((request, whole))
}
