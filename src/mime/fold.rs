//! Folding over-long header lines at whitespace (RFC 5322 §2.2.3): a CRLF is
//! inserted before an existing space or tab, which unfolding removes again, so
//! the field's value is unchanged. A line over 998 octets (§2.1.1) with no
//! whitespace to fold at cannot be made valid.

/// RFC 5322 §2.1.1: at most 998 octets per line, excluding CRLF.
pub const MAX_LINE: usize = 998;
/// RFC 5322 §2.1.1: lines SHOULD be at most 78 octets; folds aim for that.
const SHOULD_LINE: usize = 78;

/// A header line over 998 octets with nowhere to fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfoldable {
    /// The field name (or the start of the line when it has none).
    pub field: String,
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Folds every physical line of `block` longer than 998 octets; `Ok(None)`
/// when none is.
pub fn fold_block(block: &[u8]) -> Result<Option<Vec<u8>>, Unfoldable> {
    let too_long = |l: &[u8]| l.strip_suffix(b"\r\n").unwrap_or(l).len() > MAX_LINE;
    if !block.split_inclusive(|&b| b == b'\n').any(too_long) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(block.len() + block.len() / 32);
    let mut field = String::new();
    for line in block.split_inclusive(|&b| b == b'\n') {
        let (body, crlf) = match line.strip_suffix(b"\r\n") {
            Some(b) => (b, &b"\r\n"[..]),
            None => (line, &b""[..]),
        };
        if body.first().is_some_and(|&b| !is_wsp(b)) {
            let end = body.iter().position(|&b| b == b':').unwrap_or(body.len());
            field = String::from_utf8_lossy(&body[..end.min(76)]).into_owned();
        }
        fold_line(body, &mut out).map_err(|()| Unfoldable {
            field: field.clone(),
        })?;
        out.extend_from_slice(crlf);
    }
    Ok(Some(out))
}

/// Appends `line` folded so that no piece exceeds 998 octets, each piece
/// ending before a space or tab and holding something besides whitespace
/// (a whitespace-only line would be obsolete syntax, §4.2).
fn fold_line(line: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
    let mut start = 0;
    while line.len() - start > SHOULD_LINE {
        let fold_at = |p: &usize| is_wsp(line[*p]) && line[start..*p].iter().any(|&b| !is_wsp(b));
        let p = match (start + 1..=start + SHOULD_LINE).rev().find(fold_at) {
            Some(p) => p,
            None if line.len() - start <= MAX_LINE => break,
            None => (start + 1..=start + MAX_LINE)
                .rev()
                .find(fold_at)
                .ok_or(())?,
        };
        out.extend_from_slice(&line[start..p]);
        out.extend_from_slice(b"\r\n");
        start = p;
    }
    out.extend_from_slice(&line[start..]);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn unfold(b: &[u8]) -> Vec<u8> {
        let s = String::from_utf8(b.to_vec()).unwrap();
        s.replace("\r\n ", " ").replace("\r\n\t", "\t").into_bytes()
    }

    #[test]
    fn folds_long_lines_only_and_unfolds_to_the_same_value() {
        assert_eq!(fold_block(b"Subject: short\r\n\r\n").unwrap(), None);
        let to = format!(
            "To: {}\r\nSubject: x\r\n\r\n",
            (0..200)
                .map(|i| format!("u{i}@example.com"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let folded = fold_block(to.as_bytes()).unwrap().unwrap();
        assert!(folded.split(|&b| b == b'\n').all(|l| l.len() <= 80));
        assert_eq!(unfold(&folded), to.as_bytes());
    }

    #[test]
    fn no_whitespace_to_fold_at_is_unfoldable() {
        let bad = format!("X-Token: {}\r\n\r\n", "a".repeat(1200));
        assert_eq!(
            fold_block(bad.as_bytes()),
            Err(Unfoldable {
                field: "X-Token".into()
            })
        );
        // Whitespace only in the first 999 octets is not enough for 1,500.
        let late = format!("X-Late: {}\r\n", "b".repeat(1500));
        assert!(fold_block(late.as_bytes()).is_err());
        // A run of spaces never becomes a whitespace-only line.
        let spaces = format!("X-S: a{}{}\r\n", " ".repeat(1000), "c".repeat(10));
        let out = fold_block(spaces.as_bytes()).unwrap().unwrap();
        assert!(out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .all(|l| l.iter().any(|&b| !is_wsp(b) && b != b'\r')));
        assert_eq!(unfold(&out), spaces.as_bytes());
    }
}
