//! Filters refused: lexical, syntax, name and type errors with their positions, and limits.

use super::*;

// ---- errors ------------------------------------------------------------------------------

#[test]
fn error_display_includes_the_position() {
    let e = error("usrId eq 'a'");
    assert_eq!(e.position, 1);
    assert!(
        e.to_string().ends_with("(at character 1 of the filter)"),
        "{e}"
    );
}

#[test]
fn lexical_errors() {
    assert_error("userId eq 'abc", 11, &["unterminated string literal"]);
    assert_error("userId eq 'it''s", 11, &["unterminated string literal"]);
    assert_error(
        "userId eq \"a\"",
        11,
        &["unexpected character '\"'", "single quotes"],
    );
    assert_error("userId == 'a'", 8, &["unexpected character '='"]);
    assert_error("length(userId) gt 1.5", 19, &["invalid number '1.5'"]);
    assert_error("length(userId) gt 5x", 19, &["invalid number '5x'"]);
    assert_error(
        "length(userId) gt 99999999999999999999",
        19,
        &["99999999999999999999", "out of range"],
    );
    assert_error("userId eq - 5", 11, &["unexpected character '-'"]);
    // Positions count characters, not bytes.
    assert_error("'é' eq usrId", 8, &["unknown identifier 'usrId'"]);
}

#[test]
fn syntax_errors() {
    assert_error("", 1, &["expected an expression", "end of input"]);
    assert_error("   ", 4, &["expected an expression", "end of input"]);
    assert_error(
        "(userId eq 'a'",
        15,
        &["expected ')'", "found end of input"],
    );
    assert_error(
        "(userId eq 'a' 'b')",
        16,
        &["expected ')'", "string literal 'b'"],
    );
    assert_error("userId eq", 10, &["expected an expression", "end of input"]);
    assert_error(
        "userId eq 'a' and",
        18,
        &["expected an expression", "end of input"],
    );
    assert_error(
        "and userId eq 'a'",
        1,
        &["expected an expression but found 'and'"],
    );
    assert_error(
        "userId eq 'a')",
        14,
        &["expected an operator or end of input", "')'"],
    );
    assert_error(
        "userId eq 'a' 'b'",
        15,
        &["expected an operator", "string literal 'b'"],
    );
    assert_error("()", 2, &["expected an expression but found ')'"]);
    assert_error(
        "userId in ()",
        12,
        &["expected an expression but found ')'"],
    );
    assert_error("userId in ('a' 'b')", 16, &["expected ',' or ')'", "'b'"]);
    assert_error(
        "userId in ('a',)",
        16,
        &["expected an expression but found ')'"],
    );
    assert_error(
        "contains(userId 'a')",
        17,
        &["expected ',' or ')'", "contains"],
    );
    assert_error(
        "contains(userId, 'a'",
        21,
        &["expected ',' or ')'", "end of input"],
    );
    assert_error(
        "tolower eq 'a'",
        9,
        &["expected '(' after the function name 'tolower'"],
    );
}

#[test]
fn unknown_names() {
    assert_error(
        "usrId eq 'a'",
        1,
        &[
            "unknown identifier 'usrId'",
            "userId, connectionId and groups",
        ],
    );
    assert_error("lower(userId) eq 'a'", 1, &["unknown function 'lower'"]);
    assert_error("userId(1) eq 'a'", 1, &["unknown function 'userId'"]);
    assert_error(
        "userId eq 'a' and x in groups",
        19,
        &["unknown identifier 'x'"],
    );
}

#[test]
fn keywords_are_lower_case() {
    assert_error(
        "userId EQ 'a'",
        8,
        &["'EQ'", "keywords are lower-case: 'eq'"],
    );
    assert_error(
        "true AND false",
        6,
        &["'AND'", "keywords are lower-case: 'and'"],
    );
    assert_error(
        "TRUE",
        1,
        &["unknown identifier 'TRUE'", "lower-case: 'true'"],
    );
    assert_error(
        "userId eq NULL",
        11,
        &["unknown identifier 'NULL'", "'null'"],
    );
    assert_error("NOT true", 1, &["unknown identifier 'NOT'"]);
    assert_error(
        "(true Or false)",
        7,
        &["expected ')'", "'Or'", "lower-case: 'or'"],
    );
}

