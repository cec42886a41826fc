//! A Blob service client for what the coordinator itself does with storage:
//! create a container if it is missing, and say whether one exists. One
//! HTTP/1.1 request per call on a fresh connection (hyper's connection API;
//! rustls with ring and Mozilla's roots for https://, plain TCP for an
//! emulator's http://), SharedKey-signed, bounded by a timeout.
//!
//! Errors name the account, the container, the HTTP status and the
//! service's error code; never the key, which lives only in an HMAC key.

use super::shared_key::{self, Request as ToSign};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_rustls::rustls;

/// The service version the requests ask for.
pub const VERSION: &str = "2021-08-06";
/// How long one call may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an error answer's body that is read (its code and message).
const BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where an account's Blob service is: Azure's
/// `https://<account>.blob.core.windows.net`, or an emulator's path-style
/// `http://127.0.0.1:10000/<account>` (the path is kept before the container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// The URL's path without a trailing `/` (empty for Azure's).
    pub base_path: String,
}

impl Endpoint {
    /// Parses an http:// or https:// URL with a host, an optional port and
    /// path, and no user, query or fragment.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL ({e})"))?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} names no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{url:?} must not carry a user"));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(format!("{url:?} must not have a query or fragment"));
        }
        let host = authority.host().trim_matches(['[', ']']).to_string();
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        let port = authority.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        Ok(Endpoint {
            scheme,
            host,
            port,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The `Host` header: the port only when it is not the scheme's own.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.scheme, self.port) {
            (Scheme::Http, 80) | (Scheme::Https, 443) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.authority(), self.base_path)
    }
}

/// Why a call failed. The messages name the account and container, never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The service answered, with an error.
    #[error(
        "storage account {account}, container {container}: the blob service answered {status} {code}{message}"
    )]
    Refused {
        account: String,
        container: String,
        status: u16,
        /// The service's error code (`AuthenticationFailed`, …), or the
        /// status's reason when it gave none.
        code: String,
        /// ": <the service's message, first line>", or empty.
        message: String,
    },
    /// No answer: the connection, TLS or HTTP exchange failed.
    #[error(
        "storage account {account}, container {container}: cannot reach the blob service at {endpoint}: {reason}"
    )]
    Unreachable {
        account: String,
        container: String,
        endpoint: String,
        reason: String,
    },
    /// The request could not be built from these names.
    #[error("storage account {account}, container {container}: {reason}")]
    Invalid {
        account: String,
        container: String,
        reason: String,
    },
    /// No answer in time.
    #[error(
        "storage account {account}, container {container}: the blob service at {endpoint} did not answer within {secs} s"
    )]
    TimedOut {
        account: String,
        container: String,
        endpoint: String,
        secs: u64,
    },
}

/// Whether [`BlobService::create_container`] made the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyThere,
}

/// One storage account's Blob service, signing with its key.
#[derive(Clone)]
pub struct BlobService {
    account: String,
    key: ring::hmac::Key,
    endpoint: Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl std::fmt::Debug for BlobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobService")
            .field("account", &self.account)
            .field("endpoint", &self.endpoint.to_string())
            .finish_non_exhaustive()
    }
}

/// An answer: status, the service's error code header and the body.
struct Answer {
    status: StatusCode,
    code: Option<String>,
    body: Bytes,
}

impl BlobService {
    /// The service of `account` at `endpoint` (a URL, see [`Endpoint::parse`]),
    /// with `key` the account key as Azure shows it (base64).
    pub fn new(account: &str, key: &str, endpoint: &str) -> Result<BlobService, String> {
        let endpoint = Endpoint::parse(endpoint)?;
        let key = shared_key::decode_key(key)?;
        let tls = (endpoint.scheme == Scheme::Https)
            .then(tls_config)
            .transpose()?;
        Ok(BlobService {
            account: account.to_string(),
            key,
            endpoint,
            tls,
            timeout: TIMEOUT,
        })
    }

    /// The same service with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Creates `container` (private, no metadata) unless it exists.
    pub async fn create_container(&self, container: &str) -> Result<Created, BlobError> {
        let request = self.container_request(Method::PUT, container, SystemTime::now())?;
        let answer = self.call(container, request).await?;
        match answer.status {
            StatusCode::CREATED => Ok(Created::New),
            StatusCode::CONFLICT if error_code(&answer) == "ContainerAlreadyExists" => {
                Ok(Created::AlreadyThere)
            }
            _ => Err(self.refused(container, &answer)),
        }
    }

