//! The commonest caveat leaves, evaluated without the CEL interpreter: a comparison of a
//! parameter with a parameter or a literal of the same type (`n < limit`,
//! `now >= not_before`, `tier == "gold"`), and `ip.in_cidr(range)`. The interpreter
//! dispatches calls by name and passes boxed values; these read the converted values
//! in place. A leaf of any other shape, or a value of an unexpected type, goes to the
//! interpreter, and the tests hold both to the same answers.

use std::cmp::Ordering;

use cel::common::ast::{Expr, LiteralValue};
use cel::common::types::{CelBool, CelDouble, CelDuration, CelInt, CelString, CelTimestamp, CelUInt};
use cel::common::value::Val;
use cel::IdedExpr;

use super::value::{Ip, ParamType};
use super::EvalError;

/// A leaf the interpreter need not run.
#[derive(Debug)]
pub(super) enum Native {
    Compare { left: Operand, op: Op, right: Operand, kind: Kind },
    /// `ip.in_cidr(range)`: an `ipaddress` parameter and a string parameter or literal.
    InCidr { ip: usize, range: Operand },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// The type both sides of a comparison have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Timestamp,
    Duration,
}

#[derive(Debug)]
pub(super) enum Operand {
    Param(usize),
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(Box<str>),
}

impl Native {
    /// The native form of a leaf, if it has one. `params` are the caveat's parameters in
    /// order.
    pub(super) fn compile(leaf: &IdedExpr, params: &[(&str, &ParamType)]) -> Option<Native> {
        let Expr::Call(call) = &leaf.expr else { return None };
        if call.func_name == "in_cidr" && call.args.len() == 1 {
            let ip = match call.target.as_deref().map(|t| &t.expr) {
                Some(Expr::Ident(name)) => param(params, name).filter(|(_, t)| **t == ParamType::IpAddress)?.0,
                _ => return None,
            };
            let range = operand(&call.args[0], params)?;
            return (range.1 == Kind::String).then_some(Native::InCidr { ip, range: range.0 });
        }
        let op = match call.func_name.as_str() {
            "_<_" => Op::Lt,
            "_<=_" => Op::Le,
            "_>_" => Op::Gt,
            "_>=_" => Op::Ge,
            "_==_" => Op::Eq,
            "_!=_" => Op::Ne,
            _ => return None,
        };
        if call.target.is_some() || call.args.len() != 2 {
            return None;
        }
        let (left, left_kind) = operand(&call.args[0], params)?;
        let (right, right_kind) = operand(&call.args[1], params)?;
        let has_param = matches!(left, Operand::Param(_)) || matches!(right, Operand::Param(_));
        (has_param && left_kind == right_kind).then_some(Native::Compare { left, op, right, kind: left_kind })
    }

    /// Evaluates the leaf over the parameters' values (every one it names is present).
    /// `None`: a value is not of the type the leaf was compiled for; the interpreter
    /// decides.
    pub(super) fn eval<'a>(&self, value: impl Fn(usize) -> Option<&'a dyn Val>) -> Option<Result<bool, EvalError>> {
        match self {
            Native::InCidr { ip, range } => {
                let ip = value(*ip)?.downcast_ref::<Ip>()?;
                let range = string(range, &value)?;
                Some(ip.in_cidr(range).map_err(|e| EvalError(format!("in_cidr: {e}"))))
            }
            Native::Compare { left, op, right, kind } => {
                let order = match kind {
                    Kind::Bool => cmp(scalar::<CelBool, _>(left, &value, |v| *v.inner(), lit_bool), scalar(right, &value, |v: &CelBool| *v.inner(), lit_bool)),
                    Kind::Int => cmp(scalar::<CelInt, _>(left, &value, |v| *v.inner(), lit_int), scalar(right, &value, |v: &CelInt| *v.inner(), lit_int)),
                    Kind::Uint => cmp(scalar::<CelUInt, _>(left, &value, |v| *v.inner(), lit_uint), scalar(right, &value, |v: &CelUInt| *v.inner(), lit_uint)),
                    Kind::Double => cmp(scalar::<CelDouble, _>(left, &value, |v| *v.inner(), lit_double), scalar(right, &value, |v: &CelDouble| *v.inner(), lit_double)),
                    Kind::String => cmp(string(left, &value), string(right, &value)),
                    Kind::Timestamp => cmp(scalar::<CelTimestamp, _>(left, &value, |v| *v.inner(), |_| None), scalar(right, &value, |v: &CelTimestamp| *v.inner(), |_| None)),
                    Kind::Duration => cmp(scalar::<CelDuration, _>(left, &value, |v| *v.inner(), |_| None), scalar(right, &value, |v: &CelDuration| *v.inner(), |_| None)),
                }?;
                Some(Ok(match (op, order) {
                    (Op::Eq, None) => false,
                    (Op::Ne, None) => true,
                    // As the interpreter: NaN equals nothing, and ordering it is an error.
                    (_, None) => return Some(Err(EvalError("NaN cannot be ordered".into()))),
                    (Op::Lt, Some(o)) => o == Ordering::Less,
                    (Op::Le, Some(o)) => o != Ordering::Greater,
                    (Op::Gt, Some(o)) => o == Ordering::Greater,
                    (Op::Ge, Some(o)) => o != Ordering::Less,
                    (Op::Eq, Some(o)) => o == Ordering::Equal,
                    (Op::Ne, Some(o)) => o != Ordering::Equal,
                }))
            }
        }
    }
}

