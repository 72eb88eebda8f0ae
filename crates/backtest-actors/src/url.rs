//! URL rules for the three planes of the backtest API.
//!
//! Users type all sorts of things for "the server": a bare host name, a
//! `wss://` URL with or without the `/backtest` path, sometimes an `https://`
//! URL copied from a browser. The server hands back an `rpc_endpoint` that may
//! be absolute or relative. These functions turn those inputs into the exact
//! URLs each connection needs, in one place, so the actors never do string
//! surgery of their own and a wrong input fails early with a message that
//! says what was expected instead of a confusing connect error later.
//!
//! All functions are pure and idempotent on their own output, so it is safe to
//! normalise a URL that was already normalised (for example a value read back
//! from a config file).

use std::fmt;

/// Path of the control endpoint on the backtest host.
const CONTROL_PATH: &str = "/backtest";

/// Why a URL could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Nothing was given.
    #[error("URL is empty")]
    Empty,
    /// Whitespace is never part of a valid URL; usually a copy/paste slip.
    #[error("URL {url:?} contains whitespace")]
    Whitespace {
        /// The offending input.
        url: String,
    },
    /// The scheme is not one this conversion accepts.
    #[error("URL {url:?} has scheme `{scheme}`, expected {expected}")]
    UnsupportedScheme {
        /// The offending input.
        url: String,
        /// The scheme that was found (as written).
        scheme: String,
        /// Human-readable list of what would have been accepted.
        expected: &'static str,
    },
    /// The URL has no host part (`wss:///backtest`, `:8900`, ...).
    #[error("URL {url:?} has no host")]
    MissingHost {
        /// The offending input.
        url: String,
    },
}

/// Normalise user input into the control-plane WebSocket URL.
///
/// * a bare host (`host`, `host:port`, optional trailing `/`) becomes
///   `wss://HOST/backtest`: TLS is the safe default for a name without scheme;
/// * a `ws://` or `wss://` URL keeps its scheme (plain `ws://` is for local
///   servers) and gains `/backtest` only when its path does not already end
///   with it; trailing slashes are trimmed;
/// * `http(s)://` or any other scheme, empty input, whitespace, or a URL
///   without a host is an error: the control plane only speaks WebSocket, and
///   guessing would hide a configuration mistake.
pub fn control_url(input: &str) -> Result<String, UrlError> {
    check_basic(input)?;
    let (scheme, rest) = match split_scheme(input) {
        Some((scheme, rest)) => {
            let lower = scheme.to_ascii_lowercase();
            if lower != "ws" && lower != "wss" {
                return Err(UrlError::UnsupportedScheme {
                    url: input.to_string(),
                    scheme: scheme.to_string(),
                    expected: "ws:// or wss:// (or a bare host name for wss://HOST/backtest)",
                });
            }
            (lower, rest)
        }
        None => ("wss".to_string(), input),
    };
    require_host(input, rest)?;
    let trimmed = rest.trim_end_matches('/');
    let with_path = if trimmed.ends_with(CONTROL_PATH) {
        trimmed.to_string()
    } else {
        format!("{trimmed}{CONTROL_PATH}")
    };
    Ok(format!("{scheme}://{with_path}"))
}

/// The HTTP base (scheme and authority, no path) that belongs to a control URL:
/// `ws` maps to `http`, `wss` to `https`.
///
/// This is where `/available-ranges`, `/usage` and relative `rpc_endpoint`s
/// live. The input is expected to be the output of [`control_url`]; an input
/// that is already `http(s)` keeps its scheme, any other scheme is kept as is
/// (the later connect then fails with that URL in the message).
pub fn http_base(control_url: &str) -> String {
    let (scheme, rest) = match split_scheme(control_url) {
        Some((scheme, rest)) => {
            let mapped = match scheme.to_ascii_lowercase().as_str() {
                "ws" => "http".to_string(),
                "wss" => "https".to_string(),
                other => other.to_string(),
            };
            (mapped, rest)
        }
        None => ("https".to_string(), control_url),
    };
    format!("{scheme}://{}", authority(rest))
}

/// Resolve the `rpc_endpoint` of a `sessionCreated` response.
///
/// The server may answer with an absolute `http(s)://` URL (used as is) or a
/// path relative to the host it was reached on (joined onto `http_base` with
/// exactly one `/`, so `base/` + `/path` does not produce `//`).
pub fn resolve_rpc_endpoint(http_base: &str, endpoint: &str) -> Result<String, UrlError> {
    check_basic(endpoint)?;
    if let Some((scheme, rest)) = split_scheme(endpoint) {
        let lower = scheme.to_ascii_lowercase();
        if lower != "http" && lower != "https" {
            return Err(UrlError::UnsupportedScheme {
                url: endpoint.to_string(),
                scheme: scheme.to_string(),
                expected: "http:// or https:// (or a path relative to the server)",
            });
        }
        require_host(endpoint, rest)?;
        return Ok(endpoint.to_string());
    }
    let base = http_base.trim_end_matches('/');
    let path = endpoint.trim_start_matches('/');
    Ok(format!("{base}/{path}"))
}

