//! CLI commands that talk to a running server through its admin API.

use crate::cli::{
    AccessKeyType, AdminArgs, AdminTokenCommand, HubArgs, HubCommand, KeyCommand, PolicyCommand,
};
use anyhow::{anyhow, bail, Context};
use hubbub_proto::error::ErrorDetail;
use hubbub_proto::keys::{KeySlot, WebPubSubKeys};
use std::time::Duration;

pub async fn key(command: KeyCommand) -> anyhow::Result<()> {
    let view: serde_json::Value = match command {
        KeyCommand::Show(admin) => Admin::new(&admin)?.get("/admin/keys").await?,
        KeyCommand::Regenerate {
            key_type,
            grace,
            yes,
            admin,
        } => {
            let slot = KeySlot::from(key_type);
            let admin = Admin::new(&admin)?;
            confirm_unused(&admin, slot, yes).await?;
            let mut body = serde_json::json!({ "keyType": slot });
            if let Some(grace) = grace {
                body["grace"] = serde_json::json!(grace);
            }
            admin.post("/admin/keys/regenerate", &body).await?
        }
        KeyCommand::Notices(admin) => {
            let notices: serde_json::Value = Admin::new(&admin)?.get("/admin/notices").await?;
            println!("{}", serde_json::to_string_pretty(&notices)?);
            return Ok(());
        }
        KeyCommand::Usage(admin) => {
            let usage: serde_json::Value = Admin::new(&admin)?.get("/admin/keys/usage").await?;
            println!("{}", serde_json::to_string_pretty(&usage)?);
            return Ok(());
        }
        KeyCommand::StaleCallers { json, admin } => {
            let callers: serde_json::Value =
                Admin::new(&admin)?.get("/admin/keys/stale-callers").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&callers)?);
            } else {
                print_stale_callers(&callers);
            }
            return Ok(());
        }
        KeyCommand::RequireRotation {
            key_type,
            by,
            reason,
            admin,
        } => {
            let body =
                serde_json::json!({ "keyType": access_slot(key_type), "by": by, "reason": reason });
            Admin::new(&admin)?
                .post("/admin/keys/require-rotation", &body)
                .await?
        }
        KeyCommand::Rotate(admin) => {
            let policy: serde_json::Value = Admin::new(&admin)?
                .post("/admin/keys/rotate", &serde_json::json!({}))
                .await?;
            print_policy(&policy)?;
            return Ok(());
        }
        KeyCommand::Policy(command) => {
            let policy: serde_json::Value =
                match command {
                    PolicyCommand::Set {
                        every,
                        only_if_idle,
                        sink_file,
                        sink_exec,
                        sink_webhook,
                        admin,
                    } => {
                        let mut sinks = Vec::new();
                        sinks.extend(sink_file.into_iter().map(
                            |path| serde_json::json!({"kind": "file", "path": absolute(&path)}),
                        ));
                        sinks.extend(sink_exec.into_iter().map(
                            |command| serde_json::json!({"kind": "exec", "command": command}),
                        ));
                        sinks.extend(
                            sink_webhook
                                .into_iter()
                                .map(|url| serde_json::json!({"kind": "webhook", "url": url})),
                        );
                        let mut body = serde_json::json!({ "every": every, "sinks": sinks });
                        if let Some(window) = only_if_idle {
                            body["onlyIfIdle"] = serde_json::json!(window);
                        }
                        Admin::new(&admin)?.put("/admin/keys/policy", &body).await?
                    }
                    PolicyCommand::Show(admin) => {
                        Admin::new(&admin)?.get("/admin/keys/policy").await?
                    }
                    PolicyCommand::Clear(admin) => {
                        Admin::new(&admin)?.delete("/admin/keys/policy").await?;
                        eprintln!("Rotation policy cleared; the keys stay as they are.");
                        return Ok(());
                    }
                };
            print_policy(&policy)?;
            return Ok(());
        }
        KeyCommand::Revoke {
            key_type,
            disconnect,
            admin,
        } => {
            let slot = KeySlot::from(key_type);
            let body = serde_json::json!({ "keyType": slot, "disconnect": disconnect });
            let view: serde_json::Value = Admin::new(&admin)?
                .post("/admin/keys/revoke", &body)
                .await?;
            let version = view["revoked"]["version"].as_u64().unwrap_or_default();
            eprintln!("Revoked the {slot} key: version {version} and every earlier value no longer authenticate.");
            if disconnect {
                let closed = view["closedConnections"].as_u64().unwrap_or_default();
                eprintln!("Closed {closed} connection(s) on this node whose token it signed; every other node closes its own.");
            }
            view
        }
        KeyCommand::EndGrace { key_type, admin } => {
            let slot = access_slot(key_type);
            let body = serde_json::json!({ "keyType": slot });
            let view: serde_json::Value = Admin::new(&admin)?
                .post("/admin/keys/end-grace", &body)
                .await?;
            let ended = view["ended"].as_array().map_or(0, Vec::len);
            if ended == 0 {
                eprintln!("No earlier value of the {slot} key was in a grace period.");
            } else {
                eprintln!(
                    "Ended the grace period of {ended} earlier value(s) of the {slot} key: they no longer authenticate."
                );
            }
            view
        }
    };
    warn_about_rotation(&view);
    let keys: WebPubSubKeys =
        serde_json::from_value(view).context("the admin API answered with unexpected JSON")?;
    println!("{}", serde_json::to_string_pretty(&keys)?);
    Ok(())
}

