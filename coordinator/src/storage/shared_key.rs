//! SharedKey authorization of the Blob service (versions 2015-02-21 and
//! later): the string to sign — the verb, eleven standard headers
//! (Content-Length empty when 0), the canonicalised `x-ms-*` headers and the
//! canonicalised resource — and its signature, the base64 HMAC-SHA256 of it
//! under the account key (ring's HMAC, which rustls brings anyway).

use base64::Engine as _;

/// The account key (base64, as Azure shows it) as an HMAC key. The error
/// never quotes the key.
pub fn decode_key(key: &str) -> Result<ring::hmac::Key, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|_| "the account key is not base64".to_string())?;
    if bytes.is_empty() {
        return Err("the account key is empty".into());
    }
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes))
}

/// The `Authorization: SharedKey <account>:<signature>` signature of `to_sign`.
pub fn signature(key: &ring::hmac::Key, to_sign: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(key, to_sign.as_bytes()))
}

/// What a request contributes to its signature.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub verb: &'a str,
    /// Standard headers by lower-case name (content-type, range, …).
    pub headers: Vec<(&'a str, &'a str)>,
    pub content_length: u64,
    pub account: &'a str,
    /// The URL path as sent, starting with `/`. An emulator's path-style URL
    /// keeps its account segment, so the account appears twice in the
    /// resource (`/devstoreaccount1/devstoreaccount1/<container>`).
    pub path: &'a str,
    /// Query parameters, names as sent and values decoded.
    pub query: Vec<(&'a str, &'a str)>,
}

const STANDARD: [&str; 10] = [
    "content-encoding",
    "content-language",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

fn header<'a>(r: &Request<'a>, name: &str) -> &'a str {
    r.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or("", |(_, v)| v.trim())
}

/// The string to sign for `r`.
pub fn string_to_sign(r: &Request<'_>) -> String {
    let mut out = String::new();
    out.push_str(r.verb);
    out.push('\n');
    for (i, name) in STANDARD.iter().enumerate() {
        if i == 2 {
            // Content-Length sits between Content-Language and Content-MD5.
            if r.content_length > 0 {
                out.push_str(&r.content_length.to_string());
            }
            out.push('\n');
        }
        out.push_str(header(r, name));
        out.push('\n');
    }
    let mut ms: Vec<(String, &str)> = r
        .headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim()))
        .collect();
    ms.sort();
    for (n, v) in ms {
        out.push_str(&n);
        out.push(':');
        out.push_str(v);
        out.push('\n');
    }
    out.push('/');
    out.push_str(r.account);
    out.push_str(r.path);
    let mut q: Vec<(String, Vec<&str>)> = Vec::new();
    for (n, v) in &r.query {
        let n = n.to_ascii_lowercase();
        match q.iter_mut().find(|(k, _)| *k == n) {
            Some((_, vs)) => vs.push(v),
            None => q.push((n, vec![v])),
        }
    }
    q.sort();
    for (n, mut vs) in q {
        vs.sort();
        out.push('\n');
        out.push_str(&n);
        out.push(':');
        out.push_str(&vs.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_container_string_to_sign() {
        let r = Request {
            verb: "PUT",
            headers: vec![
                ("x-ms-version", "2021-08-06"),
                ("X-MS-Date", "Thu, 03 Dec 2026 14:00:00 GMT"),
            ],
            content_length: 0,
            account: "devstoreaccount1",
            path: "/devstoreaccount1/batchaicontainer",
            query: vec![("restype", "container")],
        };
        assert_eq!(
            string_to_sign(&r),
            "PUT\n\n\n\n\n\n\n\n\n\n\n\n\
             x-ms-date:Thu, 03 Dec 2026 14:00:00 GMT\n\
             x-ms-version:2021-08-06\n\
             /devstoreaccount1/devstoreaccount1/batchaicontainer\n\
             restype:container"
        );
    }

    #[test]
    fn signature_is_base64_hmac_sha256() {
        // RFC 4231, test case 2 (key "Jefe"), its digest in base64.
        let key = decode_key("SmVmZQ==").unwrap();
        assert_eq!(
            signature(&key, "what do ya want for nothing?"),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
        let e = decode_key("not base64!").err().unwrap();
        assert!(!e.contains("not base64!"), "{e}");
        assert!(decode_key("").is_err());
    }

    #[test]
    fn length_type_and_repeated_query() {
        let r = Request {
            verb: "GET",
            headers: vec![("content-type", "text/plain"), ("x-ms-version", "v")],
            content_length: 5,
            account: "a",
            path: "/c",
            query: vec![("comp", "list"), ("Include", "b"), ("include", "a")],
        };
        assert_eq!(
            string_to_sign(&r),
            "GET\n\n\n5\n\ntext/plain\n\n\n\n\n\n\nx-ms-version:v\n/a/c\ncomp:list\ninclude:a,b"
        );
    }
}
