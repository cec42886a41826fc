//! The agent side of the coordinator: `AgentService.Session` (one long-lived
//! stream per node), the registry of live sessions, reconciliation on register,
//! and the agent protocol's conversions.

pub mod convert;
pub mod reconcile;
pub mod registry;
mod session;

use crate::core::Core;
use bai_proto::v1::agent_service_server::AgentService;
use bai_proto::v1::{AgentMessage, CoordinatorMessage};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The gRPC service agents connect to.
#[derive(Debug, Clone)]
pub struct AgentApi {
    core: Arc<Core>,
}

impl AgentApi {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    type SessionStream = UnboundedReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(session::run(self.core.clone(), request.into_inner(), tx));
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}
