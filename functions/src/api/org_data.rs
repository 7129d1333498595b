//! Projects, task statuses and tasks: checked here, stored by the org's Durable Object.

use super::{org_answer, org_call};
use crate::auth::{Credential, Principal, Role};
use crate::backend::Backend;
use crate::directory;
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use http::StatusCode;
use tether_durable::error::ErrorBody;
use tether_durable::org::OrgOp;
use tether_durable::org::model::{
    CreateProject, CreateTask, CreateTaskStatus, DeleteTaskStatusQuery, Page, PageQuery, Project,
    Task, TaskQuery, TaskStatus, UpdateProject, UpdateTask, UpdateTaskStatus,
};
use tether_durable::validate;

async fn answer(
    app: &impl Backend,
    p: &Principal,
    status: StatusCode,
    op: OrgOp,
) -> Result<Response, ApiError> {
    let body = org_call(app, p, op).await?;
    Ok(if status == StatusCode::NO_CONTENT {
        h::no_content()
    } else {
        h::json_bytes(status, body)
    })
}

/// An assignee must be a member of the caller's org.
async fn check_assignee(
    app: &impl Backend,
    p: &Principal,
    assignee: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(a) = assignee
        && directory::member(app.db(), &p.org_id, a).await.is_err()
    {
        return Err(ApiError::invalid("assignee_id", "not a member of this org"));
    }
    Ok(())
}

// ---- projects ----

/// The id of a project a request body names by id or name: a missing one is a 422 on
/// `project`, not a 404.
pub(super) async fn project_in_body(
    app: &impl Backend,
    p: &Principal,
    key: &str,
) -> Result<String, ApiError> {
    let key = validate::line("project", key, validate::NAME_MAX)?;
    match org_answer::<Project>(app, p, OrgOp::FindProject { key }).await {
        Ok(project) => Ok(project.id),
        Err(e) if e.status == StatusCode::NOT_FOUND => Err(ApiError::invalid(
            "project",
            "no project with this id or name in the org",
        )),
        Err(e) => Err(e),
    }
}

#[utoipa::path(get, path = "/v1/projects", tag = "projects", params(PageQuery),
    responses((status = 200, body = Page<Project>), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_projects(
    app: &impl Backend,
    p: &Principal,
    req: &Request,
) -> Result<Response, ApiError> {
    answer(app, p, StatusCode::OK, OrgOp::ListProjects(h::query(req)?)).await
}

/// Creates a project (admin).
#[utoipa::path(post, path = "/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, body = Project), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create_project(
    app: &impl Backend,
    p: &Principal,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let input: CreateProject = h::body(req)?;
    answer(app, p, StatusCode::CREATED, OrgOp::CreateProject(input)).await
}

#[utoipa::path(get, path = "/v1/projects/{id}", tag = "projects", params(("id" = String, Path)),
    responses((status = 200, body = Project), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get_project(
    app: &impl Backend,
    p: &Principal,
    id: &str,
) -> Result<Response, ApiError> {
    answer(app, p, StatusCode::OK, OrgOp::GetProject { id: id.into() }).await
}

/// Updates a project (admin).
#[utoipa::path(patch, path = "/v1/projects/{id}", tag = "projects", params(("id" = String, Path)),
    request_body = UpdateProject,
    responses((status = 200, body = Project), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update_project(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let patch: UpdateProject = h::body(req)?;
    answer(
        app,
        p,
        StatusCode::OK,
        OrgOp::UpdateProject {
            id: id.into(),
            patch,
        },
    )
    .await
}

/// Deletes a project (admin); its tasks stay, detached.
#[utoipa::path(delete, path = "/v1/projects/{id}", tag = "projects", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_project(
    app: &impl Backend,
    p: &Principal,
    id: &str,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    answer(
        app,
        p,
        StatusCode::NO_CONTENT,
        OrgOp::DeleteProject { id: id.into() },
    )
    .await
}

// ---- task statuses ----

/// The org's task statuses in board order.
#[utoipa::path(get, path = "/v1/task-statuses", tag = "task-statuses",
    responses((status = 200, body = Vec<TaskStatus>)), security(("api_key" = []), ("bearer" = [])))]
pub async fn list_statuses(app: &impl Backend, p: &Principal) -> Result<Response, ApiError> {
    answer(app, p, StatusCode::OK, OrgOp::ListStatuses).await
}

