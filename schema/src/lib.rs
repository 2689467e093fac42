//! `arbiter-schema`: the schema language (SpiceDB-compatible) and the validation-file
//! format. Pure: no I/O, no async. The pipeline is lexer -> parser (spans) -> compiler
//! -> [`CompiledSchema`] with integer ids; [`print`] writes a compiled schema back.

pub mod ast;
pub mod caveat;
pub mod compiled;
pub mod compiler;
pub mod error;
pub mod lexer;
mod names;
pub mod nesting;
pub mod parser;
pub mod printer;
pub mod relationship;
pub mod span;
pub mod validation;

pub use compiled::*;
pub use compiler::{compile, is_valid_identifier, is_valid_type_name};
pub use error::{SchemaError, SchemaErrors};
pub use parser::parse;
pub use printer::print;
pub use relationship::{
    is_valid_object_id, object_id_problem, parse_object, parse_relationship, shorten, sorted_keys, CaveatRef, ObjectRef,
    Relationship, RelationshipParseError, SubjectRef, MAX_OBJECT_ID_LEN, WILDCARD_ID,
};
pub use validation::{
    parse_validation_file, Assertion, AssertionKind, ExpectedRelation, ExpectedSubject, FileLabel,
    ValidationFile, ValidationFileError,
};
