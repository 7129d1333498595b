//! Resource ids: a type prefix and 32 lowercase hex digits (a UUIDv7, so ids sort by creation).

use crate::error::StoreError;

pub const ORG: &str = "org";
pub const USER: &str = "usr";
pub const MEMBER: &str = "mem";
pub const API_KEY: &str = "key";
pub const PROJECT: &str = "prj";
pub const STATUS: &str = "sts";
pub const TASK: &str = "tsk";
pub const HOST: &str = "hst";
pub const SESSION: &str = "ses";
pub const WEBHOOK: &str = "whk";
pub const AUTOMATION: &str = "aut";
pub const RUN: &str = "run";

/// A fresh id such as `tsk_0190c6...`.
pub fn new(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// True when `id` has the shape of an id with this prefix.
pub fn is_valid(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hex| {
            hex.len() == 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Checks an id from a path or body; a malformed one is a client error (400), not a 404.
pub fn check(prefix: &str, field: &str, id: &str) -> Result<(), StoreError> {
    if is_valid(prefix, id) {
        Ok(())
    } else {
        Err(StoreError::BadRequest {
            field: field.to_owned(),
            message: format!("not a valid id (expected `{prefix}_` followed by 32 hex digits)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_valid_and_sortable() {
        let a = new(TASK);
        let b = new(TASK);
        assert!(is_valid(TASK, &a));
        assert!(!is_valid(PROJECT, &a));
        assert!(a < b || a[..16] == b[..16], "v7 ids sort by time");
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "tsk_",
            "tsk_123",
            "tsk-0190c6e8f1d87a3b9c2d4e5f6a7b8c9d",
            "TSK_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d",
            "tsk_0190C6E8F1D87A3B9C2D4E5F6A7B8C9D",
            "tsk_0190c6e8f1d87a3b9c2d4e5f6a7b8c9dz",
            "tsk_../../etc/passwd",
        ] {
            assert!(!is_valid(TASK, bad), "{bad}");
        }
        assert!(is_valid(TASK, "tsk_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d"));
    }
}
