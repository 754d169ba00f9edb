//! What notices say: the notices a key ring calls for at a time (rotation required, deadline
//! near, key disabled, key age warnings and due), each with a subject, a body and a JSON payload,
//! and a dedup key so it is queued once.

use crate::clock::{rfc3339, UnixMillis};
use crate::keys::KeyRing;
use crate::store::NewNotice;
use hubbub_proto::keys::KeySlot;

const DAY_MS: i64 = 24 * 3600 * 1000;
/// Age-policy warnings go out this many days before a key is due.
pub const AGE_WARNINGS_DAYS: [i64; 3] = [30, 7, 1];

/// What one notice says, before it becomes an email and a webhook payload.
struct Draft<'a> {
    kind: &'a str,
    slot: KeySlot,
    version: u64,
    /// Makes the dedup key unique per warning window.
    dedup_tail: String,
    subject: String,
    lines: Vec<String>,
    extra: serde_json::Value,
}

impl Draft<'_> {
    fn into_notice(self, endpoint: &str) -> NewNotice {
        let Draft {
            kind,
            slot,
            version,
            dedup_tail,
            subject,
            lines,
            extra,
        } = self;
        let mut body = format!("Hubbub instance {endpoint}\n\n");
        for line in lines {
            body.push_str(&line);
            body.push('\n');
        }
        body.push_str(
            "\nTo rotate without downtime: move every app to the other key's connection string, run\n\
             `hubbub key regenerate --key-type <this key>`, then move the apps to the new connection string.\n",
        );
        let mut payload = serde_json::json!({"type": kind, "slot": slot.as_str(), "keyVersion": version, "endpoint": endpoint});
        if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        NewNotice {
            dedup: format!("{kind}:{slot}:v{version}{dedup_tail}"),
            kind: kind.to_string(),
            subject: format!("[Hubbub] {subject}"),
            body,
            payload: payload.to_string(),
        }
    }
}

/// The notices the key ring calls for now (the store drops ones queued before).
pub fn due(
    ring: &KeyRing,
    max_age_days: Option<u32>,
    now: UnixMillis,
    endpoint: &str,
) -> Vec<NewNotice> {
    let mut drafts = Vec::new();
    for slot in [KeySlot::Primary, KeySlot::Secondary] {
        let key = ring.slot(slot);
        let version = key.version;
        if let Some(r) = ring.requirement(slot) {
            let deadline = rfc3339(r.deadline);
            let extra = serde_json::json!({"deadline": deadline, "reason": r.reason});
            let reason = format!("Reason: {}", r.reason);
            drafts.push(Draft {
                kind: "rotation_required",
                slot,
                version,
                dedup_tail: String::new(),
                subject: format!("The {slot} key must be rotated by {deadline}"),
                lines: vec![
                    format!("The {slot} key must be rotated by {deadline}."),
                    reason.clone(),
                    "After the deadline it stops authenticating until it is regenerated.".into(),
                ],
                extra: extra.clone(),
            });
            if now >= r.deadline {
                drafts.push(Draft {
                    kind: "key_disabled",
                    slot,
                    version,
                    dedup_tail: String::new(),
                    subject: format!("The {slot} key no longer authenticates"),
                    lines: vec![format!("The {slot} key passed its rotation deadline ({deadline}) and no longer authenticates."), reason],
                    extra,
                });
            } else if r.deadline - now <= DAY_MS {
                drafts.push(Draft {
                    kind: "rotation_deadline_near",
                    slot,
                    version,
                    dedup_tail: String::new(),
                    subject: format!("The {slot} key must be rotated within a day"),
                    lines: vec![
                        format!("The {slot} key must be rotated by {deadline}."),
                        reason,
                    ],
                    extra,
                });
            }
        }
        if let Some(days) = max_age_days {
            let due_at = key.created_at + i64::from(days) * DAY_MS;
            let when = rfc3339(due_at);
            let extra = serde_json::json!({"dueAt": when, "maxAgeDays": days});
            if now >= due_at {
                drafts.push(Draft {
                    kind: "key_age_due",
                    slot,
                    version,
                    dedup_tail: ":due".into(),
                    subject: format!("The {slot} key is older than {days} days"),
                    lines: vec![format!(
                        "The {slot} key reached the maximum age of {days} days on {when}."
                    )],
                    extra,
                });
            } else if let Some(window) = AGE_WARNINGS_DAYS
                .iter()
                .rev()
                .find(|w| now >= due_at - *w * DAY_MS)
            {
                drafts.push(Draft {
                    kind: "key_age_warning",
                    slot,
                    version,
                    dedup_tail: match window {
                        30 => ":30d",
                        7 => ":7d",
                        _ => ":1d",
                    }
                    .into(),
                    subject: format!("The {slot} key is due for rotation within {window} days"),
                    lines: vec![format!(
                        "The {slot} key reaches the maximum age of {days} days on {when}."
                    )],
                    extra,
                });
            }
        }
    }
    if let Some(policy) = &ring.policy {
        if let Some(outcome) = policy
            .last_outcome
            .as_ref()
            .filter(|o| o.result == "postponed")
        {
            let standby = policy.standby();
            drafts.push(Draft {
                kind: "rotation_postponed",
                slot: standby,
                version: ring.slot(standby).version,
                dedup_tail: format!(":{}", outcome.at),
                subject: format!("The rotation of the {standby} key was postponed: it is still in use"),
                lines: vec![
                    format!("The rotation policy's step was postponed until {}.", rfc3339(policy.next_step_at)),
                    format!("Why: {}.", outcome.detail),
                    format!("Move these apps to the {} connection string (the sinks hold it).", policy.active),
                ],
                extra: serde_json::json!({"nextStepAt": rfc3339(policy.next_step_at), "reason": outcome.detail}),
            });
        }
    }
    drafts
        .into_iter()
        .map(|d| d.into_notice(endpoint))
        .collect()
}

