//! WorkspaceService.

use super::convert::{workspace_from, workspace_to};
use super::{name, required};
use crate::core::Core;
use crate::domain::paging::PageRequest;
use crate::domain::{now_millis, validate};
use crate::error::Error;
use bai_proto::v1 as pb;
use bai_proto::v1::workspace_service_server::WorkspaceService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct WorkspaceApi {
    core: Arc<Core>,
}

impl WorkspaceApi {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl WorkspaceService for WorkspaceApi {
    async fn create_workspace(
        &self,
        request: Request<pb::CreateWorkspaceRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        let ws = workspace_from(
            required("workspace", request.into_inner().workspace)?,
            now_millis(),
        );
        validate::workspace(&ws).map_err(Error::from)?;
        let ws = self
            .core
            .store
            .create_workspace(ws)
            .await
            .map_err(Error::from)?;
        tracing::info!(workspace = %ws.name, "workspace created");
        Ok(Response::new(workspace_to(&ws)))
    }

    async fn get_workspace(
        &self,
        request: Request<pb::GetWorkspaceRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        let r = request.into_inner();
        name("name", &r.name)?;
        let ws = self
            .core
            .store
            .get_workspace(&r.name)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(workspace_to(&ws)))
    }

    async fn list_workspaces(
        &self,
        request: Request<pb::ListWorkspacesRequest>,
    ) -> Result<Response<pb::ListWorkspacesResponse>, Status> {
        let r = request.into_inner();
        let page = PageRequest::new(r.max_results, &r.page_token).map_err(Error::from)?;
        let p = self
            .core
            .store
            .list_workspaces(&page)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::ListWorkspacesResponse {
            workspaces: p.items.iter().map(workspace_to).collect(),
            next_page_token: p.next_page_token.unwrap_or_default(),
        }))
    }

    async fn delete_workspace(
        &self,
        request: Request<pb::DeleteWorkspaceRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = request.into_inner();
        name("name", &r.name)?;
        let removed = self
            .core
            .store
            .delete_workspace(&r.name, now_millis())
            .await
            .map_err(Error::from)?;
        tracing::info!(workspace = %r.name, jobs = removed.deleted_jobs.len(), "workspace deleted");
        self.core.apply_removed(removed).await;
        Ok(Response::new(pb::DeleteResponse {}))
    }
}