fn access_slot(key_type: AccessKeyType) -> KeySlot {
    match key_type {
        AccessKeyType::Primary => KeySlot::Primary,
        AccessKeyType::Secondary => KeySlot::Secondary,
    }
}

/// Rotation deadlines go to stderr, so stdout stays exactly the `az webpubsub key show` shape.
fn warn_about_rotation(view: &serde_json::Value) {
    for slot in ["primary", "secondary"] {
        let info = &view[slot];
        if let Some(rotation) = info.get("rotation") {
            let state = if info["status"] == "disabled" {
                "no longer authenticates: it had to be rotated"
            } else {
                "must be rotated"
            };
            eprintln!(
                "warning: the {slot} key {state} by {} ({})",
                rotation["deadline"].as_str().unwrap_or("?"),
                rotation["reason"].as_str().unwrap_or("")
            );
        }
        for retiring in info["retiring"].as_array().into_iter().flatten() {
            eprintln!(
                "note: the previous {slot} key (version {}) is retiring: still accepted until {}",
                retiring["version"],
                retiring["until"].as_str().unwrap_or("?")
            );
        }
        if info.get("rotation").is_some() {
            continue;
        }
        if info["status"] == "due" || info["status"] == "dueSoon" {
            eprintln!(
                "warning: the {slot} key is due for rotation by {} (key age policy)",
                info["dueAt"].as_str().unwrap_or("?")
            );
        }
    }
}

/// Warns when the key authenticated something in the last 15 minutes; in a terminal, asks
/// before going on unless `--yes` was given.
async fn confirm_unused(admin: &Admin, slot: KeySlot, yes: bool) -> anyhow::Result<()> {
    if slot == KeySlot::Salt {
        return Ok(());
    }
    let usage: serde_json::Value = admin.get("/admin/keys/usage").await?;
    let recent = usage[slot.as_str()]["usesLast15Minutes"]
        .as_u64()
        .unwrap_or(0);
    if recent == 0 {
        return Ok(());
    }
    eprintln!(
        "warning: the {slot} key authenticated {recent} requests and connections in the last 15 minutes; they will fail once it is regenerated"
    );
    use std::io::IsTerminal;
    if yes || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    eprint!("Regenerate the {slot} key anyway? [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the answer")?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        bail!("not regenerated")
    }
}

/// A file sink's path made absolute against the current directory (the server checks it).
fn absolute(path: &str) -> String {
    std::path::absolute(path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_string())
}

/// The policy as JSON on stdout; a sink failure on stderr, and a failed exit.
fn print_policy(policy: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(policy)?);
    if let Some(error) = policy["sinkError"].as_str() {
        bail!("a sink did not take the connection string (it is retried): {error}");
    }
    Ok(())
}

