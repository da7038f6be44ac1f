//! Data keys from a local key file, for runs without AWS.
//!
//! The file is a small JSON keyring created on first run with mode 0600 (owner read/write only):
//! `{"version":1,"active":"<id>","keys":[{"id":"<id>","key":"<base64 of 32 bytes>"}]}`. New secrets are
//! sealed under `active`; every key in the list can still open what it sealed, which is what makes
//! [`LocalKeyCipher::rotate`] safe. Keep the file out of backups of the data it protects.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use understudy_domain::StoreError;
use zeroize::{Zeroize, Zeroizing};

use super::{Envelope, Scheme, SecretCipher, aes_from, open_with, seal_with};

/// AES-256-GCM under keys read from a local key file. `Debug` shows the path and the active key id
/// only.
pub struct LocalKeyCipher {
    path: PathBuf,
    active: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for LocalKeyCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyCipher")
            .field("path", &self.path)
            .field("active", &self.active)
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    version: u32,
    active: String,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    id: String,
    key: String,
}

impl Drop for KeyEntry {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

fn key_error(path: &Path, what: &str) -> StoreError {
    StoreError::crypto(format!("key file {}: {what}", path.display()))
}

fn new_entry() -> KeyEntry {
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut());
    KeyEntry {
        id: uuid::Uuid::new_v4().simple().to_string(),
        key: BASE64.encode(key.as_ref()),
    }
}

impl LocalKeyCipher {
    /// Opens the keyring at `path`, creating it (and its directory) with one fresh key on first run.
    ///
    /// Refuses a key file that group or others may read or write: a world-readable key would make the
    /// encryption pointless.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        match fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => create_keyring(path)?,
            Err(e) => return Err(key_error(path, &e.kind().to_string())),
        }
        Self::load(path)
    }

    /// Adds a new key to the keyring at `path` and makes it the active one; returns its id.
    /// Records sealed under older keys stay readable. Processes that already opened the keyring keep
    /// sealing under the old key until they reopen it, which is harmless.
    ///
    /// Not safe to run twice at the same time on one file (the later write wins and a key could be
    /// lost): rotation is an operator action.
    pub fn rotate(path: impl AsRef<Path>) -> Result<String, StoreError> {
        let path = path.as_ref();
        let mut keyring = read_keyring(path)?;
        let entry = new_entry();
        let id = entry.id.clone();
        keyring.active.clone_from(&id);
        keyring.keys.push(entry);
        let tmp = temp_path(path);
        write_private(&tmp, &keyring)?;
        fs::rename(&tmp, path).map_err(|e| key_error(path, &e.kind().to_string()))?;
        Ok(id)
    }

    /// The id of the key new secrets are sealed under.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    fn load(path: &Path) -> Result<Self, StoreError> {
        let keyring = read_keyring(path)?;
        let mut keys = HashMap::new();
        for entry in &keyring.keys {
            let bytes = Zeroizing::new(
                BASE64
                    .decode(entry.key.as_bytes())
                    .map_err(|_| key_error(path, "a key is not base64"))?,
            );
            keys.insert(
                entry.id.clone(),
                aes_from(&bytes).map_err(|_| key_error(path, "a key is not 32 bytes"))?,
            );
        }
        if !keys.contains_key(&keyring.active) {
            return Err(key_error(path, "the active key is not in the keyring"));
        }
        Ok(Self {
            path: path.to_owned(),
            active: keyring.active.clone(),
            keys,
        })
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    path.with_file_name(name)
}

/// Creates the keyring without ever exposing a half-written or too-open file: write a 0600 temp file,
/// then hard-link it into place, which fails if another process created the keyring first (in which
/// case theirs is used).
fn create_keyring(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| key_error(path, &e.kind().to_string()))?;
    }
    let entry = new_entry();
    let keyring = KeyringFile {
        version: 1,
        active: entry.id.clone(),
        keys: vec![entry],
    };
    let tmp = temp_path(path);
    write_private(&tmp, &keyring)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(key_error(path, &e.kind().to_string())),
    }
}

