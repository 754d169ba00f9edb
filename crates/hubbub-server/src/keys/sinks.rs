//! Writing the active connection string where apps read it: a file (replaced atomically, mode
//! 0600), a command (with a timeout; its output never logged), a signed webhook. Every sink gets
//! the same string; a failure names the sink, never the string.

use super::policy::Sink;
use crate::keys::notices::NotificationSettings;
use hubbub_proto::keys::KeySlot;
use std::path::Path;
use std::time::Duration;

/// How long a command sink may run.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// What the sinks are to receive.
pub struct Delivery<'a> {
    pub slot: KeySlot,
    pub version: u64,
    pub connection_string: &'a str,
}

/// Writes every sink; the first failure (with the sink named) if any failed. All are tried.
pub async fn write_all(
    sinks: &[Sink],
    delivery: &Delivery<'_>,
    notifications: &NotificationSettings,
    http: &reqwest::Client,
) -> Result<(), String> {
    let mut failures = Vec::new();
    for sink in sinks {
        let result = match sink {
            Sink::File { path } => write_file(Path::new(path), delivery).await,
            Sink::Exec { command } => run(command, delivery).await,
            Sink::Webhook { url } => post(url, delivery, notifications, http).await,
        };
        if let Err(e) = result {
            failures.push(format!("{}: {e}", sink.describe()));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

async fn write_file(path: &Path, delivery: &Delivery<'_>) -> Result<(), String> {
    let path = path.to_path_buf();
    let text = format!("{}\n", delivery.connection_string);
    tokio::task::spawn_blocking(move || {
        let dir = path.parent().ok_or("the path has no directory")?;
        let name = path.file_name().ok_or("the path has no file name")?;
        let temporary = dir.join(format!(".{}.hubbub-new", name.to_string_lossy()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            std::fs::create_dir_all(dir)?;
            let mut file = options.open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            e.to_string()
        })
    })
    .await
    .map_err(|_| "interrupted".to_string())?
}

async fn run(command: &str, delivery: &Delivery<'_>) -> Result<(), String> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("HUBBUB_CONNECTION_STRING", delivery.connection_string)
        .env("HUBBUB_KEY_TYPE", delivery.slot.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    match tokio::time::timeout(EXEC_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("exited with {status}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "did not finish within {} s",
            EXEC_TIMEOUT.as_secs()
        )),
    }
}

async fn post(
    url: &str,
    delivery: &Delivery<'_>,
    notifications: &NotificationSettings,
    http: &reqwest::Client,
) -> Result<(), String> {
    let body = serde_json::json!({
        "keyType": delivery.slot.as_str(),
        "version": delivery.version,
        "connectionString": delivery.connection_string,
    })
    .to_string();
    let secret = notifications
        .webhook_secret
        .as_deref()
        .ok_or("a webhook sink needs the notifications webhook_secret to sign with")?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let signed = super::notices::webhook::Signed {
        url,
        secret,
        content_type: "application/json",
        body,
        timestamp,
        what: "the webhook",
    };
    signed.post(http).await
}
