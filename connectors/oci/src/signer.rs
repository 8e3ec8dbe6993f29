//! OCI request signing, Signature Version 1 (draft-cavage-http-signatures-08, rsa-sha256), as
//! Oracle's SDKs do it: `date (request-target) host` for every request, plus
//! `content-length content-type x-content-sha256` for requests with a body. Pure: no IO, no
//! clock (the date is an input), so Oracle's published test vectors are reproduced exactly.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::RsaPrivateKey;
pub use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer as _, Verifier as _};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(
        "the private key is not a PEM RSA key (PKCS#1 'BEGIN RSA PRIVATE KEY' or PKCS#8 'BEGIN PRIVATE KEY'): {0}; \
         encrypted keys are not supported: decrypt it with `openssl rsa -in KEY -out KEY.plain`"
    )]
    Key(String),
}

/// What is signed about one request.
#[derive(Debug, Clone)]
pub struct RequestParts<'a> {
    /// `get`, `post`, … (lower-cased when signing).
    pub method: &'a str,
    /// Path and query exactly as sent (`/20200107/usage?page=p2`).
    pub path_and_query: &'a str,
    /// `host[:port]` exactly as sent in the Host header.
    pub host: &'a str,
    /// RFC 7231 date, e.g. `Thu, 05 Jan 2014 21:31:40 GMT`.
    pub date: &'a str,
    /// Body and its content type, for POST/PUT/PATCH.
    pub body: Option<(&'a [u8], &'a str)>,
}

/// Headers to add to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub date: String,
    /// `(content-length, content-type, x-content-sha256)` for requests with a body.
    pub body: Option<(String, String, String)>,
    pub authorization: String,
}

/// base64(SHA-256(body)).
pub fn content_sha256(body: &[u8]) -> String {
    B64.encode(Sha256::digest(body))
}

/// The names of the signed headers, in order.
pub fn header_names(has_body: bool) -> &'static str {
    if has_body {
        "date (request-target) host content-length content-type x-content-sha256"
    } else {
        "date (request-target) host"
    }
}

/// The signing string: one `name: value` line per signed header, joined by `\n`, no trailing
/// newline.
pub fn signing_string(p: &RequestParts<'_>) -> String {
    let mut s = format!(
        "date: {}\n(request-target): {} {}\nhost: {}",
        p.date,
        p.method.to_ascii_lowercase(),
        p.path_and_query,
        p.host
    );
    if let Some((body, ct)) = p.body {
        s.push_str(&format!(
            "\ncontent-length: {}\ncontent-type: {}\nx-content-sha256: {}",
            body.len(),
            ct,
            content_sha256(body)
        ));
    }
    s
}

pub struct Signer {
    key_id: String,
    key: SigningKey<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Signer").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl Signer {
    /// `keyId` = `<tenancy>/<user>/<fingerprint>`; `pem` is PKCS#1 or PKCS#8, unencrypted.
    pub fn new(tenancy: &str, user: &str, fingerprint: &str, pem: &str) -> Result<Signer, SignError> {
        let key = RsaPrivateKey::from_pkcs1_pem(pem)
            .or_else(|e1| RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e2| SignError::Key(format!("{e1}; {e2}"))))?;
        Ok(Signer { key_id: format!("{tenancy}/{user}/{fingerprint}"), key: SigningKey::new(key) })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> RsaPublicKey {
        self.key.as_ref().to_public_key()
    }

    /// The signature (base64) of a signing string.
    pub fn signature(&self, signing_string: &str) -> String {
        let sig: Signature = self.key.sign(signing_string.as_bytes());
        B64.encode(sig.to_bytes())
    }

    pub fn sign(&self, p: &RequestParts<'_>) -> SignedHeaders {
        let sig = self.signature(&signing_string(p));
        let authorization = format!(
            "Signature version=\"1\",headers=\"{}\",keyId=\"{}\",algorithm=\"rsa-sha256\",signature=\"{sig}\"",
            header_names(p.body.is_some()),
            self.key_id
        );
        SignedHeaders {
            date: p.date.to_string(),
            body: p.body.map(|(b, ct)| (b.len().to_string(), ct.to_string(), content_sha256(b))),
            authorization,
        }
    }
}

/// The parameters of an `Authorization: Signature …` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthParams {
    pub version: String,
    pub headers: Vec<String>,
    pub key_id: String,
    pub algorithm: String,
    pub signature: String,
}

