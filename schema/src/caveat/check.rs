//! A type checker for caveat expressions over the declared parameter types, as
//! SpiceDB's CEL environment type-checks them at schema write: an undeclared name, a
//! function or operator with no overload for its arguments, or a result that is not a
//! boolean is an error at its position. `any` (and whatever comes out of it) is `dyn`,
//! checked at evaluation instead.

use std::fmt;

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::IdedExpr;

use super::value::ParamType;

/// A static type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ty {
    Dyn,
    Null,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    Ip,
    Type,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Dyn => f.write_str("dyn"),
            Ty::Null => f.write_str("null"),
            Ty::Bool => f.write_str("bool"),
            Ty::Int => f.write_str("int"),
            Ty::Uint => f.write_str("uint"),
            Ty::Double => f.write_str("double"),
            Ty::String => f.write_str("string"),
            Ty::Bytes => f.write_str("bytes"),
            Ty::Duration => f.write_str("duration"),
            Ty::Timestamp => f.write_str("timestamp"),
            Ty::Ip => f.write_str("ipaddress"),
            Ty::Type => f.write_str("type"),
            Ty::List(t) => write!(f, "list<{t}>"),
            Ty::Map(k, v) => write!(f, "map<{k}, {v}>"),
        }
    }
}

impl Ty {
    pub(crate) fn of(p: &ParamType) -> Ty {
        match p {
            ParamType::Any => Ty::Dyn,
            ParamType::Bool => Ty::Bool,
            ParamType::Int => Ty::Int,
            ParamType::Uint => Ty::Uint,
            ParamType::Double => Ty::Double,
            ParamType::String => Ty::String,
            ParamType::Bytes => Ty::Bytes,
            ParamType::Duration => Ty::Duration,
            ParamType::Timestamp => Ty::Timestamp,
            ParamType::IpAddress => Ty::Ip,
            ParamType::List(t) => Ty::List(Box::new(Ty::of(t))),
            ParamType::Map(t) => Ty::Map(Box::new(Ty::String), Box::new(Ty::of(t))),
        }
    }

    fn is_dyn(&self) -> bool {
        matches!(self, Ty::Dyn)
    }

    fn numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }

    /// `self` may hold a value of `want` (either may be `dyn`).
    fn fits(&self, want: &Ty) -> bool {
        match (self, want) {
            (Ty::Dyn, _) | (_, Ty::Dyn) => true,
            (Ty::List(a), Ty::List(b)) => a.fits(b),
            (Ty::Map(ak, av), Ty::Map(bk, bv)) => ak.fits(bk) && av.fits(bv),
            (a, b) => a == b,
        }
    }

    /// The type of values of either type.
    fn join(&self, other: &Ty) -> Ty {
        match (self, other) {
            (a, b) if a == b => a.clone(),
            (Ty::List(a), Ty::List(b)) => Ty::List(Box::new(a.join(b))),
            (Ty::Map(ak, av), Ty::Map(bk, bv)) => Ty::Map(Box::new(ak.join(bk)), Box::new(av.join(bv))),
            _ => Ty::Dyn,
        }
    }
}

/// A type error: the message and the id of the expression it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeError {
    pub id: u64,
    pub message: String,
}

pub(crate) struct Checker<'a> {
    params: &'a [(String, Ty)],
    /// Comprehension variables in scope, innermost last.
    scope: Vec<(String, Ty)>,
}

type Checked = Result<Ty, TypeError>;

fn fail(id: u64, message: impl Into<String>) -> TypeError {
    TypeError { id, message: message.into() }
}

/// Type names usable as values (`type(x) == int`).
const TYPE_NAMES: &[&str] = &["bool", "int", "uint", "double", "string", "bytes", "list", "map", "null_type", "type"];

impl<'a> Checker<'a> {
    pub(crate) fn new(params: &'a [(String, Ty)]) -> Self {
        Checker { params, scope: Vec::new() }
    }

