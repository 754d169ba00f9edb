//! Roles and permissions of a client connection: the `webpubsub.*` role strings of tokens, the
//! REST permission names, and the wildcard group patterns of the plural role forms.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The two permissions a connection can hold for groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    JoinLeaveGroup,
    SendToGroup,
}

impl Permission {
    /// REST path names are case-insensitive: `sendToGroup`, `joinLeaveGroup`.
    pub fn from_rest_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("joinLeaveGroup") {
            Some(Permission::JoinLeaveGroup)
        } else if name.eq_ignore_ascii_case("sendToGroup") {
            Some(Permission::SendToGroup)
        } else {
            None
        }
    }
}

/// A group pattern of `webpubsub.joinLeaveGroups.<pattern>` / `webpubsub.sendToGroups.<pattern>`:
/// `?` one character except `.`, `*` any characters except `.`, `**` any characters, `\` escapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPattern(Vec<PatternToken>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum PatternToken {
    Literal(char),
    AnyOne,
    AnyInSegment,
    AnyAcrossSegments,
}

/// At most this many `*` characters per pattern, as the service allows.
pub const MAX_PATTERN_STARS: usize = 5;

impl GroupPattern {
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() || text.chars().filter(|&c| c == '*').count() > MAX_PATTERN_STARS {
            return None;
        }
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped @ ('\\' | '*' | '?')) => {
                        tokens.push(PatternToken::Literal(escaped))
                    }
                    _ => return None,
                },
                '?' => tokens.push(PatternToken::AnyOne),
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    tokens.push(PatternToken::AnyAcrossSegments);
                }
                '*' => tokens.push(PatternToken::AnyInSegment),
                other => tokens.push(PatternToken::Literal(other)),
            }
        }
        Some(Self(tokens))
    }

    /// Whether `group` matches, in time linear in the group's length times the pattern's (the
    /// pattern's positions are followed all at once, so no input makes it backtrack).
    pub fn matches(&self, group: &str) -> bool {
        let tokens = &self.0;
        let mut current = vec![false; tokens.len() + 1];
        current[0] = true;
        skip_empty_stars(tokens, &mut current);
        for c in group.chars() {
            let mut next = vec![false; tokens.len() + 1];
            for (i, token) in tokens.iter().enumerate() {
                if !current[i] {
                    continue;
                }
                match token {
                    PatternToken::Literal(l) if *l == c => next[i + 1] = true,
                    PatternToken::Literal(_) => {}
                    PatternToken::AnyOne if c != '.' => next[i + 1] = true,
                    PatternToken::AnyOne => {}
                    // A star takes this character and may take more.
                    PatternToken::AnyInSegment if c != '.' => next[i] = true,
                    PatternToken::AnyInSegment => {}
                    PatternToken::AnyAcrossSegments => next[i] = true,
                }
            }
            skip_empty_stars(tokens, &mut next);
            if !next.contains(&true) {
                return false;
            }
            current = next;
        }
        current[tokens.len()]
    }
}

/// A star may match nothing: where one is reached, so is the position after it.
fn skip_empty_stars(tokens: &[PatternToken], reached: &mut [bool]) {
    for (i, token) in tokens.iter().enumerate() {
        if reached[i]
            && matches!(
                token,
                PatternToken::AnyInSegment | PatternToken::AnyAcrossSegments
            )
        {
            reached[i + 1] = true;
        }
    }
}

/// What one permission allows: every group, named groups, patterns, minus revoked names.
/// Most connections hold no named groups or patterns, so those live behind one optional box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Grant {
    all: bool,
    named: Option<Box<NamedGrants>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct NamedGrants {
    groups: HashSet<String>,
    patterns: Vec<GroupPattern>,
    revoked: HashSet<String>,
}