/// How two sides compare: `None` if either is not there (the interpreter decides),
/// `Some(None)` if they are unordered (NaN).
fn cmp<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<Option<Ordering>> {
    Some(a?.partial_cmp(&b?))
}

fn param<'p>(params: &'p [(&str, &'p ParamType)], name: &str) -> Option<(usize, &'p ParamType)> {
    params.iter().position(|(n, _)| *n == name).map(|i| (i, params[i].1))
}

/// A comparison's side: a parameter of a scalar type, or a literal.
fn operand(e: &IdedExpr, params: &[(&str, &ParamType)]) -> Option<(Operand, Kind)> {
    match &e.expr {
        Expr::Ident(name) => {
            let (i, ty) = param(params, name)?;
            let kind = match ty {
                ParamType::Bool => Kind::Bool,
                ParamType::Int => Kind::Int,
                ParamType::Uint => Kind::Uint,
                ParamType::Double => Kind::Double,
                ParamType::String => Kind::String,
                ParamType::Timestamp => Kind::Timestamp,
                ParamType::Duration => Kind::Duration,
                _ => return None,
            };
            Some((Operand::Param(i), kind))
        }
        Expr::Literal(LiteralValue::Boolean(b)) => Some((Operand::Bool(*b.inner()), Kind::Bool)),
        Expr::Literal(LiteralValue::Int(v)) => Some((Operand::Int(*v.inner()), Kind::Int)),
        Expr::Literal(LiteralValue::UInt(v)) => Some((Operand::Uint(*v.inner()), Kind::Uint)),
        Expr::Literal(LiteralValue::Double(v)) => Some((Operand::Double(*v.inner()), Kind::Double)),
        Expr::Literal(LiteralValue::String(s)) => Some((Operand::String(s.inner().into()), Kind::String)),
        _ => None,
    }
}

fn lit_bool(o: &Operand) -> Option<bool> {
    match o {
        Operand::Bool(b) => Some(*b),
        _ => None,
    }
}

fn lit_int(o: &Operand) -> Option<i64> {
    match o {
        Operand::Int(v) => Some(*v),
        _ => None,
    }
}

fn lit_uint(o: &Operand) -> Option<u64> {
    match o {
        Operand::Uint(v) => Some(*v),
        _ => None,
    }
}

fn lit_double(o: &Operand) -> Option<f64> {
    match o {
        Operand::Double(v) => Some(*v),
        _ => None,
    }
}

/// A side's value: the parameter's, downcast to `V` and read by `read`, or the literal.
fn scalar<'a, V: cel::common::value::StaticVal + 'static, T>(
    o: &Operand,
    value: &impl Fn(usize) -> Option<&'a dyn Val>,
    read: impl Fn(&V) -> T,
    literal: impl Fn(&Operand) -> Option<T>,
) -> Option<T> {
    match o {
        Operand::Param(i) => value(*i)?.downcast_ref::<V>().map(read),
        other => literal(other),
    }
}

fn string<'a, 'o>(o: &'o Operand, value: &impl Fn(usize) -> Option<&'a dyn Val>) -> Option<&'o str>
where
    'a: 'o,
{
    match o {
        Operand::Param(i) => value(*i)?.downcast_ref::<CelString>().map(|s| s.inner()),
        Operand::String(s) => Some(s),
        _ => None,
    }
}
