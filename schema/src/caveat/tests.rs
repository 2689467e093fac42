use super::*;
use serde_json::json;

fn program(params: &[(&str, &str)], expr: &str) -> Result<CaveatProgram, CompileError> {
    let params: Vec<(String, String)> = params.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    CaveatProgram::compile(&params, expr)
}

fn ctx(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

/// Evaluates with a relationship context and a request context; missing names as a
/// sorted list.
fn eval(p: &CaveatProgram, rel: serde_json::Value, req: serde_json::Value) -> Result<Result<bool, Vec<String>>, String> {
    let rel = p.bind_strict(&ctx(rel)).map_err(|e| e.0)?;
    let req = p.bind(&ctx(req)).map_err(|e| e.0)?;
    match p.evaluate(&rel, &req).map_err(|e| e.0)? {
        Outcome::True => Ok(Ok(true)),
        Outcome::False => Ok(Ok(false)),
        Outcome::Missing(m) => {
            let mut names: Vec<String> = p.missing_names(m).map(|n| n.to_string()).collect();
            names.sort();
            Ok(Err(names))
        }
    }
}

#[test]
fn a_missing_parameter_is_unknown_and_named() {
    let p = program(&[("a", "int"), ("b", "int")], "a == 1 && b == 2").unwrap();
    assert_eq!(eval(&p, json!({}), json!({})), Ok(Err(vec!["a".into(), "b".into()])));
    assert_eq!(eval(&p, json!({"a": 1}), json!({})), Ok(Err(vec!["b".into()])));
    assert_eq!(eval(&p, json!({"a": 2}), json!({})), Ok(Ok(false)), "false && unknown is false");
    assert_eq!(eval(&p, json!({"a": 1}), json!({"b": 2})), Ok(Ok(true)));
}

#[test]
fn or_absorbs_an_unknown_with_true_and_not_keeps_it() {
    let p = program(&[("a", "int"), ("b", "int")], "a == 1 || b == 2").unwrap();
    assert_eq!(eval(&p, json!({}), json!({"b": 2})), Ok(Ok(true)), "unknown || true is true");
    assert_eq!(eval(&p, json!({}), json!({"b": 3})), Ok(Err(vec!["a".into()])));
    let n = program(&[("a", "bool")], "!a").unwrap();
    assert_eq!(eval(&n, json!({}), json!({})), Ok(Err(vec!["a".into()])));
    assert_eq!(eval(&n, json!({}), json!({"a": true})), Ok(Ok(false)));
}

#[test]
fn the_relationships_value_wins_over_the_requests() {
    let p = program(&[("limit", "int"), ("count", "int")], "count < limit").unwrap();
    assert_eq!(eval(&p, json!({"limit": 2}), json!({"limit": 100, "count": 3})), Ok(Ok(false)));
    // Keys of other caveats in a request are ignored; in a relationship they are not.
    assert_eq!(eval(&p, json!({"limit": 5}), json!({"count": 3, "other": "x"})), Ok(Ok(true)));
    assert!(eval(&p, json!({"other": 1}), json!({})).unwrap_err().contains("unknown parameter `other`"));
}

#[test]
fn an_error_is_absorbed_by_the_side_that_decides() {
    let p = program(&[("m", "map<any>")], "m.foo == 42 && m.bar < 56").unwrap();
    assert_eq!(eval(&p, json!({}), json!({"m": {"foo": 41}})), Ok(Ok(false)));
    assert!(eval(&p, json!({}), json!({"m": {"foo": 42}})).is_err(), "a missing key that decides is an error");
    assert_eq!(eval(&p, json!({}), json!({"m": {"foo": 42, "bar": -2}})), Ok(Ok(true)));
}

#[test]
fn spicedbs_functions_work() {
    let p = program(&[("user_ip", "ipaddress"), ("cidr", "string")], "user_ip.in_cidr(cidr)").unwrap();
    assert_eq!(eval(&p, json!({"cidr": "10.0.0.0/8"}), json!({"user_ip": "10.2.3.4"})), Ok(Ok(true)));
    assert_eq!(eval(&p, json!({"cidr": "10.1.0.0/16"}), json!({"user_ip": "10.2.3.4"})), Ok(Ok(false)));
    let p = program(&[("ip", "string")], "ipaddress(ip) == ipaddress('::1')").unwrap();
    assert_eq!(eval(&p, json!({}), json!({"ip": "::1"})), Ok(Ok(true)));
    let p = program(&[("a", "map<any>"), ("b", "map<any>")], "a.isSubtreeOf(b)").unwrap();
    assert_eq!(eval(&p, json!({"a": {"x": {"y": 1}}}), json!({"b": {"x": {"y": 1, "z": 2}, "w": 3}})), Ok(Ok(true)));
    assert_eq!(eval(&p, json!({"a": {"x": {"y": 2}}}), json!({"b": {"x": {"y": 1}}})), Ok(Ok(false)));
    let p = program(&[("l", "list<int>")], "l.all(i, i >= 42)").unwrap();
    assert_eq!(eval(&p, json!({"l": [42, 43]}), json!({})), Ok(Ok(true)));
    assert_eq!(eval(&p, json!({}), json!({"l": [12]})), Ok(Ok(false)));
    let p = program(
        &[("now", "timestamp"), ("start", "timestamp"), ("window", "duration")],
        "now >= start && now < start + window && now.getHours('Europe/Berlin') >= 9",
    )
    .unwrap();
    let rel = json!({"start": "2026-01-05T00:00:00Z", "window": "168h"});
    assert_eq!(eval(&p, rel.clone(), json!({"now": "2026-01-06T10:00:00Z"})), Ok(Ok(true)));
    assert_eq!(eval(&p, rel.clone(), json!({"now": "2026-01-06T06:00:00Z"})), Ok(Ok(false)));
    assert_eq!(eval(&p, rel, json!({"now": "2026-01-20T10:00:00Z"})), Ok(Ok(false)));
}

#[test]
fn a_mistyped_context_value_is_refused_by_name() {
    let p = program(&[("n", "int")], "n > 1").unwrap();
    let e = eval(&p, json!({"n": "42e"}), json!({})).unwrap_err();
    assert!(e.contains("parameter `n` (int)") && e.contains("expected an int"), "{e}");
    let e = eval(&p, json!({}), json!({"n": [1]})).unwrap_err();
    assert!(e.contains("parameter `n`"), "{e}");
}

#[test]
fn type_errors_are_found_at_compile() {
    let err = |params: &[(&str, &str)], e: &str| program(params, e).unwrap_err();
    let e = err(&[("a", "int")], "a == b");
    assert!(e.message.contains("undeclared reference to `b`"), "{e:?}");
    assert_eq!(e.offset, Some(5));
    assert!(err(&[("a", "int")], "a + 1").message.contains("must be a boolean, found `int`"));
    assert!(err(&[("a", "int")], "a == 'x'").message.contains("no matching overload for `==`"));
    assert!(err(&[("a", "string")], "a.in_cidr('10.0.0.0/8')").message.contains("no matching overload"));
    assert!(err(&[("a", "int")], "a.frobnicate()").message.contains("undeclared reference to function `frobnicate`"));
    assert!(err(&[("a", "int"), ("b", "int")], "a == 1").message.contains("parameter `b` is never used"));
    assert!(err(&[], "true").message.contains("at least one parameter"));
    assert!(err(&[("a", "float")], "a").message.contains("unknown parameter type `float`"));
    assert!(err(&[("a", "int")], "a ==").message.contains("Syntax error") || err(&[("a", "int")], "a ==").offset.is_some());
    // `any` is checked when it runs.
    assert!(program(&[("a", "any")], "a.b.c == 1 && a + 1 > 2").is_ok());
    // A comprehension variable shadows nothing outside it.
    assert!(err(&[("l", "list<int>")], "l.all(x, x > 0) && x > 0").message.contains("undeclared reference to `x`"));
}

#[test]
fn hostile_expressions_are_refused_before_they_run() {
    let chain = vec!["a"; 1000].join(" + ");
    let e = program(&[("a", "int")], &format!("{chain} > 0")).unwrap_err();
    assert!(e.message.contains("nests deeper"), "{e:?}");
    let parens = format!("{}a{} > 0", "(".repeat(500), ")".repeat(500));
    assert!(program(&[("a", "int")], &parens).is_err());
    let long = format!("a == '{}'", "x".repeat(MAX_EXPRESSION_BYTES));
    assert!(program(&[("a", "string")], &long).unwrap_err().message.contains("bytes"));
    // Nested comprehensions over context values: a million steps.
    let e = program(&[("l", "list<int>")], "l.all(x, l.all(y, x + y > 0))").unwrap_err();
    assert!(e.message.contains("cost"), "{e:?}");
    // Over a short literal list it is fine.
    assert!(program(&[("l", "list<int>")], "l.all(x, [1, 2, 3].exists(y, x + y > 0))").is_ok());
}

#[test]
fn evaluation_errors_are_reported_not_raised() {
    let p = program(&[("a", "int")], "a / 0 == 1").unwrap();
    assert!(eval(&p, json!({"a": 1}), json!({})).is_err());
    let p = program(&[("a", "int")], "a + 1 > 0").unwrap();
    assert!(eval(&p, json!({"a": i64::MAX}), json!({})).unwrap_err().contains("verflow"));
}

/// What passes the bounds parses, checks and evaluates on a thread with the 2 MiB
/// stack of a runtime worker, in this (debug) build.
#[test]
fn expressions_at_the_bounds_fit_a_workers_stack() {
    let run = |expr: String| {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let p = program(&[("a", "int")], &expr).map_err(|e| e.message)?;
                eval(&p, json!({"a": 1}), json!({}))
            })
            .unwrap()
            .join()
            .unwrap()
    };
    let n = MAX_EXPRESSION_DEPTH / 2 - 2;
    let parens = format!("{}a{} > 0", "(".repeat(n), ")".repeat(n));
    assert_eq!(run(parens), Ok(Ok(true)));
    let chain = format!("{} > 0", vec!["a"; n].join(" + "));
    assert_eq!(run(chain), Ok(Ok(true)));
    let ands = vec!["a > 0"; n].join(" && ");
    assert_eq!(run(ands), Ok(Ok(true)));
    for hostile in [
        format!("{}a{} > 0", "(".repeat(2000), ")".repeat(2000)),
        format!("{} > 0", vec!["a"; 1000].join(" + ")),
        format!("{}a > 0", "!".repeat(3000)),
        format!("[{}1{}] == []", "[".repeat(2000), "]".repeat(2000)),
        format!("{}a > 0", "-".repeat(3000)),
    ] {
        let e = run(hostile).unwrap_err();
        assert!(e.contains("nests deeper"), "{e}");
    }
}

