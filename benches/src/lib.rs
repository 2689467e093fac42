//! `arbiter-benches`: criterion benchmarks live in `benches/` of this crate. None yet;
//! the first ones arrive with the foundation-2 issue.