/// The stale callers as a table, or a line saying there are none.
fn print_stale_callers(callers: &serde_json::Value) {
    let rows = callers["value"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("No caller used a regenerated key value.");
        return;
    }
    println!(
        "{:<10} {:>7} {:<10} {:<16} {:<22} {:>7}  {:<24} user agent",
        "key", "version", "kind", "hub", "source", "count", "last seen"
    );
    for row in rows {
        let text = |name: &str| row[name].as_str().unwrap_or_default().to_string();
        let number = |name: &str| row[name].as_u64().unwrap_or_default();
        println!(
            "{:<10} {:>7} {:<10} {:<16} {:<22} {:>7}  {:<24} {}",
            text("keyType"),
            number("version"),
            text("kind"),
            text("hub"),
            text("sourceAddress"),
            number("count"),
            text("lastSeenAt"),
            text("userAgent")
        );
    }
}

pub async fn audit(since: Option<String>, json: bool, admin: AdminArgs) -> anyhow::Result<()> {
    let admin = Admin::new(&admin)?;
    let mut next = Some(match &since {
        Some(since) => format!("/admin/audit?limit=500&since={}", since.replace('+', "%2B")),
        None => "/admin/audit?limit=500".to_string(),
    });
    while let Some(path) = next {
        let page: serde_json::Value = admin.get(&path).await?;
        for event in page["value"].as_array().into_iter().flatten() {
            if json {
                println!("{event}");
            } else {
                let field = |name: &str| {
                    event[name]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| event[name].as_u64().map(|v| v.to_string()))
                        .unwrap_or_default()
                };
                println!(
                    "{:<24}  {:<18} {:<9} {:>3} -> {:<3}  {:<12} {:<15} {}",
                    field("at"),
                    field("event"),
                    field("slot"),
                    field("oldVersion"),
                    field("newVersion"),
                    field("actor"),
                    field("source"),
                    field("detail")
                );
            }
        }
        next = page["nextLink"].as_str().map(str::to_owned);
    }
    Ok(())
}