/// The leaves evaluated natively answer as the interpreter does: every comparison
/// operator over every scalar type, literals on either side, NaN, equal and unequal
/// values, time zones, and `in_cidr` with good and bad ranges.
mod native_agrees_with_the_interpreter {
    use super::*;
    use proptest::prelude::*;

    const OPS: [&str; 6] = ["<", "<=", ">", ">=", "==", "!="];

    /// `(type, expression over x and y, the number of native leaves it must have)`.
    fn cases() -> Vec<(&'static str, String, usize)> {
        let mut out = Vec::new();
        for op in OPS {
            for ty in ["int", "uint", "double", "string", "bool", "timestamp", "duration"] {
                out.push((ty, format!("x {op} y"), 1));
            }
            out.push(("int", format!("x {op} 3 || -2 {op} y"), 2));
            out.push(("uint", format!("x {op} 3u || y {op} 1u"), 2));
            out.push(("double", format!("x {op} 0.5 && !(y {op} -1.5)"), 2));
            out.push(("string", format!("x {op} \"m\" && \"a\" {op} y"), 2));
            out.push(("bool", format!("x {op} true || y"), 1));
            // Not native: mixed types and calls go to the interpreter.
            out.push(("int", format!("x {op} 3.0 || y {op} x + 1"), 0));
        }
        out
    }