fn write_private(path: &Path, keyring: &KeyringFile) -> Result<(), StoreError> {
    let json = Zeroizing::new(
        serde_json::to_vec_pretty(keyring).map_err(|_| key_error(path, "cannot encode keyring"))?,
    );
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file: File = options
        .open(path)
        .map_err(|e| key_error(path, &e.kind().to_string()))?;
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(|e| key_error(path, &e.kind().to_string()))
}

fn read_keyring(path: &Path) -> Result<KeyringFile, StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| key_error(path, &e.kind().to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(key_error(
                path,
                "is accessible to group or others; chmod 600 it",
            ));
        }
    }
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| key_error(path, &e.kind().to_string()))?);
    let keyring: KeyringFile =
        serde_json::from_slice(&bytes).map_err(|_| key_error(path, "is not a keyring"))?;
    if keyring.version != 1 {
        return Err(key_error(path, "has an unknown version"));
    }
    Ok(keyring)
}

#[async_trait]
impl SecretCipher for LocalKeyCipher {
    async fn seal(&self, plaintext: &SecretString, context: &[u8]) -> Result<Vec<u8>, StoreError> {
        let cipher = self
            .keys
            .get(&self.active)
            .ok_or_else(|| StoreError::crypto("active key missing"))?;
        seal_with(
            cipher,
            Scheme::Local,
            self.active.as_bytes(),
            plaintext,
            context,
        )
    }

    async fn open(&self, sealed: &[u8], context: &[u8]) -> Result<SecretString, StoreError> {
        let envelope = Envelope::parse(sealed)?;
        if envelope.scheme != Scheme::Local {
            return Err(StoreError::crypto(
                "secret was sealed by another cipher (KMS)",
            ));
        }
        let cipher = std::str::from_utf8(envelope.key_ref)
            .ok()
            .and_then(|id| self.keys.get(id))
            .ok_or_else(|| {
                StoreError::crypto("secret was sealed under a key not in the keyring")
            })?;
        open_with(cipher, &envelope, context)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[tokio::test]
    async fn the_key_file_is_created_owner_only_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/keyring.json");
        let first = LocalKeyCipher::open_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let sealed = first.seal(&SecretString::from("s"), b"ctx").await.unwrap();
        let again = LocalKeyCipher::open_or_create(&path).unwrap();
        assert_eq!(again.active_key_id(), first.active_key_id());
        assert_eq!(
            again.open(&sealed, b"ctx").await.unwrap().expose_secret(),
            "s"
        );
        // No temp files are left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn after_rotation_old_secrets_open_and_new_ones_use_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let old = LocalKeyCipher::open_or_create(&path).unwrap();
        let sealed_old = old.seal(&SecretString::from("old"), b"ctx").await.unwrap();
        let new_id = LocalKeyCipher::rotate(&path).unwrap();
        let new = LocalKeyCipher::open_or_create(&path).unwrap();
        assert_eq!(new.active_key_id(), new_id);
        assert_ne!(new_id, old.active_key_id());
        assert_eq!(
            new.open(&sealed_old, b"ctx").await.unwrap().expose_secret(),
            "old"
        );
        let sealed_new = new.seal(&SecretString::from("new"), b"ctx").await.unwrap();
        assert_eq!(
            Envelope::parse(&sealed_new).unwrap().key_ref,
            new_id.as_bytes()
        );
        // The old process does not know the new key: a clear error, not a panic.
        assert!(matches!(
            old.open(&sealed_new, b"ctx").await,
            Err(StoreError::Crypto { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        LocalKeyCipher::open_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalKeyCipher::open_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_garbled_key_file_is_an_error_that_does_not_echo_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        LocalKeyCipher::open_or_create(&path).unwrap();
        fs::write(
            &path,
            b"{\"version\":1,\"active\":\"a\",\"keys\":[{\"id\":\"a\",\"key\":\"not-base64!\"}]}",
        )
        .unwrap();
        let err = LocalKeyCipher::open_or_create(&path).unwrap_err();
        assert!(!err.to_string().contains("not-base64"));
    }
}