/// The data-plane WebSocket URL for a resolved `rpc_endpoint`: `http` becomes
/// `ws`, `https` becomes `wss`, the rest of the URL is kept.
pub fn data_ws_url(rpc_endpoint: &str) -> Result<String, UrlError> {
    check_basic(rpc_endpoint)?;
    let unsupported = |scheme: &str| UrlError::UnsupportedScheme {
        url: rpc_endpoint.to_string(),
        scheme: scheme.to_string(),
        expected: "http:// or https://",
    };
    let Some((scheme, rest)) = split_scheme(rpc_endpoint) else {
        return Err(unsupported(""));
    };
    let ws_scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => "ws",
        "https" => "wss",
        _ => return Err(unsupported(scheme)),
    };
    require_host(rpc_endpoint, rest)?;
    Ok(format!("{ws_scheme}://{rest}"))
}

/// Rejects empty input and input containing whitespace.
fn check_basic(input: &str) -> Result<(), UrlError> {
    if input.is_empty() {
        return Err(UrlError::Empty);
    }
    if input.chars().any(char::is_whitespace) {
        return Err(UrlError::Whitespace {
            url: input.to_string(),
        });
    }
    Ok(())
}

/// Splits `scheme://rest`; `None` when there is no `://`.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    url.split_once("://")
}

