//! The agent side of the coordinator: `AgentService.Session` (one long-lived
//! stream per node), the registry of live sessions, reconciliation on register,
//! and the agent protocol's conversions.
//!
//! This module and `convert` are the only ones here that name prost types:
//! the session is handed a stream of [`convert::Inbound`] and answers with
//! [`registry::Outbound`]; both are converted at this edge.

pub mod convert;
pub mod reconcile;
pub mod registry;
mod session;

use crate::core::Core;
use crate::domain::now_millis;
use bai_proto::v1::agent_service_server::AgentService;
use bai_proto::v1::{AgentMessage, CoordinatorMessage, JoinRequest, JoinResponse};
use futures::StreamExt;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::Stream;
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

/// A session's response stream, converted from [`registry::Outbound`].
pub type SessionStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // Times the agent left out are filled in with the time of arrival.
        let inbound: session::Inbox = Box::pin(
            request
                .into_inner()
                .map(|m| m.map(|m| convert::inbound(m, now_millis()))),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(session::run(self.core.clone(), inbound, tx));
        let outbound = UnboundedReceiverStream::new(rx).map(|m| m.map(convert::outbound));
        Ok(Response::new(Box::pin(outbound)))
    }

    /// Joining with a token (agent.proto, "Identity") is not served yet: the
    /// request is refused whole, so no token or CSR is taken and ignored.
    async fn join(&self, _request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        Err(crate::error::to_status(
            &crate::error::Error::Unimplemented(
                "Join: this coordinator does not issue node certificates yet (issue 12); \
             agents connect without one"
                    .into(),
            ),
        ))
    }
}