impl Grant {
    fn allows(&self, group: &str) -> bool {
        match &self.named {
            None => self.all,
            Some(named) => {
                !named.revoked.contains(group)
                    && (self.all
                        || named.groups.contains(group)
                        || named.patterns.iter().any(|p| p.matches(group)))
            }
        }
    }

    fn named_mut(&mut self) -> &mut NamedGrants {
        self.named.get_or_insert_with(Box::default)
    }

    fn nothing_revoked(&self) -> bool {
        self.named.as_ref().is_none_or(|n| n.revoked.is_empty())
    }
}

/// A connection's permissions. Serializable, so a reliable session can move between cluster
/// nodes with what the app server granted or revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    join_leave: Grant,
    send: Grant,
}

const ROLE_PREFIX: &str = "webpubsub.";

impl Permissions {
    /// Builds permissions from role strings; unknown roles are ignored (the service forwards
    /// custom roles to the app server and does nothing with them).
    pub fn from_roles<'a>(roles: impl IntoIterator<Item = &'a str>) -> Self {
        let mut permissions = Self::default();
        for role in roles {
            permissions.add_role(role);
        }
        permissions
    }

    fn add_role(&mut self, role: &str) {
        let Some(rest) = role.strip_prefix(ROLE_PREFIX) else {
            return;
        };
        let (grant, target, plural) = if let Some(t) = rest.strip_prefix("joinLeaveGroups.") {
            (&mut self.join_leave, Some(t), true)
        } else if let Some(t) = rest.strip_prefix("sendToGroups.") {
            (&mut self.send, Some(t), true)
        } else if rest == "joinLeaveGroup" {
            (&mut self.join_leave, None, false)
        } else if rest == "sendToGroup" {
            (&mut self.send, None, false)
        } else if let Some(t) = rest.strip_prefix("joinLeaveGroup.") {
            (&mut self.join_leave, Some(t), false)
        } else if let Some(t) = rest.strip_prefix("sendToGroup.") {
            (&mut self.send, Some(t), false)
        } else {
            return;
        };
        match (target, plural) {
            (None, _) => grant.all = true,
            (Some(group), false) if !group.is_empty() => {
                grant.named_mut().groups.insert(group.to_string());
            }
            (Some(pattern), true) => {
                if let Some(pattern) = GroupPattern::parse(pattern) {
                    grant.named_mut().patterns.push(pattern);
                }
            }
            _ => {}
        }
    }

    fn grant_mut(&mut self, permission: Permission) -> &mut Grant {
        match permission {
            Permission::JoinLeaveGroup => &mut self.join_leave,
            Permission::SendToGroup => &mut self.send,
        }
    }

    fn grant(&self, permission: Permission) -> &Grant {
        match permission {
            Permission::JoinLeaveGroup => &self.join_leave,
            Permission::SendToGroup => &self.send,
        }
    }

    /// Whether the connection may use `permission` on `group`.
    pub fn allows(&self, permission: Permission, group: &str) -> bool {
        self.grant(permission).allows(group)
    }

    /// REST check: with a target, that group; without, every group.
    pub fn has(&self, permission: Permission, target: Option<&str>) -> bool {
        let grant = self.grant(permission);
        match target {
            Some(group) => grant.allows(group),
            None => grant.all && grant.nothing_revoked(),
        }
    }

    /// REST grant: with a target, that group; without, every group.
    pub fn grant_permission(&mut self, permission: Permission, target: Option<&str>) {
        let grant = self.grant_mut(permission);
        match target {
            Some(group) => {
                let named = grant.named_mut();
                named.revoked.remove(group);
                named.groups.insert(group.to_string());
            }
            None => {
                grant.all = true;
                if let Some(named) = &mut grant.named {
                    named.revoked.clear();
                }
            }
        }
    }

    /// REST revoke: with a target, that group (even where a wider role allowed it); without,
    /// everything this permission allowed.
    pub fn revoke_permission(&mut self, permission: Permission, target: Option<&str>) {
        let grant = self.grant_mut(permission);
        match target {
            Some(group) => {
                let named = grant.named_mut();
                named.groups.remove(group);
                named.revoked.insert(group.to_string());
            }
            None => *grant = Grant::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_roles() {
        let p = Permissions::from_roles(["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.g1"]);
        assert!(p.allows(Permission::JoinLeaveGroup, "anything"));
        assert!(p.allows(Permission::SendToGroup, "g1"));
        assert!(!p.allows(Permission::SendToGroup, "g2"));
        let none = Permissions::from_roles(["custom.role", "webpubsub.other"]);
        assert!(!none.allows(Permission::JoinLeaveGroup, "g"));
    }

    #[test]
    fn wildcard_roles() {
        let p = Permissions::from_roles([
            "webpubsub.joinLeaveGroups.chat.*",
            "webpubsub.sendToGroups.room?",
            "webpubsub.sendToGroups.news.**",
        ]);
        assert!(p.allows(Permission::JoinLeaveGroup, "chat.a"));
        assert!(p.allows(Permission::JoinLeaveGroup, "chat."));
        assert!(!p.allows(Permission::JoinLeaveGroup, "chat.a.b"));
        assert!(!p.allows(Permission::JoinLeaveGroup, "chats"));
        assert!(p.allows(Permission::SendToGroup, "room1"));
        assert!(!p.allows(Permission::SendToGroup, "room12"));
        assert!(!p.allows(Permission::SendToGroup, "room."));
        assert!(p.allows(Permission::SendToGroup, "news.a.b.c"));
        assert!(!p.allows(Permission::JoinLeaveGroup, "news.a"));
    }

    #[test]
    fn patterns_that_would_backtrack_answer_at_once() {
        // Five stars against a long name that almost matches: exponential for a backtracking
        // matcher, linear here.
        let p = GroupPattern::parse("*a**a*a*b").unwrap();
        let long = "a".repeat(1024);
        assert!(!p.matches(&long));
        assert!(p.matches(&format!("{long}b")));
        let segments = GroupPattern::parse("*.*.*.*.*").unwrap();
        assert!(!segments.matches(&"a.".repeat(500)));
        assert!(segments.matches("a.b.c.d.e"));
        assert!(!segments.matches("a.b.c.d"));
    }

    #[test]
    fn pattern_rules() {
        let p = GroupPattern::parse(r"a\*b").unwrap();
        assert!(p.matches("a*b"));
        assert!(!p.matches("axb"));
        assert!(GroupPattern::parse(r"bad\x").is_none());
        assert!(GroupPattern::parse("******").is_none());
        assert!(GroupPattern::parse("*.*.*.*.*").is_some());
        assert!(GroupPattern::parse("").is_none());
        assert!(GroupPattern::parse("**").unwrap().matches("a.b"));
        assert!(GroupPattern::parse("*").unwrap().matches(""));
    }

    #[test]
    fn rest_grant_and_revoke() {
        let mut p = Permissions::default();
        assert!(!p.has(Permission::SendToGroup, None));
        p.grant_permission(Permission::SendToGroup, Some("g1"));
        assert!(p.has(Permission::SendToGroup, Some("g1")));
        assert!(!p.has(Permission::SendToGroup, None));
        p.grant_permission(Permission::SendToGroup, None);
        assert!(p.has(Permission::SendToGroup, None));
        p.revoke_permission(Permission::SendToGroup, Some("g2"));
        assert!(!p.allows(Permission::SendToGroup, "g2"));
        assert!(p.allows(Permission::SendToGroup, "g3"));
        assert!(!p.has(Permission::SendToGroup, None));
        p.revoke_permission(Permission::SendToGroup, None);
        assert!(!p.allows(Permission::SendToGroup, "g3"));
        assert_eq!(
            Permission::from_rest_name("SENDTOGROUP"),
            Some(Permission::SendToGroup)
        );
        assert_eq!(Permission::from_rest_name("x"), None);
    }
}
