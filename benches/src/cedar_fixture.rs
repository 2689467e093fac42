//! The Cedar policy model the benches put on top of the graph: a multi-level-security
//! forbid over labels and three attributes (DESIGN §9's "label policy + 3 attributes"),
//! a department forbid on `edit`, and optionally 18 more policies, over a document type
//! named by the caller (`doc` in the fixed org, `document` in generated datasets).

use arbiter_engine::{split_policies, AttrDecl, AttrType, AttributeDecls, AttributeUpdate, LabelDef, ObjectAttributes, PolicyModel};

/// The labels: (name, level, parent).
pub const LABELS: &[(&str, i64, Option<&str>)] =
    &[("top_secret", 4, None), ("secret", 3, Some("top_secret")), ("confidential", 2, Some("secret")), ("nato", 1, None)];

/// The label policy and the department forbid, over resources of type `doc_type`.
pub fn label_policy(doc_type: &str) -> String {
    format!(
        r#"
@id("mls")
forbid(principal, action, resource is {doc_type})
unless {{
    principal is user && principal has clearance && resource has classification &&
    principal.clearance >= resource.classification &&
    principal.label_level >= resource.label_level &&
    (!(resource.labels.contains(arbiter::Label::"nato")) || principal.labels.contains(arbiter::Label::"nato"))
}};
@id("department")
forbid(principal, action == Action::"edit", resource is {doc_type})
when {{ principal has department && principal.department == "contractors" }};
"#
    )
}

/// 18 more policies, on other actions and conditions, so that a set of 20 is compiled
/// and the ones that may apply to `view` are evaluated.
pub fn more_policies(doc_type: &str) -> String {
    let mut out = String::new();
    for i in 0..9 {
        out.push_str(&format!(
            "@id(\"dept-{i}\")\nforbid(principal, action == Action::\"view\", resource is {doc_type}) when {{ principal has department && principal.department == \"blocked-{i}\" }};\n"
        ));
        out.push_str(&format!(
            "@id(\"grant-{i}\")\npermit(principal, action == Action::\"edit\", resource is {doc_type}) when {{ principal has clearance && principal.clearance > {} }};\n",
            100 + i
        ));
    }
    out
}

/// The policy model: declarations (`user.clearance`, `user.department`,
/// `{doc_type}.classification`, all optional), the labels, the label policy and `extra`.
pub fn policy_model(doc_type: &str, extra: &str) -> Result<PolicyModel, String> {
    let mut decls = AttributeDecls::default();
    let opt = |ty| AttrDecl::stored(ty, false);
    decls.types.insert(
        "user".into(),
        [("clearance".to_string(), opt(AttrType::Long)), ("department".to_string(), opt(AttrType::String))].into(),
    );
    decls.types.insert(doc_type.into(), [("classification".to_string(), opt(AttrType::Long))].into());
    let policies =
        split_policies("bench.cedar", &format!("{}\n{extra}", label_policy(doc_type))).map_err(|e| e.to_string())?;
    let labels = LABELS
        .iter()
        .map(|(n, l, p)| (n.to_string(), LabelDef { level: *l, parents: p.iter().map(|p| p.to_string()).collect() }))
        .collect();
    Ok(PolicyModel { policies, declarations: decls, labels })
}

/// Attribute values and labels for `type:id`.
pub fn attrs(object: &str, values: serde_json::Value, labels: &[&str]) -> AttributeUpdate {
    let (t, i) = object.split_once(':').unwrap_or((object, ""));
    AttributeUpdate {
        object_type: t.into(),
        object_id: i.into(),
        attributes: Some(ObjectAttributes {
            values: values.as_object().cloned().unwrap_or_default(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        }),
    }
}
