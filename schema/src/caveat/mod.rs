//! Caveats: CEL expressions over declared parameters that make a relationship
//! conditional. `cel` (cel-rust) parses and evaluates the expressions; this module adds
//! what SpiceDB's caveats need beyond it:
//!
//! - a type checker over the declared parameter types (`check.rs`), run once when a
//!   schema is compiled;
//! - a static cost limit and depth limit, so that no expression a schema may hold can
//!   take long or overflow a stack to evaluate;
//! - three-valued evaluation: a parameter that neither the relationship nor the request
//!   gives is unknown, and the result is true, false, or "missing these parameters".
//!   The expression is split at its top-level `&&`, `||` and `!` into leaves; a leaf
//!   that names a missing parameter is unknown, and the connectives combine unknowns
//!   as CEL's partial evaluation does (`false && unknown` is false, `true || unknown`
//!   true, an error is absorbed by the value that decides).
//! - the conversion of JSON contexts to typed CEL values (`value.rs`).

mod check;
mod native;
mod value;

use std::sync::{Arc, LazyLock};

use cel::common::ast::Expr;
use cel::common::types::{CelBool, CelString, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, IdedExpr, Value};

pub use value::{parse_duration, Ip, ParamType, ValueError, MAX_ITEMS, MAX_VALUE_DEPTH};

use check::{Checker, Ty};
use crate::nesting::{Level, ADD, AND, CONDITIONAL as COND, MEMBER, MUL, OR, RELATION, UNARY};
use native::Native;

/// Longest caveat expression, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Deepest expression tree (every nested call, operand or comprehension part is a level).
pub const MAX_EXPRESSION_DEPTH: usize = 48;
/// The stack of the thread a caveat is compiled on.
pub const COMPILE_STACK_BYTES: usize = 64 << 20;
/// Most parameters a caveat may declare (the missing ones are a bit set).
pub const MAX_PARAMS: usize = 64;
/// The static cost limit: every node counts 1, times [`MAX_ITEMS`] for each
/// comprehension around it over a value from a context (a literal list counts its own
/// length), times 100 for a regular expression match.
pub const MAX_COST: u64 = 200_000;

/// The CEL environment every caveat compiles and runs in: the standard library and
/// macros, no optional syntax, and SpiceDB's `ipaddress` type with `in_cidr`, plus
/// `isSubtreeOf` on maps.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib().with_optional_support(false);
    // These cannot fail on a fresh environment; a failure would leave the function
    // undeclared, which evaluation reports as an error rather than crashing.
    let _ = env.add_type(value::IP_TYPE.to_owned());
    let _ = env.add_member_overload("in_cidr", "ipaddress_in_cidr_string", value::IP_TYPE.to_owned(), vec![STRING_TYPE], in_cidr);
    let _ = env.add_overload("ipaddress", "string_to_ipaddress", vec![STRING_TYPE], to_ipaddress);
    let _ = env.add_member_overload(
        "isSubtreeOf",
        "map_is_subtree_of_map",
        cel::common::types::MAP_TYPE,
        vec![cel::common::types::MAP_TYPE],
        is_subtree_of,
    );
    Arc::new(env)
});

fn in_cidr<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (Some(ip), Some(cidr)) = (
        args.first().and_then(|a| a.downcast_ref::<Ip>()),
        args.get(1).and_then(|a| a.downcast_ref::<CelString>()),
    ) else {
        return Err(ExecutionError::function_error("in_cidr", "expects an ipaddress and a string"));
    };
    let inside = ip.in_cidr(cidr.inner()).map_err(|e| ExecutionError::function_error("in_cidr", e))?;
    Ok(CowVal::owned(CelBool::from(inside)))
}

fn to_ipaddress<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let Some(text) = args.first().and_then(|a| a.downcast_ref::<CelString>()) else {
        return Err(ExecutionError::function_error("ipaddress", "expects a string"));
    };
    let ip = text
        .inner()
        .trim()
        .parse()
        .map_err(|_| ExecutionError::function_error("ipaddress", format!("`{}` is not an IP address", text.inner())))?;
    Ok(CowVal::owned(Ip(ip)))
}

