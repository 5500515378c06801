//! Key-pair authentication: the JWT Snowflake accepts in place of a password.
//!
//! Claims: `iss = <ACCOUNT>.<USER>.SHA256:<fingerprint>`, `sub = <ACCOUNT>.<USER>`, `iat`, `exp`
//! (at most one hour later), signed RS256. The fingerprint is the base64 SHA-256 of the public
//! key's DER `SubjectPublicKeyInfo`, the value `DESC USER` shows as `RSA_PUBLIC_KEY_FP`. ring
//! signs (constant time); pkcs8 decrypts passphrase-protected keys.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pkcs8::der::Decode as _;
use ring::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use stratalake_core::{Error, ErrorKind, Result};

/// An RSA private key loaded for signing login JWTs.
pub struct KeyPair {
    key: RsaKeyPair,
    fingerprint: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_key_fp", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn key_err(msg: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("snowflake key pair: {}", msg.into()),
    )
}

impl KeyPair {
    /// Load a PEM key: `PRIVATE KEY` (PKCS#8), `ENCRYPTED PRIVATE KEY` (with `passphrase`) or
    /// `RSA PRIVATE KEY` (PKCS#1).
    ///
    /// # Errors
    /// Config: not PEM, a missing or wrong passphrase, not an RSA key of 2048 to 8192 bits.
    pub fn from_pem(pem: &SecretString, passphrase: Option<&SecretString>) -> Result<Self> {
        let (label, der) = pkcs8::der::pem::decode_vec(pem.expose_secret().trim().as_bytes())
            .map_err(|e| key_err("the private key is not PEM text").with_context("cause", e))?;
        let key = match label {
            "ENCRYPTED PRIVATE KEY" => {
                let pass = passphrase
                    .ok_or_else(|| key_err("the private key is encrypted: set `passphrase`"))?;
                let info = pkcs8::EncryptedPrivateKeyInfo::from_der(&der)
                    .map_err(|e| key_err("the encrypted key is malformed").with_source(e))?;
                let plain = info.decrypt(pass.expose_secret().as_bytes()).map_err(|e| {
                    key_err("the key could not be decrypted: is the passphrase right?")
                        .with_source(e)
                })?;
                RsaKeyPair::from_pkcs8(plain.as_bytes())
            }
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            other => {
                return Err(key_err(format!(
                    "a PEM block labelled {other:?} is not a private key"
                )));
            }
        }
        .map_err(|e| {
            key_err(format!(
                "not a usable RSA private key ({e}); Snowflake needs RSA 2048 bits or more"
            ))
        })?;
        let spki = subject_public_key_info(key.public_key().as_ref());
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        let fingerprint = STANDARD.encode(digest.as_ref());
        Ok(Self { key, fingerprint })
    }

    /// The public key fingerprint, as `DESC USER` shows it (`RSA_PUBLIC_KEY_FP` without the
    /// `SHA256:` prefix).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A login JWT for `account` (as [`crate::config::SnowflakeConfig::account_name`]) and `user`,
    /// issued at `now` (Unix seconds), valid for `lifetime_secs` (at most 3600).
    ///
    /// # Errors
    /// Internal when signing fails.
    pub fn jwt(&self, account: &str, user: &str, now: u64, lifetime_secs: u64) -> Result<String> {
        let sub = format!("{}.{}", account.to_uppercase(), user.to_uppercase());
        let claims = serde_json::json!({
            "iss": format!("{sub}.SHA256:{}", self.fingerprint),
            "sub": sub,
            "iat": now,
            "exp": now + lifetime_secs.min(3600),
        });
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{body}");
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| Error::internal("snowflake key pair: RSA signing failed"))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// DER `SubjectPublicKeyInfo { rsaEncryption, NULL, BIT STRING(RSAPublicKey) }`.
fn subject_public_key_info(rsa_public_key: &[u8]) -> Vec<u8> {
    const RSA_ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x00];
    bits.extend_from_slice(rsa_public_key);
    let mut inner = RSA_ALGORITHM.to_vec();
    der_tlv(0x03, &bits, &mut inner);
    let mut out = Vec::with_capacity(inner.len() + 4);
    der_tlv(0x30, &inner, &mut out);
    out
}

fn der_tlv(tag: u8, value: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> SecretString {
        std::fs::read_to_string(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .into()
    }

    fn expected_fp() -> String {
        std::fs::read_to_string(format!(
            "{}/tests/keys/fingerprint.txt",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .trim()
        .to_string()
    }

    #[test]
    fn every_key_format_gives_openssls_fingerprint() {
        let pass: SecretString = "test-passphrase".into();
        for (name, p) in [
            ("rsa_key.p8", None),
            ("rsa_pkcs1.pem", None),
            ("rsa_key_encrypted.p8", Some(&pass)),
        ] {
            let k = KeyPair::from_pem(&key(name), p).unwrap();
            assert_eq!(k.fingerprint(), expected_fp(), "{name}");
        }
    }

    #[test]
    fn encrypted_key_errors_say_what_is_missing() {
        let e = KeyPair::from_pem(&key("rsa_key_encrypted.p8"), None).unwrap_err();
        assert!(e.message().contains("set `passphrase`"), "{}", e.report());
        let wrong: SecretString = "nope".into();
        let e = KeyPair::from_pem(&key("rsa_key_encrypted.p8"), Some(&wrong)).unwrap_err();
        assert!(e.message().contains("passphrase right"), "{}", e.report());
        assert!(!e.report().contains("nope"));
        let e = KeyPair::from_pem(&"not a key".to_string().into(), None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
    }

    #[test]
    fn jwt_claims_and_signature_verify_with_the_public_key() {
        let k = KeyPair::from_pem(&key("rsa_key.p8"), None).unwrap();
        let token = k.jwt("xy12345", "loader", 1_700_000_000, 7200).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": format!("XY12345.LOADER.SHA256:{}", expected_fp()),
                "sub": "XY12345.LOADER",
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
        // Verify against the public key openssl wrote (PEM SubjectPublicKeyInfo).
        let pem = std::fs::read_to_string(format!(
            "{}/tests/keys/rsa_key.pub",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let (_, spki) = pkcs8::der::pem::decode_vec(pem.trim().as_bytes()).unwrap();
        assert_eq!(spki, subject_public_key_info(k.key.public_key().as_ref()));
        // The RSAPublicKey is the BIT STRING at the end of the SubjectPublicKeyInfo.
        let rsa_pub = &spki[spki.len() - k.key.public_key().as_ref().len()..];
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            rsa_pub,
        )
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .unwrap();
        assert!(!format!("{k:?}").contains("PRIVATE"));
    }
}
