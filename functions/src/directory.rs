//! The directory in D1: users, orgs, members and API key hashes; the host registry, pairing
//! and connect nonces in [`hosts`]. Every query that reads org rows names the caller's org, so
//! another org's rows cannot come back.

pub mod automations;
pub mod hosts;
pub mod webhooks;

use crate::auth::{self, Role};
use crate::backend::Db;
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use tether_durable::ids;
use tether_durable::sql::SqlValue;
use tether_durable::time::rfc3339;
use tether_durable::validate;
use utoipa::ToSchema;

/// Caps on directory rows.
pub const MAX_MEMBERS_PER_ORG: i64 = 1_000;
pub const MAX_KEYS_PER_MEMBER: i64 = 50;
pub const MAX_ORGS_PER_USER: i64 = 20;
const EMAIL_MAX: usize = 254;
/// A key's last-used time is written at most this often (ms), not on every request.
const TOUCH_EVERY_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Org {
    pub id: String,
    pub name: String,
    /// Task slugs are `<task_prefix>-<number>`.
    pub task_prefix: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub id: String,
    pub user: User,
    pub role: Role,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub member_id: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// A key as created: the only time `secret` is ever shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The whole key. Store it now: only its SHA-256 is kept.
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    pub name: String,
    /// 2 to 6 letters; derived from the name when absent.
    pub task_prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    pub org_name: String,
    pub task_prefix: Option<String>,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrg {
    pub name: Option<String>,
    /// New tasks use the new prefix; existing slugs keep theirs.
    pub task_prefix: Option<String>,
}

/// An org with its first owner and that owner's first key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedOrg {
    pub org: Org,
    pub member: Member,
    pub api_key: NewApiKey,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMember {
    pub email: String,
    /// Used when no user with this email exists yet.
    pub name: String,
    pub role: Role,
}

/// A new member and a first key to hand to them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedMember {
    pub member: Member,
    pub api_key: NewApiKey,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    pub role: Role,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    /// Admins may create keys for other members; defaults to the caller.
    pub member_id: Option<String>,
}

// ---- rows ----

/// What an API key resolves to.
#[derive(Debug, Deserialize)]
pub struct KeyPrincipal {
    pub key_id: String,
    pub last_used_at: Option<i64>,
    pub member_id: String,
    pub user_id: String,
    pub role: Role,
    pub org_id: String,
    pub task_prefix: String,
}

#[derive(Deserialize)]
struct OrgRow {
    id: String,
    name: String,
    task_prefix: String,
    created_at: i64,
    updated_at: i64,
}

impl From<OrgRow> for Org {
    fn from(r: OrgRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            task_prefix: r.task_prefix,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

#[derive(Deserialize)]
struct MemberRow {
    id: String,
    user_id: String,
    email: String,
    name: String,
    role: Role,
    created_at: i64,
}

impl From<MemberRow> for Member {
    fn from(r: MemberRow) -> Self {
        Self {
            id: r.id,
            user: User {
                id: r.user_id,
                email: r.email,
                name: r.name,
            },
            role: r.role,
            created_at: rfc3339(r.created_at),
        }
    }
}

#[derive(Deserialize)]
struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    member_id: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            member_id: r.member_id,
            created_at: rfc3339(r.created_at),
            last_used_at: r.last_used_at.map(rfc3339),
            revoked_at: r.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Deserialize)]
struct Count {
    n: i64,
}

#[derive(Deserialize)]
struct IdRow {
    id: String,
}

const MEMBER_SELECT: &str = "SELECT m.id, m.user_id, u.email, u.name, m.role, m.created_at
    FROM members m JOIN users u ON u.id = m.user_id";

fn email(value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    let ok = v.len() <= EMAIL_MAX
        && v.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(ApiError::invalid("email", "is not an email address"));
    }
    Ok(v.to_owned())
}

/// `Tether Labs` -> `TET`.
fn derive_prefix(name: &str) -> String {
    let letters: String = name
        .chars()
        .filter(char::is_ascii_alphabetic)
        .take(3)
        .collect();
    if letters.len() >= 2 {
        letters.to_ascii_uppercase()
    } else {
        "TSK".into()
    }
}