/// A key event that is not a notice (a regeneration, a revocation, a rotation step, the first
/// stale caller of a version): it goes to CloudEvents only.
pub fn key_event(
    kind: &str,
    slot: KeySlot,
    version: u64,
    subject: String,
    line: String,
    extra: serde_json::Value,
    endpoint: &str,
) -> NewNotice {
    Draft {
        kind,
        slot,
        version,
        dedup_tail: String::new(),
        subject,
        lines: vec![line],
        extra,
    }
    .into_notice(endpoint)
}

/// The notice for a sink that did not take the active connection string.
pub fn sink_failed(slot: KeySlot, version: u64, reason: &str, endpoint: &str) -> NewNotice {
    Draft {
        kind: "sink_failed",
        slot,
        version,
        dedup_tail: String::new(),
        subject: format!("A sink did not take the {slot} connection string"),
        lines: vec![
            format!("The rotation policy could not write the {slot} connection string (version {version}) to a sink; it is tried again."),
            format!("Why: {reason}"),
        ],
        extra: serde_json::json!({"reason": reason}),
    }
    .into_notice(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(created_at: UnixMillis) -> KeyRing {
        let key = |v: &str| crate::keys::SlotKey {
            value: crate::secret::Secret::new(v.into()),
            version: 1,
            created_at,
        };
        KeyRing {
            primary: key("p"),
            secondary: key("s"),
            salt: key("x"),
            requirements: Vec::new(),
            retiring: Vec::new(),
            previous: Vec::new(),
            revocations: Vec::new(),
            policy: None,
            local_auth_disabled: false,
        }
    }

    #[test]
    fn age_warnings_at_30_7_and_1_days_then_due() {
        let kinds = |now: UnixMillis| -> Vec<String> {
            due(&ring(0), Some(90), now, "http://h")
                .into_iter()
                .filter(|n| n.dedup.contains("primary"))
                .map(|n| n.dedup)
                .collect()
        };
        assert!(kinds(59 * DAY_MS).is_empty());
        assert_eq!(kinds(60 * DAY_MS), ["key_age_warning:primary:v1:30d"]);
        assert_eq!(kinds(83 * DAY_MS), ["key_age_warning:primary:v1:7d"]);
        assert_eq!(kinds(89 * DAY_MS), ["key_age_warning:primary:v1:1d"]);
        assert_eq!(kinds(90 * DAY_MS), ["key_age_due:primary:v1:due"]);
        assert!(
            due(&ring(0), None, 90 * DAY_MS, "http://h").is_empty(),
            "no policy, no notices"
        );
    }
}
