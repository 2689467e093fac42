//! Caveat parameter types and the conversion of a JSON context into CEL values, as
//! SpiceDB converts its `google.protobuf.Struct` contexts: integers as JSON numbers or
//! decimal strings, bytes as base64, timestamps as RFC 3339, durations as Go writes
//! them (`1h30m`, `1.5s`), IP addresses as text, and `any` as JSON reads (numbers are
//! doubles).

use std::any::Any;
use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelDuration, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
    CelUInt, Type,
};
use cel::common::value::{StaticVal, Val};
use serde_json::Value as Json;

/// The most elements a list or map in a context may hold: the static cost limit
/// counts every comprehension as running this many times.
pub const MAX_ITEMS: usize = 1000;

/// How deeply values in a context may nest (lists, maps, `any`).
pub const MAX_VALUE_DEPTH: usize = 16;

/// A declared parameter type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParamType {
    Any,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    IpAddress,
    List(Box<ParamType>),
    /// `map<T>`: string keys, values of `T`.
    Map(Box<ParamType>),
}

impl ParamType {
    /// Reads a type as the schema parser writes it (`list<int>`, `map<any>`).
    pub fn parse(text: &str) -> Result<ParamType, String> {
        let text = text.trim();
        let (base, inner) = match text.split_once('<') {
            Some((base, rest)) => {
                let Some(inner) = rest.strip_suffix('>') else {
                    return Err(format!("unknown parameter type `{text}`"));
                };
                (base.trim(), Some(inner))
            }
            None => (text, None),
        };
        let scalar = match base {
            "any" => Some(ParamType::Any),
            "bool" => Some(ParamType::Bool),
            "int" => Some(ParamType::Int),
            "uint" => Some(ParamType::Uint),
            "double" => Some(ParamType::Double),
            "string" => Some(ParamType::String),
            "bytes" => Some(ParamType::Bytes),
            "duration" => Some(ParamType::Duration),
            "timestamp" => Some(ParamType::Timestamp),
            "ipaddress" => Some(ParamType::IpAddress),
            _ => None,
        };
        match (scalar, inner) {
            (Some(t), None) => Ok(t),
            (Some(_), Some(_)) => Err(format!("type `{base}` takes no type parameters")),
            (None, None) if base == "list" || base == "map" => {
                Err(format!("type `{base}` needs one type parameter, as in `{base}<int>`"))
            }
            (None, Some(inner)) if base == "list" || base == "map" => {
                if inner.contains(',') {
                    return Err(format!(
                        "type `{base}` takes one type parameter{}",
                        if base == "map" { " (its values; keys are strings)" } else { "" }
                    ));
                }
                let inner = Box::new(ParamType::parse(inner)?);
                Ok(if base == "list" { ParamType::List(inner) } else { ParamType::Map(inner) })
            }
            _ => Err(format!(
                "unknown parameter type `{base}`: use any, bool, int, uint, double, string, bytes, duration, timestamp, ipaddress, list<T> or map<T>"
            )),
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Any => f.write_str("any"),
            ParamType::Bool => f.write_str("bool"),
            ParamType::Int => f.write_str("int"),
            ParamType::Uint => f.write_str("uint"),
            ParamType::Double => f.write_str("double"),
            ParamType::String => f.write_str("string"),
            ParamType::Bytes => f.write_str("bytes"),
            ParamType::Duration => f.write_str("duration"),
            ParamType::Timestamp => f.write_str("timestamp"),
            ParamType::IpAddress => f.write_str("ipaddress"),
            ParamType::List(t) => write!(f, "list<{t}>"),
            ParamType::Map(t) => write!(f, "map<{t}>"),
        }
    }
}

/// The CEL type of IP addresses.
pub(crate) static IP_TYPE: Type = Type::new_unspecified_type("ipaddress");

/// An IP address, SpiceDB's `ipaddress` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip(pub IpAddr);