fn is_subtree_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (Some(a), Some(b)) = (args.first(), args.get(1)) else {
        return Err(ExecutionError::function_error("isSubtreeOf", "expects two maps"));
    };
    let a = Value::try_from(a.as_ref()).map_err(|_| ExecutionError::function_error("isSubtreeOf", "expects two maps"))?;
    let b = Value::try_from(b.as_ref()).map_err(|_| ExecutionError::function_error("isSubtreeOf", "expects two maps"))?;
    Ok(CowVal::owned(CelBool::from(subtree(&a, &b))))
}

/// Every key of `a` is in `b` with an equal value, maps compared the same way.
fn subtree(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Map(a), Value::Map(b)) => a.map.iter().all(|(k, v)| b.map.get(k).is_some_and(|w| subtree(v, w))),
        (a, b) => a == b,
    }
}

/// A compiled caveat: its parameters and its expression, split for three-valued
/// evaluation.
#[derive(Debug)]
pub struct CaveatProgram {
    params: Vec<(Arc<str>, ParamType)>,
    root: Logic,
    cost: u64,
}

/// The top-level connectives of an expression, and its leaves.
#[derive(Debug)]
enum Logic {
    And(Box<Logic>, Box<Logic>),
    Or(Box<Logic>, Box<Logic>),
    Not(Box<Logic>),
    Leaf {
        expr: IdedExpr,
        /// The parameters it names, as a bit set by parameter index.
        uses: u64,
        /// The leaf without the interpreter, when it has such a form.
        native: Option<Native>,
    },
}

/// A compile error: the message and the byte offset in the expression it is about
/// (none: the caveat as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub offset: Option<usize>,
    pub message: String,
}

