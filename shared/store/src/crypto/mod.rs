//! Application-level encryption of secrets at rest (shared secrets, cached access tokens).
//!
//! DynamoDB already encrypts its disks; this layer means that whoever can *read the table* (a console
//! user, a backup, an export, a leaked local file) still sees no secret. Every secret is sealed with
//! AES-256-GCM under a data key; the ciphertext carries the id of its key, so a record written under
//! an old key stays readable after rotation.
//!
//! Sealed format (all adapters, all ciphers):
//!
//! ```text
//! byte 0      format version (1)
//! byte 1      scheme: 1 = local key file, 2 = KMS envelope
//! bytes 2..4  length N of the key reference, big-endian u16
//! N bytes     key reference: local key id, or the KMS-encrypted data key
//! 12 bytes    random nonce
//! rest        AES-256-GCM ciphertext and 16-byte tag
//! ```
//!
//! The associated data is the header (bytes before the nonce) followed by a context that names the
//! tenant and the record kind ([`secret_context`]), so a ciphertext copied into another tenant's record
//! or into another kind of record fails to open.

#[cfg(feature = "dynamo")]
mod kms;
mod local;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use understudy_domain::{ClientKey, StoreError};
use zeroize::Zeroizing;

#[cfg(feature = "dynamo")]
pub use kms::{KmsCipher, KmsConfig};
pub use local::LocalKeyCipher;

/// Seals and opens secrets. Implemented by [`LocalKeyCipher`] (key file) and [`KmsCipher`] (KMS
/// envelope encryption); the stores hold an `Arc<dyn SecretCipher>`.
#[async_trait]
pub trait SecretCipher: Send + Sync + std::fmt::Debug {
    /// Encrypts `plaintext`, binding it to `context` (see [`secret_context`]).
    async fn seal(&self, plaintext: &SecretString, context: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Decrypts what [`SecretCipher::seal`] produced with the same `context`. A wrong context, key or
    /// a tampered byte is [`StoreError::Crypto`].
    async fn open(&self, sealed: &[u8], context: &[u8]) -> Result<SecretString, StoreError>;
}

/// The associated data that binds a sealed secret to its tenant and record kind (e.g. `TENANT`,
/// `TOKEN#<hash>`). The clientKey cannot contain a NUL, so the parts cannot be confused.
pub fn secret_context(client_key: &ClientKey, kind: &str) -> Vec<u8> {
    let mut context = b"understudy-secret-v1\0".to_vec();
    context.extend_from_slice(client_key.as_str().as_bytes());
    context.push(0);
    context.extend_from_slice(kind.as_bytes());
    context
}

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Which cipher produced a sealed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Local = 1,
    Kms = 2,
}

/// A parsed sealed value, borrowing from the bytes.
struct Envelope<'a> {
    scheme: Scheme,
    key_ref: &'a [u8],
    header: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

impl<'a> Envelope<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let malformed = || StoreError::crypto("sealed secret is malformed");
        let (&version, rest) = bytes.split_first().ok_or_else(malformed)?;
        if version != FORMAT_V1 {
            return Err(StoreError::crypto(
                "sealed secret has an unknown format version",
            ));
        }
        let (&scheme, rest) = rest.split_first().ok_or_else(malformed)?;
        let scheme = match scheme {
            1 => Scheme::Local,
            2 => Scheme::Kms,
            _ => return Err(StoreError::crypto("sealed secret has an unknown scheme")),
        };
        let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(malformed)?;
        let key_len = usize::from(u16::from_be_bytes(*len));
        let (key_ref, rest) = rest.split_at_checked(key_len).ok_or_else(malformed)?;
        let (nonce, ciphertext) = rest.split_at_checked(NONCE_LEN).ok_or_else(malformed)?;
        if ciphertext.len() < TAG_LEN {
            return Err(malformed());
        }
        let header = bytes.get(..4 + key_len).ok_or_else(malformed)?;
        Ok(Self {
            scheme,
            key_ref,
            header,
            nonce,
            ciphertext,
        })
    }
}

