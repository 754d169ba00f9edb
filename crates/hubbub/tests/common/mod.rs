//! Runs the real `hubbub` binary: `serve` as a child process on free ports, and CLI commands.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_hubbub");

/// A `hubbub serve` process.
pub struct Hubbub {
    pub child: Child,
    pub data_dir: PathBuf,
    pub public_addr: String,
    pub admin_addr: String,
    /// Everything printed on stdout up to and including the ready line.
    pub banner: Vec<String>,
}

impl Hubbub {
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[], &[]).expect("hubbub serve starts")
    }

    /// Starts `serve` on port 0 with extra flags and environment; Err(stderr) if it exits early.
    pub fn start_with(
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(args)
            .env("HUBBUB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn hubbub");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let ready = line == "Hubbub is ready.";
                    banner.push(line);
                    if ready {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let output = child.wait_with_output().expect("wait");
                    return Err(String::from_utf8_lossy(&output.stderr).into_owned());
                }
            }
        }
        let field = |name: &str| {
            banner
                .iter()
                .find_map(|l| l.strip_prefix(name))
                .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
                .unwrap_or_else(|| panic!("banner has no '{name}': {banner:?}"))
        };
        let public_addr = field("public listener: ");
        let admin_addr = field("admin listener: ");
        Ok(Self {
            child,
            data_dir: data_dir.to_path_buf(),
            public_addr,
            admin_addr,
            banner,
        })
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Runs a CLI command against this server (admin URL and data dir filled in).
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(args, &self.admin_url(), &self.data_dir)
    }

    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// Stops the server and returns everything it wrote to stderr (its warnings and errors).
    pub fn stop_for_stderr(mut self) -> String {
        use std::io::Read;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        stderr
    }

    /// SIGTERM, then waits; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        wait_timeout(&mut self.child, Duration::from_secs(20)).expect("exits after SIGTERM")
    }
}

impl Drop for Hubbub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn cli(args: &[&str], admin_url: &str, data_dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--admin-url", admin_url, "--data-dir"])
        .arg(data_dir)
        .env_remove("HUBBUB_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run hubbub")
}

pub fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// `GET url`, with a bearer token when given: the body as JSON.
pub async fn get_json(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> serde_json::Value {
    let mut request = http.get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET request sent");
    response.json().await.expect("a JSON body")
}

/// Sends one REST request signed with `key`, as an SDK would.
pub fn rest_send(server: &Hubbub, key: &str) -> u16 {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let port = server.public_addr.rsplit(':').next().unwrap().to_string();
    let path = "/api/hubs/chat/:send?api-version=2024-12-01";
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64(
        serde_json::json!({"aud": format!("http://localhost:{port}{path}"), "exp": exp})
            .to_string()
            .as_bytes(),
    );
    let input = format!("{header}.{claims}");
    let signature = b64(&hubbub_proto::jwt::hmac_sha256(
        key.as_bytes(),
        input.as_bytes(),
    ));
    let token = format!("{input}.{signature}");
    let url = format!("http://{}{path}", server.public_addr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let response = reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await
            .expect("request sent");
        response.status().as_u16()
    })
}
