//! The ledger's database URL: the one type that holds it, so that it is never printed with a
//! credential in it. `Display` and `Debug` redact the password of the userinfo and every
//! credential-bearing query parameter; only [`DatabaseUrl::expose`] gives the real text, for
//! the driver.

use std::fmt;
use std::time::Duration;

/// Query parameters of a PostgreSQL URL that carry or point to a credential.
fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "pass", "secret", "token", "key", "credential", "auth"].iter().any(|s| k.contains(s))
}

/// Parameters the PostgreSQL driver understands; any other is dropped before connecting (the
/// driver would log its value) and named, without its value, in a warning.
const DRIVER_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// How long a first connection may take when the URL does not say (`connect_timeout=SECONDS`,
/// as libpq spells it).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The URL as given, credentials included: only for the database driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }

    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }

    /// The URL with every credential replaced by `***`.
    pub fn redacted(&self) -> String {
        if !self.is_postgres() {
            return self.0.clone();
        }
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                if u.query().is_some() {
                    let pairs: Vec<(String, String)> = u
                        .query_pairs()
                        .map(|(k, v)| {
                            let v = if is_secret_param(&k) { "***".to_string() } else { v.into_owned() };
                            (k.into_owned(), v)
                        })
                        .collect();
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                }
                u.to_string().replace("%2A%2A%2A", "***")
            }
            // Not a URL the parser takes (an unescaped `@`, `#` or `:` in a password): the host
            // follows the last `@`, so everything between the user name and it goes.
            Err(_) => redact_unparsed(&self.0),
        }
    }

    /// For PostgreSQL: the URL the driver gets (only parameters it knows) and the connect
    /// timeout (`connect_timeout`, else [`DEFAULT_CONNECT_TIMEOUT`]).
    pub(crate) fn for_driver(&self) -> Result<(String, Duration), String> {
        let mut u = url::Url::parse(&self.0).map_err(|e| format!("the database URL {self} is not valid: {e}"))?;
        let mut timeout = DEFAULT_CONNECT_TIMEOUT;
        let mut kept: Vec<(String, String)> = Vec::new();
        for (k, v) in u.query_pairs() {
            if k == "connect_timeout" {
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("connect_timeout={v} in the database URL is not a whole number of seconds"))?;
                timeout = Duration::from_secs(secs.max(1));
            } else if DRIVER_PARAMS.contains(&&*k) || k.starts_with("options[") {
                kept.push((k.into_owned(), v.into_owned()));
            } else {
                tracing::warn!(parameter = %k, "the database URL parameter is not supported and is ignored");
            }
        }
        if kept.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(kept);
        }
        Ok((u.to_string(), timeout))
    }
}

/// Redaction of a URL the parser refuses: the user name stays, the rest of the userinfo (up to
/// the last `@`) and every secret query parameter become `***`.
fn redact_unparsed(raw: &str) -> String {
    let (scheme, rest) = raw.split_once("://").unwrap_or(("postgres", raw));
    let (user, host_part) = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let name = userinfo.split(':').next().unwrap_or("");
            (format!("{name}:***@"), &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    // Anything after a `#` could be part of a password the parser read as a fragment.
    let host_part = host_part.split('#').next().unwrap_or("");
    let host_part = match host_part.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
                    Some(_) => kv.to_string(),
                    None if is_secret_param(kv) => "***".to_string(),
                    None => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => host_part.to_string(),
    };
    format!("{scheme}://{user}{host_part}")
}

impl From<&str> for DatabaseUrl {
    fn from(s: &str) -> Self {
        DatabaseUrl(s.to_string())
    }
}

impl From<String> for DatabaseUrl {
    fn from(s: String) -> Self {
        DatabaseUrl(s)
    }
}

impl From<&String> for DatabaseUrl {
    fn from(s: &String) -> Self {
        DatabaseUrl(s.clone())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        DatabaseUrl::from(s).to_string()
    }

    #[test]
    fn userinfo_password_is_redacted() {
        assert_eq!(r("postgres://cl:s3cret@db:5432/costledger"), "postgres://cl:***@db:5432/costledger");
        assert_eq!(r("postgres://cl@db/costledger"), "postgres://cl@db/costledger");
    }

    #[test]
    fn an_unescaped_at_sign_in_the_password_is_not_partly_shown() {
        let s = r("postgres://cl:p@ss@w0rd@db/costledger");
        assert!(!s.contains("ss") && !s.contains("w0rd"), "{s}");
        assert!(s.ends_with("@db/costledger"), "{s}");
    }

    #[test]
    fn credential_query_parameters_are_redacted() {
        let s = r(
            "postgres://db/x?user=cl&password=PLANTED1&sslpassword=PLANTED2&sslkey=/k/PLANTED3&sslmode=require&auth_token=PLANTED4",
        );
        assert!(!s.contains("PLANTED"), "{s}");
        assert!(s.contains("sslmode=require") && s.contains("user=cl") && s.contains("password=***"), "{s}");
    }

    #[test]
    fn debug_redacts_too() {
        let s = format!("{:?}", DatabaseUrl::from("postgres://a:PLANTED@h/d"));
        assert!(!s.contains("PLANTED"), "{s}");
    }

    #[test]
    fn an_unparseable_url_shows_no_part_of_itself() {
        let s = r("postgres://a:PLANTED@[bad/d");
        assert!(!s.contains("PLANTED"), "{s}");
    }

    #[test]
    fn a_password_with_colon_and_hash_keeps_user_and_host_and_hides_the_rest() {
        let s = r("postgres://cl:s3cr:t#PLANTED@db/costledger?sslmode=require&password=PLANTED2");
        assert_eq!(s, "postgres://cl:***@db/costledger?sslmode=require&password=***");
    }

    #[test]
    fn sqlite_urls_are_shown_as_given() {
        assert_eq!(r("sqlite://data/ledger.db"), "sqlite://data/ledger.db");
    }

    #[test]
    fn driver_url_keeps_known_parameters_and_takes_the_timeout() {
        let (u, t) = DatabaseUrl::from("postgres://a:b@h/d?connect_timeout=3&sslmode=disable&sslpassword=x")
            .for_driver()
            .expect("ok");
        assert_eq!(t, Duration::from_secs(3));
        assert_eq!(u, "postgres://a:b@h/d?sslmode=disable");
        let e = DatabaseUrl::from("postgres://h/d?connect_timeout=soon").for_driver().expect_err("err");
        assert!(e.contains("connect_timeout=soon"), "{e}");
    }
}