    /// Whether `container` exists (Get Container Properties).
    pub async fn container_exists(&self, container: &str) -> Result<bool, BlobError> {
        let request = self.container_request(Method::GET, container, SystemTime::now())?;
        let answer = self.call(container, request).await?;
        match answer.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.refused(container, &answer)),
        }
    }

    /// `<method> <endpoint>/<container>?restype=container`, dated `now` and signed.
    fn container_request(
        &self,
        method: Method,
        container: &str,
        now: SystemTime,
    ) -> Result<hyper::Request<Empty<Bytes>>, BlobError> {
        let path = format!("{}/{container}", self.endpoint.base_path);
        let query = [("restype", "container")];
        let date = httpdate::fmt_http_date(now);
        let ms_headers = [("x-ms-date", date.as_str()), ("x-ms-version", VERSION)];
        let to_sign = shared_key::string_to_sign(&ToSign {
            verb: method.as_str(),
            headers: ms_headers.to_vec(),
            content_length: 0,
            account: &self.account,
            path: &path,
            query: query.to_vec(),
        });
        let authorization = format!(
            "SharedKey {}:{}",
            self.account,
            shared_key::signature(&self.key, &to_sign)
        );
        let target = format!(
            "{path}?{}",
            query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        );
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(target)
            .header(hyper::header::HOST, self.endpoint.authority());
        for (name, value) in ms_headers {
            b = b.header(name, value);
        }
        b.header(hyper::header::CONTENT_LENGTH, "0")
            .header(hyper::header::AUTHORIZATION, authorization)
            .body(Empty::new())
            .map_err(|e| BlobError::Invalid {
                account: self.account.clone(),
                container: container.to_string(),
                reason: format!("cannot build the request: {e}"),
            })
    }

    async fn call(
        &self,
        container: &str,
        request: hyper::Request<Empty<Bytes>>,
    ) -> Result<Answer, BlobError> {
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(reason)) => Err(BlobError::Unreachable {
                account: self.account.clone(),
                container: container.to_string(),
                endpoint: self.endpoint.to_string(),
                reason,
            }),
            Err(_) => Err(BlobError::TimedOut {
                account: self.account.clone(),
                container: container.to_string(),
                endpoint: self.endpoint.to_string(),
                secs: self.timeout.as_secs().max(1),
            }),
        }
    }

    async fn exchange(&self, request: hyper::Request<Empty<Bytes>>) -> Result<Answer, String> {
        let tcp = tokio::net::TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => send(TokioIo::new(tcp), request).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.endpoint.host.clone())
                    .map_err(|e| format!("tls: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("tls: {e}"))?;
                send(TokioIo::new(tls), request).await
            }
        }
    }

    fn refused(&self, container: &str, answer: &Answer) -> BlobError {
        let message = body_element(&answer.body, "Message")
            .and_then(|m| m.lines().next().map(str::trim).map(str::to_string))
            .filter(|m| !m.is_empty())
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        BlobError::Refused {
            account: self.account.clone(),
            container: container.to_string(),
            status: answer.status.as_u16(),
            code: error_code(answer),
            message,
        }
    }
}

/// rustls with ring and Mozilla's root certificates, HTTP/1.1 by ALPN.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("tls: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One request on a new HTTP/1.1 connection over `io`; the connection is
/// driven alongside and ends once the answer is read.
async fn send<T>(io: T, request: hyper::Request<Empty<Bytes>>) -> Result<Answer, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| chain(&e))?;
    let exchange = async move {
        let response = sender.send_request(request).await.map_err(|e| chain(&e))?;
        let status = response.status();
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(response.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        drop(sender);
        Ok(Answer { status, code, body })
    };
    let (answer, _closed) = tokio::join!(exchange, connection);
    answer
}

/// An error with its causes, `outer: inner: …`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The service's error code: its header, else the body's `<Code>`, else the
/// status's reason.
fn error_code(answer: &Answer) -> String {
    answer
        .code
        .clone()
        .or_else(|| body_element(&answer.body, "Code"))
        .unwrap_or_else(|| {
            answer
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_string()
        })
}

/// The text of the first `<name>…</name>` in an XML error body.
fn body_element(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))? + start;
    Some(text[start..end].to_string())
}

#[cfg(test)]
#[path = "blob_tests.rs"]
mod tests;