impl CaveatProgram {
    /// Parses and type-checks `expression` over `params` (name, type as written).
    ///
    /// CEL's parser is generated by ANTLR and spends a lot of stack per level of
    /// nesting (a debug build overflows 2 MiB at 22 levels of brackets), so this runs
    /// on a thread of its own with [`COMPILE_STACK_BYTES`]; evaluation, on the
    /// caller's thread, needs far less.
    pub fn compile(params: &[(String, String)], expression: &str) -> Result<CaveatProgram, CompileError> {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("caveat-compile".into())
                .stack_size(COMPILE_STACK_BYTES)
                .spawn_scoped(scope, || Self::compile_here(params, expression))
                .map_err(|e| CompileError { offset: None, message: format!("could not start the compiler thread: {e}") })?
                .join()
                .unwrap_or_else(|_| Err(CompileError { offset: None, message: "the expression could not be compiled".into() }))
        })
    }

    fn compile_here(params: &[(String, String)], expression: &str) -> Result<CaveatProgram, CompileError> {
        let at_start = |message: String| CompileError { offset: None, message };
        if params.is_empty() {
            return Err(at_start("a caveat needs at least one parameter".into()));
        }
        if params.len() > MAX_PARAMS {
            return Err(at_start(format!("a caveat may declare at most {MAX_PARAMS} parameters, found {}", params.len())));
        }
        if expression.len() > MAX_EXPRESSION_BYTES {
            return Err(at_start(format!(
                "the expression is {} bytes; at most {MAX_EXPRESSION_BYTES} are allowed",
                expression.len()
            )));
        }
        prescan(expression)?;
        let mut typed = Vec::with_capacity(params.len());
        let mut checker_params = Vec::with_capacity(params.len());
        for (name, ty) in params {
            let t = ParamType::parse(ty).map_err(|m| at_start(format!("parameter `{name}`: {m}")))?;
            checker_params.push((name.clone(), Ty::of(&t)));
            typed.push((Arc::<str>::from(name.as_str()), t));
        }
        let (expr, info) = ENV
            .parser()
            .max_recursion_depth(u16::try_from(MAX_EXPRESSION_DEPTH).unwrap_or(u16::MAX))
            .parse_with_source_info(expression)
            .map_err(|e| {
                let first = e.errors.first();
                CompileError {
                    offset: first.map(|e| offset_of_position(expression, e.pos)),
                    message: first.map_or_else(|| "invalid expression".to_string(), |e| e.msg.clone()),
                }
            })?;
        let offset_of = |id: u64| info.offset_for(id).map(|(start, _)| start as usize);
        if let Some(id) = too_deep(&expr) {
            return Err(CompileError {
                offset: offset_of(id),
                message: format!("the expression nests deeper than {MAX_EXPRESSION_DEPTH} levels"),
            });
        }
        let result = Checker::new(&checker_params)
            .check(&expr)
            .map_err(|e| CompileError { offset: offset_of(e.id), message: e.message })?;
        if !matches!(result, Ty::Bool | Ty::Dyn) {
            return Err(CompileError {
                offset: None,
                message: format!("the expression must be a boolean, found `{result}`"),
            });
        }
        let cost = cost(&expr, 1);
        if cost > MAX_COST {
            return Err(CompileError {
                offset: None,
                message: format!(
                    "the expression may cost up to {cost} steps to evaluate; the limit is {MAX_COST} (each comprehension over a context value counts {MAX_ITEMS} times)"
                ),
            });
        }
        let names: Vec<(&str, &ParamType)> = typed.iter().map(|(n, t)| (&**n, t)).collect();
        let mut used = 0u64;
        let root = split(expr, &names, &mut used);
        if let Some((unused, _)) = params.iter().enumerate().find(|(i, _)| used & (1 << i) == 0).map(|(i, p)| (&p.0, i)) {
            return Err(at_start(format!("parameter `{unused}` is never used")));
        }
        Ok(CaveatProgram { params: typed, root, cost })
    }

    /// The declared parameters, in order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &ParamType)> {
        self.params.iter().map(|(n, t)| (&**n, t))
    }

    /// The static cost bound of one evaluation.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// Converts a relationship's context: every key must be a parameter and every
    /// value must fit its type.
    pub fn bind_strict(&self, context: &serde_json::Map<String, serde_json::Value>) -> Result<Bindings, ValueError> {
        if let Some(unknown) = context.keys().find(|k| !self.params.iter().any(|(n, _)| &**n == k.as_str())) {
            return Err(ValueError(format!("unknown parameter `{unknown}`")));
        }
        self.bind(context)
    }

    /// Converts a request's context: keys that are not parameters of this caveat are
    /// ignored (one context serves every caveat a request meets); a value for a
    /// parameter must fit its type.
    pub fn bind(&self, context: &serde_json::Map<String, serde_json::Value>) -> Result<Bindings, ValueError> {
        let mut values = Vec::with_capacity(self.params.len());
        for (name, ty) in &self.params {
            values.push(match context.get(&**name) {
                None => None,
                Some(v) => Some(
                    value::convert(ty, v, 0)
                        .map_err(|e| ValueError(format!("parameter `{name}` ({ty}): {}", e.0)))?,
                ),
            });
        }
        Ok(Bindings(values))
    }

    /// Evaluates the caveat over a relationship's context merged with a request's (the
    /// relationship's value wins).
    pub fn evaluate(&self, relationship: &Bindings, request: &Bindings) -> Result<Outcome, EvalError> {
        let merged = Merged { program: self, relationship, request };
        let present = (0..self.params.len()).fold(0u64, |acc, i| {
            if merged.value(i).is_some() {
                acc | (1 << i)
            } else {
                acc
            }
        });
        match merged.run(&self.root, present) {
            Tri::True => Ok(Outcome::True),
            Tri::False => Ok(Outcome::False),
            Tri::Missing(m) => Ok(Outcome::Missing(m)),
            Tri::Error(e) => Err(e),
        }
    }

    /// How many leaves run without the interpreter.
    #[cfg(test)]
    fn native_leaves(&self) -> usize {
        fn count(l: &Logic) -> usize {
            match l {
                Logic::And(a, b) | Logic::Or(a, b) => count(a) + count(b),
                Logic::Not(a) => count(a),
                Logic::Leaf { native, .. } => usize::from(native.is_some()),
            }
        }
        count(&self.root)
    }

    /// The same program with every leaf left to the interpreter (to hold the native
    /// forms to it).
    #[cfg(test)]
    fn interpreted(mut self) -> CaveatProgram {
        fn strip(l: &mut Logic) {
            match l {
                Logic::And(a, b) | Logic::Or(a, b) => {
                    strip(a);
                    strip(b);
                }
                Logic::Not(a) => strip(a),
                Logic::Leaf { native, .. } => *native = None,
            }
        }
        strip(&mut self.root);
        self
    }

    /// The names of the parameters in a missing set, in declaration order.
    pub fn missing_names(&self, missing: u64) -> impl Iterator<Item = &Arc<str>> {
        self.params.iter().enumerate().filter(move |(i, _)| missing & (1 << i) != 0).map(|(_, (n, _))| n)
    }
}

