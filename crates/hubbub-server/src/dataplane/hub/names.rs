//! A small set of names: a connection's groups, a user's connections.

use std::sync::Arc;

/// Names kept sorted in one vector. Most sets here hold one name (a connection in one group, a
/// user with one connection), where a hash set costs a table of four slots and its control
/// bytes. Look-ups are binary searches; inserts and removals move at most the hub's limit of
/// names (1,000 by default), rarely more than a few.
#[derive(Debug, Default)]
pub(super) struct NameSet(Vec<Arc<str>>);

impl NameSet {
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|held| (**held).cmp(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Adds `name`; false if it was there already.
    pub fn insert(&mut self, name: Arc<str>) -> bool {
        let Err(at) = self.position(&name) else {
            return false;
        };
        if self.0.capacity() == 0 {
            // The first name gets a slot of its own (a vector would reserve four).
            self.0.reserve_exact(1);
        }
        self.0.insert(at, name);
        true
    }

    /// Removes `name`; false if it was not there.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.position(name) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_each_name_once_and_finds_it() {
        let mut set = NameSet::default();
        for name in ["b", "a", "c", "a", "b"] {
            set.insert(name.into());
        }
        assert_eq!(set.len(), 3);
        let names: Vec<&str> = set.iter().map(|n| &**n).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(set.contains("b") && !set.contains("d"));
        assert!(!set.insert("c".into()));
        assert!(set.remove("b"));
        assert!(!set.remove("b"));
        assert!(!set.contains("b") && set.contains("a") && set.contains("c"));
        assert!(set.remove("a") && set.remove("c") && set.is_empty());
    }

    #[test]
    fn one_name_takes_one_slot() {
        let mut set = NameSet::default();
        set.insert("only".into());
        assert_eq!(set.0.capacity(), 1);
        set.insert("second".into());
        assert!(set.0.capacity() >= 2);
    }
}
