//! Envelope encryption with AWS KMS.
//!
//! KMS creates a data key (`GenerateDataKey`, AES-256) and returns it twice: in plaintext, which
//! stays in this process's memory, and encrypted under the KMS key, which is stored inside every
//! ciphertext it seals. Opening a secret decrypts that stored data key with `Decrypt` (cached in
//! memory, so a warm Lambda calls KMS once per data key). Decrypt is called without a key id, so
//! after the configured KMS key changes (rotation to a new key), records sealed under the old one
//! still open as long as the role may decrypt with it; KMS's own automatic rotation is transparent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use secrecy::SecretString;
use understudy_domain::StoreError;
use zeroize::Zeroize;

use super::{Envelope, Scheme, SecretCipher, aes_from, open_with, seal_with};
use crate::aws::{retry_config, timeout_config, unavailable};

/// How long one data key seals new secrets before a fresh one is generated. Bounds how much is
/// sealed under one key without costing a KMS call per secret.
const DATA_KEY_MAX_AGE: Duration = Duration::from_secs(3600);

/// How many decrypted data keys are kept for opening. Every process makes a new data key an hour, so
/// a table of thousands of tenants holds secrets sealed under many of them; past the bound the
/// least useful are dropped one by one (moka's TinyLFU), never the whole cache at once.
const OPEN_CACHE_MAX: u64 = 4_096;

/// KMS encryption context: KMS refuses to decrypt a data key under any other context, and CloudTrail
/// logs it, which tells an auditor what the key was for.
const CONTEXT_KEY: &str = "purpose";
const CONTEXT_VALUE: &str = "understudy-secret";

/// Where the KMS key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsConfig {
    /// Key id, ARN or alias (`alias/understudy`) used for new data keys.
    pub key_id: String,
    /// Endpoint override (a local emulator in tests); `None` for AWS.
    pub endpoint_url: Option<String>,
    /// Region override; `None` uses the SDK's default chain (`AWS_REGION` on Lambda).
    pub region: Option<String>,
}

/// AES-256-GCM under KMS-generated data keys. `Debug` shows the key id only.
pub struct KmsCipher {
    client: aws_sdk_kms::Client,
    key_id: String,
    /// Serialised so concurrent first seals make one KMS call, not one each.
    sealing: tokio::sync::Mutex<Option<SealingKey>>,
    /// Decrypted data keys by their encrypted form; concurrent opens of one key share one Decrypt.
    opening: moka::future::Cache<Vec<u8>, Arc<Aes256Gcm>>,
}

struct SealingKey {
    encrypted: Vec<u8>,
    cipher: Arc<Aes256Gcm>,
    created: Instant,
}

impl std::fmt::Debug for KmsCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsCipher")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl KmsCipher {
    /// A cipher using this client and KMS key.
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
            sealing: tokio::sync::Mutex::new(None),
            opening: moka::future::Cache::new(OPEN_CACHE_MAX),
        }
    }

    /// Builds the KMS client from the shared SDK config with this crate's retry and timeout settings
    /// and the optional endpoint and region overrides.
    pub fn from_config(sdk: &SdkConfig, config: &KmsConfig) -> Self {
        let mut builder = aws_sdk_kms::config::Builder::from(sdk)
            .retry_config(retry_config())
            .timeout_config(timeout_config());
        if let Some(endpoint) = &config.endpoint_url {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.region(aws_sdk_kms::config::Region::new(region.clone()));
        }
        Self::new(
            aws_sdk_kms::Client::from_conf(builder.build()),
            config.key_id.clone(),
        )
    }

    async fn sealing_key(&self) -> Result<(Vec<u8>, Arc<Aes256Gcm>), StoreError> {
        let mut slot = self.sealing.lock().await;
        if let Some(key) = slot
            .as_ref()
            .filter(|k| k.created.elapsed() < DATA_KEY_MAX_AGE)
        {
            return Ok((key.encrypted.clone(), Arc::clone(&key.cipher)));
        }
        let output = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_KEY, CONTEXT_VALUE)
            .send()
            .await
            .map_err(|e| unavailable("KMS GenerateDataKey", &e))?;
        let encrypted = output
            .ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| StoreError::crypto("KMS returned no encrypted data key"))?;
        let mut plaintext = output
            .plaintext
            .map(Blob::into_inner)
            .ok_or_else(|| StoreError::crypto("KMS returned no data key"))?;
        let cipher = aes_from(&plaintext);
        plaintext.zeroize();
        let cipher = Arc::new(cipher?);
        self.remember(&encrypted, &cipher).await;
        *slot = Some(SealingKey {
            encrypted: encrypted.clone(),
            cipher: Arc::clone(&cipher),
            created: Instant::now(),
        });
        Ok((encrypted, cipher))
    }

    async fn remember(&self, encrypted: &[u8], cipher: &Arc<Aes256Gcm>) {
        self.opening
            .insert(encrypted.to_vec(), Arc::clone(cipher))
            .await;
    }

    async fn opening_key(&self, encrypted: &[u8]) -> Result<Arc<Aes256Gcm>, StoreError> {
        self.opening
            .try_get_with(encrypted.to_vec(), self.decrypt_data_key(encrypted))
            .await
            .map_err(|e| (*e).clone())
    }

    async fn decrypt_data_key(&self, encrypted: &[u8]) -> Result<Arc<Aes256Gcm>, StoreError> {
        let output = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(encrypted))
            .encryption_context(CONTEXT_KEY, CONTEXT_VALUE)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                // The stored data key itself is bad or belongs elsewhere: retrying will not help.
                Some(s)
                    if s.is_invalid_ciphertext_exception() || s.is_incorrect_key_exception() =>
                {
                    StoreError::crypto("KMS refused the stored data key")
                }
                _ => unavailable("KMS Decrypt", &e),
            })?;
        let mut plaintext = output
            .plaintext
            .map(Blob::into_inner)
            .ok_or_else(|| StoreError::crypto("KMS returned no data key"))?;
        let cipher = aes_from(&plaintext);
        plaintext.zeroize();
        Ok(Arc::new(cipher?))
    }
}

#[async_trait]
impl SecretCipher for KmsCipher {
    async fn seal(&self, plaintext: &SecretString, context: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (encrypted, cipher) = self.sealing_key().await?;
        seal_with(&cipher, Scheme::Kms, &encrypted, plaintext, context)
    }

    async fn open(&self, sealed: &[u8], context: &[u8]) -> Result<SecretString, StoreError> {
        let envelope = Envelope::parse(sealed)?;
        if envelope.scheme != Scheme::Kms {
            return Err(StoreError::crypto(
                "secret was sealed by another cipher (local key)",
            ));
        }
        let cipher = self.opening_key(envelope.key_ref).await?;
        open_with(&cipher, &envelope, context)
    }
}