/// Converted context values, one slot per parameter of one caveat.
#[derive(Debug, Default)]
pub struct Bindings(Vec<Option<Box<dyn Val + 'static>>>);

impl Bindings {
    /// No values at all.
    pub fn empty() -> Bindings {
        Bindings(Vec::new())
    }

    fn get(&self, i: usize) -> Option<&(dyn Val + 'static)> {
        self.0.get(i).and_then(|v| v.as_deref())
    }
}

/// The result of a caveat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    True,
    False,
    /// Unknown until these parameters are given (a bit set by parameter index).
    Missing(u64),
}

/// A caveat failed to evaluate (a CEL error such as a missing map key or an overflow).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

enum Tri {
    True,
    False,
    Missing(u64),
    Error(EvalError),
}

struct Merged<'a> {
    program: &'a CaveatProgram,
    relationship: &'a Bindings,
    request: &'a Bindings,
}

impl Merged<'_> {
    fn value(&self, i: usize) -> Option<&(dyn Val + 'static)> {
        self.relationship.get(i).or_else(|| self.request.get(i))
    }

    fn run(&self, node: &Logic, present: u64) -> Tri {
        match node {
            Logic::Leaf { expr, uses, native } => {
                let missing = uses & !present;
                if missing != 0 {
                    return Tri::Missing(missing);
                }
                if let Some(answer) = native.as_ref().and_then(|n| n.eval(|i| self.value(i))) {
                    return match answer {
                        Ok(true) => Tri::True,
                        Ok(false) => Tri::False,
                        Err(e) => Tri::Error(e),
                    };
                }
                let mut ctx = Context::with_env(ENV.clone());
                ctx.set_variable_resolver(self);
                match Value::resolve(expr, &ctx) {
                    Ok(Value::Bool(true)) => Tri::True,
                    Ok(Value::Bool(false)) => Tri::False,
                    Ok(other) => Tri::Error(EvalError(format!("expected a boolean, found {}", other.type_of()))),
                    Err(e) => Tri::Error(EvalError(e.to_string())),
                }
            }
            Logic::Not(inner) => match self.run(inner, present) {
                Tri::True => Tri::False,
                Tri::False => Tri::True,
                other => other,
            },
            Logic::And(a, b) => {
                let left = self.run(a, present);
                if matches!(left, Tri::False) {
                    return Tri::False;
                }
                let right = self.run(b, present);
                match (left, right) {
                    (_, Tri::False) => Tri::False,
                    (Tri::Missing(x), Tri::Missing(y)) => Tri::Missing(x | y),
                    (Tri::Missing(x), _) | (_, Tri::Missing(x)) => Tri::Missing(x),
                    (Tri::Error(e), _) | (_, Tri::Error(e)) => Tri::Error(e),
                    _ => Tri::True,
                }
            }
            Logic::Or(a, b) => {
                let left = self.run(a, present);
                if matches!(left, Tri::True) {
                    return Tri::True;
                }
                let right = self.run(b, present);
                match (left, right) {
                    (_, Tri::True) => Tri::True,
                    (Tri::Missing(x), Tri::Missing(y)) => Tri::Missing(x | y),
                    (Tri::Missing(x), _) | (_, Tri::Missing(x)) => Tri::Missing(x),
                    (Tri::Error(e), _) | (_, Tri::Error(e)) => Tri::Error(e),
                    _ => Tri::False,
                }
            }
        }
    }
}

impl VariableResolver for Merged<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let i = self.program.params.iter().position(|(n, _)| &**n == variable)?;
        self.value(i).map(CowVal::Borrowed)
    }
}

