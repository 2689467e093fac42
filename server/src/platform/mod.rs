//! The two parts of the schema and of the policy set (DESIGN §12 "Two parts").
//!
//! The platform part (`platform/` definitions, Cedar policies whose ids start with
//! `platform.`) is the admin server's: every migrate path installs it from the files
//! beside this module. The application's part is what `WriteSchema` and
//! `WritePolicies` replace. The stored schema is one text, the platform part first,
//! ended by [`END_MARKER`], then the application's text byte for byte; reads return the
//! whole text. A store that no migrate path has touched (the embedded store) has no
//! platform part, and `platform/` is reserved there too.

use arbiter_engine::PolicyText;
use arbiter_schema::ast::{Item, SchemaAst};

/// The platform definitions, as installed.
pub const SCHEMA: &str = include_str!("schema.zed");

/// The platform's Cedar policies, as installed.
pub const POLICIES: &str = include_str!("policies.cedar");

/// Definitions whose names start with this are the platform's.
pub const TYPE_PREFIX: &str = "platform/";

/// Policies whose ids start with this are the platform's.
pub const POLICY_PREFIX: &str = "platform.";

/// Ends the platform part of a stored schema.
pub const END_MARKER: &str = "// ---- end of the platform part (arbiter migrate); the application's schema follows ----\n";

/// A stored schema text cut into its platform part (through [`END_MARKER`]) and the
/// application's part.
pub fn split(stored: &str) -> (Option<&str>, &str) {
    match stored.find(END_MARKER) {
        Some(at) => {
            let end = at + END_MARKER.len();
            (Some(&stored[..end]), &stored[end..])
        }
        None => (None, stored),
    }
}

/// The platform part as stored: [`SCHEMA`] and the marker.
pub fn platform_part() -> String {
    let mut part = SCHEMA.trim_end().to_string();
    part.push_str("\n\n");
    part.push_str(END_MARKER);
    part
}

/// The text to store when the application writes `app`: the installed platform part
/// (if any) followed by `app`. A copy of the installed platform part at the start of
/// `app` (a read written back) is dropped; any other `platform/` definition is refused,
/// naming it and its line.
pub fn application_schema(current: Option<&str>, app: &str) -> Result<String, String> {
    let installed = current.and_then(|c| split(c).0);
    let app = match (installed, split(app)) {
        (Some(part), (Some(sent), rest)) if sent == part => rest,
        (_, (Some(_), _)) => {
            return Err(
                "the schema includes a platform part that is not the one installed: write only the application's definitions (the platform part is installed by `arbiter migrate`)"
                    .to_string(),
            )
        }
        (_, (None, whole)) => whole,
    };
    refuse_platform_definitions(app)?;
    Ok(match installed {
        Some(part) => format!("{part}{app}"),
        None => app.to_string(),
    })
}

/// Refuses definitions and caveats named `platform/...` in an application's schema.
/// Syntax errors are left to the compiler, which reports them all with positions.
pub fn refuse_platform_definitions(app: &str) -> Result<(), String> {
    let (ast, _) = arbiter_schema::parse(app);
    match first_platform_item(&ast) {
        Some((name, start)) => {
            let line = app[..start.min(app.len())].matches('\n').count() + 1;
            Err(format!(
                "`{name}` (line {line}) is a platform definition: the `platform/` part of the schema is installed by `arbiter migrate`, and a schema write replaces only the application's definitions"
            ))
        }
        None => Ok(()),
    }
}

fn first_platform_item(ast: &SchemaAst) -> Option<(&str, usize)> {
    ast.items.iter().find_map(|item| {
        let name = match item {
            Item::Definition(d) => &d.name,
            Item::Caveat(c) => &c.name,
            Item::Use(_) => return None,
        };
        name.text.starts_with(TYPE_PREFIX).then_some((name.text.as_str(), name.span.start))
    })
}

/// The stored schema after installing the platform part into `current`: the new
/// platform part, then the application's part unchanged. Refuses a current schema whose
/// application part defines `platform/` types (written before the prefix was reserved).
pub fn install_schema(current: Option<&str>) -> Result<String, String> {
    let app = current.map(|c| split(c).1).unwrap_or("");
    refuse_platform_definitions(app)
        .map_err(|e| format!("cannot install the platform schema: the application's schema already has {e}"))?;
    Ok(format!("{}{app}", platform_part()))
}

/// The platform's policies, parsed from [`POLICIES`].
pub fn platform_policies() -> Result<Vec<PolicyText>, String> {
    let policies = arbiter_engine::split_policies("platform.cedar", POLICIES).map_err(|e| e.to_string())?;
    match policies.iter().find(|p| !p.id.starts_with(POLICY_PREFIX)) {
        Some(p) => Err(format!("platform policy `{}` has no `{POLICY_PREFIX}` id prefix", p.id)),
        None => Ok(policies),
    }
}

/// Is `id` kept by an application policy write: a platform policy, or one of the admin
/// server's policy catalogue (`admin.` ids, written by the admin with its tables)?
fn kept_by_application_write(id: &str) -> bool {
    id.starts_with(POLICY_PREFIX) || id.starts_with(arbiter_admin::model::POLICY_PREFIX)
}

