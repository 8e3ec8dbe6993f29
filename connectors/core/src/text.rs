//! Small text helpers shared by every normaliser.

use std::collections::BTreeMap;

/// A cell that is empty (after trimming) or the literal `NULL` is absent.
pub fn opt(cell: &str) -> Option<&str> {
    let t = cell.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("null") { None } else { Some(t) }
}

/// Like [`opt`] but owned.
pub fn opt_string(cell: &str) -> Option<String> {
    opt(cell).map(str::to_string)
}

/// Parse a FOCUS `Tags` cell: a JSON object whose values are strings, numbers, booleans or null.
/// Non-string scalars keep their JSON text (`12`, `true`); `null` values mean "key present, no
/// value" and are kept as an empty string. Nested objects/arrays are an error.
pub fn parse_tags_json(cell: &str) -> Result<BTreeMap<String, String>, String> {
    let Some(t) = opt(cell) else { return Ok(BTreeMap::new()) };
    let v: serde_json::Value = serde_json::from_str(t).map_err(|e| format!("Tags is not a JSON object: {e}"))?;
    let serde_json::Value::Object(map) = v else {
        return Err("Tags is not a JSON object".to_string());
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let s = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => String::new(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(format!("Tags value of key '{k}' is a nested object or array")),
        };
        out.insert(k, s);
    }
    Ok(out)
}

/// Shorten text for an error message or a quarantine record (UTF-8 safe), saying how much was cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes]", &s[..end], s.len() - end)
}

/// A configured endpoint URL: `http(s)://host[:port][/path]` with a non-empty host and a
/// numeric port (config validation, no IO).
pub fn valid_endpoint(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(|| format!("'{u}' must start with http:// or https://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    if host.is_empty() || u.chars().any(|c| c.is_whitespace()) {
        return Err(format!("'{u}' has no host"));
    }
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err(format!("'{u}' has an invalid port '{p}'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let t = parse_tags_json(r#"{"team":"payments","cost":12,"on":true,"x":null}"#).expect("tags");
        assert_eq!(t["team"], "payments");
        assert_eq!(t["cost"], "12");
        assert_eq!(t["on"], "true");
        assert_eq!(t["x"], "");
        assert!(parse_tags_json("NULL").expect("null").is_empty());
        assert!(parse_tags_json("[1]").is_err());
        assert!(parse_tags_json(r#"{"a":{"b":1}}"#).is_err());
        assert!(parse_tags_json("team=x").is_err());
    }

    #[test]
    fn clip_is_char_safe() {
        assert_eq!(clip("héllo", 2), "h… [5 more bytes]");
        assert_eq!(clip("abc", 10), "abc");
    }
}