impl Val for Ip {
    fn get_type(&self) -> &Type {
        &IP_TYPE
    }
    fn cel_type() -> &'static Type {
        &IP_TYPE
    }
    fn equals(&self, other: &dyn Val) -> bool {
        other.downcast_ref::<Ip>().is_some_and(|o| o.0 == self.0)
    }
    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(*self)
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

impl StaticVal for Ip {}

impl Ip {
    /// Whether the address is in `cidr` (`10.0.0.0/8`, `2001:db8::/32`); an address of
    /// the other family never is.
    pub fn in_cidr(&self, cidr: &str) -> Result<bool, String> {
        let (net, bits) = cidr.split_once('/').ok_or_else(|| format!("`{cidr}` is not a CIDR range"))?;
        let net: IpAddr = net.parse().map_err(|_| format!("`{cidr}` is not a CIDR range"))?;
        let bits: u32 = bits.parse().map_err(|_| format!("`{cidr}` is not a CIDR range"))?;
        match (self.0, net) {
            (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                Ok(u32::from(a) & mask == u32::from(n) & mask)
            }
            (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                Ok(u128::from(a) & mask == u128::from(n) & mask)
            }
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Err(format!("`{cidr}` is not a CIDR range"))
            }
            _ => Ok(false),
        }
    }
}

/// A context value that does not fit its parameter's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

type Boxed = Box<dyn Val + 'static>;

/// Converts `value` to a CEL value of `ty`.
pub(crate) fn convert(ty: &ParamType, value: &Json, depth: usize) -> Result<Boxed, ValueError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(ValueError(format!("nests deeper than {MAX_VALUE_DEPTH} levels")));
    }
    let wrong = || ValueError(format!("expected {}, found {}", expected(ty), describe(value)));
    Ok(match ty {
        ParamType::Any => any(value, depth)?,
        ParamType::Bool => Box::new(CelBool::from(value.as_bool().ok_or_else(wrong)?)),
        ParamType::String => Box::new(CelString::from(value.as_str().ok_or_else(wrong)?.to_string())),
        ParamType::Int => Box::new(CelInt::from(int(value).ok_or_else(wrong)?)),
        ParamType::Uint => Box::new(CelUInt::from(uint(value).ok_or_else(wrong)?)),
        ParamType::Double => Box::new(CelDouble::from(match value {
            Json::Number(n) => n.as_f64().ok_or_else(wrong)?,
            Json::String(s) => s.trim().parse::<f64>().map_err(|_| wrong())?,
            _ => return Err(wrong()),
        })),
        ParamType::Bytes => {
            let text = value.as_str().ok_or_else(wrong)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| ValueError(format!("expected bytes as base64, found {}", describe(value))))?;
            Box::new(CelBytes::from(bytes))
        }
        ParamType::Duration => {
            let text = value.as_str().ok_or_else(wrong)?;
            let d = parse_duration(text).ok_or_else(|| {
                ValueError(format!("expected a duration such as \"1h30m\", found {}", describe(value)))
            })?;
            Box::new(CelDuration::from(d))
        }
        ParamType::Timestamp => {
            let text = value.as_str().ok_or_else(wrong)?;
            let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
                ValueError(format!("expected an RFC 3339 timestamp, found {}", describe(value)))
            })?;
            Box::new(CelTimestamp::from(t))
        }
        ParamType::IpAddress => {
            let text = value.as_str().ok_or_else(wrong)?;
            let ip: IpAddr = text
                .trim()
                .parse()
                .map_err(|_| ValueError(format!("expected an IP address, found {}", describe(value))))?;
            Box::new(Ip(ip))
        }
        ParamType::List(inner) => {
            let items = value.as_array().ok_or_else(wrong)?;
            if items.len() > MAX_ITEMS {
                return Err(ValueError(format!("a list of {} items; at most {MAX_ITEMS} are allowed", items.len())));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(convert(inner, item, depth + 1).map_err(|e| ValueError(format!("item {i}: {}", e.0)))?);
            }
            Box::new(CelList::from(out))
        }
        ParamType::Map(inner) => {
            let entries = value.as_object().ok_or_else(wrong)?;
            if entries.len() > MAX_ITEMS {
                return Err(ValueError(format!("a map of {} entries; at most {MAX_ITEMS} are allowed", entries.len())));
            }
            let mut out = std::collections::HashMap::with_capacity(entries.len());
            for (k, v) in entries {
                let v = convert(inner, v, depth + 1).map_err(|e| ValueError(format!("key `{k}`: {}", e.0)))?;
                out.insert(CelMapKey::from(k.clone()), v);
            }
            Box::new(CelMap::from(out))
        }
    })
}

