//! Webhook configurations and the delivery ids already acted on, in D1: a delivery names only
//! the webhook id, so its row must be found without knowing the org. Reads for members always
//! name the caller's org; the secret leaves this module only for a signature check and in the
//! answers to a create or a rotation.

use crate::backend::Db;
use crate::error::ApiError;
use crate::webhooks::Provider;
use serde::{Deserialize, Serialize};
use tether_durable::ids;
use tether_durable::sql::SqlValue;
use tether_durable::time::rfc3339;
use tether_durable::validate;
use utoipa::ToSchema;

pub const MAX_WEBHOOKS_PER_ORG: i64 = 20;
/// Delivery ids are kept this long (providers retry for hours, not days).
pub const DELIVERY_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// The session a webhook starts for each new task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSession {
    /// An agent preset on the host (as in `POST /v1/sessions`).
    pub agent: String,
    /// A host id, or `any` (the default): the first online host with the project linked.
    pub host: Option<String>,
}

/// A webhook as members see it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    pub id: String,
    pub provider: Provider,
    pub name: String,
    /// Where deliveries go: `POST {url_path}` on this server.
    pub url_path: String,
    /// New tasks go to this project.
    pub project_id: String,
    /// Comments that mention this become tasks (GitHub, Linear).
    pub mention: String,
    /// Issues labelled this become tasks (GitHub); new Linear issues need it when set.
    pub label: Option<String>,
    /// With a session, every new task also starts an agent.
    pub session: Option<WebhookSession>,
    pub disabled: bool,
    pub created_by: String,
    pub created_at: String,
    pub disabled_at: Option<String>,
}

/// A webhook with its signing secret: answered only on create and rotate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// GitHub: paste it into the webhook's "Secret". Slack, Linear: the one they issued.
    pub secret: String,
}

/// A webhook as a delivery needs it.
#[derive(Debug, Clone)]
pub struct DeliveryTarget {
    pub org_id: String,
    pub secret: String,
    pub webhook: Webhook,
}

/// Checked fields of a new or changed webhook.
#[derive(Debug, Clone)]
pub struct Fields {
    pub name: String,
    pub project_id: String,
    pub mention: String,
    pub label: Option<String>,
    pub session: Option<WebhookSession>,
}

#[derive(Deserialize)]
struct Row {
    id: String,
    org_id: String,
    provider: Provider,
    name: String,
    secret: String,
    project_id: String,
    mention: String,
    label: Option<String>,
    agent: Option<String>,
    host: Option<String>,
    created_by: String,
    created_at: i64,
    disabled_at: Option<i64>,
}

impl Row {
    fn view(&self) -> Webhook {
        Webhook {
            id: self.id.clone(),
            provider: self.provider,
            name: self.name.clone(),
            url_path: format!("/webhooks/{}/{}", self.provider.as_str(), self.id),
            project_id: self.project_id.clone(),
            mention: self.mention.clone(),
            label: self.label.clone(),
            session: self.agent.as_ref().map(|agent| WebhookSession {
                agent: agent.clone(),
                host: self.host.clone(),
            }),
            disabled: self.disabled_at.is_some(),
            created_by: self.created_by.clone(),
            created_at: rfc3339(self.created_at),
            disabled_at: self.disabled_at.map(rfc3339),
        }
    }
}

#[derive(Deserialize)]
struct Count {
    n: i64,
}

async fn row(db: &impl Db, org_id: &str, id: &str) -> Result<Row, ApiError> {
    ids::check(ids::WEBHOOK, "id", id)?;
    db.query_one(
        "SELECT * FROM webhooks WHERE org_id = ? AND id = ?",
        &[org_id.into(), id.into()],
    )
    .await?
    .ok_or_else(|| ApiError::not_found("webhook"))
}

fn opt(v: Option<String>) -> SqlValue {
    v.map_or(SqlValue::Null, SqlValue::Text)
}

fn session_columns(s: Option<&WebhookSession>) -> (SqlValue, SqlValue) {
    match s {
        Some(s) => (s.agent.clone().into(), opt(s.host.clone())),
        None => (SqlValue::Null, SqlValue::Null),
    }
}

pub async fn create(
    db: &impl Db,
    org_id: &str,
    created_by: &str,
    provider: Provider,
    fields: Fields,
    secret: String,
    now: i64,
) -> Result<WebhookWithSecret, ApiError> {
    let n = db
        .query_one::<Count>(
            "SELECT count(*) AS n FROM webhooks WHERE org_id = ?",
            &[org_id.into()],
        )
        .await?
        .map_or(0, |c| c.n);
    validate::cap(n, MAX_WEBHOOKS_PER_ORG, "webhooks per org")?;
    let id = ids::new(ids::WEBHOOK);
    let (agent, host) = session_columns(fields.session.as_ref());
    db.execute(
        "INSERT INTO webhooks (id, org_id, provider, name, secret, project_id, mention, label,
                               agent, host, created_by, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        &[
            id.clone().into(),
            org_id.into(),
            provider.as_str().into(),
            fields.name.into(),
            secret.clone().into(),
            fields.project_id.into(),
            fields.mention.into(),
            opt(fields.label),
            agent,
            host,
            created_by.into(),
            now.into(),
        ],
    )
    .await?;
    Ok(WebhookWithSecret {
        webhook: row(db, org_id, &id).await?.view(),
        secret,
    })
}

