//! The names clients and app servers give: hubs, groups, user and connection ids. Checked once,
//! where they enter (REST paths, tokens, client frames), with an Azure-shaped error.

use crate::error::ApiError;

/// Hub names: a letter, then up to 127 letters, digits or `` _`,.[] ``.
pub fn validate_hub(hub: &str) -> Result<(), ApiError> {
    let mut chars = hub.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_`,.[]".contains(c));
    if first_ok && rest_ok && hub.len() <= 128 {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidHubName",
            "the hub name must start with a letter and have at most 128 letters, digits or _`,.[] characters",
        ))
    }
}

/// Group names: 1 to 1024 characters, not only whitespace.
pub fn validate_group(group: &str) -> Result<(), ApiError> {
    let len = group.chars().count();
    if (1..=1024).contains(&len) && !group.trim().is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidGroupName",
            "the group name must have 1 to 1024 characters and not be only whitespace",
        ))
    }
}

/// User and connection ids in paths: at least one character, at most 1024.
pub fn validate_id(kind: &'static str, id: &str) -> Result<(), ApiError> {
    if (1..=1024).contains(&id.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidId",
            format!("the {kind} must have 1 to 1024 characters"),
        ))
    }
}

/// Longest user event name.
pub const MAX_EVENT_NAME_CHARS: usize = 128;

/// User event names (the `event` of `sendEvent` and `invoke`): 1 to 128 visible ASCII characters
/// (letters, digits, punctuation), and not `.` or `..`. They become a CloudEvents header
/// (`ce-type`, `ce-eventName`) and, through `{event}`, a segment of the handler's URL, so they
/// can neither hold what a header cannot nor change the URL's path.
pub fn validate_event(event: &str) -> Result<(), String> {
    let visible = event.bytes().all(|b| b.is_ascii_graphic());
    if (1..=MAX_EVENT_NAME_CHARS).contains(&event.len()) && visible && event != "." && event != ".."
    {
        Ok(())
    } else {
        Err(format!(
            "the event name must have 1 to {MAX_EVENT_NAME_CHARS} visible ASCII characters (letters, digits, punctuation) and not be '.' or '..'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names() {
        for ok in ["a", "Chat_Hub1", "h`,.[]", &format!("a{}", "b".repeat(127))] {
            assert!(validate_hub(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1hub", "my-hub", "_x", &format!("a{}", "b".repeat(128))] {
            assert!(validate_hub(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_names() {
        assert!(validate_group("g 1/x").is_ok());
        assert!(validate_group(&"g".repeat(1024)).is_ok());
        assert!(validate_group("").is_err());
        assert!(validate_group("   ").is_err());
        assert!(validate_group(&"g".repeat(1025)).is_err());
    }

    #[test]
    fn event_names() {
        for ok in ["message", "my-event_2", "a.b", "x/y?z#", &"e".repeat(128)] {
            assert!(validate_event(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "with space",
            "\u{1}x",
            "caf\u{e9}",
            &"e".repeat(129),
        ] {
            assert!(validate_event(bad).is_err(), "{bad:?}");
        }
    }
}
