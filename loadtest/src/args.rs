//! Parsing of the load generator's argument values: durations (`10s`, `500ms`, `2m`),
//! rates and the request mix (`check=95,bulk=2,lookup=2,write=1`).

use std::fmt;
use std::time::Duration;

/// An argument value that could not be parsed; the message names the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

fn err(message: String) -> ArgError {
    ArgError(message)
}

/// A duration: a number (decimals allowed) and a unit, `ns`, `us`, `ms`, `s`, `m` or
/// `h`: `10s`, `500ms`, `2m`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, ArgError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| {
            err(format!(
                "invalid duration `{text}`: missing unit (use e.g. 10s, 500ms, 2m)"
            ))
        })?;
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(err(format!(
            "invalid duration `{text}`: expected a number before the unit"
        )));
    }
    let value: f64 = number.parse().map_err(|_| {
        err(format!(
            "invalid duration `{text}`: `{number}` is not a number"
        ))
    })?;
    let nanos_per_unit = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => {
            return Err(err(format!(
                "invalid duration `{text}`: unknown unit `{unit}` (use ns, us, ms, s, m or h)"
            )))
        }
    };
    let nanos = value * nanos_per_unit;
    if !nanos.is_finite() || nanos > 1e18 {
        return Err(err(format!("invalid duration `{text}`: too long")));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// A request rate in requests per second: a positive number.
pub fn parse_rate(text: &str) -> Result<f64, ArgError> {
    let r: f64 = text.trim().parse().map_err(|_| {
        err(format!(
            "invalid rate `{text}`: expected requests per second, e.g. 1000"
        ))
    })?;
    if !(r.is_finite() && r > 0.0) {
        return Err(err(format!("invalid rate `{text}`: must be more than 0")));
    }
    Ok(r)
}

/// How many request kinds there are.
pub const KINDS: usize = 5;

/// The kinds of request the load generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    /// One Check from `queries.txt`.
    Check,
    /// CheckBulk of consecutive queries.
    Bulk,
    /// LookupResources for a query's subject and permission.
    Lookup,
    /// WriteRelationships TOUCH of a fresh relationship to a synthetic user.
    Write,
    /// `grpc.health.v1.Health/Check`: the cheapest unary call the server answers, the
    /// baseline for what the transport alone costs (`--mix empty=100`).
    Empty,
}

impl RequestKind {
    pub const ALL: [RequestKind; KINDS] = [
        RequestKind::Check,
        RequestKind::Bulk,
        RequestKind::Lookup,
        RequestKind::Write,
        RequestKind::Empty,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Check => "check",
            RequestKind::Bulk => "bulk",
            RequestKind::Lookup => "lookup",
            RequestKind::Write => "write",
            RequestKind::Empty => "empty",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Relative weights of the request kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; KINDS],
}

impl Default for Mix {
    /// Checks only.
    fn default() -> Self {
        Self {
            weights: [1, 0, 0, 0, 0],
        }
    }
}

impl Mix {
    pub fn weight(&self, kind: RequestKind) -> u32 {
        self.weights[kind.index()]
    }

    fn total(&self) -> u64 {
        self.weights.iter().map(|&w| u64::from(w)).sum()
    }