fn any(value: &Json, depth: usize) -> Result<Boxed, ValueError> {
    Ok(match value {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        Json::String(s) => Box::new(CelString::from(s.clone())),
        Json::Array(_) => convert(&ParamType::List(Box::new(ParamType::Any)), value, depth)?,
        Json::Object(_) => convert(&ParamType::Map(Box::new(ParamType::Any)), value, depth)?,
    })
}

/// An integer as a JSON number (a double with no fraction is one) or a decimal string.
fn int(value: &Json) -> Option<i64> {
    match value {
        Json::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            // i64::MAX as f64 rounds up to 2^63, which does not fit.
            (f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f)).then_some(f as i64)
        }),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn uint(value: &Json) -> Option<u64> {
    match value {
        Json::Number(n) => n.as_u64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && (0.0..1.844_674_407_370_955_2e19).contains(&f)).then_some(f as u64)
        }),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn expected(ty: &ParamType) -> String {
    match ty {
        ParamType::Any => "a value".into(),
        ParamType::Bool => "a boolean".into(),
        ParamType::Int => "an int (a number or a decimal string)".into(),
        ParamType::Uint => "a uint (a non-negative number or a decimal string)".into(),
        ParamType::Double => "a number".into(),
        ParamType::String => "a string".into(),
        ParamType::Bytes => "bytes as a base64 string".into(),
        ParamType::Duration => "a duration string".into(),
        ParamType::Timestamp => "an RFC 3339 timestamp string".into(),
        ParamType::IpAddress => "an IP address string".into(),
        ParamType::List(t) => format!("a list of {t}"),
        ParamType::Map(t) => format!("an object of {t}"),
    }
}

fn describe(value: &Json) -> String {
    let text = value.to_string();
    if text.len() > 40 {
        let cut = (0..=37).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        format!("`{}...`", text.get(..cut).unwrap_or(""))
    } else {
        format!("`{text}`")
    }
}