fn header(scheme: Scheme, key_ref: &[u8]) -> Result<Vec<u8>, StoreError> {
    let len = u16::try_from(key_ref.len())
        .map_err(|_| StoreError::crypto("key reference is too long"))?;
    let mut out = Vec::with_capacity(4 + key_ref.len() + NONCE_LEN + 64);
    out.push(FORMAT_V1);
    out.push(scheme as u8);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key_ref);
    Ok(out)
}

fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

/// Seals with a fresh random nonce. Random 96-bit nonces are safe far beyond the number of secrets
/// one key will ever seal here (installs and token refreshes).
fn seal_with(
    cipher: &Aes256Gcm,
    scheme: Scheme,
    key_ref: &[u8],
    plaintext: &SecretString,
    context: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let mut out = header(scheme, key_ref)?;
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let aad = aad(&out, context);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext.expose_secret().as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| StoreError::crypto("encryption failed"))?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

fn open_with(
    cipher: &Aes256Gcm,
    envelope: &Envelope<'_>,
    context: &[u8],
) -> Result<SecretString, StoreError> {
    let aad = aad(envelope.header, context);
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(envelope.nonce),
                Payload {
                    msg: envelope.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                StoreError::crypto("authentication failed (wrong key, tenant or record kind)")
            })?,
    );
    let text =
        std::str::from_utf8(&plaintext).map_err(|_| StoreError::crypto("secret is not UTF-8"))?;
    Ok(SecretString::from(text))
}

/// Builds an AES-256-GCM cipher from 32 key bytes.
fn aes_from(key: &[u8]) -> Result<Aes256Gcm, StoreError> {
    Aes256Gcm::new_from_slice(key).map_err(|_| StoreError::crypto("data key is not 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Aes256Gcm {
        aes_from(&[7u8; 32]).unwrap()
    }

    fn ck(s: &str) -> ClientKey {
        ClientKey::parse(s).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_own_tenant_and_kind() {
        let secret = SecretString::from("shh");
        let context = secret_context(&ck("a"), "TENANT");
        let sealed = seal_with(&cipher(), Scheme::Local, b"k1", &secret, &context).unwrap();
        let envelope = Envelope::parse(&sealed).unwrap();
        assert_eq!(envelope.key_ref, b"k1");
        assert_eq!(envelope.scheme, Scheme::Local);
        assert_eq!(
            open_with(&cipher(), &envelope, &context)
                .unwrap()
                .expose_secret(),
            "shh"
        );

        for other in [
            secret_context(&ck("b"), "TENANT"),
            secret_context(&ck("a"), "TOKEN#x"),
        ] {
            let err = open_with(&cipher(), &envelope, &other).unwrap_err();
            assert!(matches!(err, StoreError::Crypto { .. }));
        }
    }

    #[test]
    fn a_tampered_or_truncated_ciphertext_is_a_crypto_error_not_a_panic() {
        let context = secret_context(&ck("a"), "TENANT");
        let sealed = seal_with(
            &cipher(),
            Scheme::Local,
            b"k1",
            &SecretString::from("shh"),
            &context,
        )
        .unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let result = Envelope::parse(&bad).and_then(|e| open_with(&cipher(), &e, &context));
            assert!(matches!(result, Err(StoreError::Crypto { .. })), "byte {i}");
        }
        for len in 0..sealed.len() {
            let result =
                Envelope::parse(&sealed[..len]).and_then(|e| open_with(&cipher(), &e, &context));
            assert!(result.is_err(), "length {len}");
        }
    }

    #[test]
    fn the_plaintext_does_not_appear_in_the_sealed_bytes() {
        let context = secret_context(&ck("a"), "TENANT");
        let secret = "plain-secret-marker";
        let sealed = seal_with(
            &cipher(),
            Scheme::Local,
            b"k1",
            &SecretString::from(secret),
            &context,
        )
        .unwrap();
        assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}