    pub(crate) fn check(&mut self, e: &IdedExpr) -> Checked {
        match &e.expr {
            Expr::Unspecified => Err(fail(e.id, "empty expression")),
            Expr::Literal(l) => Ok(match l {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::Null => Ty::Null,
                LiteralValue::String(_) => Ty::String,
                LiteralValue::UInt(_) => Ty::Uint,
            }),
            Expr::Ident(name) => {
                if let Some((_, t)) = self.scope.iter().rev().find(|(n, _)| n == name) {
                    return Ok(t.clone());
                }
                if let Some((_, t)) = self.params.iter().find(|(n, _)| n == name) {
                    return Ok(t.clone());
                }
                if TYPE_NAMES.contains(&name.as_str()) {
                    return Ok(Ty::Type);
                }
                Err(fail(e.id, format!("undeclared reference to `{name}`")))
            }
            Expr::Select(s) => {
                let operand = self.check(&s.operand)?;
                let field = match &operand {
                    Ty::Dyn => Ty::Dyn,
                    Ty::Map(k, v) if k.fits(&Ty::String) => (**v).clone(),
                    other => {
                        return Err(fail(e.id, format!("type `{other}` has no field `{}`", s.field)));
                    }
                };
                Ok(if s.test { Ty::Bool } else { field })
            }
            Expr::List(l) => {
                if !l.optional_indices.is_empty() {
                    return Err(fail(e.id, "optional list elements are not supported"));
                }
                let mut elem: Option<Ty> = None;
                for item in &l.elements {
                    let t = self.check(item)?;
                    elem = Some(match elem {
                        None => t,
                        Some(prev) => prev.join(&t),
                    });
                }
                Ok(Ty::List(Box::new(elem.unwrap_or(Ty::Dyn))))
            }
            Expr::Map(m) => {
                let mut key: Option<Ty> = None;
                let mut value: Option<Ty> = None;
                for entry in &m.entries {
                    let EntryExpr::MapEntry(me) = &entry.expr else {
                        return Err(fail(entry.id, "struct fields are not supported"));
                    };
                    if me.optional {
                        return Err(fail(entry.id, "optional map entries are not supported"));
                    }
                    let k = self.check(&me.key)?;
                    if !matches!(k, Ty::Dyn | Ty::String | Ty::Int | Ty::Uint | Ty::Bool) {
                        return Err(fail(me.key.id, format!("a map key cannot be of type `{k}`")));
                    }
                    let v = self.check(&me.value)?;
                    key = Some(key.map_or(k.clone(), |p| p.join(&k)));
                    value = Some(value.map_or(v.clone(), |p| p.join(&v)));
                }
                Ok(Ty::Map(Box::new(key.unwrap_or(Ty::Dyn)), Box::new(value.unwrap_or(Ty::Dyn))))
            }
            Expr::Struct(_) => Err(fail(e.id, "message construction is not supported")),
            Expr::Comprehension(c) => {
                let range = self.check(&c.iter_range)?;
                let (first, second) = match &range {
                    Ty::List(t) => (Ty::Int, (**t).clone()),
                    Ty::Map(k, v) => ((**k).clone(), (**v).clone()),
                    Ty::Dyn => (Ty::Dyn, Ty::Dyn),
                    other => {
                        return Err(fail(c.iter_range.id, format!("cannot iterate over a value of type `{other}`")));
                    }
                };
                let accu = self.check(&c.accu_init)?;
                let depth = self.scope.len();
                match &c.iter_var2 {
                    Some(v2) => {
                        self.scope.push((c.iter_var.clone(), first));
                        self.scope.push((v2.clone(), second));
                    }
                    None => {
                        let one = if matches!(range, Ty::List(_)) { second } else { first };
                        self.scope.push((c.iter_var.clone(), one));
                    }
                }
                self.scope.push((c.accu_var.clone(), accu.clone()));
                let result = (|| {
                    let cond = self.check(&c.loop_cond)?;
                    if !cond.fits(&Ty::Bool) {
                        return Err(fail(c.loop_cond.id, format!("expected a bool, found `{cond}`")));
                    }
                    let step = self.check(&c.loop_step)?;
                    let accu = accu.join(&step);
                    if let Some(slot) = self.scope.last_mut() {
                        slot.1 = accu;
                    }
                    self.check(&c.result)
                })();
                self.scope.truncate(depth);
                result
            }
            Expr::Call(call) => {
                let target = match &call.target {
                    Some(t) => Some(self.check(t)?),
                    None => None,
                };
                // `&&`, `||` and `?:` check each side; everything else by overload.
                let mut args = Vec::with_capacity(call.args.len());
                for a in &call.args {
                    args.push(self.check(a)?);
                }
                call_type(&call.func_name, target.as_ref(), &args).map_err(|m| fail(e.id, m))
            }
        }
    }
}

fn no_overload(name: &str, target: Option<&Ty>, args: &[Ty]) -> String {
    let shown = display_name(name);
    let list: Vec<String> = target.into_iter().chain(args).map(|t| format!("{t}")).collect();
    match target {
        Some(_) => format!("found no matching overload for `{shown}` applied to `{}` ", list.join(", ")).trim_end().to_string(),
        None => format!("found no matching overload for `{shown}` applied to `({})`", list.join(", ")),
    }
}