#[test]
fn type_errors() {
    // `not` binds tighter than `gt`, so it is applied to an Int: the service's own example.
    assert_error(
        "not length(userId) gt 5",
        5,
        &["'not length(userId)'", "'Int'", "Bool"],
    );
    assert_error(
        "not userId eq 'a'",
        5,
        &["'not userId'", "'String'", "Bool"],
    );
    assert_error("not 'g' in groups", 5, &["'not'", "'String'"]);
    assert_error("groups eq 'x'", 1, &["'groups' is a collection"]);
    assert_error("'x' eq groups", 8, &["'groups' is a collection"]);
    assert_error(
        "tolower(groups) eq 'x'",
        9,
        &["argument 1 of 'tolower'", "'Collection'"],
    );
    assert_error("userId gt 5", 11, &["'userId gt 5'", "'String'", "'Int'"]);
    assert_error("length(userId) eq '5'", 19, &["'Int'", "'String'"]);
    assert_error("userId eq true", 11, &["'String'", "'Bool'"]);
    assert_error("true gt false", 6, &["Bool values", "'eq' or 'ne'", "'gt'"]);
    assert_error(
        "userId gt null",
        11,
        &["null can only be compared with 'eq' or 'ne'", "'gt'"],
    );
    assert_error("null le userId", 1, &["null", "'le'"]);
    assert_error("userId", 1, &["must be a Bool expression", "'String'"]);
    assert_error("length(groups)", 1, &["must be a Bool expression", "'Int'"]);
    assert_error("groups", 1, &["must be a Bool expression", "'Collection'"]);
    assert_error("null", 1, &["must be a Bool expression", "'Null'"]);
    assert_error("  'a'", 3, &["must be a Bool expression"]);
    assert_error(
        "userId and true",
        1,
        &["operands of 'and' must be Bool", "'userId'", "'String'"],
    );
    assert_error("true or 5", 9, &["operands of 'or' must be Bool", "'Int'"]);
    assert_error(
        "true and null",
        10,
        &["operands of 'and' must be Bool", "'Null'"],
    );
    assert_error("userId in (1, 2)", 12, &["'in' list", "'Int'", "'String'"]);
    assert_error("userId in ('a', groups)", 17, &["'groups' is a collection"]);
    assert_error("userId in connectionId", 11, &["after 'in'", "'String'"]);
    assert_error("5 in groups", 1, &["only a String", "'Int'"]);
    assert_error(
        "null in ('a')",
        1,
        &["null cannot be the left operand of 'in'"],
    );
    assert_error("groups in ('a')", 1, &["'groups' is a collection"]);
    assert_error(
        "contains(userId)",
        1,
        &["'contains' takes 2 arguments, but 1 was given"],
    );
    assert_error(
        "length(userId, 'a') eq 1",
        1,
        &["'length' takes 1 argument, but 2 were given"],
    );
    assert_error(
        "substring('a') eq 'a'",
        1,
        &["'substring' takes 2 or 3 arguments"],
    );
    assert_error(
        "substring('a', 1, 2, 3) eq 'a'",
        1,
        &["2 or 3 arguments, but 4 were given"],
    );
    assert_error(
        "trim() eq ''",
        1,
        &["'trim' takes 1 argument, but 0 were given"],
    );
    assert_error(
        "substring(userId, '1') eq 'a'",
        19,
        &["argument 2 of 'substring'", "'Int'", "'String'"],
    );
    assert_error(
        "startswith(userId, 1)",
        20,
        &["argument 2 of 'startswith'", "'String'", "'Int'"],
    );
    assert_error(
        "length(true) eq 1",
        8,
        &["argument 1 of 'length'", "'Bool'"],
    );
}

#[test]
fn long_snippets_are_cut_short() {
    let long = format!("'{}' eq '{}' and 5", "a".repeat(100), "b".repeat(100));
    let e = error(&long);
    assert!(e.message.contains("operands of 'and'"), "{e}");
    let long_operand = format!("userId gt {}", "1".repeat(18));
    assert!(error(&long_operand).message.contains("'Int'"));
    let e = error(&format!("not concat('{}', 'x')", "a".repeat(100)));
    assert!(e.message.contains("..."), "{e}");
    assert!(e.message.len() < 250, "{e}");
}

// ---- limits ------------------------------------------------------------------------------

#[test]
fn at_most_100_clauses() {
    let clauses = |n: usize| vec!["userId eq 'a'"; n].join(" or ");
    assert!(check(&clauses(100), &conn("c", Some("a"), &[])));
    let text = clauses(101);
    let e = error(&text);
    // The 101st `eq`: 100 clauses of 13 characters and 100 " or " of 4, then "userId ".
    assert_eq!(e.position, 100 * 17 + 8, "{e}");
    assert!(e.message.contains("too many clauses"), "{e}");
    // `in` and Bool functions count too; other functions and logical operators do not.
    let mixed = vec!["'g' in groups and contains(tolower(userId), 'a')"; 50].join(" or ");
    assert!(Filter::parse(&mixed).is_ok());
    let mixed = format!("{mixed} or true");
    assert!(Filter::parse(&mixed).is_ok());
    let mixed = format!("{mixed} or startswith(userId, 'a')");
    assert!(error(&mixed).message.contains("too many clauses"));
    let in_lists = vec!["userId in ('a', 'b', 'c')"; 101].join(" or ");
    assert!(error(&in_lists).message.contains("too many clauses"));
}

#[test]
fn at_most_4096_characters() {
    let pad = |n: usize| format!("true{}", " ".repeat(n - 4));
    assert!(check(&pad(4096), &user1()));
    assert_error(&pad(4097), 4097, &["4097 characters", "at most 4096"]);
    // Characters, not bytes.
    let text = format!("'{}' eq ''", "é".repeat(4000));
    assert!(Filter::parse(&text).is_ok());
}

#[test]
fn at_most_32_levels_of_nesting() {
    let parens = |n: usize| format!("{}true{}", "(".repeat(n), ")".repeat(n));
    assert!(check(&parens(32), &user1()));
    assert_error(&parens(33), 33, &["nests too deeply", "32"]);
    let nots = |n: usize| format!("{}true", "not ".repeat(n));
    assert!(check(&nots(32), &user1()));
    assert_error(&nots(33), 129, &["nests too deeply"]);
    let calls = |n: usize| format!("{}'A'{} eq 'a'", "tolower(".repeat(n), ")".repeat(n));
    assert!(check(&calls(32), &user1()));
    assert_error(&calls(33), 264, &["nests too deeply"]);
    // Thousands of `not`s are refused without exhausting the stack.
    let e = error(&nots(1000));
    assert!(e.message.contains("nests too deeply"));
    let e = error(&format!("{}true", "(".repeat(4000)));
    assert!(e.message.contains("nests too deeply"));
}

#[test]
fn long_flat_chains_do_not_nest() {
    let chain = vec!["true"; 450].join(" and ");
    assert!(chain.chars().count() <= 4096);
    assert!(check(&chain, &user1()));
    let chain = vec!["false"; 400].join(" or ");
    assert!(!check(&chain, &user1()));
}
