//! The host's identity: one Ed25519 key pair, made on this machine, never sent anywhere.
//!
//! The private key lives in `<state dir>/host.key` as an unencrypted PKCS#8 PEM document
//! (`-----BEGIN PRIVATE KEY-----`, RFC 8410), so standard tools read it
//! (`openssl pkey -in host.key -pubout`). The file is created with mode 0600 in one step (see
//! `files`), and a key file that group or others may read is refused, never silently fixed:
//! someone else may already have copied it.
//!
//! The edge knows the host by its public key, sent as unpadded base64url of the 32 raw bytes
//! when pairing. A connection is proved by signing [`auth_message`] over a server-issued nonce.

use crate::Error;
use crate::files::{self, Existing};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

/// What the daemon signs to authenticate a tunnel connection.
pub const AUTH_CONTEXT: &str = "tether-host-auth:v1";
/// A key file is a few hundred bytes; anything much larger is not one.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// The host's key pair.
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    /// Shows the public half only: identities end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new key from 32 bytes of the operating system's randomness.
    pub fn generate() -> Result<Self, Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).map_err(Error::Random)?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads the key at `path`, refusing a file that anyone but its owner may access.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let file = std::fs::File::open(path).map_err(Error::io("opening", path))?;
        // Check the file we opened, not the name: it cannot be swapped in between.
        let meta = file.metadata().map_err(Error::io("inspecting", path))?;
        check_private(path, &meta)?;
        let mut pem = Zeroizing::new(String::new());
        file.take(MAX_KEY_FILE)
            .read_to_string(&mut pem)
            .map_err(Error::io("reading", path))?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|source| Error::KeyFormat {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self { key })
    }

    /// Writes this key to `path` (mode 0600). Never replaces an existing file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(Error::KeyEncode)?;
        files::write_private(path, pem.as_bytes(), Existing::Keep)
    }

    /// Loads the key at `path`, or makes and saves one if there is none. The flag says whether
    /// it was created. If another process creates one at the same moment, theirs wins and is
    /// loaded.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), Error> {
        match Self::load(path) {
            Ok(id) => return Ok((id, false)),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let id = Self::generate()?;
        match id.save(path) {
            Ok(()) => Ok((id, true)),
            Err(Error::KeyExists { .. }) => Ok((Self::load(path)?, false)),
            Err(e) => Err(e),
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The 32 raw bytes of the public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The public key as the API takes it: unpadded base64url of the 32 raw bytes.
    pub fn public_key_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key())
    }

    /// A short name for the key people can compare: the first 16 hex digits of the SHA-256 of
    /// the raw public key.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_key())
    }

    /// An Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }

    /// The signature that answers a connect challenge, unpadded base64url of its 64 bytes.
    pub fn sign_auth(&self, host_id: &str, nonce: &str) -> String {
        URL_SAFE_NO_PAD.encode(
            self.sign(auth_message(host_id, nonce).as_bytes())
                .to_bytes(),
        )
    }
}

/// The fingerprint of a raw public key (see [`Identity::fingerprint`]).
pub fn fingerprint(public_key: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(public_key).get(..8).unwrap_or_default())
}

/// The message a host signs to prove its identity when it connects:
/// `tether-host-auth:v1\n{host_id}\n{nonce}`. The nonce is issued by the server, so a
/// captured signature is worthless for the next connection.
pub fn auth_message(host_id: &str, nonce: &str) -> String {
    format!("{AUTH_CONTEXT}\n{host_id}\n{nonce}")
}

/// Refuses a key file that is not a regular file or that group/others may access.
pub fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), Error> {
    if !meta.is_file() {
        return Err(Error::Io {
            action: "reading",
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    match files::mode(meta) {
        Some(mode) if mode & 0o077 != 0 => Err(Error::KeyPermissions {
            path: path.to_owned(),
            mode,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use ed25519_dalek::Verifier;

    #[test]
    fn roundtrip_sign_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/host.key");
        let (id, created) = Identity::load_or_create(&path).unwrap();
        assert!(created);
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");

        let (again, created) = Identity::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.public_key(), id.public_key());
        assert_eq!(again.fingerprint(), id.fingerprint());

        let msg = auth_message("hst_1", "nonce-1");
        assert_eq!(msg, "tether-host-auth:v1\nhst_1\nnonce-1");
        let sig = again.sign(msg.as_bytes());
        id.verifying_key().verify(msg.as_bytes(), &sig).unwrap();
        // Another nonce, another message: the old signature does not verify it.
        let other = auth_message("hst_1", "nonce-2");
        assert!(id.verifying_key().verify(other.as_bytes(), &sig).is_err());

        let b64 = id.sign_auth("hst_1", "nonce-1");
        assert_eq!(URL_SAFE_NO_PAD.decode(b64).unwrap(), sig.to_bytes());
    }

    #[test]
    fn public_key_encodings() {
        let id = Identity::generate().unwrap();
        let b64 = id.public_key_base64url();
        assert_eq!(b64.len(), 43);
        assert!(!b64.contains(['+', '/', '=']));
        assert_eq!(URL_SAFE_NO_PAD.decode(&b64).unwrap(), id.public_key());
        let fp = id.fingerprint();
        assert_eq!(fp.len(), 16);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        // Known answer: SHA-256 of 32 zero bytes starts 66687aadf862bd77.
        assert_eq!(fingerprint(&[0; 32]), "66687aadf862bd77");
        // Debug never shows the secret.
        assert!(!format!("{id:?}").contains("key:"));
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.key");
        let first = Identity::generate().unwrap();
        first.save(&path).unwrap();
        let second = Identity::generate().unwrap();
        assert!(matches!(second.save(&path), Err(Error::KeyExists { .. })));
        assert_eq!(
            Identity::load(&path).unwrap().public_key(),
            first.public_key()
        );
    }

    #[test]
    fn garbage_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.key");
        crate::files::write_private(&path, b"not a key", Existing::Keep).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(matches!(err, Error::KeyFormat { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.key");
        Identity::generate().unwrap().save(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for loose in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
            let err = Identity::load(&path).unwrap_err();
            assert!(
                matches!(err, Error::KeyPermissions { mode, .. } if mode == loose),
                "{err}"
            );
            let text = err.to_string();
            assert!(text.contains("chmod 600"), "{text}");
            // And load_or_create does not replace it either.
            assert!(Identity::load_or_create(&path).is_err());
        }
        // Owner-only modes are fine, read-only included.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        Identity::load(&path).unwrap();
    }
}
