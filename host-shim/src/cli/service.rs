//! `tether service install|uninstall`: the systemd user unit.

use anyhow::{Context, Result, bail};
use std::process::ExitCode;
use tether::paths::{self, Paths};
use tether::service::{self, UNIT_NAME, UnitPaths};

pub fn install(paths: &Paths) -> Result<ExitCode> {
    if !cfg!(target_os = "linux") {
        bail!(
            "`tether service` writes a systemd user unit, which needs Linux; run `tether up` under your own service manager"
        );
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let at = UnitPaths::in_dir(&paths::systemd_user_dir()?);
    let replaced = service::install(&at, &exe, paths)?;
    println!(
        "{} {} (runs `{} up`).",
        if replaced { "Replaced" } else { "Wrote" },
        at.unit.display(),
        exe.display()
    );
    println!("Start it now and at every login:");
    println!("    systemctl --user daemon-reload");
    println!("    systemctl --user enable --now {UNIT_NAME}");
    println!("Follow its logs:");
    println!("    journalctl --user -u {UNIT_NAME} -f");
    println!("Keep it running while you are logged out:");
    println!("    loginctl enable-linger \"$USER\"");
    if replaced {
        println!(
            "It was installed before: `systemctl --user restart {UNIT_NAME}` picks up the change."
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn uninstall() -> Result<ExitCode> {
    let at = UnitPaths::in_dir(&paths::systemd_user_dir()?);
    if !service::uninstall(&at)? {
        println!("No {UNIT_NAME} installed at {}.", at.unit.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!("Removed {}.", at.unit.display());
    println!("Stop the running daemon and let systemd forget the unit:");
    println!("    systemctl --user stop {UNIT_NAME}");
    println!("    systemctl --user daemon-reload");
    Ok(ExitCode::SUCCESS)
}
