//! Writing files that hold secrets (the host key, the config with the API key).
//!
//! A secret file is written to a temporary file in the same folder, created with mode 0600 in
//! the `open` call itself (never created wider and narrowed afterwards), synced, then moved into
//! place with one `rename` or `link`. Readers therefore see the old file or the whole new one,
//! and nobody else can read it at any moment.

use crate::Error;
use crate::paths::ensure_private_dir;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to do when the destination already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    Replace,
    /// Fail with [`Error::KeyExists`] (used for identities, which must never be replaced).
    Keep,
}

/// Writes `bytes` to `path`, readable and writable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8], existing: Existing) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_private_dir(dir)?;
    let tmp = temp_name(dir, path)?;
    let result = write_new(&tmp, bytes).and_then(|()| place(&tmp, path, existing));
    // After a rename the temporary name is gone; after a link or a failure it is not.
    let _ = std::fs::remove_file(&tmp);
    result?;
    sync_dir(dir);
    Ok(())
}

fn temp_name(dir: &Path, path: &Path) -> Result<PathBuf, Error> {
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).map_err(Error::Random)?;
    let suffix = hex::encode(nonce);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(dir.join(format!(".{name}.tmp-{suffix}")))
}

fn write_new(tmp: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(tmp).map_err(Error::io("creating", tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(Error::io("writing", tmp))
}

fn place(tmp: &Path, path: &Path, existing: Existing) -> Result<(), Error> {
    match existing {
        Existing::Replace => std::fs::rename(tmp, path).map_err(Error::io("replacing", path)),
        // A hard link fails if the name exists, so two racing writers cannot both win.
        Existing::Keep => match std::fs::hard_link(tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::KeyExists {
                path: path.to_owned(),
            }),
            // Filesystems without hard links: check, then rename (a tiny race, no leak).
            Err(_) if path.exists() => Err(Error::KeyExists {
                path: path.to_owned(),
            }),
            Err(_) => std::fs::rename(tmp, path).map_err(Error::io("creating", path)),
        },
    }
}

/// Makes the rename durable across a power cut; best effort (not every platform can open a
/// folder for syncing).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The permission bits of `path` (Unix), `None` elsewhere.
pub(crate) fn mode(meta: &std::fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Some(meta.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn replace_and_keep() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/secret");
        write_private(&p, b"one", Existing::Keep).unwrap();
        assert!(matches!(
            write_private(&p, b"two", Existing::Keep),
            Err(Error::KeyExists { .. })
        ));
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        write_private(&p, b"three", Existing::Replace).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
        #[cfg(unix)]
        {
            let meta = std::fs::metadata(&p).unwrap();
            assert_eq!(mode(&meta), Some(0o600));
            let dir_meta = std::fs::metadata(p.parent().unwrap()).unwrap();
            assert_eq!(mode(&dir_meta), Some(0o700));
        }
    }
}