fn prefix(name: &str, given: Option<&str>) -> Result<String, ApiError> {
    match given {
        Some(p) => Ok(validate::task_prefix("task_prefix", p)?),
        None => Ok(derive_prefix(name)),
    }
}

async fn count(db: &impl Db, sql: &str, params: &[SqlValue]) -> Result<i64, ApiError> {
    Ok(db.query_one::<Count>(sql, params).await?.map_or(0, |c| c.n))
}

/// The statements that create a key row, and the key as shown once.
fn new_key_statement(
    org_id: &str,
    member_id: &str,
    name: &str,
    now: i64,
) -> Result<((&'static str, Vec<SqlValue>), NewApiKey), ApiError> {
    let k = auth::generate_key()?;
    let id = ids::new(ids::API_KEY);
    let stmt = (
        "INSERT INTO api_keys (id, org_id, member_id, name, prefix, hash, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        vec![
            id.clone().into(),
            org_id.into(),
            member_id.into(),
            name.into(),
            k.display_prefix.clone().into(),
            k.hash.into(),
            now.into(),
        ],
    );
    let key = ApiKey {
        id,
        name: name.to_owned(),
        prefix: k.display_prefix,
        member_id: member_id.to_owned(),
        created_at: rfc3339(now),
        last_used_at: None,
        revoked_at: None,
    };
    Ok((
        stmt,
        NewApiKey {
            key,
            secret: k.secret,
        },
    ))
}

/// Who owns a new org.
enum FirstOwner {
    /// A user who already exists (`POST /v1/orgs`).
    Existing { user_id: String },
    /// A new user, through the once-only bootstrap.
    Bootstrap { email: String, name: String },
}

/// Creates an org with its owner and the owner's first key.
async fn create_org_with_owner(
    db: &impl Db,
    org_name: &str,
    task_prefix: Option<&str>,
    owner: FirstOwner,
    now: i64,
) -> Result<CreatedOrg, ApiError> {
    let bootstrap = matches!(owner, FirstOwner::Bootstrap { .. });
    let name = validate::line("name", org_name, validate::NAME_MAX)?;
    let task_prefix = prefix(&name, task_prefix)?;
    let org_id = ids::new(ids::ORG);
    let member_id = ids::new(ids::MEMBER);
    let mut stmts: Vec<(&str, Vec<SqlValue>)> = Vec::new();
    if bootstrap {
        // A second bootstrap fails here on the primary key, rolling back the whole batch.
        stmts.push((
            "INSERT INTO meta (key, value) VALUES ('bootstrapped', ?)",
            vec![now.to_string().into()],
        ));
    }
    let (user_id, email, user_name) = match owner {
        FirstOwner::Existing { user_id: existing } => {
            #[derive(Deserialize)]
            struct U {
                email: String,
                name: String,
            }
            let u: U = db
                .query_one(
                    "SELECT email, name FROM users WHERE id = ?",
                    &[existing.clone().into()],
                )
                .await?
                .ok_or_else(|| ApiError::unauthorized("unknown user"))?;
            (existing, u.email, u.name)
        }
        FirstOwner::Bootstrap { email, name } => {
            let id = ids::new(ids::USER);
            stmts.push((
                "INSERT INTO users (id, email, name, created_at) VALUES (?, ?, ?, ?)",
                vec![
                    id.clone().into(),
                    email.clone().into(),
                    name.clone().into(),
                    now.into(),
                ],
            ));
            (id, email, name)
        }
    };
    stmts.push((
        "INSERT INTO orgs (id, name, task_prefix, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        vec![
            org_id.clone().into(),
            name.clone().into(),
            task_prefix.clone().into(),
            now.into(),
            now.into(),
        ],
    ));
    stmts.push((
        "INSERT INTO members (id, org_id, user_id, role, created_at) VALUES (?, ?, ?, 'owner', ?)",
        vec![
            member_id.clone().into(),
            org_id.clone().into(),
            user_id.clone().into(),
            now.into(),
        ],
    ));
    let (key_stmt, api_key) = new_key_statement(&org_id, &member_id, "owner", now)?;
    stmts.push(key_stmt);
    db.batch(&stmts).await.map_err(|e| {
        if bootstrap && e.unique_violation {
            ApiError::conflict(
                "already_bootstrapped",
                "this deployment already has its first org",
            )
        } else {
            ApiError::from(e)
        }
    })?;
    Ok(CreatedOrg {
        org: Org {
            id: org_id,
            name,
            task_prefix,
            created_at: rfc3339(now),
            updated_at: rfc3339(now),
        },
        member: Member {
            id: member_id,
            user: User {
                id: user_id,
                email,
                name: user_name,
            },
            role: Role::Owner,
            created_at: rfc3339(now),
        },
        api_key,
    })
}

