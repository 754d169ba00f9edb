//! Tests of the filter language: every operator and function, precedence, nulls, evaluation
//! cost; errors with positions and limits in [`errors`].

use super::*;

mod errors;

struct Conn {
    id: &'static str,
    user: Option<&'static str>,
    groups: Vec<&'static str>,
}

impl FilterSubject for Conn {
    fn connection_id(&self) -> &str {
        self.id
    }
    fn user_id(&self) -> Option<&str> {
        self.user
    }
    fn has_group(&self, group: &str) -> bool {
        self.groups.contains(&group)
    }
    fn group_count(&self) -> usize {
        self.groups.len()
    }
}

fn conn(id: &'static str, user: Option<&'static str>, groups: &[&'static str]) -> Conn {
    Conn {
        id,
        user,
        groups: groups.to_vec(),
    }
}

/// user1 in group1 and group2.
fn user1() -> Conn {
    conn("conn-a", Some("user1"), &["group1", "group2"])
}

fn anonymous() -> Conn {
    conn("anon-x", None, &["group1"])
}

fn check(filter: &str, subject: &Conn) -> bool {
    match Filter::parse(filter) {
        Ok(f) => f.matches(subject),
        Err(e) => panic!("{filter:?} did not parse: {e}"),
    }
}

fn error(filter: &str) -> FilterError {
    match Filter::parse(filter) {
        Ok(f) => panic!("{filter:?} parsed, but should not have: {f:?}"),
        Err(e) => e,
    }
}

/// Asserts the error's position and that its message contains every fragment.
fn assert_error(filter: &str, position: usize, fragments: &[&str]) {
    let e = error(filter);
    assert_eq!(e.position, position, "position for {filter:?}: {e}");
    for fragment in fragments {
        assert!(
            e.message.contains(fragment),
            "message for {filter:?} lacks {fragment:?}: {}",
            e.message
        );
    }
}

// ---- the examples of the brief ----------------------------------------------------------

#[test]
fn documented_examples() {
    let u = user1();
    let other = conn("123", Some("user2"), &["group3"]);
    let cases: &[(&str, bool, bool)] = &[
        ("'group1' in groups or 'group2' in groups", true, false),
        (
            "userId in ('user1','user2') and 'group1' in groups",
            true,
            false,
        ),
        ("userId eq 'user1' and connectionId ne '123'", true, false),
        (
            "userId eq 'user1' and (not ('group1' in groups))",
            false,
            false,
        ),
        ("length(groups) ge 2", true, false),
        (
            "startswith(userId, 'use') and not endswith(connectionId, 'x')",
            true,
            true,
        ),
        ("indexof(tolower(userId), 'user') eq 0", true, true),
        ("substring(userId, 1, 2) eq 'se'", true, true),
        ("concat(userId, '-x') eq 'user1-x'", true, false),
        ("userId eq null", false, false),
        ("true", true, true),
        (
            "(userId ne null) and contains(trim('  ab  '), 'a')",
            true,
            true,
        ),
    ];
    for &(filter, for_user1, for_other) in cases {
        assert_eq!(check(filter, &u), for_user1, "{filter} for user1");
        assert_eq!(check(filter, &other), for_other, "{filter} for user2");
    }
    assert!(check(
        "userId eq 'user''1'",
        &conn("c", Some("user'1"), &[])
    ));
    assert!(!check("userId eq 'user''1'", &u));
    assert!(check("userId eq null", &anonymous()));
    assert!(check(
        "startswith(userId, 'adm') and not endswith(connectionId, 'x')",
        &conn("c1", Some("admin"), &[])
    ));
    assert!(!check(
        "startswith(userId, 'adm') and not endswith(connectionId, 'x')",
        &conn("c1x", Some("admin"), &[])
    ));
    assert!(check(
        "indexof(tolower(userId), 'bob') eq 0",
        &conn("c", Some("BOBBY"), &[])
    ));
    assert!(check(
        "concat(userId, '-x') eq 'u1-x'",
        &conn("c", Some("u1"), &[])
    ));
}

// ---- operators ---------------------------------------------------------------------------

#[test]
fn string_comparisons_are_ordinal_and_case_sensitive() {
    let u = user1();
    assert!(check("userId eq 'user1'", &u));
    assert!(!check("userId eq 'USER1'", &u));
    assert!(check("userId ne 'USER1'", &u));
    assert!(!check("userId ne 'user1'", &u));
    assert!(check("userId gt 'user0'", &u));
    assert!(!check("userId gt 'user1'", &u));
    assert!(check("userId ge 'user1'", &u));
    assert!(check("userId lt 'user2'", &u));
    assert!(!check("userId lt 'user1'", &u));
    assert!(check("userId le 'user1'", &u));
    assert!(!check("userId le 'user0'", &u));
    // Ordinal: upper-case letters sort before lower-case ones; a prefix sorts first.
    assert!(check("'B' lt 'a'", &u));
    assert!(check("'ab' lt 'abc'", &u));
    assert!(check("'z' lt 'é'", &u)); // U+007A before U+00E9
    assert!(check("connectionId eq 'conn-a'", &u));
}

#[test]
fn integer_comparisons_are_numeric() {
    let u = user1();
    assert!(check("length(userId) eq 5", &u));
    assert!(check("length(userId) ne 4", &u));
    assert!(check("length(userId) gt 4", &u));
    assert!(!check("length(userId) gt 5", &u));
    assert!(check("length(userId) ge 5", &u));
    assert!(check("length(userId) lt 10", &u));
    assert!(check("length(userId) le 5", &u));
    assert!(!check("length(userId) le 4", &u));
    assert!(check("9 lt 10", &u)); // not "9" > "10" as strings
    assert!(check("indexof(userId, 'zz') eq -1", &u));
    assert!(check("+3 eq 3 and -0 eq 0", &u));
    assert!(check("-9223372036854775808 lt 9223372036854775807", &u));
}

#[test]
fn bool_values_compare_with_eq_and_ne() {
    let u = user1();
    assert!(check("(userId eq 'user1') eq true", &u));
    assert!(check("contains(userId, 'x') eq false", &u));
    assert!(check("true ne false", &u));
    assert!(!check("false", &u));
    assert!(check("not false", &u));
}

#[test]
fn logical_operators() {
    let u = user1();
    assert!(check("true and true", &u));
    assert!(!check("true and false", &u));
    assert!(!check("false and true", &u));
    assert!(check("false or true", &u));
    assert!(!check("false or false", &u));
    assert!(!check("not true", &u));
    assert!(check("not not true", &u));
    assert!(check("true and true and true and true", &u));
    assert!(!check("true and true and false and true", &u));
    assert!(check("false or false or false or true", &u));
}

#[test]
fn in_with_lists_and_collections() {
    let u = user1();
    assert!(check("userId in ('user1')", &u));
    assert!(check("userId in ('a', 'b', 'user1')", &u));
    assert!(!check("userId in ('a', 'b')", &u));
    assert!(check("length(userId) in (1, 5)", &u));
    assert!(check("userId in (connectionId, concat('user', '1'))", &u));
    assert!(check("true in (userId eq 'user1')", &u));
    assert!(check("'group2' in groups", &u));
    assert!(!check("'group3' in groups", &u));
    assert!(!check("'GROUP1' in groups", &u));
    assert!(check("'group1' in (groups)", &u));
    assert!(check("concat('group', '1') in groups", &u));
    assert!(check("not ('group3' in groups)", &u));
    assert!(!check("userId in groups", &u));
    assert!(check("userId in groups", &conn("c", Some("g"), &["g"])));
}

#[test]
fn precedence_and_parentheses() {
    let x = conn("c", Some("x"), &[]);
    // `a or b and c` is `a or (b and c)`: true for user x (a true, b and c false).
    assert!(check(
        "userId eq 'x' or userId eq 'y' and connectionId eq 'nope'",
        &x
    ));
    assert!(!check(
        "(userId eq 'x' or userId eq 'y') and connectionId eq 'nope'",
        &x
    ));
    // `a and b or c` is `(a and b) or c`.
    assert!(check("userId eq 'nope' and false or userId eq 'x'", &x));
    assert!(!check("userId eq 'nope' and (false or userId eq 'x')", &x));
    // `not` applies to the next operand only.
    assert!(check("not false and true", &x));
    assert!(!check("not (false or true)", &x));
    assert!(check("not false or false", &x));
    // Comparisons bind tighter than `and`.
    assert!(check("userId eq 'x' and connectionId eq 'c'", &x));
    assert!(check("((((userId eq 'x'))))", &x));
}

// ---- functions ---------------------------------------------------------------------------

#[test]
fn every_function() {
    let u = conn("Conn-Ä", Some("  Mixed Case  "), &["a", "b", "c"]);
    assert!(check("tolower(connectionId) eq 'conn-ä'", &u));
    assert!(check("toupper(connectionId) eq 'CONN-Ä'", &u));
    assert!(check(
        "tolower('ABC') eq 'abc' and toupper('abc') eq 'ABC'",
        &u
    ));
    assert!(check("trim(userId) eq 'Mixed Case'", &u));
    assert!(check("trim('   ') eq ''", &u));
    assert!(check("trim('\tx\n') eq 'x'", &u));
    assert!(check("substring('hello', 1) eq 'ello'", &u));
    assert!(check("substring('hello', 1, 3) eq 'ell'", &u));
    assert!(check("substring('hello', 0, 0) eq ''", &u));
    assert!(check("substring('hello', 3, 99) eq 'lo'", &u));
    assert!(check("substring('hello', 99) eq ''", &u));
    assert!(check("substring('hello', -2) eq 'hello'", &u));
    assert!(check("substring('hello', 1, -1) eq ''", &u));
    assert!(check("substring('héllo', 1, 2) eq 'él'", &u));
    assert!(check("substring(connectionId, 5) eq 'Ä'", &u));
    assert!(check("concat('a', 'b') eq 'ab'", &u));
    assert!(check(
        "concat('', 'b') eq 'b' and concat('a', '') eq 'a'",
        &u
    ));
    assert!(check("concat(concat('a', 'b'), 'c') eq 'abc'", &u));
    assert!(check("contains(userId, 'ed C')", &u));
    assert!(!check("contains(userId, 'ed c')", &u));
    assert!(check("contains(userId, '')", &u));
    assert!(check("startswith(connectionId, 'Conn')", &u));
    assert!(!check("startswith(connectionId, 'conn')", &u));
    assert!(check("endswith(connectionId, '-Ä')", &u));
    assert!(!check("endswith(connectionId, 'Conn')", &u));
    assert!(check("indexof('héllo', 'l') eq 2", &u)); // characters, not bytes
    assert!(check("indexof('abc', 'a') eq 0", &u));
    assert!(check("indexof('abc', 'x') eq -1", &u));
    assert!(check("indexof('abc', '') eq 0", &u));
    assert!(check("length('héllo') eq 5", &u));
    assert!(check("length('') eq 0", &u));
    assert!(check("length(groups) eq 3", &u));
    assert!(check("length(groups) eq 0", &conn("c", None, &[])));
    assert!(check("length(trim(userId)) eq 10", &u));
}

#[test]
fn function_and_identifier_names_are_case_insensitive() {
    let u = user1();
    assert!(check("USERID eq 'user1'", &u));
    assert!(check("UserId eq 'user1' and ConnectionID eq 'conn-a'", &u));
    assert!(check("'group1' in GROUPS and LENGTH(Groups) eq 2", &u));
    assert!(check("ToLower('AB') eq 'ab' and TOUPPER('ab') eq 'AB'", &u));
    assert!(check(
        "StartsWith(userId, 'us') and ENDSWITH(userId, '1')",
        &u
    ));
    assert!(check(
        "Contains(userId, 'ser') and IndexOf(userId, 's') eq 1",
        &u
    ));
    assert!(check(
        "Trim(' a ') eq 'a' and SubString('ab', 1) eq 'b'",
        &u
    ));
    assert!(check("Concat('a', 'b') eq 'ab'", &u));
}

// ---- literals and quoting ----------------------------------------------------------------

#[test]
fn string_literals() {
    let u = conn("c", Some("it's"), &[]);
    assert!(check("userId eq 'it''s'", &u));
    assert!(check("'''' eq concat('''', '')", &u));
    assert!(check("length('''') eq 1", &u));
    assert!(check("length('''''') eq 2", &u));
    assert!(check("'' eq ''", &u));
    assert!(check("'a b  c' eq concat('a b ', ' c')", &u));
    assert!(check("'日本' eq '日本' and length('日本') eq 2", &u));
    assert!(check("'(and or not)' eq '(and or not)'", &u));
    assert!(check("'userId' ne userId", &u));
}

#[test]
fn whitespace_is_free() {
    let u = user1();
    assert!(check("  userId\teq\n'user1'  ", &u));
    assert!(check("userId eq'user1'", &u));
    assert!(check("(userId eq 'user1')and('group1' in groups)", &u));
    assert!(check("tolower( userId )eq 'user1'", &u));
}

// ---- nulls -------------------------------------------------------------------------------

#[test]
fn null_user_ids() {
    let a = anonymous();
    assert!(check("userId eq null", &a));
    assert!(check("null eq userId", &a));
    assert!(!check("userId ne null", &a));
    assert!(!check("userId eq 'x'", &a));
    assert!(check("userId ne 'x'", &a));
    assert!(!check("userId gt 'a'", &a));
    assert!(!check("userId le 'z'", &a));
    assert!(!check("userId in ('a', 'b')", &a));
    assert!(check("userId in ('a', null)", &a));
    assert!(!check("userId in groups", &a));
    assert!(check("null eq null", &a));
    // Functions of null are null, comparisons with null are definite.
    assert!(!check("tolower(userId) eq 'x'", &a));
    assert!(check("tolower(userId) eq null", &a));
    assert!(check("length(userId) eq null", &a));
    assert!(!check("length(userId) gt 5", &a));
    assert!(!check("length(userId) le 5", &a));
    assert!(check("concat(userId, 'x') eq null", &a));
    assert!(check("substring(userId, 1) eq null", &a));
    assert!(check(
        "trim(userId) eq null and toupper(userId) eq null",
        &a
    ));
    assert!(check("indexof(userId, 'a') eq null", &a));
    assert!(check("contains(userId, 'a') eq null", &a));
    // A null Bool neither matches nor, negated, matches.
    assert!(!check("contains(userId, 'a')", &a));
    assert!(!check("not contains(userId, 'a')", &a));
    assert!(!check(
        "startswith(userId, 'a') or endswith(userId, 'a')",
        &a
    ));
    assert!(check("startswith(userId, 'a') or true", &a));
    assert!(!check("startswith(userId, 'a') and true", &a));
    assert!(!check("startswith(userId, 'a') and false", &a));
    assert!(check("not (startswith(userId, 'a') and false)", &a));
    // The null literal as a function argument.
    assert!(check("tolower(null) eq null and length(null) eq null", &a));
    assert!(check("substring('abc', null) eq null", &a));
    // Anonymous connections still have everything else.
    assert!(check(
        "'group1' in groups and startswith(connectionId, 'anon')",
        &a
    ));
}

// ---- evaluation cost ---------------------------------------------------------------------

#[test]
fn simple_values_borrow_instead_of_allocating() {
    let u = conn("Conn", Some("user1"), &["g"]);
    let borrowed = |text: &str| {
        let tokens = lex(text).expect("lexes");
        let mut parser = Parser {
            text,
            tokens: tokens.0,
            end: tokens.1,
            next: 0,
            depth: 0,
            clauses: 0,
        };
        let typed = parser.parse_or().expect("parses");
        let Node::Scalar(expr) = typed.node else {
            panic!("not a scalar")
        };
        matches!(expr.eval(&u), Value::Str(Cow::Borrowed(_)))
    };
    assert!(borrowed("userId"));
    assert!(borrowed("connectionId"));
    assert!(borrowed("'literal'"));
    assert!(borrowed("tolower(userId)")); // already lower-case
    assert!(borrowed("toupper('ABC')")); // already upper-case
    assert!(borrowed("trim(userId)"));
    assert!(borrowed("substring(userId, 1, 2)"));
    assert!(borrowed("concat(userId, '')"));
    assert!(!borrowed("tolower(connectionId)"));
    assert!(!borrowed("concat(userId, 'x')"));
}

#[test]
fn filters_are_shareable() {
    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync_clone::<Filter>();
    assert_send_sync_clone::<FilterError>();
    let f = Filter::parse("'group1' in groups").expect("parses");
    let g = f.clone();
    assert!(g.matches(&user1()));
    assert!(f.matches(&anonymous()));
    assert!(!f.matches(&conn("c", None, &[])));
}
