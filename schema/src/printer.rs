//! Printer: writes a [`CompiledSchema`] back as canonical schema text. Compiling the
//! printed text gives back an equal schema.

use std::fmt::Write;

use crate::compiled::*;

/// Canonical text of a compiled schema.
pub fn print(schema: &CompiledSchema) -> String {
    let mut out = String::new();
    if schema.uses_expiration {
        out.push_str("use expiration\n\n");
    }
    for def in &schema.definitions {
        write_doc(&mut out, &def.doc, "");
        if def.relations.is_empty() {
            let _ = writeln!(out, "definition {} {{}}\n", def.name);
            continue;
        }
        let _ = writeln!(out, "definition {} {{", def.name);
        for rel in &def.relations {
            write_doc(&mut out, &rel.doc, "\t");
            match &rel.kind {
                RelationKind::Direct(allowed) => {
                    let types: Vec<String> =
                        allowed.iter().map(|a| subject_type(schema, a)).collect();
                    let _ = writeln!(out, "\trelation {}: {}", rel.name, types.join(" | "));
                }
                RelationKind::Permission(rw) => {
                    let _ = writeln!(
                        out,
                        "\tpermission {} = {}",
                        rel.name,
                        rewrite(def, rw, Prec::Top)
                    );
                }
            }
        }
        out.push_str("}\n\n");
    }
    for cav in &schema.caveats {
        write_doc(&mut out, &cav.doc, "");
        let params: Vec<String> = cav.params.iter().map(|(n, t)| format!("{n} {t}")).collect();
        let _ = writeln!(
            out,
            "caveat {}({}) {{\n\t{}\n}}\n",
            cav.name,
            params.join(", "),
            cav.expression
        );
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Writes doc comments verbatim (a block comment's inner lines keep their own
/// indentation and line endings), one after the other.
fn write_doc(out: &mut String, doc: &[String], indent: &str) {
    for comment in doc {
        out.push_str(indent);
        out.push_str(comment);
        out.push('\n');
    }
}

/// Subject-type text such as `group#member with expiration`.
pub fn subject_type(schema: &CompiledSchema, a: &AllowedSubject) -> String {
    let mut s = schema
        .definition(a.type_id)
        .map(|d| d.name.clone())
        .unwrap_or_default();
    match a.kind {
        AllowedKind::Object => {}
        AllowedKind::Wildcard => s.push_str(":*"),
        AllowedKind::SubjectSet(rid) => {
            let name = schema
                .relation(a.type_id, rid)
                .map(|r| r.name.as_str())
                .unwrap_or("");
            s.push('#');
            s.push_str(name);
        }
    }
    match (a.caveat.and_then(|c| schema.caveat(c)), a.expiration) {
        (Some(c), true) => {
            let _ = write!(s, " with {} and expiration", c.name);
        }
        (Some(c), false) => {
            let _ = write!(s, " with {}", c.name);
        }
        (None, true) => s.push_str(" with expiration"),
        (None, false) => {}
    }
    s
}

/// Binding strength of the context an expression is printed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Prec {
    Top,
    ExclusionRight,
    Intersection,
    Union,
}

fn rewrite(def: &Definition, rw: &Rewrite, ctx: Prec) -> String {
    let name = |rid: RelationId| {
        def.relation(rid)
            .map(|r| r.name.clone())
            .unwrap_or_default()
    };
    match rw {
        Rewrite::Nil => "nil".into(),
        Rewrite::Computed(rid) => name(*rid),
        Rewrite::Arrow(a) => match a.kind {
            ArrowKind::Any => format!("{}->{}", name(a.tupleset), a.computed),
            ArrowKind::AnyFunction => format!("{}.any({})", name(a.tupleset), a.computed),
            ArrowKind::All => format!("{}.all({})", name(a.tupleset), a.computed),
        },
        Rewrite::Union(items) => {
            let parts: Vec<String> = items.iter().map(|i| rewrite(def, i, Prec::Union)).collect();
            parts.join(" + ")
        }
        Rewrite::Intersection(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| rewrite(def, i, Prec::Intersection))
                .collect();
            paren(parts.join(" & "), ctx > Prec::Intersection)
        }
        Rewrite::Exclusion(l, r) => {
            let text = format!(
                "{} - {}",
                rewrite(def, l, Prec::Top),
                rewrite(def, r, Prec::ExclusionRight)
            );
            paren(text, ctx > Prec::Top)
        }
    }
}

fn paren(s: String, wrap: bool) -> String {
    if wrap {
        format!("({s})")
    } else {
        s
    }
}