/// The policy set to store when the application writes `app`: the installed platform
/// policies and the admin catalogue's (those of `current` with their prefixes), then
/// `app`. An application policy with such an id is refused unless it is a copy of the
/// stored one (a read written back), which is dropped.
pub fn application_policies(current: &[PolicyText], app: Vec<PolicyText>) -> Result<Vec<PolicyText>, String> {
    let mut merged: Vec<PolicyText> = current.iter().filter(|p| kept_by_application_write(&p.id)).cloned().collect();
    let installed = merged.len();
    for p in app {
        if kept_by_application_write(&p.id) {
            if merged[..installed].iter().any(|q| q.id == p.id && q.text == p.text) {
                continue;
            }
            let owner = if p.id.starts_with(POLICY_PREFIX) {
                format!("policies whose ids start with `{POLICY_PREFIX}` are installed by `arbiter migrate`")
            } else {
                format!("policies whose ids start with `{}` are the admin server's policy catalogue (`/v1/policies`)", arbiter_admin::model::POLICY_PREFIX)
            };
            return Err(format!("policy `{}` has a reserved id: {owner}, and a policy write replaces only the application's policies", p.id));
        }
        merged.push(p);
    }
    Ok(merged)
}

/// The policy set after installing `platform` into `current`: `platform`, then the
/// application's policies unchanged.
pub fn install_policies(current: &[PolicyText], platform: Vec<PolicyText>) -> Vec<PolicyText> {
    let mut merged = platform;
    merged.extend(current.iter().filter(|p| !p.id.starts_with(POLICY_PREFIX)).cloned());
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "definition doc {\n    relation viewer: platform/user | platform/group#member\n    relation tenant: platform/tenant\n}\n";

    fn policy(id: &str, text: &str) -> PolicyText {
        PolicyText { id: id.to_string(), text: text.to_string() }
    }

    #[test]
    fn the_platform_schema_compiles_with_an_application_that_uses_it() {
        let stored = install_schema(None).unwrap();
        let stored = application_schema(Some(&stored), APP).unwrap();
        let compiled = arbiter_schema::compile(&stored).unwrap();
        for name in ["platform/user", "platform/tenant", "platform/group", "platform/role", "platform/permission", "doc"] {
            assert!(compiled.definitions.iter().any(|d| d.name == name), "{name}");
        }
        assert_eq!(split(&stored), (Some(platform_part().as_str()), APP));
    }

    #[test]
    fn an_application_write_keeps_the_platform_part_and_replaces_the_rest() {
        let installed = install_schema(None).unwrap();
        let first = application_schema(Some(&installed), APP).unwrap();
        let second = application_schema(Some(&first), "definition other {}\n").unwrap();
        assert_eq!(split(&second), (Some(platform_part().as_str()), "definition other {}\n"));
        // A read written back: the copy of the platform part is dropped.
        assert_eq!(application_schema(Some(&first), &first).unwrap(), first);
        // Without a platform part, the text is stored as sent.
        assert_eq!(application_schema(None, APP).unwrap(), APP);
    }

    #[test]
    fn platform_definitions_in_an_application_write_are_refused_by_name_and_line() {
        let installed = install_schema(None).unwrap();
        let err = application_schema(Some(&installed), "definition doc {}\n\ndefinition platform/user {}\n").unwrap_err();
        assert!(err.contains("`platform/user` (line 3)"), "{err}");
        let err = application_schema(None, "caveat platform/c(x int) { x > 1 }\n").unwrap_err();
        assert!(err.contains("`platform/c`"), "{err}");
        // A platform part other than the installed one.
        let edited = installed.replace("relation suspended: platform/user", "relation suspended: platform/user | platform/api_key");
        let err = application_schema(Some(&installed), &edited).unwrap_err();
        assert!(err.contains("not the one installed"), "{err}");
    }

    #[test]
    fn installing_upgrades_the_platform_part_and_keeps_the_application() {
        let old = format!("definition platform/user {{}}\n{END_MARKER}{APP}");
        let upgraded = install_schema(Some(&old)).unwrap();
        assert_eq!(split(&upgraded), (Some(platform_part().as_str()), APP));
        // An application that defined platform types before the prefix was reserved.
        let err = install_schema(Some("definition platform/user {}\n")).unwrap_err();
        assert!(err.contains("`platform/user`"), "{err}");
    }

    #[test]
    fn policy_writes_keep_platform_policies_and_refuse_new_ones() {
        let platform = policy("platform.a", "forbid (principal, action, resource) when { false };");
        let current = vec![platform.clone(), policy("app1", "permit (principal, action, resource);")];
        let merged = application_policies(&current, vec![policy("app2", "permit (principal, action, resource);")]).unwrap();
        assert_eq!(merged.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["platform.a", "app2"]);
        // A copy of an installed policy is dropped; anything else with the prefix is refused.
        let merged = application_policies(&current, vec![platform.clone()]).unwrap();
        assert_eq!(merged, vec![platform.clone()]);
        let err = application_policies(&current, vec![policy("platform.a", "permit (principal, action, resource);")]).unwrap_err();
        assert!(err.contains("`platform.a`"), "{err}");
        let err = application_policies(&current, vec![policy("platform.b", "permit (principal, action, resource);")]).unwrap_err();
        assert!(err.contains("`platform.b`"), "{err}");
        // The admin catalogue's policies are kept and reserved the same way.
        let admin = policy("admin.no-secrets", "forbid (principal, action, resource) when { false };");
        let current = vec![platform.clone(), admin.clone(), policy("app1", "permit (principal, action, resource);")];
        let merged = application_policies(&current, vec![admin.clone(), policy("app3", "permit (principal, action, resource);")]).unwrap();
        assert_eq!(merged.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["platform.a", "admin.no-secrets", "app3"]);
        let err = application_policies(&current, vec![policy("admin.other", "permit (principal, action, resource);")]).unwrap_err();
        assert!(err.contains("`admin.other`") && err.contains("/v1/policies"), "{err}");
        let installed = install_policies(&current, vec![policy("platform.c", "permit (principal, action, resource);")]);
        assert_eq!(installed.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["platform.c", "admin.no-secrets", "app1"]);
    }

    #[test]
    fn the_shipped_platform_policies_parse_with_their_prefix() {
        platform_policies().unwrap();
    }
}