/// Refuses an expression whose syntax tree may nest deeper than
/// [`MAX_EXPRESSION_DEPTH`], before the parser (which recurses per level, and builds a
/// tree as deep as a chain like `a + a + ... + a` is long) sees it. One pass, no
/// recursion: within a bracket level a run of n operators of one precedence class
/// nests n deep and an operator of a looser class ends the runs of the tighter ones,
/// so a level's depth is at most the sum of its longest runs plus its deepest bracket.
/// String literals and comments are skipped. It does not judge syntax.
fn prescan(text: &str) -> Result<(), CompileError> {
    let bytes = text.as_bytes();
    let mut levels: Vec<Level> = vec![Level::default()];
    let mut i = 0;
    let deep = |offset: usize| CompileError {
        offset: Some(offset),
        message: format!("the expression nests deeper than {MAX_EXPRESSION_DEPTH} levels"),
    };
    while let Some(&b) = bytes.get(i) {
        let at = i;
        i += 1;
        let mut class = None;
        match b {
            b'"' | b'\'' => {
                let triple = bytes.get(i..i + 2) == Some(&[b, b][..]);
                if triple {
                    i += 2;
                }
                while let Some(&c) = bytes.get(i) {
                    i += 1;
                    if c == b'\\' {
                        i += 1;
                    } else if c == b && (!triple || bytes.get(i..i + 2) == Some(&[b, b][..])) {
                        if triple {
                            i += 2;
                        }
                        break;
                    }
                }
            }
            b'/' if bytes.get(i) == Some(&b'/') => {
                while bytes.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                if let Some(level) = levels.last_mut() {
                    if level.operator(MEMBER) > MAX_EXPRESSION_DEPTH {
                        return Err(deep(at));
                    }
                }
                if levels.len() > MAX_EXPRESSION_DEPTH {
                    return Err(deep(at));
                }
                levels.push(Level::default());
            }
            b')' | b']' | b'}' if levels.len() > 1 => {
                if let Some(mut closed) = levels.pop() {
                    let depth = closed.depth();
                    if let Some(parent) = levels.last_mut() {
                        parent.nested(depth);
                    }
                }
            }
            b',' | b':' => {
                if let Some(level) = levels.last_mut() {
                    level.end_runs(COND + 1);
                }
            }
            b'?' => class = Some(COND),
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
            b'*' | b'/' | b'%' => class = Some(MUL),
            b'.' if !bytes.get(i).is_some_and(u8::is_ascii_digit) => class = Some(MEMBER),
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = at;
                while bytes.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                    i += 1;
                }
                if bytes.get(start..i) == Some(&b"in"[..]) {
                    class = Some(RELATION);
                }
            }
            _ => {}
        }
        if let (Some(class), Some(level)) = (class, levels.last_mut()) {
            if level.operator(class) > MAX_EXPRESSION_DEPTH {
                return Err(deep(at));
            }
        }
    }
    let mut depth = 0;
    while let Some(mut level) = levels.pop() {
        depth = level.depth().max(depth);
        if let Some(parent) = levels.last_mut() {
            parent.nested(depth);
        }
    }
    if depth > MAX_EXPRESSION_DEPTH {
        return Err(deep(0));
    }
    Ok(())
}

/// The byte offset of a parser position (line and column in characters, both from 1).
fn offset_of_position(text: &str, (line, column): (isize, isize)) -> usize {
    let line = usize::try_from(line).unwrap_or(1).max(1);
    let column = usize::try_from(column).unwrap_or(1).saturating_sub(1);
    let start: usize = text.split_inclusive('\n').take(line - 1).map(str::len).sum();
    let rest = text.get(start..).unwrap_or("");
    start + rest.char_indices().nth(column).map_or(rest.len(), |(i, _)| i)
}

