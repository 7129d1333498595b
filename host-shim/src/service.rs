//! `tether service install|uninstall`: a systemd user unit that runs `tether up`.
//!
//! The unit lives at `$XDG_CONFIG_HOME/systemd/user/tether.service`. It pins the config and
//! state folders the installing shell used (`TETHER_CONFIG_DIR`, `TETHER_STATE_DIR`), because
//! the systemd user manager's environment may differ from the shell's. It restarts the daemon
//! on failure, except for [`EXIT_DO_NOT_RESTART`](crate::daemon::EXIT_DO_NOT_RESTART) (not
//! paired, revoked), where a restart loop would only hammer the edge.

use crate::Error;
use crate::daemon::EXIT_DO_NOT_RESTART;
use crate::files::{self, Existing};
use crate::paths::{CONFIG_DIR_ENV, Paths, STATE_DIR_ENV};
use std::path::{Path, PathBuf};

pub const UNIT_NAME: &str = "tether.service";

/// The unit file's text for `exe up` with these folders.
pub fn unit_file(exe: &Path, paths: &Paths) -> String {
    let exe = exe.to_string_lossy();
    let config = format!("{CONFIG_DIR_ENV}={}", paths.config_dir.to_string_lossy());
    let state = format!("{STATE_DIR_ENV}={}", paths.state_dir.to_string_lossy());
    format!(
        "# Written by `tether service install`; `tether service uninstall` removes it.
[Unit]
Description=Tether host daemon (runs coding agents on this machine)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={} up
Environment={}
Environment={}
Restart=on-failure
RestartSec=5
RestartPreventExitStatus={EXIT_DO_NOT_RESTART}

[Install]
WantedBy=default.target
",
        quote(&exe, true),
        quote(&config, false),
        quote(&state, false),
    )
}

/// One word of a unit file: `%` doubled (specifiers), in `ExecStart=` `$` doubled (variable
/// expansion), and double-quoted with C escapes when it has anything but plain path characters.
fn quote(word: &str, exec: bool) -> String {
    let mut s = word.replace('%', "%%");
    if exec {
        s = s.replace('$', "$$");
    }
    let plain = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '/' | '.' | '_' | '-' | '+' | ':' | '=' | ',' | '@' | '%' | '$'
                )
        });
    if plain {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where the unit goes, and where `systemctl --user enable` links it.
#[derive(Clone, Debug)]
pub struct UnitPaths {
    pub unit: PathBuf,
    pub wants_link: PathBuf,
}

impl UnitPaths {
    pub fn in_dir(systemd_user_dir: &Path) -> Self {
        Self {
            unit: systemd_user_dir.join(UNIT_NAME),
            wants_link: systemd_user_dir
                .join("default.target.wants")
                .join(UNIT_NAME),
        }
    }
}

/// Writes (or replaces) the unit. Returns whether one was there before.
pub fn install(at: &UnitPaths, exe: &Path, paths: &Paths) -> Result<bool, Error> {
    let existed = at.unit.exists();
    files::write_private(
        &at.unit,
        unit_file(exe, paths).as_bytes(),
        Existing::Replace,
    )?;
    Ok(existed)
}

/// Removes the unit and its enablement link. Returns whether there was anything to remove.
pub fn uninstall(at: &UnitPaths) -> Result<bool, Error> {
    let mut removed = false;
    for p in [&at.wants_link, &at.unit] {
        // symlink_metadata: the link may dangle once the unit is gone.
        if std::fs::symlink_metadata(p).is_ok() {
            std::fs::remove_file(p).map_err(Error::io("removing", p.as_path()))?;
            removed = true;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(
            quote("/usr/local/bin/tether", true),
            "/usr/local/bin/tether"
        );
        assert_eq!(
            quote("/home/a b/bin/tether", true),
            "\"/home/a b/bin/tether\""
        );
        assert_eq!(quote("/x/100%/$HOME", true), "/x/100%%/$$HOME");
        assert_eq!(quote("A=/x/$y", false), "A=/x/$y");
        assert_eq!(quote("a\"b\\c d", true), "\"a\\\"b\\\\c d\"");
    }

    #[test]
    fn install_and_uninstall() {
        let dir = tempfile::tempdir().unwrap();
        let at = UnitPaths::in_dir(&dir.path().join("systemd/user"));
        let paths = Paths::new("/cfg dir/tether", "/state/tether");
        assert!(!install(&at, Path::new("/opt/tether/bin/tether"), &paths).unwrap());
        let text = std::fs::read_to_string(&at.unit).unwrap();
        assert!(
            text.contains("ExecStart=/opt/tether/bin/tether up\n"),
            "{text}"
        );
        assert!(
            text.contains("Environment=\"TETHER_CONFIG_DIR=/cfg dir/tether\"\n"),
            "{text}"
        );
        assert!(
            text.contains("Environment=TETHER_STATE_DIR=/state/tether\n"),
            "{text}"
        );
        assert!(text.contains("Restart=on-failure\n"), "{text}");
        assert!(text.contains("RestartPreventExitStatus=78\n"), "{text}");
        assert!(install(&at, Path::new("/opt/tether/bin/tether"), &paths).unwrap());

        // As `systemctl --user enable` would.
        std::fs::create_dir_all(at.wants_link.parent().unwrap()).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&at.unit, &at.wants_link).unwrap();
        assert!(uninstall(&at).unwrap());
        assert!(!at.unit.exists());
        assert!(std::fs::symlink_metadata(&at.wants_link).is_err());
        assert!(!uninstall(&at).unwrap());
    }
}
