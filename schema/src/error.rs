//! Errors of the schema pipeline: every one names the problem and where it is.

use std::fmt;

use crate::span::{LineIndex, Position, Span};

/// One problem found while lexing, parsing or compiling a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub message: String,
    pub position: Position,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.position)
    }
}

impl std::error::Error for SchemaError {}

/// Every problem found in one schema text, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaErrors(pub Vec<SchemaError>);

impl SchemaErrors {
    pub fn first(&self) -> Option<&SchemaError> {
        self.0.first()
    }
}

impl fmt::Display for SchemaErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for e in &self.0 {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemaErrors {}

/// Collects errors by span while a stage runs; resolves positions at the end.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    errors: Vec<(Span, String)>,
}

impl Sink {
    pub(crate) fn push(&mut self, span: Span, message: impl Into<String>) {
        self.errors.push((span, message.into()));
    }

    pub(crate) fn into_errors(mut self, text: &str) -> Vec<SchemaError> {
        let index = LineIndex::new(text);
        self.errors.sort_by_key(|(span, _)| span.start);
        self.errors.dedup();
        self.errors
            .into_iter()
            .map(|(span, message)| SchemaError {
                message,
                position: index.position(span.start),
            })
            .collect()
    }
}