/// The children of an expression node.
fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        Expr::Call(c) => c.target.as_deref().into_iter().chain(c.args.iter()).collect(),
        Expr::Comprehension(c) => vec![&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m
            .entries
            .iter()
            .flat_map(|en| match &en.expr {
                cel::common::ast::EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                cel::common::ast::EntryExpr::StructField(sf) => vec![&sf.value],
            })
            .collect(),
        Expr::Struct(s) => s
            .entries
            .iter()
            .flat_map(|en| match &en.expr {
                cel::common::ast::EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                cel::common::ast::EntryExpr::StructField(sf) => vec![&sf.value],
            })
            .collect(),
        Expr::Select(s) => vec![&*s.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

/// The id of a node deeper than [`MAX_EXPRESSION_DEPTH`], found without recursion (a
/// chain like `a + a + ... + a` parses into a tree as deep as it is long).
fn too_deep(root: &IdedExpr) -> Option<u64> {
    let mut stack = vec![(root, 1usize)];
    while let Some((e, depth)) = stack.pop() {
        if depth > MAX_EXPRESSION_DEPTH {
            return Some(e.id);
        }
        stack.extend(children(e).into_iter().map(|c| (c, depth + 1)));
    }
    None
}

/// The static cost of `e` evaluated `factor` times (see [`MAX_COST`]). Recursion is
/// bounded by the depth limit, checked first.
fn cost(e: &IdedExpr, factor: u64) -> u64 {
    let own = match &e.expr {
        Expr::Call(c) if c.func_name == "matches" => factor.saturating_mul(100),
        _ => factor,
    };
    match &e.expr {
        Expr::Comprehension(c) => {
            let runs = match &c.iter_range.expr {
                Expr::List(l) => l.elements.len() as u64,
                Expr::Map(m) => m.entries.len() as u64,
                _ => MAX_ITEMS as u64,
            };
            let inner = factor.saturating_mul(runs.max(1));
            own.saturating_add(cost(&c.iter_range, factor))
                .saturating_add(cost(&c.accu_init, factor))
                .saturating_add(cost(&c.loop_cond, inner))
                .saturating_add(cost(&c.loop_step, inner))
                .saturating_add(cost(&c.result, factor))
        }
        _ => children(e).into_iter().fold(own, |acc, c| acc.saturating_add(cost(c, factor))),
    }
}

/// Splits an expression at its top-level connectives; `used` collects the parameters
/// named anywhere.
fn split(e: IdedExpr, params: &[(&str, &ParamType)], used: &mut u64) -> Logic {
    let connective = |c: &cel::common::ast::CallExpr| {
        c.target.is_none()
            && match c.func_name.as_str() {
                "_&&_" | "_||_" => c.args.len() == 2,
                "!_" => c.args.len() == 1,
                _ => false,
            }
    };
    match e.expr {
        Expr::Call(c) if connective(&c) => {
            let and = c.func_name == "_&&_";
            let not = c.func_name == "!_";
            let mut args = c.args.into_iter().map(|a| Box::new(split(a, params, used)));
            match (args.next(), args.next()) {
                (Some(a), None) if not => Logic::Not(a),
                (Some(a), Some(b)) if and => Logic::And(a, b),
                (Some(a), Some(b)) => Logic::Or(a, b),
                // `connective` admits no other shape; an empty leaf fails to evaluate.
                _ => Logic::Leaf { expr: IdedExpr::default(), uses: 0, native: None },
            }
        }
        expr => {
            let e = IdedExpr { id: e.id, expr };
            let mut uses = 0u64;
            let mut bound = Vec::new();
            names_used(&e, params, &mut bound, &mut uses);
            *used |= uses;
            let native = Native::compile(&e, params);
            Logic::Leaf { expr: e, uses, native }
        }
    }
}

fn names_used<'e>(e: &'e IdedExpr, params: &[(&str, &ParamType)], bound: &mut Vec<&'e str>, uses: &mut u64) {
    match &e.expr {
        Expr::Ident(name) => {
            if !bound.contains(&name.as_str()) {
                if let Some(i) = params.iter().position(|(p, _)| *p == name) {
                    *uses |= 1 << i;
                }
            }
        }
        Expr::Comprehension(c) => {
            names_used(&c.iter_range, params, bound, uses);
            names_used(&c.accu_init, params, bound, uses);
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(v2) = &c.iter_var2 {
                bound.push(v2);
            }
            bound.push(&c.accu_var);
            names_used(&c.loop_cond, params, bound, uses);
            names_used(&c.loop_step, params, bound, uses);
            names_used(&c.result, params, bound, uses);
            bound.truncate(depth);
        }
        _ => {
            for c in children(e) {
                names_used(c, params, bound, uses);
            }
        }
    }
}

#[cfg(test)]
mod tests;