pub async fn hub(command: HubCommand) -> anyhow::Result<()> {
    let shown: serde_json::Value = match command {
        HubCommand::Show { hub_name, admin } => {
            Admin::new(&admin)?.get(&hub_path(&hub_name)).await?
        }
        HubCommand::List(admin) => Admin::new(&admin)?.get("/admin/hubs").await?,
        HubCommand::Delete { hub_name, admin } => {
            Admin::new(&admin)?.delete(&hub_path(&hub_name)).await?;
            serde_json::json!({ "deleted": hub_name })
        }
        HubCommand::Create(args) => {
            let admin = Admin::new(&args.admin)?;
            if admin.exists(&hub_path(&args.hub_name)).await? {
                bail!(
                    "hub '{}' already has settings; use `hubbub hub update`",
                    args.hub_name
                );
            }
            let properties = apply(serde_json::json!({}), &args)?;
            admin.put(&hub_path(&args.hub_name), &properties).await?
        }
        HubCommand::Update(args) => {
            let admin = Admin::new(&args.admin)?;
            let current: serde_json::Value = admin.get(&hub_path(&args.hub_name)).await?;
            let properties = apply(current["properties"].clone(), &args)?;
            admin.put(&hub_path(&args.hub_name), &properties).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(())
}

fn hub_path(hub: &str) -> String {
    format!(
        "/admin/hubs/{}",
        hub.replace('%', "%25").replace('/', "%2F")
    )
}

/// Lays the command's options over existing hub properties.
fn apply(mut properties: serde_json::Value, args: &HubArgs) -> anyhow::Result<serde_json::Value> {
    if !properties.is_object() {
        properties = serde_json::json!({});
    }
    if !args.event_handler.is_empty() {
        let mut groups: Vec<Vec<String>> = Vec::new();
        for pair in &args.event_handler {
            if pair.starts_with("url-template=") || groups.is_empty() {
                groups.push(Vec::new());
            }
            if let Some(group) = groups.last_mut() {
                group.push(pair.clone());
            }
        }
        let handlers = groups
            .iter()
            .map(|pairs| event_handler(pairs))
            .collect::<anyhow::Result<Vec<_>>>()?;
        properties["eventHandlers"] = serde_json::Value::Array(handlers);
    }
    if let Some(allow) = args.allow_anonymous {
        properties["anonymousConnectPolicy"] =
            serde_json::json!(if allow { "allow" } else { "deny" });
    }
    if let Some(secs) = args.keep_alive_secs {
        properties["webSocketKeepAliveIntervalInSeconds"] = serde_json::json!(secs);
    }
    Ok(properties)
}

/// `url-template=URL user-event-pattern=P system-event=connect ...` as an event handler object.
fn event_handler(pairs: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut url_template = None;
    let mut user_event_pattern = None;
    let mut system_events = Vec::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--event-handler takes KEY=VALUE pairs, not '{pair}'"))?;
        match key {
            "url-template" => url_template = Some(value.to_string()),
            "user-event-pattern" => user_event_pattern = Some(value.to_string()),
            "system-event" => system_events.push(value.to_string()),
            other => bail!("unknown --event-handler key '{other}': use url-template, user-event-pattern or system-event"),
        }
    }
    let url_template =
        url_template.ok_or_else(|| anyhow!("--event-handler needs url-template=URL"))?;
    let mut handler =
        serde_json::json!({ "urlTemplate": url_template, "systemEvents": system_events });
    if let Some(pattern) = user_event_pattern {
        handler["userEventPattern"] = serde_json::json!(pattern);
    }
    Ok(handler)
}

pub async fn admin_token(command: AdminTokenCommand) -> anyhow::Result<()> {
    let AdminTokenCommand::Rotate { print, admin } = command;
    let mut rotated: serde_json::Value = Admin::new(&admin)?
        .post("/admin/admin-token/rotate", &serde_json::json!({}))
        .await?;
    if !print {
        if let Some(object) = rotated.as_object_mut() {
            object.remove("adminToken");
        }
    }
    eprintln!("The admin token was rotated: the old one no longer works, portal sessions were signed out.");
    println!("{}", serde_json::to_string_pretty(&rotated)?);
    Ok(())
}

struct Admin {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Admin {
    fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        let token = match &args.admin_token {
            Some(token) => token.trim().to_string(),
            None => {
                let path = args.data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin token: pass --admin-token or HUBBUB_ADMIN_TOKEN, or point --data-dir at the server's data directory (cannot read {})",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Self {
            url: args.admin_url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(format!("{}{path}", self.url)).json(body))
            .await
    }

    async fn put<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        self.send(self.http.put(format!("{}{path}", self.url)).json(body))
            .await
    }

    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send::<serde::de::IgnoredAny>(self.http.delete(format!("{}{path}", self.url)))
            .await
            .map(|_| ())
    }

    /// Whether `GET path` finds something (404 means no; other failures are errors).
    async fn exists(&self, path: &str) -> anyhow::Result<bool> {
        let (status, bytes) = self
            .fetch(self.http.get(format!("{}{path}", self.url)))
            .await?;
        match status {
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            status if status.is_success() => Ok(true),
            status => Err(self.failure(status, &bytes)),
        }
    }

    /// Sends with the admin token; the status and body of the answer.
    async fn fetch(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, Vec<u8>)> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            let why = if e.is_connect() {
                "connection refused or unreachable; is `hubbub serve` running?"
            } else if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            anyhow!("cannot reach the Hubbub admin API at {}: {why}", self.url)
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .context("reading the admin API's answer")?
            .to_vec();
        Ok((status, bytes))
    }

    /// One line saying why the admin API refused.
    fn failure(&self, status: reqwest::StatusCode, bytes: &[u8]) -> anyhow::Error {
        let message = serde_json::from_slice::<ErrorDetail>(bytes)
            .map(|d| d.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(bytes).chars().take(200).collect());
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return anyhow!(
                "the admin API at {} refused the admin token: {message}",
                self.url
            );
        }
        anyhow!("the admin API at {} answered {status}: {message}", self.url)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let (status, bytes) = self.fetch(request).await?;
        if !status.is_success() {
            return Err(self.failure(status, &bytes));
        }
        // A 204 has no body; read it as JSON null.
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).with_context(|| {
            format!(
                "the admin API at {} answered with unexpected JSON",
                self.url
            )
        })
    }
}
