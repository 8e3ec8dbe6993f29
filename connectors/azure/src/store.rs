//! Blob storage through `azure_core`'s HTTP pipeline: List Blobs (XML, `marker` paging) and Get
//! Blob (streamed), as the remote side of an object root (`costledger_files::object`). Authentication: the storage account's shared key
//! (signed per try by [`SharedKeyPolicy`]), a SAS token appended to every URL, or an Entra ID
//! bearer token (azure_identity) for `https` endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Method, Pipeline, Request, Url};
use base64::Engine as _;
use costledger_core::ConnectorError;
use costledger_files::object::{ObjectBytes, ObjectInfo, RemoteStore};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::http_error;

/// Blob service version sent in `x-ms-version`.
pub const STORAGE_VERSION: &str = "2021-08-06";

/// Signs each try with the account key (Shared Key authorization). `path_style` accounts
/// (azurite, `http://127.0.0.1:10000/<account>/…`) carry the account name in the path too.
#[derive(Clone)]
pub struct SharedKeyPolicy {
    pub account: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeyPolicy").field("account", &self.account).finish_non_exhaustive()
    }
}

impl SharedKeyPolicy {
    pub fn new(account: &str, key_b64: &str) -> Result<Self, String> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_b64.trim())
            .map_err(|_| "the storage account key is not base64".to_string())?;
        Ok(SharedKeyPolicy { account: account.to_string(), key })
    }

    /// The Shared Key string-to-sign of a request without a body.
    pub fn string_to_sign(&self, method: &str, url: &Url, headers: &[(String, String)]) -> String {
        let h = |name: &str| {
            headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).unwrap_or("")
        };
        let mut ms: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        ms.sort();
        let mut s = format!(
            "{method}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            h("content-encoding"),
            h("content-language"),
            match h("content-length") {
                "0" => "",
                v => v,
            },
            h("content-md5"),
            h("content-type"),
            h("date"),
            h("if-modified-since"),
            h("if-match"),
            h("if-none-match"),
            h("if-unmodified-since"),
            h("range"),
        );
        for (k, v) in &ms {
            s.push_str(&format!("{k}:{v}\n"));
        }
        s.push_str(&format!("/{}{}", self.account, url.path()));
        let mut q: Vec<(String, String)> =
            url.query_pairs().map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned())).collect();
        q.sort();
        for (k, v) in q {
            s.push_str(&format!("\n{k}:{v}"));
        }
        s
    }

    pub fn sign(&self, string_to_sign: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_key());
        mac.update(string_to_sign.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }
}

/// HMAC accepts keys of any length; this is never reached.
fn unreachable_key() -> Hmac<Sha256> {
    #[allow(clippy::unwrap_used)]
    <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap()
}

#[async_trait::async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        request.insert_header("x-ms-date", date);
        let headers: Vec<(String, String)> =
            request.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string())).collect();
        let method = request.method().to_string().to_ascii_uppercase();
        let sts = self.string_to_sign(&method, request.url(), &headers);
        request.insert_header("authorization", format!("SharedKey {}:{}", self.account, self.sign(&sts)));
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub name: String,
    pub etag: Option<String>,
    /// `Last-Modified` as RFC 3339 (sortable).
    pub modified: Option<String>,
}

pub struct BlobContainer {
    pub pipeline: Pipeline,
    /// `https://<account>.blob.core.windows.net/<container>` or
    /// `http://127.0.0.1:10000/<account>/<container>`.
    pub container_url: String,
    pub prefix: String,
    /// A SAS token (without `?`) appended to every request.
    pub sas: Option<String>,
    pub calls: AtomicU64,
}