    fn value(ty: &str, n: i64) -> serde_json::Value {
        match ty {
            "int" => json!(n - 3),
            "uint" => json!(n.unsigned_abs()),
            "double" => match n {
                0 => json!(f64::NAN.to_string()),
                1 => json!("-0"),
                _ => json!(n as f64 / 4.0 - 1.0),
            },
            "string" => json!(["", "a", "m", "mm", "z", "é"][(n as usize) % 6]),
            "bool" => json!(n % 2 == 0),
            "timestamp" => json!(format!("2026-01-01T0{}:00:00{}", n % 3, ["Z", "+01:00", "-01:00"][(n as usize) % 3])),
            "duration" => json!(["0s", "1s", "1m", "60s", "-1s", "1h"][(n as usize) % 6]),
            _ => unreachable!(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn comparisons(case in 0usize..200, x in 0i64..6, y in 0i64..6, x_given in any::<bool>(), y_given in any::<bool>()) {
            let cases = cases();
            let (ty, expr, natives) = &cases[case % cases.len()];
            let native = program(&[("x", ty), ("y", ty)], expr).unwrap();
            prop_assert_eq!(native.native_leaves(), *natives, "{}", expr);
            let interpreted = program(&[("x", ty), ("y", ty)], expr).unwrap().interpreted();
            prop_assert_eq!(interpreted.native_leaves(), 0);
            let mut request = serde_json::Map::new();
            if x_given {
                request.insert("x".into(), value(ty, x));
            }
            if y_given {
                request.insert("y".into(), value(ty, y));
            }
            let request = serde_json::Value::Object(request);
            let (a, b) = (eval(&native, json!({}), request.clone()), eval(&interpreted, json!({}), request.clone()));
            // Errors (ordering NaN) agree in kind; their wording is each path's own.
            prop_assert_eq!(a.as_ref().map_err(|_| ()), b.as_ref().map_err(|_| ()), "{} with {}: {:?} / {:?}", expr, request, a, b);
        }

        #[test]
        fn in_cidr(ip in 0usize..6, range in 0usize..8, literal in any::<bool>()) {
            let ips = ["10.1.2.3", "10.255.0.1", "192.168.0.1", "::1", "2001:db8::5", "0.0.0.0"];
            let ranges = ["10.0.0.0/8", "10.1.2.3/32", "0.0.0.0/0", "2001:db8::/32", "::/0", "10.0.0.0/33", "bogus", "10.0.0.0"];
            let (params, expr, ctx): (&[(&str, &str)], String, serde_json::Value) = if literal {
                (&[("ip", "ipaddress")], format!("ip.in_cidr({:?})", ranges[range]), json!({"ip": ips[ip]}))
            } else {
                (&[("ip", "ipaddress"), ("r", "string")], "ip.in_cidr(r)".to_string(), json!({"ip": ips[ip], "r": ranges[range]}))
            };
            let native = program(params, &expr).unwrap();
            prop_assert_eq!(native.native_leaves(), 1);
            let interpreted = program(params, &expr).unwrap().interpreted();
            let (a, b) = (eval(&native, json!({}), ctx.clone()), eval(&interpreted, json!({}), ctx.clone()));
            // Errors agree in kind; their wording is each path's own.
            prop_assert_eq!(a.as_ref().map_err(|_| ()), b.as_ref().map_err(|_| ()), "{} with {}: {:?} / {:?}", expr, ctx, a, b);
        }
    }
}