pub async fn bootstrap(db: &impl Db, input: Bootstrap, now: i64) -> Result<CreatedOrg, ApiError> {
    let mail = email(&input.email)?;
    let name = validate::line("name", &input.name, validate::NAME_MAX)?;
    create_org_with_owner(
        db,
        &input.org_name,
        input.task_prefix.as_deref(),
        FirstOwner::Bootstrap { email: mail, name },
        now,
    )
    .await
}

pub async fn create_org(
    db: &impl Db,
    user_id: &str,
    input: CreateOrg,
    now: i64,
) -> Result<CreatedOrg, ApiError> {
    let owned = count(
        db,
        "SELECT count(*) AS n FROM members WHERE user_id = ? AND role = 'owner'",
        &[user_id.into()],
    )
    .await?;
    validate::cap(owned, MAX_ORGS_PER_USER, "orgs owned per user")?;
    create_org_with_owner(
        db,
        &input.name,
        input.task_prefix.as_deref(),
        FirstOwner::Existing {
            user_id: user_id.to_owned(),
        },
        now,
    )
    .await
}

/// Resolves an API key; revoked and unknown keys resolve to nothing.
pub async fn key_principal(
    db: &impl Db,
    secret: &str,
    now: i64,
) -> Result<Option<KeyPrincipal>, ApiError> {
    let found: Option<KeyPrincipal> = db
        .query_one(
            "SELECT k.id AS key_id, k.last_used_at, m.id AS member_id, m.user_id, m.role, m.org_id, o.task_prefix
             FROM api_keys k JOIN members m ON m.id = k.member_id JOIN orgs o ON o.id = m.org_id
             WHERE k.hash = ? AND k.revoked_at IS NULL",
            &[auth::hash_key(secret).into()],
        )
        .await?;
    if let Some(k) = &found
        && k.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY_MS)
    {
        db.execute(
            "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
            &[now.into(), k.key_id.clone().into()],
        )
        .await?;
    }
    Ok(found)
}

pub async fn org(db: &impl Db, org_id: &str) -> Result<Org, ApiError> {
    let row: Option<OrgRow> = db
        .query_one("SELECT * FROM orgs WHERE id = ?", &[org_id.into()])
        .await?;
    row.map(Into::into)
        .ok_or_else(|| ApiError::not_found("org"))
}

