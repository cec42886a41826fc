//! What a job's `containerSettings` say, checked: an image reference as
//! docker and podman parse it, a registry server URL, a shm size. Pure.
//!
//! Image reference (the distribution grammar, which both runtimes use):
//! `[<registry>[:<port>]/]<path>[:<tag>][@<algorithm>:<hex>]`, the path's
//! components lower-case alphanumerics joined by `.`, `_`, `__` or dashes; the
//! first component is a registry when it has a `.` or a `:` or is
//! `localhost`; a tag is up to 128 of `[A-Za-z0-9_.-]`, not starting with `.`
//! or `-`; a digest's hex is at least 32 lower-case hex digits.

/// An image reference, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry (`host[:port]`), if the reference names one.
    pub registry: Option<String>,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

fn path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__" or one or more "-", between alphanumerics.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// `host[:port]`: DNS labels of letters, digits and dashes joined by dots (or
/// a bracketed IPv6 address), and a port 1-65535.
pub fn host_port(s: &str) -> bool {
    let (host_ok, port) = match s.strip_prefix('[') {
        Some(v6) => {
            let Some((addr, rest)) = v6.split_once(']') else {
                return false;
            };
            let port = match rest {
                "" => None,
                r => match r.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return false,
                },
            };
            (addr.parse::<std::net::Ipv6Addr>().is_ok(), port)
        }
        None => {
            let (host, port) = match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            let label = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            let ok = !host.is_empty() && host.len() <= 253 && host.split('.').all(label);
            (ok, port)
        }
    };
    let port_ok = port.is_none_or(|p| {
        p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|p| p > 0)
    });
    host_ok && port_ok
}

/// Parses an image reference; `Err` says what is wrong.
pub fn parse_image(s: &str) -> Result<ImageRef, &'static str> {
    if s.is_empty() || s.len() > 255 + 128 + 80 {
        return Err("is empty or too long");
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            let Some((alg, hex)) = d.split_once(':') else {
                return Err("has a digest without <algorithm>:<hex>");
            };
            let alg_ok = !alg.is_empty()
                && alg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            let hex_ok = hex.len() >= 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !alg_ok || !hex_ok {
                return Err("has a digest that is not <algorithm>:<32 or more hex digits>");
            }
            (r, Some(d.to_string()))
        }
        None => (s, None),
    };
    // A tag follows the last ':' after the last '/'.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err("has a tag that is not 1-128 of letters, digits, '_', '.', '-'");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let registry = match parts.first() {
        Some(first)
            if parts.len() > 1
                && (first.contains('.') || first.contains(':') || *first == "localhost") =>
        {
            let r = parts.remove(0);
            if !host_port(r) {
                return Err("names a registry that is not host[:port]");
            }
            Some(r.to_string())
        }
        _ => None,
    };
    if parts.is_empty() || !parts.iter().all(|c| path_component(c)) {
        return Err(
            "has a name that is not lower-case letters and digits joined by '.', '_', '__', '-' or '/'",
        );
    }
    Ok(ImageRef {
        registry,
        path: parts.join("/"),
        tag: tag.map(str::to_string),
        digest,
    })
}

/// Checks a registry's `serverUrl`: `host[:port]`, or an `http(s)://` URL of
/// one with an optional path.
pub fn check_server_url(s: &str) -> Result<(), &'static str> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    if s.contains("://") && rest.len() == s.len() {
        return Err("is not an http(s) URL or host[:port]");
    }
    let host = rest.split('/').next().unwrap_or("");
    let path_ok = rest[host.len()..]
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if !host_port(host) || !path_ok {
        return Err("is not an http(s) URL or host[:port] (e.g. https://myregistry.azurecr.io)");
    }
    Ok(())
}

/// `shmSize` in bytes: a positive number with an optional unit b, k, m or g
/// (either case, an optional trailing `b`: `2g`, `512m`, `1gb`, `65536`).
pub fn parse_shm_size(s: &str) -> Result<u64, &'static str> {
    bai_common::size::parse_size(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_as_docker_parses_them() {
        let r = parse_image("tensorflow/tensorflow:1.8.0-gpu").unwrap();
        assert_eq!(
            (r.registry, r.path.as_str(), r.tag.as_deref()),
            (None, "tensorflow/tensorflow", Some("1.8.0-gpu"))
        );
        let r = parse_image("127.0.0.1:5077/batchaitraining/caffe2:latest").unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5077"));
        assert_eq!(r.path, "batchaitraining/caffe2");
        let r = parse_image("myreg.azurecr.io/team/img").unwrap();
        assert_eq!(
            (r.registry.as_deref(), r.tag),
            (Some("myreg.azurecr.io"), None)
        );
        let digest = format!("ubuntu@sha256:{}", "a".repeat(64));
        assert!(parse_image(&digest).unwrap().digest.is_some());
        for ok in [
            "ubuntu",
            "localhost/bb:1",
            "microsoft/cntk:2.5.1-gpu-python2.7-cuda9.0-cudnn7.0",
            "a__b/c-d.e",
            "[::1]:5000/x",
        ] {
            assert!(parse_image(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Ubuntu",
            "ubuntu:",
            "ubuntu:-x",
            "a//b",
            "-a",
            "a_/b",
            "my reg/x",
            "ubuntu@sha256:abc",
            "bad_host:99999/x",
            "x:tag:more",
        ] {
            assert!(parse_image(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_urls_and_shm_sizes() {
        for ok in [
            "myreg.azurecr.io",
            "https://myreg.azurecr.io",
            "http://127.0.0.1:5077",
            "https://registry.example.com:443/v2",
        ] {
            assert!(check_server_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://x",
            "https://",
            "not a url",
            "https://x:0",
            "http://a b",
        ] {
            assert!(check_server_url(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_shm_size("2g"), Ok(2 << 30));
        assert_eq!(parse_shm_size("512M"), Ok(512 << 20));
        assert_eq!(parse_shm_size("1gb"), Ok(1 << 30));
        assert_eq!(parse_shm_size("65536"), Ok(65536));
        for bad in ["-1g", "0", "2x", "g", "1.5g", "99999999999999999999g"] {
            assert!(parse_shm_size(bad).is_err(), "{bad}");
        }
    }
}
