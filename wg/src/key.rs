//! WireGuard keys: 32 bytes, base64 in files and configs, hex on the UAPI. A private key
//! never prints: its `Debug` is redacted and it has no `Display`.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("not a WireGuard key (32 bytes in base64, as `wg genkey` writes)")]
    Format,
}

fn decode(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::Format)?;
    bytes.try_into().map_err(|_| KeyError::Format)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        decode(text).map(PublicKey)
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A private (or preshared) key.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(hidden)")
    }
}

impl SecretKey {
    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        decode(text).map(SecretKey)
    }

    /// Reads a key file, refusing one that group or others may read: a leaked tunnel key
    /// lets anyone impersonate this gateway.
    pub fn load(path: &Path) -> Result<SecretKey, KeyError> {
        let err = |reason: String| KeyError::File {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "mode {mode:04o} lets others read the key; chmod 600 it"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        SecretKey::parse(&text).map_err(|e| err(e.to_string()))
    }

    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }

    pub fn public(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// For the UAPI only (`wg showconf` needs it; the socket is root's alone).
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A pair from `wg genkey | tee k | wg pubkey`.
    const PRIVATE: &str = "COQdJNX703zN9hXN7s2wlVIWYXeAxwEhcZbnXPHmKWI=";
    const PUBLIC: &str = "pO1FC1q/UBzLvYhzB4KmsUqPKLowFDo/2k4LHyEKDmU=";

    #[test]
    fn public_key_from_private_matches_wg() {
        let k = SecretKey::parse(PRIVATE).unwrap();
        assert_eq!(k.public().to_string(), PUBLIC);
        assert_eq!(PublicKey::parse(PUBLIC).unwrap(), k.public());
    }

    #[test]
    fn secrets_do_not_print() {
        let k = SecretKey::parse(PRIVATE).unwrap();
        let shown = format!("{k:?}");
        assert!(!shown.contains(&PRIVATE[..8]) && !shown.contains(&k.hex()[..8]));
    }

    #[test]
    fn bad_keys_and_open_files_are_refused() {
        assert_eq!(SecretKey::parse("abc"), Err(KeyError::Format));
        assert_eq!(PublicKey::parse(&PUBLIC[..40]), Err(KeyError::Format));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("{PRIVATE}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SecretKey::load(&path).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(SecretKey::load(&path).unwrap().public().to_string(), PUBLIC);
        let missing = SecretKey::load(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"));
    }
}
