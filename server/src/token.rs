//! Revision tokens: what a write returns and a read's consistency names. Opaque to
//! callers (`r` and the revision in decimal today); parsed strictly so a mangled token
//! is a clear INVALID_ARGUMENT rather than a silent "latest".

/// The token of a revision.
pub fn encode(revision: u64) -> String {
    format!("r{revision}")
}

/// The revision a token names, or a message naming the problem.
pub fn decode(token: &str) -> Result<u64, String> {
    token
        .strip_prefix('r')
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "invalid revision token `{}`: use a token returned by a write or a read",
                arbiter_schema::shorten(token)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        for rev in [0, 1, 42, u64::MAX] {
            assert_eq!(decode(&encode(rev)), Ok(rev));
        }
        for bad in [
            "",
            "r",
            "42",
            "r-1",
            "r1x",
            "R1",
            "r 1",
            "r99999999999999999999999",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
