//! What every party shares about trust (feature `trust`; ARCHITECTURE.md, "Trust"):
//!
//! - token shapes: an API token is `bai_<12 of [a-z0-9]>.<43 of base64url>`, a join token
//!   `baij_<12>.<43>`. The part before the dot is the token's public id; the coordinator
//!   keeps only [`hash_secret`] of the whole string. [`parse_token`] checks the shape,
//!   [`new_token`] makes one from the system's random source;
//! - [`NodeKey`]: a node's own P-256 key and a CSR for it ([`NodeKey::csr_pem`]), made on
//!   the node so its key never leaves it;
//! - [`fingerprint`]: the SHA-256 of a certificate's DER, as the coordinator keys node
//!   certificates by it;
//! - [`write_private`]: a key or token file, mode 0600, replaced atomically;
//! - [`client_tls`] and [`Bearer`]: tonic client settings that trust only the cluster CA
//!   (optionally presenting a node certificate), and the interceptor that sends a token.

use std::path::Path;

use base64::Engine as _;
use ring::rand::SecureRandom as _;

pub const API_TOKEN_PREFIX: &str = "bai_";
pub const JOIN_TOKEN_PREFIX: &str = "baij_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 43;

/// Which kind of token a string is shaped as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Api,
    Join,
}

impl TokenKind {
    fn prefix(self) -> &'static str {
        match self {
            TokenKind::Api => API_TOKEN_PREFIX,
            TokenKind::Join => JOIN_TOKEN_PREFIX,
        }
    }
}

/// Why a string is not a token (never echoes the string: it may be a real secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenShapeError {
    #[error(
        "is not a bai token: expected {prefix}<12 lowercase letters or digits>.<43 characters of base64url>"
    )]
    Shape { prefix: &'static str },
}

/// Checks that `s` is a token of `kind` and returns its public id.
pub fn parse_token(kind: TokenKind, s: &str) -> Result<&str, TokenShapeError> {
    let bad = || TokenShapeError::Shape {
        prefix: kind.prefix(),
    };
    let (id, secret) = s.split_once('.').ok_or_else(bad)?;
    let rest = id.strip_prefix(kind.prefix()).ok_or_else(bad)?;
    let id_ok = rest.len() == ID_LEN
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let secret_ok = secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if id_ok && secret_ok {
        Ok(id)
    } else {
        Err(bad())
    }
}

/// A new random token of `kind`: (its public id, the whole secret string).
pub fn new_token(kind: TokenKind) -> (String, String) {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let id_bytes = random::<ID_LEN>();
    let id: String = id_bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>());
    let id = format!("{}{id}", kind.prefix());
    let whole = format!("{id}.{secret}");
    (id, whole)
}

/// `N` bytes from the system's random source.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // ACK: SystemRandom reads getrandom(2), which does not fail on Linux ≥ 3.17 once the
    // pool is initialised; a failure here means the machine cannot make keys at all.
    #[allow(clippy::expect_used)]
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system random source failed");
    b
}

/// The stored form of a token: the hex SHA-256 of the whole string. Tokens carry 256 random
/// bits, so a plain hash (no salt, no stretching) is enough to make the store useless to a
/// thief.
pub fn hash_secret(whole: &str) -> String {
    sha256_hex(whole.as_bytes())
}

/// Compares two hashes in constant time.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The hex SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    sha256_hex(der)
}

fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Writes a private file (a key, a token) atomically with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::fs::write_atomic_with(
        path,
        bytes,
        crate::fs::WriteOptions {
            mode: 0o600,
            durable: true,
        },
    )
}

/// A node's key pair (ECDSA P-256), generated on the node.
pub struct NodeKey {
    key: rcgen::KeyPair,
}

impl NodeKey {
    pub fn generate() -> Result<NodeKey, rcgen::Error> {
        Ok(NodeKey {
            key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        })
    }

    pub fn from_pem(pem: &str) -> Result<NodeKey, rcgen::Error> {
        Ok(NodeKey {
            key: rcgen::KeyPair::from_pem(pem)?,
        })
    }

