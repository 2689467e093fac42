//! Bounds on outside input, checked before any recursive parser or walker sees it.
//!
//! Cedar's parser, validator and evaluator, the attribute type parser and every walk
//! over a JSON value recurse once per level of nesting. A request that nests deep enough
//! would exhaust a thread's stack and abort the process, so each of them is first
//! measured here, iteratively and in time linear in its size, and refused with an error
//! naming the bound. Cedar additionally runs on a thread with a known stack
//! ([`with_stack`]), so that what passes the bound is proven to fit (the tests compile
//! and evaluate policies at each bound).

use arbiter_schema::nesting::{Level, ADD, AND, CONDITIONAL as IF, MEMBER, MUL, OR, RELATION, UNARY};
use serde_json::Value;

/// The most bytes one Cedar policy's text may have.
pub const MAX_POLICY_BYTES: usize = 64 << 10;
/// The most bytes a policy set (or a policy file) may have, all policies together.
pub const MAX_POLICY_SET_BYTES: usize = 4 << 20;
/// The most policies a set may hold.
pub const MAX_POLICIES: usize = 10_000;
/// How deep a Cedar expression may nest: brackets, operator chains (`a && b && ...`
/// nests once per operator), attribute chains (`.a.b`), `if`-`then`-`else` and unary
/// operators all count (see [`cedar_text`]).
pub const MAX_EXPRESSION_DEPTH: usize = 128;
/// How deep an attribute type may nest (`set<{a: set<long>}>` is 3).
pub const MAX_TYPE_DEPTH: usize = 32;
/// The most bytes an attribute type's text may have.
pub const MAX_TYPE_BYTES: usize = 4 << 10;
/// How deep a JSON value may nest in an attribute value, a request context or AuthZEN
/// `properties` (`{"a": [1]}` is 3: the object, the array, the number).
pub const MAX_VALUE_DEPTH: usize = 32;
/// The stack of the thread Cedar policies are parsed and validated on.
pub const CEDAR_STACK_BYTES: usize = 64 << 20;
/// The stack a thread needs for Cedar to evaluate every policy these bounds admit, in
/// every build (a debug build spends about 45 KB of stack a level of nested set
/// literals). On less, nothing crashes: Cedar's own stack check fails such a policy,
/// closed (a forbid denies, a permit grants nothing). The server's threads have it.
pub const EVALUATION_STACK_BYTES: usize = 8 << 20;

/// Checks a Cedar policy text (one policy or a file of them) against
/// [`MAX_POLICY_SET_BYTES`] and [`MAX_EXPRESSION_DEPTH`], before Cedar parses it.
///
/// The depth is an upper bound of the syntax tree's, found in one pass without recursion.
/// Within one bracket level, operators are taken by Cedar's precedence classes (`if`;
/// `||`; `&&`; `==` `!=` `<` `<=` `>` `>=` `in` `has` `like` `is`; `+` `-`; `*`; `!`;
/// `.`): a run of n operators of one class nests the tree n deep (`a && b && c` is two
/// `&&` nodes on one path), and an operator of a lower class ends the runs of the higher
/// ones (the operands on either side of `||` are siblings, not nested). So a path
/// through one level meets at most the longest run of each class, and a level's depth is
/// the sum of those, plus the deepest bracket inside it, plus one. `,`, `:` and `;`
/// separate operands, as `then` and `else` do for everything but `if`. String literals
/// and `//` comments are skipped. It does not judge syntax: what it lets through, Cedar
/// parses and reports on.
pub fn cedar_text(text: &str) -> Result<(), String> {
    if text.len() > MAX_POLICY_SET_BYTES {
        return Err(format!(
            "the policy text is {} bytes, more than the limit of {MAX_POLICY_SET_BYTES}",
            text.len()
        ));
    }
    let depth = cedar_depth(text)?;
    if depth > MAX_EXPRESSION_DEPTH {
        return Err(too_deep(&format!("this one {depth}")));
    }
    Ok(())
}

/// [`cedar_text`] for one policy: also [`MAX_POLICY_BYTES`].
pub fn cedar_policy(text: &str) -> Result<(), String> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(format!("the policy is {} bytes, more than the limit of {MAX_POLICY_BYTES}", text.len()));
    }
    cedar_text(text)
}

fn too_deep(detail: &str) -> String {
    format!(
        "the policy nests too deep: an expression may nest at most {MAX_EXPRESSION_DEPTH} levels \
         (brackets, operator chains such as `a && b && ...`, attribute chains, if-then-else); {detail}"
    )
}