/// Adds a status (admin).
#[utoipa::path(post, path = "/v1/task-statuses", tag = "task-statuses", request_body = CreateTaskStatus,
    responses((status = 201, body = TaskStatus), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create_status(
    app: &impl Backend,
    p: &Principal,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let input: CreateTaskStatus = h::body(req)?;
    answer(app, p, StatusCode::CREATED, OrgOp::CreateStatus(input)).await
}

/// Renames, recolours, recategorises or moves a status (admin).
#[utoipa::path(patch, path = "/v1/task-statuses/{id}", tag = "task-statuses", params(("id" = String, Path)),
    request_body = UpdateTaskStatus,
    responses((status = 200, body = TaskStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update_status(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let patch: UpdateTaskStatus = h::body(req)?;
    answer(
        app,
        p,
        StatusCode::OK,
        OrgOp::UpdateStatus {
            id: id.into(),
            patch,
        },
    )
    .await
}

/// Deletes a status (admin). Tasks using it must be moved with `replace_with`.
#[utoipa::path(delete, path = "/v1/task-statuses/{id}", tag = "task-statuses",
    params(("id" = String, Path), DeleteTaskStatusQuery),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_status(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let q: DeleteTaskStatusQuery = h::query(req)?;
    answer(
        app,
        p,
        StatusCode::NO_CONTENT,
        OrgOp::DeleteStatus {
            id: id.into(),
            replace_with: q.replace_with,
        },
    )
    .await
}

// ---- tasks ----

/// Tasks, newest first, filtered and paged.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, body = Page<Task>), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_tasks(
    app: &impl Backend,
    p: &Principal,
    req: &Request,
) -> Result<Response, ApiError> {
    answer(app, p, StatusCode::OK, OrgOp::ListTasks(h::query(req)?)).await
}

/// Creates a task; its slug comes from the org's atomic counter.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = CreateTask,
    responses((status = 201, body = Task), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create_task(
    app: &impl Backend,
    p: &Principal,
    req: &Request,
) -> Result<Response, ApiError> {
    let task: CreateTask = h::body(req)?;
    Ok(h::json_bytes(
        StatusCode::CREATED,
        create_task_with(app, p, task).await?,
    ))
}

/// `POST /v1/tasks` (and the MCP tool) on a decoded body: the task as JSON.
pub(super) async fn create_task_with(
    app: &impl Backend,
    p: &Principal,
    task: CreateTask,
) -> Result<Vec<u8>, ApiError> {
    check_assignee(app, p, task.assignee_id.as_deref()).await?;
    // A key's lookup already joined the org; a token's request reads the prefix once.
    let prefix = match &p.credential {
        Credential::ApiKey { task_prefix } => task_prefix.clone(),
        Credential::Token => directory::org(app.db(), &p.org_id).await?.task_prefix,
    };
    org_call(app, p, OrgOp::CreateTask { task, prefix }).await
}

/// A task by id (`tsk_...`) or slug (`TET-12`).
#[utoipa::path(get, path = "/v1/tasks/{id_or_slug}", tag = "tasks", params(("id_or_slug" = String, Path)),
    responses((status = 200, body = Task), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get_task(app: &impl Backend, p: &Principal, key: &str) -> Result<Response, ApiError> {
    answer(app, p, StatusCode::OK, OrgOp::GetTask { key: key.into() }).await
}

#[utoipa::path(patch, path = "/v1/tasks/{id_or_slug}", tag = "tasks", params(("id_or_slug" = String, Path)),
    request_body = UpdateTask,
    responses((status = 200, body = Task), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update_task(
    app: &impl Backend,
    p: &Principal,
    key: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let patch: UpdateTask = h::body(req)?;
    Ok(h::json_bytes(
        StatusCode::OK,
        update_task_with(app, p, key, patch).await?,
    ))
}

/// `PATCH /v1/tasks/{id_or_slug}` (and the MCP tool) on a decoded body: the task as JSON.
pub(super) async fn update_task_with(
    app: &impl Backend,
    p: &Principal,
    key: &str,
    patch: UpdateTask,
) -> Result<Vec<u8>, ApiError> {
    check_assignee(
        app,
        p,
        patch.assignee_id.as_ref().and_then(|a| a.as_deref()),
    )
    .await?;
    org_call(
        app,
        p,
        OrgOp::UpdateTask {
            key: key.into(),
            patch,
        },
    )
    .await
}

#[utoipa::path(delete, path = "/v1/tasks/{id_or_slug}", tag = "tasks", params(("id_or_slug" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_task(
    app: &impl Backend,
    p: &Principal,
    key: &str,
) -> Result<Response, ApiError> {
    answer(
        app,
        p,
        StatusCode::NO_CONTENT,
        OrgOp::DeleteTask { key: key.into() },
    )
    .await
}