    /// The private key, PKCS#8 PEM (write it with [`write_private`]).
    pub fn pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The public key's DER (SubjectPublicKeyInfo), to match a certificate against.
    pub fn public_key_der(&self) -> Vec<u8> {
        use rcgen::PublicKeyData as _;
        self.key.subject_public_key_info()
    }

    pub fn key_pair(&self) -> &rcgen::KeyPair {
        &self.key
    }

    /// A PKCS#10 request, PEM, whose subject common name is `node_id`.
    pub fn csr_pem(&self, node_id: &str) -> Result<String, rcgen::Error> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node_id);
        params.serialize_request(&self.key)?.pem()
    }
}

/// Client TLS settings that trust only `ca_pem` (the cluster CA), presenting `identity`
/// (a certificate and key, PEM) when given. The server's name is taken from the URL.
pub fn client_tls(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> tonic::transport::ClientTlsConfig {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    tls
}

/// Sends `authorization: Bearer <token>` with every call.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// `None` sends no header (the coordinator then answers UNAUTHENTICATED). A token that
    /// cannot be a header value is refused with the shape error, never echoed.
    pub fn new(token: Option<&str>) -> Result<Bearer, TokenShapeError> {
        match token {
            None => Ok(Bearer(None)),
            Some(t) => {
                let t = t.trim();
                parse_token(TokenKind::Api, t)?;
                let v = format!("Bearer {t}")
                    .parse()
                    .map_err(|_| TokenShapeError::Shape {
                        prefix: API_TOKEN_PREFIX,
                    })?;
                Ok(Bearer(Some(v)))
            }
        }
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(…)")
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel that sends a token with every call.
pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_tokens_parse_as_their_kind_only() {
        let (id, whole) = new_token(TokenKind::Api);
        assert_eq!(parse_token(TokenKind::Api, &whole), Ok(id.as_str()));
        assert!(parse_token(TokenKind::Join, &whole).is_err());
        let (jid, jwhole) = new_token(TokenKind::Join);
        assert!(jid.starts_with("baij_"));
        assert_eq!(parse_token(TokenKind::Join, &jwhole), Ok(jid.as_str()));
        assert!(parse_token(TokenKind::Api, &jwhole).is_err());
        assert_ne!(new_token(TokenKind::Api).1, whole);
    }

    #[test]
    fn malformed_tokens_are_refused_without_echo() {
        let (_, whole) = new_token(TokenKind::Api);
        for bad in [
            "",
            "bai_",
            "nope",
            &whole[..whole.len() - 1],
            &whole.replace('.', ""),
            &whole.to_uppercase(),
            &format!("{whole}x"),
            &format!("{} ", &whole[..whole.len() - 1]),
        ] {
            let e = parse_token(TokenKind::Api, bad).unwrap_err().to_string();
            if bad.len() > 10 {
                assert!(!e.contains(bad), "{e}");
            }
        }
    }

    #[test]
    fn hashes_compare_equal_only_for_the_same_string() {
        let (_, a) = new_token(TokenKind::Api);
        let (_, b) = new_token(TokenKind::Api);
        assert!(hashes_equal(&hash_secret(&a), &hash_secret(&a)));
        assert!(!hashes_equal(&hash_secret(&a), &hash_secret(&b)));
        assert_eq!(hash_secret(&a).len(), 64);
    }

    #[test]
    fn a_csr_names_the_node_and_verifies() {
        let key = NodeKey::generate().unwrap();
        let pem = key.csr_pem("node-1").unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).unwrap();
        let cn = parsed
            .params
            .distinguished_name
            .get(&rcgen::DnType::CommonName)
            .cloned();
        assert_eq!(cn, Some(rcgen::DnValue::Utf8String("node-1".into())));
        let again = NodeKey::from_pem(&key.pem()).unwrap();
        assert_eq!(again.public_key_der(), key.public_key_der());
    }

    #[test]
    fn bearer_refuses_a_token_of_the_wrong_shape() {
        assert!(Bearer::new(Some("bai_x.y")).is_err());
        assert!(Bearer::new(None).is_ok());
        let (_, t) = new_token(TokenKind::Api);
        assert!(Bearer::new(Some(&format!("{t}\n"))).is_ok());
    }
}