    /// The kind of request number `i`: a fixed hash of `i` against the weights, so the
    /// sequence is the same in every run and any window of it follows the mix.
    pub fn kind_of(&self, i: u64) -> RequestKind {
        let mut x = crate::rng::mix64(i) % self.total().max(1);
        for kind in RequestKind::ALL {
            let w = u64::from(self.weight(kind));
            if x < w {
                return kind;
            }
            x -= w;
        }
        RequestKind::Check
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = RequestKind::ALL
            .iter()
            .filter(|k| self.weight(**k) > 0)
            .map(|k| format!("{}={}", k.name(), self.weight(*k)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// `check=95,bulk=2,lookup=2,write=1`: integer weights (they need not add up to 100);
/// kinds left out get 0.
pub fn parse_mix(text: &str) -> Result<Mix, ArgError> {
    let mut weights = [0u32; KINDS];
    let mut seen = [false; KINDS];
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(err(format!("invalid mix `{text}`: empty entry")));
        }
        let (name, value) = part.split_once('=').ok_or_else(|| {
            err(format!(
                "invalid mix entry `{part}`: expected KIND=WEIGHT, e.g. check=95"
            ))
        })?;
        let name = name.trim();
        let kind = RequestKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                err(format!(
                    "invalid mix entry `{part}`: unknown kind `{name}` (use check, bulk, lookup, write, empty)"
                ))
            })?;
        if seen[kind.index()] {
            return Err(err(format!("invalid mix `{text}`: `{name}` given twice")));
        }
        seen[kind.index()] = true;
        let value = value.trim();
        weights[kind.index()] = value.parse().map_err(|_| {
            err(format!(
                "invalid mix entry `{part}`: weight `{value}` is not a whole number"
            ))
        })?;
    }
    let mix = Mix { weights };
    if mix.total() == 0 {
        return Err(err(format!("invalid mix `{text}`: all weights are 0")));
    }
    Ok(mix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn bad_durations_name_the_problem() {
        let e = parse_duration("10").unwrap_err();
        assert!(e.0.contains("missing unit"), "{e}");
        let e = parse_duration("10x").unwrap_err();
        assert!(e.0.contains("unknown unit `x`"), "{e}");
        let e = parse_duration("s").unwrap_err();
        assert!(e.0.contains("expected a number"), "{e}");
        let e = parse_duration("1.2.3s").unwrap_err();
        assert!(e.0.contains("not a number"), "{e}");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999h").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("inf").is_err());
    }

    #[test]
    fn mixes() {
        let m = parse_mix("check=95,bulk=2,lookup=2,write=1").unwrap();
        assert_eq!(m.weight(RequestKind::Check), 95);
        assert_eq!(m.weight(RequestKind::Bulk), 2);
        assert_eq!(m.weight(RequestKind::Lookup), 2);
        assert_eq!(m.weight(RequestKind::Write), 1);
        assert_eq!(m.to_string(), "check=95,bulk=2,lookup=2,write=1");
        let m = parse_mix("bulk=1").unwrap();
        assert_eq!(m.weight(RequestKind::Check), 0);
        assert_eq!(m.kind_of(12345), RequestKind::Bulk);
        let m = parse_mix(" check = 3 , write=1").unwrap();
        assert_eq!(m.weight(RequestKind::Write), 1);
    }

    #[test]
    fn bad_mixes_name_the_problem() {
        let cases = [
            ("check=95,read=5", "unknown kind `read`"),
            ("check", "expected KIND=WEIGHT"),
            ("check=x", "weight `x` is not a whole number"),
            ("check=-1", "not a whole number"),
            ("check=1.5", "not a whole number"),
            ("check=1,check=2", "`check` given twice"),
            ("check=0,bulk=0", "all weights are 0"),
            ("check=1,,bulk=1", "empty entry"),
            ("", "empty entry"),
        ];
        for (input, want) in cases {
            let e = parse_mix(input).unwrap_err();
            assert!(e.0.contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn the_empty_call_is_a_kind() {
        let m = parse_mix("check=1,empty=1").unwrap();
        assert_eq!(m.weight(RequestKind::Empty), 1);
        assert_eq!(m.to_string(), "check=1,empty=1");
        assert!((0..100).any(|i| m.kind_of(i) == RequestKind::Empty));
        let only = parse_mix("empty=5").unwrap();
        assert!((0..100).all(|i| only.kind_of(i) == RequestKind::Empty));
    }

    #[test]
    fn mix_sequence_follows_weights() {
        let m = parse_mix("check=95,bulk=2,lookup=2,write=1").unwrap();
        let mut counts = [0u32; KINDS];
        for i in 0..100_000 {
            counts[m.kind_of(i).index()] += 1;
        }
        // A fixed sequence: these are exact for the first 100k requests, not statistics.
        assert!((94_000..96_000).contains(&counts[0]), "{counts:?}");
        assert!((1_500..2_500).contains(&counts[1]), "{counts:?}");
        assert!((1_500..2_500).contains(&counts[2]), "{counts:?}");
        assert!((500..1_500).contains(&counts[3]), "{counts:?}");
    }
}