/// The bound of [`cedar_text`]; an error as soon as a bracket nesting or one run passes
/// the limit (so the work stays linear and the memory bounded).
fn cedar_depth(text: &str) -> Result<usize, String> {
    let bytes = text.as_bytes();
    let mut levels: Vec<Level> = vec![Level::default()];
    let mut line = 1;
    let mut i = 0;
    // Whether the last token ended an operand: a `[` after one indexes it (`a["b"]`,
    // nesting like `.b`), where elsewhere it opens a set literal.
    let mut after_operand = false;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        let mut class = None;
        // Whitespace of any kind (Cedar's includes form feeds and Unicode spaces), and
        // whatever else is not an operator or a separator, leaves `after_operand` as it was.
        match b {
            b'\n' => line += 1,
            b'"' => {
                // A string literal: skip to its closing quote, over escapes.
                while let Some(&c) = bytes.get(i) {
                    i += 1;
                    match c {
                        b'\\' => i += 1,
                        b'"' => break,
                        b'\n' => line += 1,
                        _ => {}
                    }
                }
                after_operand = true;
            }
            b'/' if bytes.get(i) == Some(&b'/') => {
                // Cedar ends a comment at either line break.
                while bytes.get(i).is_some_and(|&c| c != b'\n' && c != b'\r') {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                if b == b'[' && after_operand {
                    if let Some(level) = levels.last_mut() {
                        if level.operator(MEMBER) > MAX_EXPRESSION_DEPTH {
                            return Err(too_deep(&format!(
                                "a chain of more than {MAX_EXPRESSION_DEPTH} operators at line {line}"
                            )));
                        }
                    }
                }
                if levels.len() > MAX_EXPRESSION_DEPTH {
                    return Err(too_deep(&format!("brackets nest past it at line {line}")));
                }
                levels.push(Level::default());
                after_operand = false;
            }
            b')' | b']' | b'}' => {
                // An unbalanced closing bracket is Cedar's to report.
                if levels.len() > 1 {
                    if let Some(mut closed) = levels.pop() {
                        let depth = closed.depth();
                        if let Some(parent) = levels.last_mut() {
                            parent.nested(depth);
                        }
                    }
                }
                after_operand = true;
            }
            b',' | b';' => {
                after_operand = false;
                if let Some(level) = levels.last_mut() {
                    level.end_runs(0);
                }
            }
            b':' if bytes.get(i) == Some(&b':') => i += 1, // a path (`Action::"view"`)
            b':' => {
                after_operand = false;
                if let Some(level) = levels.last_mut() {
                    level.end_runs(0);
                }
            }
            b'|' | b'&' => {
                if bytes.get(i) == Some(&b) {
                    i += 1;
                }
                class = Some(if b == b'|' { OR } else { AND });
            }
            b'=' | b'<' | b'>' => {
                if bytes.get(i) == Some(&b'=') {
                    i += 1;
                }
                class = Some(RELATION);
            }
            b'!' if bytes.get(i) == Some(&b'=') => {
                i += 1;
                class = Some(RELATION);
            }
            b'!' => class = Some(UNARY),
            b'+' | b'-' => class = Some(ADD),
            b'*' => class = Some(MUL),
            b'.' => class = Some(MEMBER),
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i - 1;
                while bytes.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                    i += 1;
                }
                match bytes.get(start..i).unwrap_or_default() {
                    b"if" => class = Some(IF),
                    b"then" | b"else" => {
                        after_operand = false;
                        if let Some(level) = levels.last_mut() {
                            level.end_runs(IF + 1);
                        }
                    }
                    b"in" | b"has" | b"like" | b"is" => class = Some(RELATION),
                    // A policy's conditions are joined like `&&`, one level each.
                    b"when" | b"unless" => class = Some(AND),
                    _ => after_operand = true,
                }
            }
            _ => {}
        }
        if class.is_some() {
            after_operand = false;
        }
        if let (Some(class), Some(level)) = (class, levels.last_mut()) {
            if level.operator(class) > MAX_EXPRESSION_DEPTH {
                return Err(too_deep(&format!(
                    "a chain of more than {MAX_EXPRESSION_DEPTH} operators at line {line}"
                )));
            }
        }
    }
    // Unclosed brackets (Cedar reports them) still count.
    let mut depth = 0;
    while let Some(mut level) = levels.pop() {
        depth = level.depth().max(depth);
        if let Some(parent) = levels.last_mut() {
            parent.nested(depth);
        }
    }
    Ok(depth)
}