/// A duration as Go's `time.ParseDuration` reads it: an optional sign, then one or
/// more decimal numbers each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`);
/// `0` alone is zero.
pub fn parse_duration(text: &str) -> Option<chrono::Duration> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, text.get(1..)?),
        Some(b'+') => (false, text.get(1..)?),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(chrono::Duration::zero());
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let number = rest.get(..digits)?;
        rest = rest.get(digits..)?;
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = rest.get(..unit_len)?;
        rest = rest.get(unit_len..)?;
        let nanos_per: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        let mut amount = whole.checked_mul(nanos_per)?;
        if !frac.is_empty() {
            let frac_digits = frac.get(..frac.len().min(18))?;
            let scale = 10i128.pow(u32::try_from(frac_digits.len()).ok()?);
            let f: i128 = frac_digits.parse().ok()?;
            amount = amount.checked_add(f.checked_mul(nanos_per)? / scale)?;
        }
        total = total.checked_add(amount)?;
        if total > i128::from(i64::MAX) {
            return None;
        }
    }
    let nanos = i64::try_from(if negative { -total } else { total }).ok()?;
    Some(chrono::Duration::nanoseconds(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_read_as_the_parser_writes_them() {
        assert_eq!(ParamType::parse("list<int>"), Ok(ParamType::List(Box::new(ParamType::Int))));
        assert_eq!(ParamType::parse("map<list<any>>").map(|t| t.to_string()), Ok("map<list<any>>".to_string()));
        assert!(ParamType::parse("map<string, int>").unwrap_err().contains("keys are strings"));
        assert!(ParamType::parse("float").unwrap_err().contains("unknown parameter type `float`"));
        assert!(ParamType::parse("list").unwrap_err().contains("needs one type parameter"));
        assert!(ParamType::parse("int<int>").is_err());
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        let d = |s: &str| parse_duration(s).map(|d| d.num_nanoseconds().unwrap_or(i64::MIN));
        assert_eq!(d("1h30m"), Some(5_400_000_000_000));
        assert_eq!(d("1.5s"), Some(1_500_000_000));
        assert_eq!(d("-300ms"), Some(-300_000_000));
        assert_eq!(d("0"), Some(0));
        assert_eq!(d("2h45m10.5s"), Some(9_910_500_000_000));
        assert_eq!(d("1µs"), Some(1_000));
        for bad in ["", "1", "h", "1x", "1..5s", "-", "9999999999999h"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn contexts_convert_by_parameter_type() {
        let ok = |t: ParamType, j: Json| convert(&t, &j, 0).map(|v| v.get_type().name().to_string());
        assert_eq!(ok(ParamType::Int, serde_json::json!(42)), Ok("int".into()));
        assert_eq!(ok(ParamType::Int, serde_json::json!("42")), Ok("int".into()));
        assert_eq!(ok(ParamType::Int, serde_json::json!(42.0)), Ok("int".into()));
        assert!(ok(ParamType::Int, serde_json::json!(4.5)).unwrap_err().0.contains("expected an int"));
        assert!(ok(ParamType::Uint, serde_json::json!(-1)).is_err());
        assert_eq!(ok(ParamType::Any, serde_json::json!(42)), Ok("double".into()));
        assert_eq!(ok(ParamType::IpAddress, serde_json::json!("10.0.0.1")), Ok("ipaddress".into()));
        assert!(ok(ParamType::IpAddress, serde_json::json!("10.0.0.0/8")).is_err());
        assert_eq!(ok(ParamType::Bytes, serde_json::json!("aGk=")), Ok("bytes".into()));
        assert!(ok(ParamType::Timestamp, serde_json::json!("yesterday")).unwrap_err().0.contains("RFC 3339"));
        let long: Vec<i64> = (0..=MAX_ITEMS as i64).collect();
        assert!(ok(ParamType::List(Box::new(ParamType::Int)), serde_json::json!(long)).unwrap_err().0.contains("at most"));
        let mut deep = serde_json::json!(1);
        for _ in 0..20 {
            deep = serde_json::json!([deep]);
        }
        assert!(ok(ParamType::Any, deep).unwrap_err().0.contains("nests deeper"));
    }

    #[test]
    fn cidr_ranges_match_by_prefix_and_family() {
        let ip = |s: &str| Ip(s.parse().unwrap());
        assert_eq!(ip("10.1.2.3").in_cidr("10.0.0.0/8"), Ok(true));
        assert_eq!(ip("11.1.2.3").in_cidr("10.0.0.0/8"), Ok(false));
        assert_eq!(ip("1.2.3.4").in_cidr("0.0.0.0/0"), Ok(true));
        assert_eq!(ip("2001:db8::1").in_cidr("2001:db8::/32"), Ok(true));
        assert_eq!(ip("2001:db8::1").in_cidr("10.0.0.0/8"), Ok(false));
        assert!(ip("10.1.2.3").in_cidr("10.0.0.0/33").is_err());
        assert!(ip("10.1.2.3").in_cidr("nonsense").is_err());
    }
}
