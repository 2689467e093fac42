//! Client subcommands: talk to a running server over gRPC. Results go to stdout (text,
//! or one JSON document with `--json`), errors to stderr naming the problem. Exit codes:
//! 0 success (for `check`: allowed), 1 denied, 3 conditional, 2 any error.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use arbiter_engine::RelationshipFilter;
use arbiter_proto::arbiter::v1 as pb;
use arbiter_schema::{parse_relationship, Relationship};
use clap::{Args, Subcommand};
use pb::permission_service_client::PermissionServiceClient;
use pb::relationship_service_client::RelationshipServiceClient;
use pb::schema_service_client::SchemaServiceClient;
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::convert;

#[derive(Debug, Args, Clone)]
pub struct Connection {
    /// The server's gRPC endpoint.
    #[arg(
        long,
        env = "ARBITER_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    endpoint: String,
    /// Sent as `authorization: Bearer KEY`.
    #[arg(long, env = "ARBITER_PRESHARED_KEY", hide_env_values = true)]
    preshared_key: Option<String>,
    /// PEM CA certificate to trust for an `https://` endpoint.
    #[arg(long, env = "ARBITER_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// minimize_latency | fully_consistent | at_least_as_fresh:TOKEN | at_exact_snapshot:TOKEN
    #[arg(long, env = "ARBITER_CONSISTENCY", default_value = "minimize_latency")]
    consistency: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Check a permission: `type:id#permission@type:id[#relation]`. Exit 0 allowed,
    /// 1 denied, 3 conditional, 2 error.
    Check {
        relationship: String,
        /// Request context as a JSON object (for policies).
        #[arg(long)]
        context: Option<String>,
        /// Print the path that granted access.
        #[arg(long)]
        explain: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// Write relationships atomically (touch by default); prints the revision token.
    Write {
        relationships: Vec<String>,
        /// Delete them instead.
        #[arg(long, conflicts_with = "create")]
        delete: bool,
        /// Fail if any already exists.
        #[arg(long)]
        create: bool,
        /// Read relationships from a file, one per line (`#` comments allowed).
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete every relationship matching `type[:id][#relation][@type[:id][#relation]]`.
    Delete {
        #[arg(long)]
        filter: String,
        /// Refuse (and delete nothing) if more than this many match.
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Print relationships matching a filter, one per line, in order (all if no filter).
    Read {
        filter: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Print the userset tree of `type:id#permission`, indented.
    Expand {
        target: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Resources the subject can reach: `type#permission@type:id[#relation]`.
    LookupResources {
        query: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Subjects that have a permission: `type:id#permission@type[#relation]`.
    LookupSubjects {
        query: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Import relationship lines (`.txt`) or a validation file (`.yaml`: its schema,
    /// then its relationships).
    Import {
        file: PathBuf,
        /// Relationships per message.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        #[command(flatten)]
        conn: Connection,
    },
    /// Print every relationship, one per line.
    Export {
        #[command(flatten)]
        conn: Connection,
    },
    /// Read or write the schema.
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// Read or replace the Cedar policies.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Attribute definitions, security labels, and objects' attributes (for Cedar).
    Attributes {
        #[command(subcommand)]
        action: AttributesAction,
    },
    /// Follow changes: one line per change, `TOKEN TOUCH REL` / `TOKEN DELETE REL`.
    Watch {
        /// Start after this revision token (default: from now on).
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub enum AttributesAction {
    /// Replace the attribute definitions and security labels with a YAML (or JSON) file:
    /// `types: {user: {clearance: long, suspended?: bool}}`, `context: {ip?: ip}`,
    /// `labels: {secret: {level: 3, parent: top_secret}}` (or `parents: [a, b]`; `?`:
    /// optional). Types:
    /// string, long, bool, decimal, ip, set<T>, {field: T}. Prints the revision token.
    Define {
        file: PathBuf,
        #[command(flatten)]
        conn: Connection,
    },
    /// Print the attribute definitions and labels in force, in the `define` file format.
    Schema {
        #[command(flatten)]
        conn: Connection,
    },
    /// Set objects' attributes: pairs of `type:id` and a JSON record of its values
    /// (a `labels` key lists its security labels). Replaces what the object had.
    Set {
        #[arg(required = true, num_args = 2.., value_names = ["OBJECT", "JSON"])]
        pairs: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Print objects' attributes: `type:id {json}` (objects without any are skipped).
    Get {
        #[arg(required = true)]
        objects: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete objects' attributes and labels.
    Delete {
        #[arg(required = true)]
        objects: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Replace the whole policy set with the policies in these Cedar files (a policy's id
    /// is its `@id("...")` annotation, else `FILE:N`); prints the revision token.
    Write {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Print the policies in force, each after a `// id: ID` line.
    Read {
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchemaAction {
    /// Write a schema file; prints the revision token.
    Write {
        file: PathBuf,
        #[command(flatten)]
        conn: Connection,
    },
    /// Print the schema as stored.
    Read {
        #[command(flatten)]
        conn: Connection,
    },
}

/// Adds the preshared key to every call.
#[derive(Debug, Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

type Svc = InterceptedService<Channel, Auth>;

struct Clients {
    permissions: PermissionServiceClient<Svc>,
    relationships: RelationshipServiceClient<Svc>,
    schema: SchemaServiceClient<Svc>,
    consistency: pb::Consistency,
    json: bool,
}

/// Messages up to this size are accepted from the server.
const MAX_MESSAGE: usize = 64 << 20;

async fn connect(conn: &Connection) -> Result<Clients> {
    let consistency = parse_consistency(&conn.consistency)?;
    let mut endpoint = Endpoint::from_shared(conn.endpoint.clone())
        .map_err(|e| anyhow!("invalid endpoint `{}`: {e}", conn.endpoint))?;
    if let Some(ca) = &conn.tls_ca {
        let pem = std::fs::read(ca)
            .with_context(|| format!("cannot read the CA certificate {}", ca.display()))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .context("configure TLS")?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow!("cannot connect to {}: {}", conn.endpoint, source_chain(&e)))?;
    let auth = match &conn.preshared_key {
        Some(k) => Some(
            format!("Bearer {k}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| anyhow!("the preshared key must be printable ASCII"))?,
        ),
        None => None,
    };
    let auth = Auth(auth);
    Ok(Clients {
        permissions: PermissionServiceClient::with_interceptor(channel.clone(), auth.clone())
            .max_decoding_message_size(MAX_MESSAGE),
        relationships: RelationshipServiceClient::with_interceptor(channel.clone(), auth.clone())
            .max_decoding_message_size(MAX_MESSAGE),
        schema: SchemaServiceClient::with_interceptor(channel, auth)
            .max_decoding_message_size(MAX_MESSAGE),
        consistency,
        json: conn.json,
    })
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub fn parse_consistency(s: &str) -> Result<pb::Consistency> {
    use pb::consistency::Requirement;
    let requirement = match s.split_once(':') {
        None if s == "minimize_latency" => Requirement::MinimizeLatency(true),
        None if s == "fully_consistent" => Requirement::FullyConsistent(true),
        Some(("at_least_as_fresh", t)) if !t.is_empty() => Requirement::AtLeastAsFresh(t.to_string()),
        Some(("at_exact_snapshot", t)) if !t.is_empty() => Requirement::AtExactSnapshot(t.to_string()),
        _ => bail!(
            "invalid consistency `{s}`: use minimize_latency, fully_consistent, at_least_as_fresh:TOKEN or at_exact_snapshot:TOKEN"
        ),
    };
    Ok(pb::Consistency {
        requirement: Some(requirement),
    })
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}: {}", code_name(s.code()), s.message())
}

fn code_name(c: tonic::Code) -> String {
    format!("{c:?}")
        .chars()
        .enumerate()
        .fold(String::new(), |mut acc, (i, ch)| {
            if ch.is_uppercase() && i > 0 {
                acc.push('_');
            }
            acc.push(ch.to_ascii_uppercase());
            acc
        })
}

pub fn run(command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(command: ClientCommand) -> Result<ExitCode> {
    match command {
        ClientCommand::Check {
            relationship,
            context,
            explain,
            conn,
        } => check(&conn, &relationship, context, explain).await,
        ClientCommand::Write {
            relationships,
            delete,
            create,
            file,
            conn,
        } => write(&conn, relationships, delete, create, file).await,
        ClientCommand::Delete {
            filter,
            limit,
            conn,
        } => delete(&conn, &filter, limit).await,
        ClientCommand::Read { filter, conn } => read(&conn, filter.as_deref()).await,
        ClientCommand::Expand { target, conn } => expand(&conn, &target).await,
        ClientCommand::LookupResources { query, conn } => lookup_resources(&conn, &query).await,
        ClientCommand::LookupSubjects { query, conn } => lookup_subjects(&conn, &query).await,
        ClientCommand::Import { file, batch, conn } => import(&conn, &file, batch).await,
        ClientCommand::Export { conn } => export(&conn).await,
        ClientCommand::Schema {
            action: SchemaAction::Write { file, conn },
        } => schema_write(&conn, &file).await,
        ClientCommand::Schema {
            action: SchemaAction::Read { conn },
        } => schema_read(&conn).await,
        ClientCommand::Policy {
            action: PolicyAction::Write { files, conn },
        } => policy_write(&conn, &files).await,
        ClientCommand::Policy {
            action: PolicyAction::Read { conn },
        } => policy_read(&conn).await,
        ClientCommand::Attributes { action } => attributes(action).await,
        ClientCommand::Watch { from, conn } => watch(&conn, from).await,
    }
}

/// A write's revision token: alone on a line, or `{"revision": ...}` with `--json`.
fn print_revision(json: bool, revision: &str) {
    if json {
        print_json(&json!({ "revision": revision }));
    } else {
        println!("{revision}");
    }
}

fn parse_object_arg(text: &str) -> Result<pb::ObjectRef> {
    let o = arbiter_schema::parse_object(text, text, "object", false).map_err(|e| anyhow!("{}", e.message))?;
    Ok(object(&o.object_type, &o.object_id))
}

async fn attributes(action: AttributesAction) -> Result<ExitCode> {
    match action {
        AttributesAction::Define { file, conn } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let (definitions, labels) =
                parse_attribute_file(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let mut c = connect(&conn).await?;
            let resp = c
                .schema
                .write_attribute_schema(pb::WriteAttributeSchemaRequest { definitions, labels })
                .await
                .map_err(status_error)?
                .into_inner();
            print_revision(c.json, &resp.revision);
        }
        AttributesAction::Schema { conn } => {
            let mut c = connect(&conn).await?;
            let resp = c
                .schema
                .read_attribute_schema(pb::ReadAttributeSchemaRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let doc = attribute_file(&resp.definitions, &resp.labels);
            if c.json {
                print_json(&json!({"schema": doc, "revision": resp.revision}));
            } else {
                print!("{}", serde_yaml::to_string(&doc).unwrap_or_default());
            }
        }
        AttributesAction::Set { pairs, conn } => {
            if pairs.len() % 2 != 0 {
                bail!("`attributes set` takes pairs of OBJECT and JSON; `{}` has no JSON", pairs.last().map(String::as_str).unwrap_or(""));
            }
            let mut set = Vec::new();
            for pair in pairs.chunks(2) {
                let [o, j] = pair else { continue };
                let obj = parse_object_arg(o)?;
                let v: serde_json::Value =
                    serde_json::from_str(j).map_err(|e| anyhow!("`{o}`: the attributes are not JSON: {e}"))?;
                let serde_json::Value::Object(mut values) = v else {
                    bail!("`{o}`: the attributes must be a JSON record (`{{\"name\": value}}`)");
                };
                let labels = match values.remove("labels") {
                    None => Vec::new(),
                    Some(l) => serde_json::from_value::<Vec<String>>(l)
                        .map_err(|_| anyhow!("`{o}`: `labels` must be a list of label names"))?,
                };
                set.push(pb::ObjectAttributes {
                    object: Some(obj),
                    values: Some(crate::convert::to_pb_struct(values)),
                    labels,
                });
            }
            let mut c = connect(&conn).await?;
            let resp = c
                .relationships
                .write_attributes(pb::WriteAttributesRequest { set, delete: Vec::new() })
                .await
                .map_err(status_error)?
                .into_inner();
            print_revision(c.json, &resp.revision);
        }
        AttributesAction::Get { objects, conn } => {
            let objects = objects.iter().map(|o| parse_object_arg(o)).collect::<Result<Vec<_>>>()?;
            let mut c = connect(&conn).await?;
            let consistency = Some(c.consistency.clone());
            let resp = c
                .relationships
                .read_attributes(pb::ReadAttributesRequest { consistency, objects })
                .await
                .map_err(status_error)?
                .into_inner();
            let mut out = Vec::new();
            for a in &resp.attributes {
                let o = a.object.clone().unwrap_or_default();
                let mut values = a.values.as_ref().map(crate::convert::context).unwrap_or_default();
                if !a.labels.is_empty() {
                    values.insert("labels".into(), json!(a.labels));
                }
                out.push((format!("{}:{}", o.r#type, o.id), values));
            }
            if c.json {
                let map: serde_json::Map<String, serde_json::Value> =
                    out.into_iter().map(|(k, v)| (k, serde_json::Value::Object(v))).collect();
                print_json(&json!({"attributes": map, "revision": resp.revision}));
            } else {
                for (o, v) in out {
                    println!("{o} {}", serde_json::Value::Object(v));
                }
            }
        }
        AttributesAction::Delete { objects, conn } => {
            let delete = objects.iter().map(|o| parse_object_arg(o)).collect::<Result<Vec<_>>>()?;
            let mut c = connect(&conn).await?;
            let resp = c
                .relationships
                .write_attributes(pb::WriteAttributesRequest { set: Vec::new(), delete })
                .await
                .map_err(status_error)?
                .into_inner();
            print_revision(c.json, &resp.revision);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `attributes define` file: `types`, `context` and `labels`.
fn parse_attribute_file(text: &str) -> Result<(Vec<pb::AttributeDefinition>, Vec<pb::SecurityLabel>)> {
    /// `name: TYPE`, or `name: {type: TYPE, source: request}`.
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Definition {
        Type(String),
        Full {
            #[serde(rename = "type")]
            ty: String,
            #[serde(default)]
            source: String,
        },
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        types: BTreeMap<String, BTreeMap<String, Definition>>,
        #[serde(default)]
        context: BTreeMap<String, String>,
        #[serde(default)]
        labels: BTreeMap<String, Label>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Label {
        level: i64,
        #[serde(default)]
        parent: Option<String>,
        #[serde(default)]
        parents: Vec<String>,
    }
    let file: File = serde_yaml::from_str(text).map_err(|e| anyhow!("{e}"))?;
    let def = |object_type: &str, name: &str, ty: &str, source: &str| {
        let (name, required) = match name.strip_suffix('?') {
            Some(n) => (n, false),
            None => (name, true),
        };
        pb::AttributeDefinition {
            object_type: object_type.into(),
            name: name.into(),
            r#type: ty.into(),
            required,
            source: source.into(),
        }
    };
    let mut definitions = Vec::new();
    for (t, fields) in &file.types {
        definitions.extend(fields.iter().map(|(n, d)| match d {
            Definition::Type(ty) => def(t, n, ty, ""),
            Definition::Full { ty, source } => def(t, n, ty, source),
        }));
    }
    definitions.extend(file.context.iter().map(|(n, ty)| def("", n, ty, "")));
    let labels = file
        .labels
        .into_iter()
        .map(|(name, l)| pb::SecurityLabel { name, level: l.level, parents: l.parent.into_iter().chain(l.parents).collect() })
        .collect();
    Ok((definitions, labels))
}

/// The definitions and labels in the `attributes define` file format.
fn attribute_file(definitions: &[pb::AttributeDefinition], labels: &[pb::SecurityLabel]) -> serde_json::Value {
    let mut types: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
    let mut context: BTreeMap<String, String> = BTreeMap::new();
    for d in definitions {
        let name = if d.required { d.name.clone() } else { format!("{}?", d.name) };
        if d.object_type.is_empty() {
            context.insert(name, d.r#type.clone());
        } else {
            let def = if d.source.is_empty() { json!(d.r#type) } else { json!({"type": d.r#type, "source": d.source}) };
            types.entry(d.object_type.clone()).or_default().insert(name, def);
        }
    }
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|l| {
            let mut v = json!({"level": l.level});
            match l.parents.as_slice() {
                [] => {}
                [one] => v["parent"] = json!(one),
                many => v["parents"] = json!(many),
            }
            (l.name.clone(), v)
        })
        .collect();
    json!({"types": types, "context": context, "labels": labels})
}

fn object(t: &str, id: &str) -> pb::ObjectRef {
    pb::ObjectRef {
        r#type: t.to_string(),
        id: id.to_string(),
    }
}

fn subject(t: &str, id: &str, rel: Option<&str>) -> pb::SubjectRef {
    pb::SubjectRef {
        object: Some(object(t, id)),
        relation: rel.unwrap_or("").to_string(),
    }
}

/// A relationship-shaped question (no caveat, no expiration).
fn parse_question(text: &str, what: &str) -> Result<Relationship> {
    let r = parse_relationship(text).map_err(|e| anyhow!("invalid {what}: {e}"))?;
    if r.caveat.is_some() || r.expiration.is_some() {
        bail!("invalid {what} `{text}`: a question takes no caveat or expiration");
    }
    Ok(r)
}

fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

async fn check(
    conn: &Connection,
    text: &str,
    context: Option<String>,
    explain: bool,
) -> Result<ExitCode> {
    let r = parse_question(text, "check")?;
    let context = match context {
        Some(c) => Some(json_to_struct(&c)?),
        None => None,
    };
    let mut c = connect(conn).await?;
    let resp = c
        .permissions
        .check(pb::CheckRequest {
            consistency: Some(c.consistency.clone()),
            resource: Some(object(&r.resource.object_type, &r.resource.object_id)),
            permission: r.relation.clone(),
            subject: Some(subject(
                &r.subject.object.object_type,
                &r.subject.object.object_id,
                r.subject.relation.as_deref(),
            )),
            context,
            explain,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let (word, code) = match pb::Decision::try_from(resp.decision) {
        Ok(pb::Decision::Allowed) => ("allowed", 0),
        Ok(pb::Decision::Denied) => ("denied", 1),
        Ok(pb::Decision::Conditional) => ("conditional", 3),
        _ => bail!(
            "the server answered with an unknown decision {}",
            resp.decision
        ),
    };
    if c.json {
        print_json(&json!({
            "decision": word,
            "revision": resp.revision,
            "explanation": resp.explanation,
            "missing_context": resp.missing_context,
        }));
    } else {
        if resp.missing_context.is_empty() {
            println!("{word}");
        } else {
            // What the caveats wait on, for the caller to pass with `--context`.
            println!("{word} (missing context: {})", resp.missing_context.join(", "));
        }
        if explain {
            for step in &resp.explanation {
                println!("  {step}");
            }
        }
    }
    Ok(ExitCode::from(code))
}

fn json_to_struct(text: &str) -> Result<prost_types::Struct> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow!("invalid --context JSON: {e}"))?;
    let serde_json::Value::Object(map) = v else {
        bail!("invalid --context: expected a JSON object");
    };
    Ok(prost_types::Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    })
}

fn json_to_value(v: serde_json::Value) -> prost_types::Value {
    crate::convert::to_pb_value(v)
}

/// Relationship lines from a file: blank lines and `#`/`//` comments skipped; errors
/// name the line.
fn read_lines(path: &PathBuf) -> Result<Vec<Relationship>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with("//") {
            continue;
        }
        out.push(parse_relationship(t).map_err(|e| anyhow!("{}:{}: {e}", path.display(), i + 1))?);
    }
    Ok(out)
}

async fn write(
    conn: &Connection,
    args: Vec<String>,
    delete: bool,
    create: bool,
    file: Option<PathBuf>,
) -> Result<ExitCode> {
    let mut rels = Vec::new();
    for a in &args {
        rels.push(parse_relationship(a).map_err(|e| anyhow!("invalid relationship: {e}"))?);
    }
    if let Some(f) = &file {
        rels.extend(read_lines(f)?);
    }
    if rels.is_empty() {
        bail!("nothing to write: give relationships as arguments or --file");
    }
    use pb::relationship_update::Operation;
    let op = if delete {
        Operation::Delete
    } else if create {
        Operation::Create
    } else {
        Operation::Touch
    };
    let updates = rels
        .iter()
        .map(|r| pb::RelationshipUpdate {
            operation: op as i32,
            relationship: Some(convert::to_pb_relationship(r)),
        })
        .collect();
    let mut c = connect(conn).await?;
    let resp = c
        .relationships
        .write_relationships(pb::WriteRelationshipsRequest {
            updates,
            preconditions: Vec::new(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if c.json {
        print_json(&json!({"revision": resp.revision, "written": rels.len()}));
    } else {
        println!("{}", resp.revision);
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(conn: &Connection, filter: &str, limit: Option<u32>) -> Result<ExitCode> {
    let f = RelationshipFilter::parse(filter).map_err(|e| anyhow!("{e}"))?;
    if f.resource_type.is_none() {
        bail!("--filter needs at least a resource type (refusing to delete everything)");
    }
    let mut c = connect(conn).await?;
    let resp = c
        .relationships
        .delete_relationships(pb::DeleteRelationshipsRequest {
            filter: Some(convert::to_pb_filter(&f)),
            preconditions: Vec::new(),
            limit: limit.unwrap_or(0),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if c.json {
        print_json(&json!({"deleted": resp.deleted, "revision": resp.revision}));
    } else {
        println!(
            "deleted {} relationship(s); revision {}",
            resp.deleted, resp.revision
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn relationship_text(r: Option<&pb::Relationship>) -> Result<String> {
    Ok(convert::relationship(r, "relationship")
        .map_err(|s| anyhow!("the server sent {}", s.message()))?
        .to_string())
}

/// Every relationship the filter selects, in one ReadRelationships stream (a limit of 0:
/// the server sends them a page at a time, all at one revision).
async fn read(conn: &Connection, filter: Option<&str>) -> Result<ExitCode> {
    let f = RelationshipFilter::parse(filter.unwrap_or("")).map_err(|e| anyhow!("{e}"))?;
    let mut c = connect(conn).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut all = Vec::new();
    let mut stream = c
        .relationships
        .read_relationships(pb::ReadRelationshipsRequest {
            consistency: Some(c.consistency.clone()),
            filter: f.resource_type.is_some().then(|| convert::to_pb_filter(&f)),
            cursor: String::new(),
            limit: 0,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    while let Some(item) = stream.next().await {
        let item = item.map_err(status_error)?;
        let text = relationship_text(item.relationship.as_ref())?;
        if c.json {
            all.push(text);
        } else {
            writeln!(out, "{text}")?;
        }
    }
    if c.json {
        drop(out);
        print_json(&json!({"relationships": all}));
    }
    Ok(ExitCode::SUCCESS)
}

async fn expand(conn: &Connection, target: &str) -> Result<ExitCode> {
    let (object_part, permission) = target
        .split_once('#')
        .ok_or_else(|| anyhow!("invalid expand target `{target}`: expected type:id#permission"))?;
    let (t, id) = object_part
        .split_once(':')
        .ok_or_else(|| anyhow!("invalid expand target `{target}`: expected type:id#permission"))?;
    let mut c = connect(conn).await?;
    let resp = c
        .permissions
        .expand(pb::ExpandRequest {
            consistency: Some(c.consistency.clone()),
            resource: Some(object(t, id)),
            permission: permission.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let tree = resp
        .tree
        .ok_or_else(|| anyhow!("the server sent no tree"))?;
    if c.json {
        print_json(&json!({"revision": resp.revision, "tree": tree_json(&tree)}));
    } else {
        let mut out = String::new();
        print_tree(&tree, 0, &mut out);
        print!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}

fn subject_text(s: &pb::SubjectRef) -> String {
    let o = s.object.clone().unwrap_or_default();
    if s.relation.is_empty() {
        format!("{}:{}", o.r#type, o.id)
    } else {
        format!("{}:{}#{}", o.r#type, o.id, s.relation)
    }
}

/// ` [name]` or ` [name:{context}]` for a caveat in a tree; empty for none.
fn caveat_text(c: Option<&pb::TreeCaveat>) -> String {
    match c.filter(|c| !c.caveat_name.is_empty()) {
        None => String::new(),
        Some(c) => match c.context.as_ref().filter(|s| !s.fields.is_empty()) {
            Some(s) => format!("[{}:{}]", c.caveat_name, serde_json::Value::Object(crate::convert::context(s))),
            None => format!("[{}]", c.caveat_name),
        },
    }
}

/// A leaf's subjects, each with its caveat.
fn leaf_subjects(l: &pb::userset_tree::Leaf) -> Vec<String> {
    l.subjects.iter().enumerate().map(|(i, s)| format!("{}{}", subject_text(s), caveat_text(l.caveats.get(i)))).collect()
}

fn print_tree(t: &pb::UsersetTree, depth: usize, out: &mut String) {
    use pb::userset_tree::Node;
    let pad = "  ".repeat(depth);
    let o = t.resource.clone().unwrap_or_default();
    let caveat = match caveat_text(t.caveat.as_ref()) {
        c if c.is_empty() => c,
        c => format!(" {c}"),
    };
    let head = format!("{pad}{}:{}#{}{caveat}", o.r#type, o.id, t.relation);
    match &t.node {
        Some(Node::Leaf(l)) => {
            let subjects = leaf_subjects(l);
            out.push_str(&format!("{head} = [{}]\n", subjects.join(", ")));
        }
        Some(Node::Union(c)) => {
            out.push_str(&format!("{head} = union\n"));
            c.children
                .iter()
                .for_each(|ch| print_tree(ch, depth + 1, out));
        }
        Some(Node::Intersection(c)) => {
            out.push_str(&format!("{head} = intersection\n"));
            c.children
                .iter()
                .for_each(|ch| print_tree(ch, depth + 1, out));
        }
        Some(Node::Exclusion(e)) => {
            out.push_str(&format!("{head} = exclusion\n"));
            if let Some(b) = &e.base {
                print_tree(b, depth + 1, out);
            }
            if let Some(s) = &e.subtract {
                out.push_str(&format!("{pad}  minus\n"));
                print_tree(s, depth + 1, out);
            }
        }
        Some(Node::Arrow(a)) => {
            let op = if a.all {
                format!("{}.all({})", a.tupleset, a.computed)
            } else {
                format!("{}->{}", a.tupleset, a.computed)
            };
            out.push_str(&format!("{head} = {op}\n"));
            a.children
                .iter()
                .for_each(|ch| print_tree(ch, depth + 1, out));
        }
        Some(Node::Nil(_)) => out.push_str(&format!("{head} = nil\n")),
        Some(Node::Cycle(_)) => out.push_str(&format!("{head} = (cycle)\n")),
        None => out.push_str(&format!("{head}\n")),
    }
}

fn tree_json(t: &pb::UsersetTree) -> serde_json::Value {
    use pb::userset_tree::Node;
    let o = t.resource.clone().unwrap_or_default();
    let mut v = json!({"resource": format!("{}:{}", o.r#type, o.id), "relation": t.relation});
    let (kind, extra) = match &t.node {
        Some(Node::Leaf(l)) => (
            "leaf",
            json!({"subjects": leaf_subjects(l)}),
        ),
        Some(Node::Union(c)) => (
            "union",
            json!({"children": c.children.iter().map(tree_json).collect::<Vec<_>>()}),
        ),
        Some(Node::Intersection(c)) => (
            "intersection",
            json!({"children": c.children.iter().map(tree_json).collect::<Vec<_>>()}),
        ),
        Some(Node::Exclusion(e)) => (
            "exclusion",
            json!({"base": e.base.as_deref().map(tree_json), "subtract": e.subtract.as_deref().map(tree_json)}),
        ),
        Some(Node::Arrow(a)) => (
            "arrow",
            json!({"tupleset": a.tupleset, "computed": a.computed, "all": a.all,
                   "children": a.children.iter().map(tree_json).collect::<Vec<_>>()}),
        ),
        Some(Node::Nil(_)) => ("nil", json!({})),
        Some(Node::Cycle(_)) => ("cycle", json!({})),
        None => ("unknown", json!({})),
    };
    if let (Some(map), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
        map.insert("kind".into(), json!(kind));
        map.extend(extra);
        if let Some(c) = t.caveat.as_ref().filter(|c| !c.caveat_name.is_empty()) {
            map.insert("caveat".into(), json!({
                "name": c.caveat_name,
                "context": c.context.as_ref().map(|s| serde_json::Value::Object(crate::convert::context(s))),
                "expression": c.expression,
            }));
        }
    }
    v
}

async fn lookup_resources(conn: &Connection, query: &str) -> Result<ExitCode> {
    let bad = || anyhow!("invalid lookup `{query}`: expected type#permission@type:id[#relation]");
    let (left, right) = query.split_once('@').ok_or_else(bad)?;
    let (rtype, permission) = left.split_once('#').ok_or_else(bad)?;
    let (sobj, srel) = match right.split_once('#') {
        Some((o, r)) => (o, Some(r)),
        None => (right, None),
    };
    let (stype, sid) = sobj.split_once(':').ok_or_else(bad)?;
    let mut c = connect(conn).await?;
    let mut stream = c
        .permissions
        .lookup_resources(pb::LookupResourcesRequest {
            context: None,
            consistency: Some(c.consistency.clone()),
            resource_type: rtype.to_string(),
            permission: permission.to_string(),
            subject: Some(subject(stype, sid, srel)),
            cursor: String::new(),
            limit: 0,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut ids = Vec::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(item) = stream.next().await {
        let item = item.map_err(status_error)?;
        if c.json {
            ids.push(item.resource_id);
        } else {
            writeln!(out, "{}", item.resource_id)?;
        }
    }
    if c.json {
        drop(out);
        print_json(&json!({"resource_ids": ids}));
    }
    Ok(ExitCode::SUCCESS)
}

async fn lookup_subjects(conn: &Connection, query: &str) -> Result<ExitCode> {
    let bad = || anyhow!("invalid lookup `{query}`: expected type:id#permission@type[#relation]");
    let (left, right) = query.split_once('@').ok_or_else(bad)?;
    let (robj, permission) = left.split_once('#').ok_or_else(bad)?;
    let (rtype, rid) = robj.split_once(':').ok_or_else(bad)?;
    let (stype, srel) = match right.split_once('#') {
        Some((t, r)) => (t, r),
        None => (right, ""),
    };
    let mut c = connect(conn).await?;
    let mut stream = c
        .permissions
        .lookup_subjects(pb::LookupSubjectsRequest {
            context: None,
            consistency: Some(c.consistency.clone()),
            resource: Some(object(rtype, rid)),
            permission: permission.to_string(),
            subject_type: stype.to_string(),
            subject_relation: srel.to_string(),
            cursor: String::new(),
            limit: 0,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut found = Vec::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(item) = stream.next().await {
        let item = item.map_err(status_error)?;
        if c.json {
            found.push(json!({"subject_id": item.subject_id, "excluded_ids": item.excluded_ids}));
        } else if item.subject_id == "*" {
            if item.excluded_ids.is_empty() {
                writeln!(out, "{stype}:*")?;
            } else {
                writeln!(out, "{stype}:* - {}", item.excluded_ids.join(", "))?;
            }
        } else {
            writeln!(out, "{}", item.subject_id)?;
        }
    }
    if c.json {
        drop(out);
        print_json(&json!({"subjects": found}));
    }
    Ok(ExitCode::SUCCESS)
}

async fn import(conn: &Connection, file: &PathBuf, batch: usize) -> Result<ExitCode> {
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let is_yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let (schema, rels) = if is_yaml {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let v = arbiter_schema::parse_validation_file(&text)
            .map_err(|e| anyhow!("{}: {e}", file.display()))?;
        (
            Some(v.schema),
            v.relationships
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>(),
        )
    } else {
        (None, read_lines(file)?)
    };
    let mut c = connect(conn).await?;
    if let Some(schema) = schema {
        c.schema
            .write_schema(pb::WriteSchemaRequest { schema })
            .await
            .map_err(status_error)?;
    }
    let total = rels.len() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} relationships ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportRelationshipsRequest>(4);
    let producer_bar = bar.clone();
    let producer = tokio::spawn(async move {
        for chunk in rels.chunks(batch) {
            let msg = pb::ImportRelationshipsRequest {
                relationships: chunk.iter().map(convert::to_pb_relationship).collect(),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
            producer_bar.inc(chunk.len() as u64);
        }
    });
    let resp = c
        .relationships
        .import_relationships(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status_error);
    let _ = producer.await;
    bar.finish_and_clear();
    let resp = resp?.into_inner();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let rate = resp.imported as f64 / secs;
    if c.json {
        print_json(
            &json!({"imported": resp.imported, "seconds": secs, "per_second": rate, "revision": resp.revision}),
        );
    } else {
        println!(
            "imported {} relationships in {secs:.2}s ({rate:.0}/s); revision {}",
            resp.imported, resp.revision
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(conn: &Connection) -> Result<ExitCode> {
    let mut c = connect(conn).await?;
    let mut stream = c
        .relationships
        .export_relationships(pb::ExportRelationshipsRequest {
            consistency: Some(c.consistency.clone()),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0u64;
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(status_error)?;
        for r in &msg.relationships {
            let text = relationship_text(Some(r))?;
            if c.json {
                writeln!(
                    out,
                    "{}",
                    json!({"relationship": text, "revision": msg.revision})
                )?;
            } else {
                writeln!(out, "{text}")?;
            }
            n += 1;
        }
    }
    out.flush()?;
    eprintln!("exported {n} relationships");
    Ok(ExitCode::SUCCESS)
}

async fn schema_write(conn: &Connection, file: &PathBuf) -> Result<ExitCode> {
    let schema =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut c = connect(conn).await?;
    let resp = c
        .schema
        .write_schema(pb::WriteSchemaRequest { schema })
        .await
        .map_err(status_error)?
        .into_inner();
    print_revision(c.json, &resp.revision);
    Ok(ExitCode::SUCCESS)
}

async fn schema_read(conn: &Connection) -> Result<ExitCode> {
    let mut c = connect(conn).await?;
    let resp = c
        .schema
        .read_schema(pb::ReadSchemaRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if c.json {
        print_json(&json!({"schema": resp.schema, "revision": resp.revision}));
    } else {
        print!("{}", resp.schema);
        if !resp.schema.ends_with('\n') {
            println!();
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn policy_write(conn: &Connection, files: &[PathBuf]) -> Result<ExitCode> {
    let policies: Vec<pb::Policy> = super::read_policy_files(files)?
        .into_iter()
        .map(|p| pb::Policy { id: p.id, text: p.text })
        .collect();
    let mut c = connect(conn).await?;
    let n = policies.len();
    let resp = c
        .schema
        .write_policies(pb::WritePoliciesRequest { policies })
        .await
        .map_err(status_error)?
        .into_inner();
    if c.json {
        print_json(&json!({"policies": n, "revision": resp.revision}));
    } else {
        println!("{}", resp.revision);
    }
    Ok(ExitCode::SUCCESS)
}

async fn policy_read(conn: &Connection) -> Result<ExitCode> {
    let mut c = connect(conn).await?;
    let resp = c
        .schema
        .read_policies(pb::ReadPoliciesRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if c.json {
        let list: Vec<_> = resp.policies.iter().map(|p| json!({"id": p.id, "text": p.text})).collect();
        print_json(&json!({"policies": list, "revision": resp.revision}));
    } else {
        for p in &resp.policies {
            println!("// id: {}\n{}\n", p.id, p.text.trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn watch(conn: &Connection, from: Option<String>) -> Result<ExitCode> {
    let mut c = connect(conn).await?;
    let mut stream = c
        .relationships
        .watch(pb::WatchRequest {
            after_revision: from.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut out = std::io::stdout();
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(status_error)?;
        if msg.schema_changed {
            if c.json {
                writeln!(
                    out,
                    "{}",
                    json!({"revision": msg.revision, "operation": "SCHEMA"})
                )?;
            } else {
                writeln!(out, "{} SCHEMA", msg.revision)?;
            }
        }
        for ch in &msg.changes {
            let op = match pb::relationship_change::Operation::try_from(ch.operation) {
                Ok(pb::relationship_change::Operation::Touch) => "TOUCH",
                Ok(pb::relationship_change::Operation::Delete) => "DELETE",
                _ => "UNKNOWN",
            };
            let text = relationship_text(ch.relationship.as_ref())?;
            if c.json {
                writeln!(
                    out,
                    "{}",
                    json!({"revision": msg.revision, "operation": op, "relationship": text})
                )?;
            } else {
                writeln!(out, "{} {op} {text}", msg.revision)?;
            }
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
