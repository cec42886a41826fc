//! ExperimentService.

use super::convert::{experiment_from, experiment_to};
use super::{name, required};
use crate::core::Core;
use crate::domain::paging::PageRequest;
use crate::domain::{now_millis, validate};
use crate::error::Error;
use bai_proto::v1 as pb;
use bai_proto::v1::experiment_service_server::ExperimentService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct ExperimentApi {
    core: Arc<Core>,
}

impl ExperimentApi {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl ExperimentService for ExperimentApi {
    async fn create_experiment(
        &self,
        request: Request<pb::CreateExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let e = experiment_from(
            required("experiment", request.into_inner().experiment)?,
            now_millis(),
        );
        validate::experiment(&e).map_err(Error::from)?;
        let e = self
            .core
            .store
            .create_experiment(e)
            .await
            .map_err(Error::from)?;
        tracing::info!(workspace = %e.workspace, experiment = %e.name, "experiment created");
        Ok(Response::new(experiment_to(&e)))
    }

    async fn get_experiment(
        &self,
        request: Request<pb::GetExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("name", &r.name)?;
        let e = self
            .core
            .store
            .get_experiment(&r.workspace, &r.name)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(experiment_to(&e)))
    }

    async fn list_experiments(
        &self,
        request: Request<pb::ListExperimentsRequest>,
    ) -> Result<Response<pb::ListExperimentsResponse>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        let page = PageRequest::new(r.max_results, &r.page_token).map_err(Error::from)?;
        let p = self
            .core
            .store
            .list_experiments(&r.workspace, &page)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::ListExperimentsResponse {
            experiments: p.items.iter().map(experiment_to).collect(),
            next_page_token: p.next_page_token.unwrap_or_default(),
        }))
    }

    async fn delete_experiment(
        &self,
        request: Request<pb::DeleteExperimentRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("name", &r.name)?;
        let removed = self
            .core
            .store
            .delete_experiment(&r.workspace, &r.name)
            .await
            .map_err(Error::from)?;
        tracing::info!(workspace = %r.workspace, experiment = %r.name, jobs = removed.deleted_jobs.len(), "experiment deleted");
        self.core.apply_removed(removed).await;
        Ok(Response::new(pb::DeleteResponse {}))
    }
}