/// The authority (host and optional port) at the start of `rest`.
fn authority(rest: &str) -> &str {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// Fails when the authority has no host (empty, or only `:port`).
fn require_host(original: &str, rest: &str) -> Result<(), UrlError> {
    let authority = authority(rest);
    let host_and_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = if host_and_port.starts_with('[') {
        // IPv6 literal: the host is everything up to the closing bracket.
        host_and_port
            .split_once(']')
            .map_or(host_and_port, |(h, _)| h.trim_start_matches('['))
    } else {
        host_and_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err(UrlError::MissingHost {
            url: original.to_string(),
        });
    }
    Ok(())
}

/// An API key that cannot leak through logs.
///
/// `Debug` and `Display` print `***`, so the key can sit inside structs that
/// are logged or shown in errors. The only way to the real value is
/// [`ApiKey::expose`], which is easy to grep for and is meant to be called
/// exactly where the `X-API-Key` header is built.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The real key, for the `X-API-Key` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        Self(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        Self(key.to_string())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_becomes_wss_backtest() {
        assert_eq!(
            control_url("sim.example").unwrap(),
            "wss://sim.example/backtest"
        );
        assert_eq!(
            control_url("sim.example/").unwrap(),
            "wss://sim.example/backtest"
        );
        assert_eq!(
            control_url("localhost:8900").unwrap(),
            "wss://localhost:8900/backtest"
        );
        assert_eq!(
            control_url("localhost:8900/").unwrap(),
            "wss://localhost:8900/backtest"
        );
    }

    #[test]
    fn ws_urls_gain_backtest_only_when_missing() {
        assert_eq!(
            control_url("ws://127.0.0.1:8900").unwrap(),
            "ws://127.0.0.1:8900/backtest"
        );
        assert_eq!(
            control_url("wss://sim.example/").unwrap(),
            "wss://sim.example/backtest"
        );
        assert_eq!(
            control_url("wss://sim.example/backtest").unwrap(),
            "wss://sim.example/backtest"
        );
        assert_eq!(
            control_url("wss://sim.example/backtest//").unwrap(),
            "wss://sim.example/backtest"
        );
        assert_eq!(
            control_url("ws://h:1/prefix").unwrap(),
            "ws://h:1/prefix/backtest"
        );
    }

    #[test]
    fn control_url_scheme_is_case_insensitive_and_normalised() {
        assert_eq!(control_url("WSS://h").unwrap(), "wss://h/backtest");
    }

    #[test]
    fn control_url_rejects_http_and_other_schemes() {
        for input in ["http://h", "https://h/backtest", "ftp://h"] {
            let err = control_url(input).unwrap_err();
            assert!(
                matches!(err, UrlError::UnsupportedScheme { .. }),
                "{input}: {err:?}"
            );
            assert!(err.to_string().contains("ws://"), "{err}");
        }
    }

    #[test]
    fn control_url_rejects_empty_whitespace_and_hostless() {
        assert_eq!(control_url(""), Err(UrlError::Empty));
        assert!(matches!(
            control_url("sim example"),
            Err(UrlError::Whitespace { .. })
        ));
        assert!(matches!(
            control_url(" sim.example"),
            Err(UrlError::Whitespace { .. })
        ));
        assert!(matches!(
            control_url("sim.example\n"),
            Err(UrlError::Whitespace { .. })
        ));
        for input in ["wss://", "wss:///backtest", "ws://:8900", "/", ":8900"] {
            assert!(
                matches!(control_url(input), Err(UrlError::MissingHost { .. })),
                "{input}"
            );
        }
    }

    #[test]
    fn control_url_accepts_ipv6_literal() {
        assert_eq!(
            control_url("ws://[::1]:8900").unwrap(),
            "ws://[::1]:8900/backtest"
        );
        assert!(matches!(
            control_url("ws://[]:8900"),
            Err(UrlError::MissingHost { .. })
        ));
    }

    #[test]
    fn control_url_is_idempotent() {
        for input in [
            "sim.example",
            "sim.example/",
            "localhost:8900",
            "ws://127.0.0.1:8900",
            "wss://sim.example/",
            "wss://sim.example/backtest",
            "ws://h:1/prefix",
        ] {
            let once = control_url(input).unwrap();
            assert_eq!(control_url(&once).unwrap(), once, "{input}");
        }
    }

    #[test]
    fn http_base_maps_scheme_and_drops_path() {
        assert_eq!(http_base("wss://h:8900/backtest"), "https://h:8900");
        assert_eq!(
            http_base("ws://localhost:8900/backtest"),
            "http://localhost:8900"
        );
        assert_eq!(http_base("wss://h"), "https://h");
        assert_eq!(http_base("ws://h/a/b?q=1"), "http://h");
    }

    #[test]
    fn http_base_is_idempotent() {
        let once = http_base("wss://h:8900/backtest");
        assert_eq!(http_base(&once), once);
    }

    #[test]
    fn rpc_endpoint_absolute_is_kept() {
        assert_eq!(
            resolve_rpc_endpoint("https://h", "http://other:9000/rpc/abc").unwrap(),
            "http://other:9000/rpc/abc"
        );
        assert_eq!(
            resolve_rpc_endpoint("https://h", "https://other/rpc").unwrap(),
            "https://other/rpc"
        );
    }

    #[test]
    fn rpc_endpoint_relative_is_joined_with_one_slash() {
        for (base, endpoint) in [
            ("https://h:1", "rpc/s1"),
            ("https://h:1", "/rpc/s1"),
            ("https://h:1/", "rpc/s1"),
            ("https://h:1/", "//rpc/s1"),
        ] {
            assert_eq!(
                resolve_rpc_endpoint(base, endpoint).unwrap(),
                "https://h:1/rpc/s1",
                "{base} + {endpoint}"
            );
        }
    }

    #[test]
    fn rpc_endpoint_is_idempotent() {
        let once = resolve_rpc_endpoint("https://h", "/rpc/s1").unwrap();
        assert_eq!(resolve_rpc_endpoint("https://h", &once).unwrap(), once);
    }

    #[test]
    fn rpc_endpoint_rejects_bad_input() {
        assert_eq!(resolve_rpc_endpoint("https://h", ""), Err(UrlError::Empty));
        assert!(matches!(
            resolve_rpc_endpoint("https://h", "ws://h/rpc"),
            Err(UrlError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            resolve_rpc_endpoint("https://h", "https:///rpc"),
            Err(UrlError::MissingHost { .. })
        ));
        assert!(matches!(
            resolve_rpc_endpoint("https://h", "/rpc /x"),
            Err(UrlError::Whitespace { .. })
        ));
    }

    #[test]
    fn data_ws_url_maps_http_schemes() {
        assert_eq!(
            data_ws_url("http://127.0.0.1:8900/rpc/s1").unwrap(),
            "ws://127.0.0.1:8900/rpc/s1"
        );
        assert_eq!(data_ws_url("https://h/rpc").unwrap(), "wss://h/rpc");
    }

    #[test]
    fn data_ws_url_rejects_other_schemes() {
        for input in ["ws://h/rpc", "wss://h", "ftp://h", "h/rpc"] {
            assert!(
                matches!(data_ws_url(input), Err(UrlError::UnsupportedScheme { .. })),
                "{input}"
            );
        }
        assert_eq!(data_ws_url(""), Err(UrlError::Empty));
        assert!(matches!(
            data_ws_url("http://"),
            Err(UrlError::MissingHost { .. })
        ));
    }

    #[test]
    fn planes_compose() {
        let control = control_url("localhost:8900").unwrap();
        let base = http_base(&control);
        let rpc = resolve_rpc_endpoint(&base, "/rpc/abc").unwrap();
        assert_eq!(rpc, "https://localhost:8900/rpc/abc");
        assert_eq!(data_ws_url(&rpc).unwrap(), "wss://localhost:8900/rpc/abc");
    }

    #[test]
    fn api_key_never_prints() {
        let key = ApiKey::new("super-secret");
        assert_eq!(format!("{key}"), "***");
        assert_eq!(format!("{key:?}"), "***");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Config {
            key: ApiKey,
        }
        let shown = format!("{:?}", Config { key: key.clone() });
        assert!(!shown.contains("super-secret"), "{shown}");
        assert_eq!(key.expose(), "super-secret");
        assert_eq!(ApiKey::from("k").expose(), "k");
        assert_eq!(ApiKey::from(String::from("k")), ApiKey::new("k"));
    }
}
