//! API-key checks for the control plane and `/usage`.

use actix_web::HttpRequest;

/// Header that carries the API key.
pub const API_KEY_HEADER: &str = "X-API-Key";

/// Compare two byte strings in time that depends only on their lengths, so
/// a caller cannot learn a key byte by byte from response times.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The request's API key, if it sent one that is valid UTF-8.
pub fn presented_key(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// Whether the request may use the server: any key in development mode
/// (no keys configured), else one of the configured keys. Every configured
/// key is compared, so timing does not say which one matched.
pub fn is_authorized(keys: &[String], presented: Option<&str>) -> bool {
    if keys.is_empty() {
        return true;
    }
    let Some(presented) = presented else {
        return false;
    };
    keys.iter().fold(false, |found, key| {
        found | constant_time_eq(key.as_bytes(), presented.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_mode_accepts_anything() {
        assert!(is_authorized(&[], None));
        assert!(is_authorized(&[], Some("whatever")));
    }

    #[test]
    fn listed_keys_only() {
        let keys = vec!["alpha".to_string(), "beta".to_string()];
        assert!(is_authorized(&keys, Some("beta")));
        assert!(!is_authorized(&keys, Some("betb")));
        assert!(!is_authorized(&keys, Some("bet")));
        assert!(!is_authorized(&keys, None));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
    }
}
