//! Page tokens of the AuthZEN searches: opaque to callers, they carry which search they
//! belong to (a fingerprint of its query), the revision the first page was read at (later
//! pages read at that revision or newer) and the last result returned (the engine's
//! lookup cursor). A token handed to a different search is refused.


/// Which search a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Subject,
    Resource,
    Action,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::Subject => 's',
            Kind::Resource => 'r',
            Kind::Action => 'a',
        }
    }
}

/// A decoded token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub revision: u64,
    /// The last result of the previous page.
    pub after: String,
}

/// FNV-1a over the query's parts (with separators), stable across builds and replicas.
pub fn fingerprint(kind: Kind, parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&[kind.letter() as u8]);
    for p in parts {
        eat(&[0xff]);
        eat(p.as_bytes());
    }
    hash
}

/// `{kind}1.{fingerprint}.{revision}.{hex of the last result}`.
pub fn encode(kind: Kind, fingerprint: u64, position: &Position) -> String {
    let hex: String = position.after.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{}1.{fingerprint:016x}.{}.{hex}", kind.letter(), position.revision)
}

/// The position a token names, for the search with `fingerprint`, or why not.
pub fn decode(kind: Kind, fingerprint: u64, token: &str) -> Result<Position, String> {
    let invalid = || {
        format!(
            "invalid `page.token` `{}`: pass the `page.next_token` of the previous page unchanged",
            arbiter_schema::shorten(token)
        )
    };
    let mut parts = token.split('.');
    let (Some(head), Some(fp), Some(revision), Some(hex), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let mut head = head.chars();
    let (Some(letter), Some('1'), None) = (head.next(), head.next(), head.next()) else {
        return Err(invalid());
    };
    let fp = u64::from_str_radix(fp, 16).map_err(|_| invalid())?;
    let revision = revision.parse::<u64>().map_err(|_| invalid())?;
    if hex.len() % 2 != 0 {
        return Err(invalid());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    let after = String::from_utf8(bytes).map_err(|_| invalid())?;
    if letter != kind.letter() || fp != fingerprint {
        return Err("`page.token` belongs to a different search: a token only continues the search that returned it".into());
    }
    Ok(Position { revision, after })
}

/// The page size for a requested limit: the server's cap (`--max-page-size`) when the
/// request names none (or 0), and never more than it (the page token says where to go on).
pub fn limit(requested: Option<u64>, max: usize) -> usize {
    match requested {
        None | Some(0) => max,
        Some(n) => usize::try_from(n).unwrap_or(max).min(max),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn tokens_round_trip_and_stay_with_their_search() {
        let fp = fingerprint(Kind::Subject, &["user", "doc", "1", "view"]);
        for after in ["", "ann", "a.b:c/d", "ünï ☃"] {
            let p = Position { revision: 42, after: after.into() };
            let t = encode(Kind::Subject, fp, &p);
            assert_eq!(decode(Kind::Subject, fp, &t), Ok(p));
            assert!(decode(Kind::Resource, fp, &t).unwrap_err().contains("different search"));
            let other = fingerprint(Kind::Subject, &["user", "doc", "2", "view"]);
            assert!(decode(Kind::Subject, other, &t).unwrap_err().contains("different search"));
        }
        // The separators keep parts apart.
        assert_ne!(fingerprint(Kind::Action, &["ab", "c"]), fingerprint(Kind::Action, &["a", "bc"]));
        for bad in ["", "x", "s1.zz.1.00", "s1.0.x.00", "s1.0.1.0", "s2.0.1.00", "s1.0.1.00.00", "s1.0.1.ff"] {
            assert!(decode(Kind::Subject, 0, bad).unwrap_err().contains("invalid"), "{bad:?}");
        }
    }

    #[test]
    fn limits_default_and_cap() {
        assert_eq!(limit(None, 1000), 1000);
        assert_eq!(limit(Some(0), 1000), 1000);
        assert_eq!(limit(Some(3), 1000), 3);
        assert_eq!(limit(Some(u64::MAX), 1000), 1000);
    }
}
