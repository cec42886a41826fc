use super::*;
use std::time::UNIX_EPOCH;

/// Azurite's development account key (public, documented by Microsoft).
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Thu, 03 Dec 2026 14:00:00 GMT.
fn date() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_306_400)
}

fn header<'a>(r: &'a hyper::Request<Empty<Bytes>>, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[test]
fn endpoints_of_azure_and_of_an_emulator() {
    let azure = Endpoint::parse("https://acct.blob.core.windows.net").unwrap();
    assert_eq!(
        azure,
        Endpoint {
            scheme: Scheme::Https,
            host: "acct.blob.core.windows.net".into(),
            port: 443,
            base_path: String::new(),
        }
    );
    assert_eq!(azure.authority(), "acct.blob.core.windows.net");
    assert_eq!(azure.to_string(), "https://acct.blob.core.windows.net");
    let azurite = Endpoint::parse("http://127.0.0.1:10000/devstoreaccount1/").unwrap();
    assert_eq!(azurite.scheme, Scheme::Http);
    assert_eq!((azurite.host.as_str(), azurite.port), ("127.0.0.1", 10000));
    assert_eq!(azurite.base_path, "/devstoreaccount1");
    assert_eq!(azurite.authority(), "127.0.0.1:10000");
    assert_eq!(
        Endpoint::parse("http://[::1]:10000/a").unwrap().authority(),
        "[::1]:10000"
    );
    for bad in [
        "ftp://acct.blob.core.windows.net",
        "acct.blob.core.windows.net",
        "https://user:pw@acct.blob.core.windows.net",
        "https://acct.blob.core.windows.net/?sv=1",
        "https://acct.blob.core.windows.net/#x",
        "https:///path",
    ] {
        assert!(Endpoint::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn create_container_request_for_azurite_is_signed_over_its_path_style_resource() {
    let s = BlobService::new(
        "devstoreaccount1",
        KEY,
        "http://127.0.0.1:10000/devstoreaccount1",
    )
    .unwrap();
    assert!(s.tls.is_none());
    let r = s
        .container_request(Method::PUT, "batchaicontainer", date())
        .unwrap();
    assert_eq!(r.method(), Method::PUT);
    assert_eq!(
        r.uri().to_string(),
        "/devstoreaccount1/batchaicontainer?restype=container"
    );
    assert_eq!(header(&r, "host"), "127.0.0.1:10000");
    assert_eq!(header(&r, "x-ms-date"), "Thu, 03 Dec 2026 14:00:00 GMT");
    assert_eq!(header(&r, "x-ms-version"), "2021-08-06");
    assert_eq!(header(&r, "content-length"), "0");
    // HMAC-SHA256 of the string to sign (shared_key's test shows it) under
    // the decoded key, computed independently with Python's hmac module.
    assert_eq!(
        header(&r, "authorization"),
        "SharedKey devstoreaccount1:lA4fLIEaJOcwGNg1BmvehyPoq4BrBu8p9kuhRF8O0pA="
    );
}

#[test]
fn container_request_for_azure_over_https() {
    let s = BlobService::new("myaccount", KEY, "https://myaccount.blob.core.windows.net").unwrap();
    assert!(s.tls.is_some(), "https gets rustls");
    let r = s
        .container_request(Method::GET, "batchaicontainer", date())
        .unwrap();
    assert_eq!(r.uri().to_string(), "/batchaicontainer?restype=container");
    assert_eq!(header(&r, "host"), "myaccount.blob.core.windows.net");
    // String to sign "GET\n" + 11 empty headers + x-ms-date, x-ms-version +
    // "/myaccount/batchaicontainer\nrestype:container", signed in Python.
    assert_eq!(
        header(&r, "authorization"),
        "SharedKey myaccount:131htekvu78BMpELwcq/votmrKY41k9TpdFtUevJWK4="
    );
}

#[test]
fn the_key_shows_nowhere() {
    let s = BlobService::new("myaccount", KEY, "https://myaccount.blob.core.windows.net").unwrap();
    let printed = format!("{s:?}");
    assert!(
        !printed.contains(KEY) && !printed.contains("Eby8"),
        "{printed}"
    );
    let e = BlobService::new("myaccount", "secret but not base64", "http://h").unwrap_err();
    assert!(!e.contains("secret"), "{e}");
}

#[test]
fn error_answers_are_read_for_their_code_and_message() {
    let body = Bytes::from_static(
        b"\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code>\
          <Message>Server failed to authenticate the request.\nRequestId:1\nTime:2026</Message></Error>",
    );
    let answer = Answer {
        status: StatusCode::FORBIDDEN,
        code: None,
        body,
    };
    assert_eq!(error_code(&answer), "AuthenticationFailed");
    let s = BlobService::new("acct", KEY, "http://127.0.0.1:1/acct").unwrap();
    let e = s.refused("box", &answer);
    assert_eq!(
        e.to_string(),
        "storage account acct, container box: the blob service answered 403 \
         AuthenticationFailed: Server failed to authenticate the request."
    );
    let bare = Answer {
        status: StatusCode::BAD_GATEWAY,
        code: None,
        body: Bytes::new(),
    };
    assert_eq!(error_code(&bare), "Bad Gateway");
    let headed = Answer {
        status: StatusCode::CONFLICT,
        code: Some("ContainerBeingDeleted".into()),
        body: Bytes::new(),
    };
    assert_eq!(error_code(&headed), "ContainerBeingDeleted");
}

#[tokio::test]
async fn nobody_listening_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = BlobService::new("acct", KEY, &format!("http://127.0.0.1:{port}/acct")).unwrap();
    let e = s.create_container("box").await.unwrap_err();
    assert!(matches!(e, BlobError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("storage account acct, container box: cannot reach the blob service"),
        "{e}"
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(conn);
    });
    let s = BlobService::new("acct", KEY, &format!("http://127.0.0.1:{port}/acct"))
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let e = s.container_exists("box").await.unwrap_err();
    assert!(matches!(e, BlobError::TimedOut { .. }), "{e}");
    held.abort();
}

#[tokio::test]
async fn https_speaks_tls_first() {
    // A server that closes at once: the TLS handshake, not HTTP, fails.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        drop(conn);
    });
    let s = BlobService::new("acct", KEY, &format!("https://localhost:{port}")).unwrap();
    let e = s.create_container("box").await.unwrap_err();
    match &e {
        BlobError::Unreachable { reason, .. } => assert!(reason.starts_with("tls: "), "{e}"),
        other => panic!("{other}"),
    }
    server.await.unwrap();
}