pub fn parse_authorization(value: &str) -> Option<AuthParams> {
    let rest = value.strip_prefix("Signature ")?;
    let mut p = AuthParams::default();
    for part in rest.split("\",") {
        let (k, v) = part.split_once("=\"")?;
        let v = v.trim_end_matches('"').to_string();
        match k.trim() {
            "version" => p.version = v,
            "headers" => p.headers = v.split(' ').map(str::to_string).collect(),
            "keyId" => p.key_id = v,
            "algorithm" => p.algorithm = v,
            "signature" => p.signature = v,
            _ => {}
        }
    }
    Some(p)
}

/// Verify a request as OCI does: rebuild the signing string in the order `headers=` gives,
/// from the request's own header values (`header(name)` → value), check the body digest and
/// the RSA signature. Returns why it fails.
pub fn verify(
    key: &RsaPublicKey,
    method: &str,
    path_and_query: &str,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<AuthParams, String> {
    let auth = header("authorization").ok_or("no Authorization header")?;
    let p = parse_authorization(&auth).ok_or("Authorization is not a Signature header")?;
    if p.version != "1" || p.algorithm != "rsa-sha256" {
        return Err(format!("unsupported version {} / algorithm {}", p.version, p.algorithm));
    }
    let mut need: Vec<&str> = vec!["date", "(request-target)", "host"];
    if matches!(method.to_ascii_lowercase().as_str(), "post" | "put" | "patch") {
        need.extend(["content-length", "content-type", "x-content-sha256"]);
        let sent = header("x-content-sha256").ok_or("no x-content-sha256 header")?;
        if sent != content_sha256(body) {
            return Err("x-content-sha256 does not match the body".into());
        }
        if header("content-length").as_deref() != Some(body.len().to_string().as_str()) {
            return Err("content-length does not match the body".into());
        }
    }
    for n in &need {
        if !p.headers.iter().any(|h| h == n) {
            return Err(format!("required header '{n}' is not signed"));
        }
    }
    let mut lines = Vec::new();
    for h in &p.headers {
        let v = if h == "(request-target)" {
            format!("{} {}", method.to_ascii_lowercase(), path_and_query)
        } else {
            header(h).ok_or_else(|| format!("signed header '{h}' is missing"))?
        };
        lines.push(format!("{h}: {v}"));
    }
    let sig = base64::engine::general_purpose::STANDARD.decode(&p.signature).map_err(|e| format!("signature: {e}"))?;
    let sig = Signature::try_from(sig.as_slice()).map_err(|e| format!("signature: {e}"))?;
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(lines.join("\n").as_bytes(), &sig)
        .map_err(|_| "the signature does not verify".to_string())?;
    Ok(p)
}

/// An RFC 7231 `Date` for a time.
pub fn http_date(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Oracle's published test key (OCI SDK tests and the signing docs); not a credential.
    pub const TEST_KEY: &str = include_str!("../tests/fixtures/oracle_test_key.pem");
    const TENANCY: &str = "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq";
    const USER: &str = "ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq";
    const FP: &str = "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34";
    const DATE: &str = "Thu, 05 Jan 2014 21:31:40 GMT";

    fn signer() -> Signer {
        Signer::new(TENANCY, USER, FP, TEST_KEY).expect("test key")
    }

    #[test]
    fn oracle_vector_a_get() {
        let p = RequestParts {
            method: "GET",
            path_and_query: "/20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q",
            host: "iaas.us-phoenix-1.oraclecloud.com",
            date: DATE,
            body: None,
        };
        let h = signer().sign(&p);
        assert_eq!(
            h.authorization,
            format!(
                "Signature version=\"1\",headers=\"date (request-target) host\",keyId=\"{TENANCY}/{USER}/{FP}\",algorithm=\"rsa-sha256\",signature=\"GBas7grhyrhSKHP6AVIj/h5/Vp8bd/peM79H9Wv8kjoaCivujVXlpbKLjMPeDUhxkFIWtTtLBj3sUzaFj34XE6YZAHc9r2DmE4pMwOAy/kiITcZxa1oHPOeRheC0jP2dqbTll8fmTZVwKZOKHYPtrLJIJQHJjNvxFWeHQjMaR7M=\""
            )
        );
    }

    #[test]
    fn oracle_vector_b_post() {
        let body = "{\n    \"compartmentId\": \"ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa\",\n    \"instanceId\": \"ocid1.instance.oc1.phx.abuw4ljrlsfiqw6vzzxb43vyypt4pkodawglp3wqxjqofakrwvou52gb6s5a\",\n    \"volumeId\": \"ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\"\n}";
        assert_eq!(body.len(), 316);
        let p = RequestParts {
            method: "POST",
            path_and_query: "/20160918/volumeAttachments",
            host: "iaas.us-phoenix-1.oraclecloud.com",
            date: DATE,
            body: Some((body.as_bytes(), "application/json")),
        };
        assert_eq!(
            signing_string(&p),
            "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): post /20160918/volumeAttachments\nhost: iaas.us-phoenix-1.oraclecloud.com\ncontent-length: 316\ncontent-type: application/json\nx-content-sha256: V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0="
        );
        assert!(signer().sign(&p).authorization.ends_with("signature=\"Mje8vIDPlwIHmD/cTDwRxE7HaAvBg16JnVcsuqaNRim23fFPgQfLoOOxae6WqKb1uPjYEl0qIdazWaBy/Ml8DRhqlocMwoSXv0fbukP8J5N80LCmzT/FFBvIvTB91XuXI3hYfP9Zt1l7S6ieVadHUfqBedWH0itrtPJBgKmrWso=\""));
    }

    const USAGE_BODY: &str = "{\"tenantId\":\"ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq\",\"timeUsageStarted\":\"2024-03-01T00:00:00Z\",\"timeUsageEnded\":\"2024-03-03T00:00:00Z\",\"granularity\":\"DAILY\",\"queryType\":\"COST\",\"groupBy\":[\"service\",\"compartmentName\"]}";

    #[test]
    fn usage_api_vectors_c1_and_c2() {
        assert_eq!(USAGE_BODY.len(), 257);
        assert_eq!(content_sha256(USAGE_BODY.as_bytes()), "HVFjl3y9Y4GxkMAsFzB6Wlal/3irLvSr1JdiODntI8M=");
        let s = signer();
        let c1 = RequestParts {
            method: "POST",
            path_and_query: "/20200107/usage",
            host: "usageapi.us-ashburn-1.oci.oraclecloud.com",
            date: DATE,
            body: Some((USAGE_BODY.as_bytes(), "application/json")),
        };
        assert!(s.sign(&c1).authorization.ends_with("signature=\"V5W0+8g4hh7LCQ5a8nmpzVK0qU7rlj8PNY2kP9z5buYrwZuMrFf0kX64ljeRc1wylUjaIDtR6vjrlg/4NQujPiXBtBEKfsIRF1zjk5i416CYDT9O/I/NZ1kEnCyDgHIwMKtBc8WtLH+AKraYhErnQOVtawIfQeJA3/WHDMG9lr0=\""));
        let c2 = RequestParts { path_and_query: "/20200107/usage?limit=2&page=p2", host: "127.0.0.1:8443", ..c1 };
        let h = s.sign(&c2);
        assert!(h.authorization.ends_with("signature=\"QouebObKWZEtXq1th7DYJVCPH5luoBJAUnDjuvtjtIN20Ag5Otrr2Tn57AT1hn0KUyk51YvvNvPWrb/Q2mY5w4iZLVNf4bbcq5yYW8KDQZ2GX1c5U4q/1zpidEVOHuY+F4MiHWJBQPdtGHaF5PqcaT7SUxEiBLDnWpcfMhf5pu4=\""));
        // The verifier accepts it, and rejects a tampered body or path.
        let headers = |name: &str| -> Option<String> {
            match name {
                "authorization" => Some(h.authorization.clone()),
                "date" => Some(DATE.into()),
                "host" => Some("127.0.0.1:8443".into()),
                "content-length" => Some("257".into()),
                "content-type" => Some("application/json".into()),
                "x-content-sha256" => Some(content_sha256(USAGE_BODY.as_bytes())),
                _ => None,
            }
        };
        let pk = s.public_key();
        verify(&pk, "POST", "/20200107/usage?limit=2&page=p2", &headers, USAGE_BODY.as_bytes()).expect("valid");
        let e =
            verify(&pk, "POST", "/20200107/usage?limit=2&page=p3", &headers, USAGE_BODY.as_bytes()).expect_err("path");
        assert_eq!(e, "the signature does not verify");
        let e = verify(&pk, "POST", "/20200107/usage?limit=2&page=p2", &headers, b"{}").expect_err("body");
        assert!(e.contains("x-content-sha256 does not match"), "{e}");
    }

    #[test]
    fn bad_keys_and_no_secret_in_debug() {
        let e = Signer::new(TENANCY, USER, FP, "not a key").expect_err("bad");
        assert!(e.to_string().contains("not a PEM RSA key"), "{e}");
        let dbg = format!("{:?}", signer());
        assert!(dbg.contains(FP) && !dbg.contains("MIIC"), "{dbg}");
    }
}