fn parse_list(xml: &str) -> Result<(Vec<BlobInfo>, Option<String>), String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut cur: Option<BlobInfo> = None;
    let mut marker = None;
    loop {
        match r.read_event().map_err(|e| format!("not a blob listing: {e}"))? {
            Event::Start(e) => {
                let n = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if n == "Blob" {
                    cur = Some(BlobInfo { name: String::new(), etag: None, modified: None });
                }
                path.push(n);
            }
            Event::End(e) => {
                if e.name().as_ref() == b"Blob"
                    && let Some(b) = cur.take()
                {
                    out.push(b);
                }
                path.pop();
            }
            Event::Text(t) => {
                let v = t.decode().map_err(|e| format!("bad text in the listing: {e}"))?;
                let v =
                    quick_xml::escape::unescape(&v).map_err(|e| format!("bad text in the listing: {e}"))?.into_owned();
                match (path.last().map(String::as_str), cur.as_mut()) {
                    (Some("Name"), Some(b)) => b.name.push_str(&v),
                    (Some("Etag"), Some(b)) => b.etag = Some(v.trim_matches('"').to_string()),
                    (Some("Last-Modified"), Some(b)) => {
                        b.modified = chrono::DateTime::parse_from_rfc2822(&v).ok().map(|d| d.to_utc().to_rfc3339())
                    }
                    (Some("NextMarker"), None) if !v.is_empty() => marker = Some(v),
                    _ => {}
                }
            }
            Event::GeneralRef(e) => {
                // Entity references inside text (`&amp;`): resolve the five predefined ones.
                let name = String::from_utf8_lossy(e.as_ref()).into_owned();
                let ch = match name.as_str() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                };
                if let (Some("Name"), Some(b)) = (path.last().map(String::as_str), cur.as_mut()) {
                    b.name.push_str(ch);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((out, marker))
}

impl BlobContainer {
    fn request_url(&self, rel: &str, query: &[(&str, &str)]) -> Result<Url, ConnectorError> {
        let mut u = Url::parse(&format!("{}{rel}", self.container_url.trim_end_matches('/'))).map_err(|e| {
            ConnectorError::input(&self.container_url, format!("not a URL: {e}"), "check blob.endpoint")
        })?;
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        if let Some(sas) = &self.sas {
            let joined = match u.query() {
                Some(q) if !q.is_empty() => format!("{q}&{}", sas.trim_start_matches('?')),
                _ => sas.trim_start_matches('?').to_string(),
            };
            u.set_query(Some(&joined));
        }
        Ok(u)
    }

    pub fn display(&self, name: &str) -> String {
        format!("{}/{name}", self.container_url.trim_end_matches('/'))
    }

    async fn send_get(&self, url: Url) -> Result<azure_core::http::AsyncRawResponse, ConnectorError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let what = url.as_str().split('?').next().unwrap_or_default().to_string();
        let mut req = Request::new(url, Method::Get);
        req.insert_header("x-ms-version", STORAGE_VERSION);
        self.pipeline.stream(&Context::new(), &mut req, None).await.map_err(|e| http_error(&what, e))
    }
}

#[async_trait::async_trait]
impl RemoteStore for BlobContainer {
    /// Every blob under the prefix.
    async fn list(&self) -> Result<Vec<ObjectInfo>, ConnectorError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut q = vec![("restype", "container"), ("comp", "list"), ("prefix", self.prefix.as_str())];
            if let Some(m) = &marker {
                q.push(("marker", m.as_str()));
            }
            let url = self.request_url("", &q)?;
            let resp = self.send_get(url).await?;
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ConnectorError::Transient(format!("reading the blob listing: {e}")))?;
            let text = String::from_utf8_lossy(&body);
            let (blobs, next) = parse_list(text.trim_start_matches('\u{feff}'))
                .map_err(|e| ConnectorError::input(&self.container_url, e, "check blob.endpoint and container"))?;
            out.extend(blobs.into_iter().map(|b| ObjectInfo { key: b.name, etag: b.etag, modified: b.modified }));
            match next {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        Ok(out)
    }

    /// A blob's bytes, streamed.
    async fn get(&self, name: &str) -> Result<ObjectBytes<'_>, ConnectorError> {
        use futures::StreamExt;
        let url = self.request_url(&format!("/{}", encode_path(name)), &[])?;
        let resp = self.send_get(url).await?;
        let at = self.display(name);
        Ok(resp
            .into_body()
            .map(move |chunk| {
                chunk.map(|c| c.to_vec()).map_err(|e| ConnectorError::Transient(format!("reading {at}: {e}")))
            })
            .boxed())
    }

    fn url(&self, key: &str) -> String {
        self.display(key)
    }

    fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Percent-encode a blob name for a URL path (keeping `/`).
fn encode_path(name: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(name, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_xml_with_markers_and_entities() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="exports"><Prefix>p/</Prefix><Blobs><Blob><Name>p/a&amp;b.csv</Name><Properties><Last-Modified>Tue, 05 Mar 2024 04:11:09 GMT</Last-Modified><Etag>"0x8DC3C"</Etag></Properties></Blob><Blob><Name>p/c.csv</Name><Properties><Etag>0x1</Etag></Properties></Blob></Blobs><NextMarker>m2</NextMarker></EnumerationResults>"#;
        let (blobs, next) = parse_list(xml).expect("parse");
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[0].name, "p/a&b.csv");
        assert_eq!(blobs[0].etag.as_deref(), Some("0x8DC3C"));
        assert_eq!(blobs[0].modified.as_deref(), Some("2024-03-05T04:11:09+00:00"));
        assert_eq!(next.as_deref(), Some("m2"));
    }

    #[test]
    fn shared_key_string_to_sign() {
        let p = SharedKeyPolicy::new("devstoreaccount1", "a2V5").expect("key");
        let url = Url::parse("http://127.0.0.1:10000/devstoreaccount1/exports?restype=container&comp=list&prefix=")
            .expect("u");
        let sts = p.string_to_sign(
            "GET",
            &url,
            &[
                ("x-ms-version".into(), STORAGE_VERSION.into()),
                ("x-ms-date".into(), "Tue, 05 Mar 2024 04:11:09 GMT".into()),
            ],
        );
        assert_eq!(
            sts,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Tue, 05 Mar 2024 04:11:09 GMT\nx-ms-version:2021-08-06\n/devstoreaccount1/devstoreaccount1/exports\ncomp:list\nprefix:\nrestype:container"
        );
    }
}