/// The orgs a user belongs to.
pub async fn orgs_of_user(db: &impl Db, user_id: &str) -> Result<Vec<Org>, ApiError> {
    let rows: Vec<OrgRow> = db
        .query(
            "SELECT o.* FROM orgs o JOIN members m ON m.org_id = o.id WHERE m.user_id = ? ORDER BY o.id",
            &[user_id.into()],
        )
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn update_org(
    db: &impl Db,
    org_id: &str,
    patch: UpdateOrg,
    now: i64,
) -> Result<Org, ApiError> {
    let mut o = org(db, org_id).await?;
    if let Some(n) = patch.name {
        o.name = validate::line("name", &n, validate::NAME_MAX)?;
    }
    if let Some(p) = patch.task_prefix {
        o.task_prefix = validate::task_prefix("task_prefix", &p)?;
    }
    db.execute(
        "UPDATE orgs SET name = ?, task_prefix = ?, updated_at = ? WHERE id = ?",
        &[
            o.name.into(),
            o.task_prefix.into(),
            now.into(),
            org_id.into(),
        ],
    )
    .await?;
    org(db, org_id).await
}

pub async fn delete_org(db: &impl Db, org_id: &str) -> Result<(), ApiError> {
    // Members and keys go with it (ON DELETE CASCADE).
    db.execute("DELETE FROM orgs WHERE id = ?", &[org_id.into()])
        .await?;
    Ok(())
}

pub async fn members(db: &impl Db, org_id: &str) -> Result<Vec<Member>, ApiError> {
    let rows: Vec<MemberRow> = db
        .query(
            &format!("{MEMBER_SELECT} WHERE m.org_id = ? ORDER BY m.id"),
            &[org_id.into()],
        )
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// A member of `org_id`; members of other orgs are "not found".
pub async fn member(db: &impl Db, org_id: &str, member_id: &str) -> Result<Member, ApiError> {
    ids::check(ids::MEMBER, "id", member_id)?;
    let row: Option<MemberRow> = db
        .query_one(
            &format!("{MEMBER_SELECT} WHERE m.org_id = ? AND m.id = ?"),
            &[org_id.into(), member_id.into()],
        )
        .await?;
    row.map(Into::into)
        .ok_or_else(|| ApiError::not_found("member"))
}

pub async fn create_member(
    db: &impl Db,
    org_id: &str,
    input: CreateMember,
    now: i64,
) -> Result<CreatedMember, ApiError> {
    let mail = email(&input.email)?;
    let name = validate::line("name", &input.name, validate::NAME_MAX)?;
    let members = count(
        db,
        "SELECT count(*) AS n FROM members WHERE org_id = ?",
        &[org_id.into()],
    )
    .await?;
    validate::cap(members, MAX_MEMBERS_PER_ORG, "members per org")?;
    let existing: Option<IdRow> = db
        .query_one(
            "SELECT id FROM users WHERE email = ?",
            &[mail.clone().into()],
        )
        .await?;
    let mut stmts: Vec<(&str, Vec<SqlValue>)> = Vec::new();
    let user_id = match existing {
        Some(u) => {
            let n = count(
                db,
                "SELECT count(*) AS n FROM members WHERE org_id = ? AND user_id = ?",
                &[org_id.into(), u.id.clone().into()],
            )
            .await?;
            if n > 0 {
                return Err(ApiError::conflict(
                    "already_member",
                    format!("{mail} is already a member"),
                ));
            }
            u.id
        }
        None => {
            let id = ids::new(ids::USER);
            stmts.push((
                "INSERT INTO users (id, email, name, created_at) VALUES (?, ?, ?, ?)",
                vec![
                    id.clone().into(),
                    mail.clone().into(),
                    name.into(),
                    now.into(),
                ],
            ));
            id
        }
    };
    let member_id = ids::new(ids::MEMBER);
    stmts.push((
        "INSERT INTO members (id, org_id, user_id, role, created_at) VALUES (?, ?, ?, ?, ?)",
        vec![
            member_id.clone().into(),
            org_id.into(),
            user_id.into(),
            input.role.as_str().into(),
            now.into(),
        ],
    ));
    let (key_stmt, api_key) = new_key_statement(org_id, &member_id, "initial", now)?;
    stmts.push(key_stmt);
    db.batch(&stmts).await.map_err(|e| {
        if e.unique_violation {
            ApiError::conflict("already_member", format!("{mail} is already a member"))
        } else {
            ApiError::from(e)
        }
    })?;
    Ok(CreatedMember {
        member: member(db, org_id, &member_id).await?,
        api_key,
    })
}

async fn owners(db: &impl Db, org_id: &str) -> Result<i64, ApiError> {
    count(
        db,
        "SELECT count(*) AS n FROM members WHERE org_id = ? AND role = 'owner'",
        &[org_id.into()],
    )
    .await
}

pub async fn set_role(
    db: &impl Db,
    org_id: &str,
    member_id: &str,
    role: Role,
) -> Result<Member, ApiError> {
    let m = member(db, org_id, member_id).await?;
    if m.role == Role::Owner && role != Role::Owner && owners(db, org_id).await? <= 1 {
        return Err(ApiError::conflict(
            "last_owner",
            "an org needs at least one owner",
        ));
    }
    db.execute(
        "UPDATE members SET role = ? WHERE org_id = ? AND id = ?",
        &[role.as_str().into(), org_id.into(), member_id.into()],
    )
    .await?;
    member(db, org_id, member_id).await
}

pub async fn remove_member(db: &impl Db, org_id: &str, member_id: &str) -> Result<(), ApiError> {
    let m = member(db, org_id, member_id).await?;
    if m.role == Role::Owner && owners(db, org_id).await? <= 1 {
        return Err(ApiError::conflict(
            "last_owner",
            "an org needs at least one owner",
        ));
    }
    db.execute(
        "DELETE FROM members WHERE org_id = ? AND id = ?",
        &[org_id.into(), member_id.into()],
    )
    .await?;
    Ok(())
}

/// Keys of the org, or of one member when `member_id` is given. Revoked keys are listed too.
pub async fn api_keys(
    db: &impl Db,
    org_id: &str,
    member_id: Option<&str>,
) -> Result<Vec<ApiKey>, ApiError> {
    let rows: Vec<KeyRow> = match member_id {
        Some(m) => {
            db.query(
                "SELECT * FROM api_keys WHERE org_id = ? AND member_id = ? ORDER BY id",
                &[org_id.into(), m.into()],
            )
            .await?
        }
        None => {
            db.query(
                "SELECT * FROM api_keys WHERE org_id = ? ORDER BY id",
                &[org_id.into()],
            )
            .await?
        }
    };
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn api_key(db: &impl Db, org_id: &str, key_id: &str) -> Result<ApiKey, ApiError> {
    ids::check(ids::API_KEY, "id", key_id)?;
    let row: Option<KeyRow> = db
        .query_one(
            "SELECT * FROM api_keys WHERE org_id = ? AND id = ?",
            &[org_id.into(), key_id.into()],
        )
        .await?;
    row.map(Into::into)
        .ok_or_else(|| ApiError::not_found("api key"))
}

pub async fn create_api_key(
    db: &impl Db,
    org_id: &str,
    member_id: &str,
    name: &str,
    now: i64,
) -> Result<NewApiKey, ApiError> {
    let name = validate::line("name", name, validate::NAME_MAX)?;
    let live = count(
        db,
        "SELECT count(*) AS n FROM api_keys WHERE member_id = ? AND revoked_at IS NULL",
        &[member_id.into()],
    )
    .await?;
    validate::cap(
        live,
        MAX_KEYS_PER_MEMBER,
        "live keys per member; revoke one first",
    )?;
    let ((sql, params), key) = new_key_statement(org_id, member_id, &name, now)?;
    db.execute(sql, &params).await?;
    Ok(key)
}

/// Revokes a key (idempotent); answers the key as it now is.
pub async fn revoke_api_key(
    db: &impl Db,
    org_id: &str,
    key_id: &str,
    now: i64,
) -> Result<ApiKey, ApiError> {
    db.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE org_id = ? AND id = ? AND revoked_at IS NULL",
        &[now.into(), org_id.into(), key_id.into()],
    )
    .await?;
    api_key(db, org_id, key_id).await
}

/// Revoked keys are kept for a while so lists can show them, then purged.
pub async fn purge_revoked_keys(db: &impl Db, older_than: i64) -> Result<u64, ApiError> {
    Ok(db
        .execute(
            "DELETE FROM api_keys WHERE revoked_at IS NOT NULL AND revoked_at < ?",
            &[older_than.into()],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_derive_from_names() {
        assert_eq!(derive_prefix("Tether Labs"), "TET");
        assert_eq!(derive_prefix("a1"), "TSK");
        assert_eq!(derive_prefix("Ünïcode Çorp"), "NCO");
    }

    #[test]
    fn emails() {
        assert!(email("a@b.co").is_ok());
        for bad in ["", "a", "a@b", "@b.co", "a b@c.de", "a@.com", "a@com."] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }
}
