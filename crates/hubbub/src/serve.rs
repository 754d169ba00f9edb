//! `hubbub serve`: load settings, start the server, print where it is, stop on a signal.

use crate::cli::ServeArgs;
use anyhow::Context;
use hubbub_server::{RunningServer, Settings};
use tracing_subscriber::EnvFilter;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let settings = args.settings().over(file);
    init_logs(settings.log_format.as_deref())?;
    let config = settings.validate()?;
    let server = hubbub_server::start(config)
        .await
        .context("Hubbub could not start")?;
    print_banner(&server);
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Log lines on stderr, filtered by `HUBBUB_LOG` (default `info`): text, or with `json` one JSON
/// object per line (time, level, target, message, fields, and the spans', such as a REST call's
/// `request_id`).
fn init_logs(format: Option<&str>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("HUBBUB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format.unwrap_or("text") {
        "text" => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        "json" => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        other => anyhow::bail!(
            "log_format must be text or json, not '{}'",
            other.chars().take(32).collect::<String>()
        ),
    }
    Ok(())
}

/// Prints the banner on stdout: connection strings only when stdout is a terminal.
fn print_banner(server: &RunningServer) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    print!("{}", banner(server, terminal));
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// What an operator needs to start using the instance. Connection strings carry a key, so they
/// are shown only on the first start (when they were just made) and only on a terminal: stdout
/// sent to a file or a log collector would keep them. `hubbub key show` shows them any time.
fn banner(server: &RunningServer, terminal: bool) -> String {
    let endpoint = server.state.primary_endpoint();
    let scheme = if server.tls { "https" } else { "http" };
    let mut out = String::new();
    if server.first_start {
        out.push_str(&format!(
            "New Hubbub instance: keys generated and stored in {}\n",
            server.database.display()
        ));
    }
    if let Some(line) = server.state.backplane.describe() {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("public endpoint: {endpoint}\n"));
    let accepted: Vec<String> = server.endpoints.iter().map(|e| e.url()).collect();
    out.push_str(&format!("accepted endpoints: {}\n", accepted.join(", ")));
    out.push_str(&format!(
        "public listener: {} ({scheme})\n",
        server.public_addr
    ));
    out.push_str(&format!("admin listener: {} (http)\n", server.admin_addr));
    out.push_str(&format!("admin URL: http://{}\n", server.admin_addr));
    out.push_str(&format!(
        "admin token file: {}\n",
        server.admin_token_file.display()
    ));
    if server.first_start && terminal {
        let keys = server.state.keys.current().web_pub_sub_keys(&endpoint);
        out.push_str(&format!(
            "primary connection string: {}\n",
            keys.primary_connection_string
        ));
        out.push_str(&format!(
            "secondary connection string: {}\n",
            keys.secondary_connection_string
        ));
    } else if server.first_start {
        out.push_str(&format!(
            "connection strings: not printed (stdout is not a terminal); run `hubbub key show \
             --admin-url http://{} --data-dir {}`\n",
            server.admin_addr,
            server.state.keys.store().data_dir().display()
        ));
    } else {
        out.push_str("connection strings: run `hubbub key show`\n");
    }
    out.push_str("Hubbub is ready.\n");
    out
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connection_strings_are_shown_on_a_terminal_only_and_only_at_the_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let settings = || Settings {
            data_dir: Some(dir.path().join("data")),
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
            ..Settings::default()
        };
        let server = hubbub_server::start(settings().validate().unwrap())
            .await
            .unwrap();
        let keys = server
            .state
            .keys
            .current()
            .web_pub_sub_keys(&server.state.primary_endpoint());
        let on_terminal = banner(&server, true);
        assert!(
            on_terminal.contains(&format!(
                "primary connection string: {}\n",
                keys.primary_connection_string
            )),
            "{on_terminal}"
        );
        assert!(on_terminal.contains(&keys.secondary_connection_string));
        let piped = banner(&server, false);
        assert!(piped.contains("New Hubbub instance"), "{piped}");
        assert!(!piped.contains("AccessKey="), "{piped}");
        assert!(
            piped.contains(&format!(
                "run `hubbub key show --admin-url http://{}",
                server.admin_addr
            )),
            "{piped}"
        );
        assert!(piped.ends_with("Hubbub is ready.\n"));
        server.shutdown().await;

        let again = hubbub_server::start(settings().validate().unwrap())
            .await
            .unwrap();
        for terminal in [true, false] {
            let text = banner(&again, terminal);
            assert!(!text.contains("AccessKey="), "{text}");
            assert!(text.contains("run `hubbub key show`"), "{text}");
        }
        again.shutdown().await;
    }
}
