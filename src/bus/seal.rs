//! Events between nodes are sealed: an HMAC-SHA256 over the payload, with a key every node
//! derives from the secret they already share (`JWT_SECRET`), so that whoever can publish on
//! the bus but does not hold the secret (a NATS without authentication, a subject shared with
//! another cluster, a role that may `NOTIFY`) cannot make a node deliver anything. A sealed
//! payload is `<mac>.<payload>`, the MAC in unpadded base64url.
//!
//! Message ranges are not sealed: they carry no content, only which rows to read, and a node
//! reads those rows from the database through each socket's cursor; a forged range costs a read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Seals and opens payloads with the cluster's key.
#[derive(Clone)]
pub struct Seal {
    key: HmacSha256,
}

impl Seal {
    /// The seal of every node started with `secret`.
    pub fn new(secret: &str) -> Self {
        let mut derive =
            HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        derive.update(b"xfchat bus v1");
        let key = derive.finalize().into_bytes();
        Self {
            key: HmacSha256::new_from_slice(&key).expect("HMAC takes any key length"),
        }
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = self.key.clone();
        mac.update(payload.as_bytes());
        mac
    }

    pub fn seal(&self, payload: &str) -> String {
        let tag = URL_SAFE_NO_PAD.encode(self.mac(payload).finalize().into_bytes());
        format!("{tag}.{payload}")
    }

    /// The payload of a sealed text, if its MAC holds (compared in constant time).
    pub fn open<'a>(&self, sealed: &'a str) -> Option<&'a str> {
        let (tag, payload) = sealed.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(payload).verify_slice(&tag).ok()?;
        Some(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_payload_opens_with_the_same_secret_only_and_not_once_changed() {
        let seal = Seal::new("a secret of the cluster");
        let sealed = seal.seal("{\"node\":\"a\"}");
        assert_eq!(seal.open(&sealed), Some("{\"node\":\"a\"}"));
        assert_eq!(Seal::new("another secret").open(&sealed), None);
        let forged = sealed.replace("\"a\"", "\"b\"");
        assert_eq!(seal.open(&forged), None);
        assert_eq!(seal.open("{\"node\":\"a\"}"), None, "unsealed");
        assert_eq!(seal.open("!!!.x"), None);
    }
}