pub async fn list(db: &impl Db, org_id: &str) -> Result<Vec<Webhook>, ApiError> {
    let rows: Vec<Row> = db
        .query(
            "SELECT * FROM webhooks WHERE org_id = ? ORDER BY id",
            &[org_id.into()],
        )
        .await?;
    Ok(rows.iter().map(Row::view).collect())
}

pub async fn get(db: &impl Db, org_id: &str, id: &str) -> Result<Webhook, ApiError> {
    Ok(row(db, org_id, id).await?.view())
}

/// The fields as they are now, for a change to start from.
pub async fn fields(db: &impl Db, org_id: &str, id: &str) -> Result<(Fields, bool), ApiError> {
    let r = row(db, org_id, id).await?;
    let w = r.view();
    Ok((
        Fields {
            name: w.name,
            project_id: w.project_id,
            mention: w.mention,
            label: w.label,
            session: w.session,
        },
        w.disabled,
    ))
}

pub async fn update(
    db: &impl Db,
    org_id: &str,
    id: &str,
    fields: Fields,
    disabled: bool,
    now: i64,
) -> Result<Webhook, ApiError> {
    let (agent, host) = session_columns(fields.session.as_ref());
    // Disabling keeps the first time it was disabled; enabling clears it.
    let disabled_at: SqlValue = if disabled { now.into() } else { SqlValue::Null };
    db.execute(
        "UPDATE webhooks SET name = ?, project_id = ?, mention = ?, label = ?, agent = ?, host = ?,
                disabled_at = CASE WHEN ? IS NULL THEN NULL ELSE coalesce(disabled_at, ?) END
         WHERE org_id = ? AND id = ?",
        &[
            fields.name.into(),
            fields.project_id.into(),
            fields.mention.into(),
            opt(fields.label),
            agent,
            host,
            disabled_at.clone(),
            disabled_at,
            org_id.into(),
            id.into(),
        ],
    )
    .await?;
    get(db, org_id, id).await
}

pub async fn rotate(
    db: &impl Db,
    org_id: &str,
    id: &str,
    secret: String,
) -> Result<WebhookWithSecret, ApiError> {
    let r = row(db, org_id, id).await?;
    db.execute(
        "UPDATE webhooks SET secret = ? WHERE org_id = ? AND id = ?",
        &[secret.clone().into(), org_id.into(), id.into()],
    )
    .await?;
    Ok(WebhookWithSecret {
        webhook: r.view(),
        secret,
    })
}

pub async fn delete(db: &impl Db, org_id: &str, id: &str) -> Result<(), ApiError> {
    row(db, org_id, id).await?;
    db.batch(&[
        (
            "DELETE FROM webhook_deliveries WHERE webhook_id = ?",
            vec![id.into()],
        ),
        (
            "DELETE FROM webhooks WHERE org_id = ? AND id = ?",
            vec![org_id.into(), id.into()],
        ),
    ])
    .await?;
    Ok(())
}

/// The enabled webhook with this id, for a delivery; nothing for unknown or disabled ones.
pub async fn for_delivery(db: &impl Db, id: &str) -> Result<Option<DeliveryTarget>, ApiError> {
    if !ids::is_valid(ids::WEBHOOK, id) {
        return Ok(None);
    }
    let r: Option<Row> = db
        .query_one(
            "SELECT * FROM webhooks WHERE id = ? AND disabled_at IS NULL",
            &[id.into()],
        )
        .await?;
    Ok(r.map(|r| DeliveryTarget {
        webhook: r.view(),
        org_id: r.org_id,
        secret: r.secret,
    }))
}

/// Records a delivery id; false when it was already recorded (a retry or a replay). Purges ids
/// past the retention on the way, in the same batch.
pub async fn record_delivery(
    db: &impl Db,
    webhook_id: &str,
    delivery_id: &str,
    now: i64,
) -> Result<bool, ApiError> {
    let changed = db
        .batch(&[
            (
                "DELETE FROM webhook_deliveries WHERE received_at < ?",
                vec![(now - DELIVERY_RETENTION_MS).into()],
            ),
            (
                "INSERT INTO webhook_deliveries (webhook_id, delivery_id, received_at)
                 VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                vec![webhook_id.into(), delivery_id.into(), now.into()],
            ),
        ])
        .await?;
    Ok(changed.get(1).copied().unwrap_or(0) > 0)
}

/// Forgets a delivery whose handling failed on our side, so the provider's retry is acted on.
pub async fn forget_delivery(
    db: &impl Db,
    webhook_id: &str,
    delivery_id: &str,
) -> Result<(), ApiError> {
    db.execute(
        "DELETE FROM webhook_deliveries WHERE webhook_id = ? AND delivery_id = ?",
        &[webhook_id.into(), delivery_id.into()],
    )
    .await?;
    Ok(())
}

/// For the cron: delivery ids older than `older_than`.
pub async fn purge_deliveries(db: &impl Db, older_than: i64) -> Result<u64, ApiError> {
    Ok(db
        .execute(
            "DELETE FROM webhook_deliveries WHERE received_at < ?",
            &[older_than.into()],
        )
        .await?)
}