/// The nesting depth of a JSON value, counted without recursion; stops counting past
/// `limit` (returns `limit + 1`).
pub fn json_depth(value: &Value, limit: usize) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((v, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if depth > limit {
            return limit + 1;
        }
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            Value::Object(o) => stack.extend(o.values().map(|i| (i, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// Refuses a JSON value nested deeper than [`MAX_VALUE_DEPTH`]; `what` names it.
pub fn json_value(what: &str, value: &Value) -> Result<(), String> {
    if json_depth(value, MAX_VALUE_DEPTH) > MAX_VALUE_DEPTH {
        return Err(format!("{what} nests deeper than {MAX_VALUE_DEPTH} levels"));
    }
    Ok(())
}

/// [`json_value`] for each value of a JSON object (its keys at depth 1).
pub fn json_fields<'a>(what: &str, fields: impl IntoIterator<Item = (&'a String, &'a Value)>) -> Result<(), String> {
    for (k, v) in fields {
        if json_depth(v, MAX_VALUE_DEPTH - 1) > MAX_VALUE_DEPTH - 1 {
            return Err(format!("{what}: `{k}` nests deeper than {MAX_VALUE_DEPTH} levels"));
        }
    }
    Ok(())
}

/// Runs `f` on a thread of its own with a [`CEDAR_STACK_BYTES`] stack and waits for it:
/// Cedar's parser and validator recurse over a policy's syntax tree, and the caller's
/// thread (a runtime worker, 2 MiB) may have less stack than a policy at the bounds
/// needs. Only what is written rarely goes through it (policy sets, schema changes).
pub fn with_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("arbiter-cedar".into())
            .stack_size(CEDAR_STACK_BYTES)
            .spawn_scoped(scope, f)
            .map_err(|e| format!("could not start a thread to compile policies: {e}"))?;
        handle.join().map_err(|_| "compiling the policies failed unexpectedly".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(text: &str) -> usize {
        cedar_depth(text).unwrap_or(usize::MAX)
    }

    #[test]
    fn depth_bounds_the_syntax_tree() {
        assert_eq!(depth(""), 1);
        assert_eq!(depth("permit(principal, action, resource);"), 2);
        // A run of one class nests once per operator; separators restart the runs. (The
        // `when` joins the condition to the scope: one more level.)
        assert_eq!(depth("permit(principal, action, resource) when { a && b && c };"), 5);
        assert_eq!(depth("[1, 2, 3, 4, 5, 6]"), 2);
        assert_eq!(depth("((((1))))"), 5);
        assert_eq!(depth("a.b.c.d"), 4);
        // Indexing nests like `.`; a `[` elsewhere opens a set literal.
        assert_eq!(depth(r#"a["b"]["c"] ["d"]"#), 3 + 1 + 1);
        assert_eq!(depth("[1] == [2]"), 1 + 1 + 1);
        // Any whitespace between an operand and its index, and a comment ended by `\r`.
        assert_eq!(depth("a\x0c[\"b\"]\u{a0}[\"c\"]"), 2 + 1 + 1);
        assert_eq!(depth("// x\r((1))"), 3);
        // Conditions join like `&&`.
        assert_eq!(depth("permit(principal, action, resource) when { a } when { b } unless { c };"), 3 + 1 + 1);
        assert!(cedar_text(&format!("principal{}", r#"[""]"#.repeat(100_000))).unwrap_err().contains("chain of more than"));
        // Looser operators end the runs of tighter ones: the operands of `||` are
        // siblings. `a.b == "x" || ...` is one `||` run, one `==`, one `.`.
        let alternatives = vec!["resource.id == \"x\""; 100].join(" || ");
        assert_eq!(depth(&alternatives), 99 + 1 + 1 + 1);
        assert_eq!(depth("a.b.c || d && e.f"), 1 + 1 + 2 + 1);
        assert_eq!(depth("if a then b else c"), 2);
        assert_eq!(depth("if a then if b then c else d else e"), 3);
        assert_eq!(depth("if a then b else if c then d else e"), 3);
        // Path separators, strings and comments are not operators.
        assert_eq!(depth(r#"Action::"view" // a && b && c"#), 1);
        assert_eq!(depth(r#""(((( && ))))\" &&""#), 1);
    }

    #[test]
    fn deep_and_long_texts_are_refused_early() {
        let parens = format!("{}1{}", "(".repeat(50_000), ")".repeat(50_000));
        assert!(cedar_text(&parens).unwrap_err().contains("nests too deep"));
        let chain = vec!["a"; 100_000].join(" && ");
        assert!(cedar_text(&chain).unwrap_err().contains("chain of more than"));
        let at_limit = vec!["a"; MAX_EXPRESSION_DEPTH - 1].join(" && ");
        assert_eq!(cedar_text(&at_limit), Ok(()));
        assert!(cedar_text(&"x".repeat(MAX_POLICY_SET_BYTES + 1)).unwrap_err().contains("bytes"));
    }

    #[test]
    fn json_depth_is_counted_without_recursion() {
        let mut v = Value::from(1);
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        assert_eq!(json_depth(&v, 10), 11);
        assert!(json_value("the context", &v).unwrap_err().contains("deeper than"));
        // Dropping a value this deep recurses too: take it apart level by level.
        while let Value::Array(mut items) = v {
            v = items.pop().unwrap_or(Value::Null);
        }
    }
}