fn display_name(name: &str) -> &str {
    match name {
        "_&&_" => "&&",
        "_||_" => "||",
        "!_" => "!",
        "-_" => "-",
        "_-_" => "-",
        "_+_" => "+",
        "_*_" => "*",
        "_/_" => "/",
        "_%_" => "%",
        "_==_" => "==",
        "_!=_" => "!=",
        "_<_" => "<",
        "_<=_" => "<=",
        "_>_" => ">",
        "_>=_" => ">=",
        "_[_]" => "[]",
        "@in" => "in",
        "_?_:_" => "?:",
        other => other,
    }
}

const TIME_PARTS: &[&str] = &[
    "getFullYear",
    "getMonth",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
];

/// The result type of a call, or why no overload takes these arguments.
fn call_type(name: &str, target: Option<&Ty>, args: &[Ty]) -> Result<Ty, String> {
    let none = || no_overload(name, target, args);
    let any_dyn = target.is_some_and(Ty::is_dyn) || args.iter().any(Ty::is_dyn);
    match (name, target, args) {
        ("_&&_" | "_||_", None, [a, b]) => {
            if a.fits(&Ty::Bool) && b.fits(&Ty::Bool) {
                Ok(Ty::Bool)
            } else {
                Err(none())
            }
        }
        ("!_" | "@not_strictly_false", None, [a]) if a.fits(&Ty::Bool) => Ok(Ty::Bool),
        ("_?_:_", None, [c, a, b]) if c.fits(&Ty::Bool) => Ok(a.join(b)),
        ("-_", None, [a]) if matches!(a, Ty::Int | Ty::Double | Ty::Duration | Ty::Dyn) => Ok(a.clone()),
        ("_==_" | "_!=_", None, [a, b]) => {
            if comparable_eq(a, b) {
                Ok(Ty::Bool)
            } else {
                Err(none())
            }
        }
        ("_<_" | "_<=_" | "_>_" | "_>=_", None, [a, b]) => {
            let orderable = |t: &Ty| {
                matches!(
                    t,
                    Ty::Int | Ty::Uint | Ty::Double | Ty::String | Ty::Bytes | Ty::Bool | Ty::Duration | Ty::Timestamp | Ty::Dyn
                )
            };
            if orderable(a) && orderable(b) && (a.is_dyn() || b.is_dyn() || a == b || (a.numeric() && b.numeric())) {
                Ok(Ty::Bool)
            } else {
                Err(none())
            }
        }
        ("_+_", None, [a, b]) => match (a, b) {
            (Ty::Dyn, t) | (t, Ty::Dyn) if !matches!(t, Ty::Bool | Ty::Null | Ty::Ip | Ty::Type) => {
                Ok(if matches!(t, Ty::Duration) { Ty::Dyn } else { t.clone() })
            }
            (Ty::Timestamp, Ty::Duration) | (Ty::Duration, Ty::Timestamp) => Ok(Ty::Timestamp),
            (Ty::List(x), Ty::List(y)) => Ok(Ty::List(Box::new(x.join(y)))),
            (x, y) if x == y && matches!(x, Ty::Int | Ty::Uint | Ty::Double | Ty::String | Ty::Bytes | Ty::Duration) => {
                Ok(x.clone())
            }
            _ => Err(none()),
        },
        ("_-_", None, [a, b]) => match (a, b) {
            (Ty::Timestamp, Ty::Timestamp) => Ok(Ty::Duration),
            (Ty::Timestamp, Ty::Duration) => Ok(Ty::Timestamp),
            (Ty::Dyn, _) | (_, Ty::Dyn) => Ok(Ty::Dyn),
            (x, y) if x == y && matches!(x, Ty::Int | Ty::Uint | Ty::Double | Ty::Duration) => Ok(x.clone()),
            _ => Err(none()),
        },
        ("_*_" | "_/_", None, [a, b]) => match (a, b) {
            (Ty::Dyn, t) | (t, Ty::Dyn) if t.numeric() || t.is_dyn() => Ok(t.clone()),
            (x, y) if x == y && x.numeric() => Ok(x.clone()),
            _ => Err(none()),
        },
        ("_%_", None, [a, b]) => match (a, b) {
            (Ty::Dyn, t) | (t, Ty::Dyn) if matches!(t, Ty::Int | Ty::Uint | Ty::Dyn) => Ok(t.clone()),
            (x, y) if x == y && matches!(x, Ty::Int | Ty::Uint) => Ok(x.clone()),
            _ => Err(none()),
        },
        ("_[_]", None, [c, i]) => match c {
            Ty::Dyn => Ok(Ty::Dyn),
            Ty::List(t) if matches!(i, Ty::Int | Ty::Uint | Ty::Dyn) => Ok((**t).clone()),
            Ty::Map(k, v) if i.fits(k) || (k.numeric() && i.numeric()) => Ok((**v).clone()),
            _ => Err(none()),
        },
        ("@in", None, [x, c]) => match c {
            Ty::Dyn => Ok(Ty::Bool),
            Ty::List(t) | Ty::Map(t, _) if comparable_eq(x, t) => Ok(Ty::Bool),
            _ => Err(none()),
        },
        ("size", None, [a]) | ("size", Some(a), []) => match a {
            Ty::String | Ty::Bytes | Ty::List(_) | Ty::Map(_, _) | Ty::Dyn => Ok(Ty::Int),
            _ => Err(none()),
        },
        ("contains" | "startsWith" | "endsWith" | "matches", Some(s), [p])
            if s.fits(&Ty::String) && p.fits(&Ty::String) =>
        {
            Ok(Ty::Bool)
        }
        ("matches", None, [s, p]) if s.fits(&Ty::String) && p.fits(&Ty::String) => Ok(Ty::Bool),
        ("in_cidr", Some(ip), [c]) if ip.fits(&Ty::Ip) && c.fits(&Ty::String) => Ok(Ty::Bool),
        ("ipaddress", None, [s]) if s.fits(&Ty::String) => Ok(Ty::Ip),
        ("isSubtreeOf", Some(a), [b]) if matches!(a, Ty::Map(_, _) | Ty::Dyn) && matches!(b, Ty::Map(_, _) | Ty::Dyn) => {
            Ok(Ty::Bool)
        }
        ("int", None, [Ty::Int | Ty::Uint | Ty::Double | Ty::String | Ty::Timestamp | Ty::Dyn]) => Ok(Ty::Int),
        ("uint", None, [Ty::Int | Ty::Uint | Ty::Double | Ty::String | Ty::Dyn]) => Ok(Ty::Uint),
        ("double", None, [Ty::Int | Ty::Uint | Ty::Double | Ty::String | Ty::Dyn]) => Ok(Ty::Double),
        ("string", None, [a]) if !matches!(a, Ty::List(_) | Ty::Map(_, _) | Ty::Null | Ty::Type) => Ok(Ty::String),
        ("bytes", None, [Ty::String | Ty::Bytes | Ty::Dyn]) => Ok(Ty::Bytes),
        ("bool", None, [Ty::String | Ty::Bool | Ty::Dyn]) => Ok(Ty::Bool),
        ("duration", None, [Ty::String | Ty::Duration | Ty::Dyn]) => Ok(Ty::Duration),
        ("timestamp", None, [Ty::String | Ty::Int | Ty::Timestamp | Ty::Dyn]) => Ok(Ty::Timestamp),
        ("dyn", None, [_]) => Ok(Ty::Dyn),
        ("type", None, [_]) => Ok(Ty::Type),
        (part, Some(t), rest) if TIME_PARTS.contains(&part) => {
            let tz_ok = match rest {
                [] => true,
                [tz] => tz.fits(&Ty::String) && matches!(t, Ty::Timestamp | Ty::Dyn),
                _ => false,
            };
            let on = match t {
                Ty::Timestamp | Ty::Dyn => true,
                Ty::Duration => matches!(part, "getHours" | "getMinutes" | "getSeconds" | "getMilliseconds"),
                _ => false,
            };
            if tz_ok && on {
                Ok(Ty::Int)
            } else {
                Err(none())
            }
        }
        _ if !KNOWN.contains(&name) => Err(format!("undeclared reference to function `{name}`")),
        _ if any_dyn => Ok(Ty::Dyn),
        _ => Err(none()),
    }
}

const KNOWN: &[&str] = &[
    "_&&_", "_||_", "!_", "@not_strictly_false", "_?_:_", "-_", "_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_", "_+_", "_-_",
    "_*_", "_/_", "_%_", "_[_]", "@in", "size", "contains", "startsWith", "endsWith", "matches", "in_cidr", "ipaddress",
    "isSubtreeOf", "int", "uint", "double", "string", "bytes", "bool", "duration", "timestamp", "dyn", "type",
    "getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getHours", "getMinutes",
    "getSeconds", "getMilliseconds",
];

/// `==` between these types can be true: the same type, numbers of any kind, or
/// anything against `dyn` or `null`.
fn comparable_eq(a: &Ty, b: &Ty) -> bool {
    a.fits(b) || (a.numeric() && b.numeric()) || matches!(a, Ty::Null) || matches!(b, Ty::Null) || {
        match (a, b) {
            (Ty::List(x), Ty::List(y)) => comparable_eq(x, y),
            (Ty::Map(xk, xv), Ty::Map(yk, yv)) => comparable_eq(xk, yk) && comparable_eq(xv, yv),
            _ => false,
        }
    }
}
