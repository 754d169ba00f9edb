//! Notices by email over SMTP (lettre): `none`, `starttls` (the default) or `tls`, with optional
//! credentials; errors say what failed without the server's words (they may hold addresses).

use super::{Channel, NotificationSettings, Sending};
use crate::store::Notice;
use futures_util::future::BoxFuture;
use std::time::Duration;

#[derive(Debug)]
pub struct Email;

impl Channel for Email {
    fn name(&self) -> &'static str {
        "email"
    }

    fn configured(&self, settings: &NotificationSettings) -> bool {
        !settings.email_to.is_empty()
    }

    fn validate(&self, settings: &NotificationSettings) -> Result<(), String> {
        if settings.smtp_host.as_deref().is_none_or(str::is_empty) {
            return Err("email_to needs smtp_host".into());
        }
        for address in settings.email_to.iter().chain(settings.email_from.iter()) {
            address
                .parse::<lettre::Address>()
                .map_err(|_| format!("'{address}' is not an email address"))?;
        }
        if !matches!(
            settings.smtp_security.as_deref(),
            None | Some("none" | "starttls" | "tls")
        ) {
            return Err("smtp_security must be none, starttls or tls".into());
        }
        Ok(())
    }

    fn send<'a>(
        &'a self,
        sending: &'a Sending<'a>,
        notice: &'a Notice,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(send(sending.settings, notice))
    }
}

async fn send(settings: &NotificationSettings, notice: &Notice) -> Result<(), String> {
    use lettre::message::Mailbox;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let host = settings.smtp_host.as_deref().ok_or("no smtp_host")?;
    let from: Mailbox = settings
        .email_from
        .as_deref()
        .unwrap_or("hubbub@localhost")
        .parse()
        .map_err(|_| "bad email_from".to_string())?;
    let mut builder = Message::builder()
        .from(from)
        .subject(notice.subject.clone());
    for to in &settings.email_to {
        builder = builder.to(to
            .parse::<Mailbox>()
            .map_err(|_| format!("bad address {to}"))?);
    }
    let message = builder
        .body(notice.body.clone())
        .map_err(|e| format!("cannot build the email: {e}"))?;
    let mut transport = match settings.smtp_security.as_deref().unwrap_or("starttls") {
        "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| e.to_string())?,
        _ => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(|e| e.to_string())?
        }
    }
    .timeout(Some(Duration::from_secs(20)));
    if let Some(port) = settings.smtp_port {
        transport = transport.port(port);
    }
    if let (Some(user), Some(password)) = (&settings.smtp_username, &settings.smtp_password) {
        transport =
            transport.credentials(lettre::transport::smtp::authentication::Credentials::new(
                user.clone(),
                password.clone(),
            ));
    }
    transport
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| {
            if e.is_transient() {
                "the mail server refused for now".to_string()
            } else {
                "cannot deliver to the mail server".to_string()
            }
        })
}
