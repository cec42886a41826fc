//! ClusterService.

use super::cluster_files;
use super::convert::output::{chunk_to, cluster_files_to, cluster_stream_request_from};
use super::convert::{
    cluster_event_to, cluster_from, cluster_to, gpu_event_to, node_metrics_to, node_to, scale_from,
};
use super::{name, required};
use crate::core::Core;
use crate::domain::paging::PageRequest;
use crate::domain::validate::Invalid;
use crate::domain::{Cluster, ClusterView, Node, now_millis, validate};
use crate::error::Error;
use bai_proto::v1 as pb;
use bai_proto::v1::cluster_service_server::ClusterService;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// How many of its latest events GetCluster shows.
const RECENT_EVENTS: u32 = 10;

#[derive(Debug, Clone)]
pub struct ClusterApi {
    core: Arc<Core>,
}

impl ClusterApi {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    async fn view(&self, c: Cluster) -> Result<pb::Cluster, Error> {
        let nodes = self.core.store.list_nodes(&c.workspace, &c.name).await?;
        Ok(self.cluster_view(c, &nodes))
    }

    /// A cluster as the API shows it; with static nodes, how many are
    /// missing (the provider cannot create them).
    fn cluster_view(&self, c: Cluster, nodes: &[Node]) -> pb::Cluster {
        let mut v = ClusterView::new(c, nodes);
        if self.core.settings.static_nodes {
            let joined = v.current_node_count - v.counts.leaving;
            v.node_errors.extend(crate::static_provider::missing_error(
                v.cluster.target_node_count,
                joined,
            ));
        }
        cluster_to(&v)
    }
}

impl ClusterApi {
    /// Node `node_id` of cluster `ws/cluster`: `NotFound` if it is another's.
    /// A node as the API shows it: the stored record with what only the
    /// live session knows (its latest heartbeat time, its GPU problems).
    fn node_view(&self, node: Node) -> pb::Node {
        let mut v = node_to(&self.core.with_live_heartbeat(node));
        v.gpu_problems = self.core.metrics.gpu_problems(&v.node_id);
        v
    }

    async fn node_of(&self, ws: &str, cluster: &str, node_id: &str) -> Result<Node, Error> {
        let node = self.core.store.get_node(node_id).await?;
        if node.workspace != ws || node.cluster != cluster {
            return Err(Error::not_found(
                "node",
                format!("{ws}/{cluster}/{node_id}"),
            ));
        }
        Ok(node)
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn create_cluster(
        &self,
        request: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        let c = required("cluster", request.into_inner().cluster)?;
        let c = cluster_from(c, now_millis()).map_err(Error::from)?;
        validate::cluster(&c).map_err(Error::from)?;
        let mounts = c
            .spec
            .node_setup
            .as_ref()
            .and_then(|s| s.mount_volumes.as_ref());
        super::auto_storage::prepare(&self.core, "cluster.node_setup.mount_volumes", mounts)
            .await?;
        let c = self
            .core
            .store
            .create_cluster(c)
            .await
            .map_err(Error::from)?;
        tracing::info!(cluster = %format!("{}/{}", c.workspace, c.name), target_nodes = c.target_node_count, "cluster created");
        self.core.kick_provider();
        Ok(Response::new(self.view(c).await?))
    }

    async fn get_cluster(
        &self,
        request: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("name", &r.name)?;
        let c = self
            .core
            .store
            .get_cluster(&r.workspace, &r.name)
            .await
            .map_err(Error::from)?;
        let mut v = self.view(c).await?;
        v.recent_events = self
            .core
            .store
            .list_cluster_events(&r.workspace, &r.name, 0, RECENT_EVENTS, true)
            .await
            .map_err(Error::from)?
            .iter()
            .map(cluster_event_to)
            .collect();
        Ok(Response::new(v))
    }

    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        let page = PageRequest::new(r.max_results, &r.page_token).map_err(Error::from)?;
        let p = self
            .core
            .store
            .list_clusters(&r.workspace, &page)
            .await
            .map_err(Error::from)?;
        // One node query for the page, not one per cluster.
        let nodes = self
            .core
            .store
            .list_workspace_nodes(&r.workspace)
            .await
            .map_err(Error::from)?;
        let mut by_cluster: HashMap<String, Vec<Node>> = HashMap::new();
        for n in nodes {
            by_cluster.entry(n.cluster.clone()).or_default().push(n);
        }
        let clusters = p
            .items
            .into_iter()
            .map(|c| {
                let mine = by_cluster
                    .get(c.name.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                self.cluster_view(c, mine)
            })
            .collect();
        Ok(Response::new(pb::ListClustersResponse {
            clusters,
            next_page_token: p.next_page_token.unwrap_or_default(),
        }))
    }

    async fn delete_cluster(
        &self,
        request: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("name", &r.name)?;
        let removed = self
            .core
            .store
            .delete_cluster(&r.workspace, &r.name, now_millis())
            .await
            .map_err(Error::from)?;
        tracing::info!(cluster = %format!("{}/{}", r.workspace, r.name), nodes = removed.nodes.len(), "cluster deleted");
        self.core.apply_removed(removed).await;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn update_cluster(
        &self,
        request: Request<pb::UpdateClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("name", &r.name)?;
        let scale = scale_from("scale_settings", r.scale_settings).map_err(Error::from)?;
        validate::scale_settings("scale_settings", &scale).map_err(Error::from)?;
        let c = self
            .core
            .store
            .update_cluster_scale(&r.workspace, &r.name, scale, now_millis())
            .await
            .map_err(Error::from)?;
        tracing::info!(cluster = %format!("{}/{}", c.workspace, c.name), target_nodes = c.target_node_count, "cluster resized");
        self.core.kick_provider();
        Ok(Response::new(self.view(c).await?))
    }

    async fn list_cluster_nodes(
        &self,
        request: Request<pb::ListClusterNodesRequest>,
    ) -> Result<Response<pb::ListClusterNodesResponse>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("cluster", &r.cluster)?;
        let nodes = self
            .core
            .store
            .list_nodes(&r.workspace, &r.cluster)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::ListClusterNodesResponse {
            nodes: nodes.iter().map(|n| self.node_view(n.clone())).collect(),
        }))
    }

    async fn clear_node_gpu(
        &self,
        request: Request<pb::ClearNodeGpuRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("cluster", &r.cluster)?;
        name("node_id", &r.node_id)?;
        if r.gpu.is_empty() || r.gpu.len() > 64 {
            return Err(Error::invalid("gpu", "must be a GPU's UUID or index").into());
        }
        let node = self.node_of(&r.workspace, &r.cluster, &r.node_id).await?;
        let node = self
            .core
            .store
            .clear_gpu_fault(&node.node_id, &r.gpu, "an operator", now_millis())
            .await
            .map_err(Error::from)?;
        tracing::info!(node = %node.node_id, gpu = %r.gpu, "GPU cleared by an operator");
        self.core.kick_scheduler();
        Ok(Response::new(self.node_view(node)))
    }

    async fn list_gpu_events(
        &self,
        request: Request<pb::ListGpuEventsRequest>,
    ) -> Result<Response<pb::ListGpuEventsResponse>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("cluster", &r.cluster)?;
        if !r.node_id.is_empty() {
            name("node_id", &r.node_id)?;
            self.node_of(&r.workspace, &r.cluster, &r.node_id).await?;
        }
        let node = (!r.node_id.is_empty()).then_some(r.node_id.as_str());
        let events = self
            .core
            .store
            .list_gpu_events(&r.workspace, &r.cluster, node)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::ListGpuEventsResponse {
            events: events.iter().map(gpu_event_to).collect(),
        }))
    }

    async fn preempt_node(
        &self,
        request: Request<pb::PreemptNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("cluster", &r.cluster)?;
        name("node_id", &r.node_id)?;
        let node = self.node_of(&r.workspace, &r.cluster, &r.node_id).await?;
        let node = self
            .core
            .preempt_node(&node.node_id, "by an operator")
            .await?;
        Ok(Response::new(self.node_view(node)))
    }

    async fn list_cluster_events(
        &self,
        request: Request<pb::ListClusterEventsRequest>,
    ) -> Result<Response<pb::ListClusterEventsResponse>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("cluster", &r.cluster)?;
        let limit = PageRequest::new(r.max_results, "")
            .map_err(Error::from)?
            .limit;
        let after = match r.page_token.as_str() {
            "" => 0,
            t => t.parse::<i64>().ok().filter(|&s| s > 0).ok_or_else(|| {
                Error::from(Invalid::new(
                    "page_token",
                    "is not a token from an earlier list response",
                ))
            })?,
        };
        let mut events = self
            .core
            .store
            .list_cluster_events(&r.workspace, &r.cluster, after, limit + 1, false)
            .await
            .map_err(Error::from)?;
        let more = events.len() > limit as usize;
        events.truncate(limit as usize);
        let next_page_token = match events.last() {
            Some(e) if more => e.seq.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListClusterEventsResponse {
            events: events.iter().map(cluster_event_to).collect(),
            next_page_token,
        }))
    }

    type WatchMetricsStream = futures::stream::BoxStream<'static, Result<pb::NodeMetrics, Status>>;

    async fn watch_metrics(
        &self,
        request: Request<pb::WatchMetricsRequest>,
    ) -> Result<Response<Self::WatchMetricsStream>, Status> {
        let r = request.into_inner();
        let filter = match r.job {
            Some(k) => {
                let key = super::convert::job_key_from(Some(k)).map_err(Error::from)?;
                let job = self.core.store.get_job(&key).await.map_err(Error::from)?;
                super::metrics_watch::for_job(job)
            }
            None => {
                name("workspace", &r.workspace)?;
                name("cluster", &r.cluster)?;
                self.core
                    .store
                    .get_cluster(&r.workspace, &r.cluster)
                    .await
                    .map_err(Error::from)?;
                let node_id = (!r.node_id.is_empty()).then_some(r.node_id);
                if let Some(n) = &node_id {
                    name("node_id", n)?;
                    self.node_of(&r.workspace, &r.cluster, n).await?;
                }
                Some(super::metrics_watch::Filter {
                    workspace: r.workspace,
                    cluster: r.cluster,
                    node_id,
                    job: None,
                })
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        if let Some(filter) = filter {
            tokio::spawn(super::metrics_watch::run(self.core.clone(), filter, tx));
        }
        let samples = ReceiverStream::new(rx).map(|s| s.map(|(src, s)| node_metrics_to(&src, &s)));
        Ok(Response::new(Box::pin(samples)))
    }

    type StreamClusterFileStream =
        futures::stream::BoxStream<'static, Result<pb::OutputFileChunk, Status>>;

    async fn list_cluster_files(
        &self,
        request: Request<pb::ListClusterFilesRequest>,
    ) -> Result<Response<pb::ListClusterFilesResponse>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("cluster", &r.cluster)?;
        let node = (!r.node_id.is_empty()).then_some(r.node_id.as_str());
        let files = cluster_files::list(&self.core, &r.workspace, &r.cluster, node).await?;
        Ok(Response::new(cluster_files_to(&files)))
    }

    async fn stream_cluster_file(
        &self,
        request: Request<pb::StreamClusterFileRequest>,
    ) -> Result<Response<Self::StreamClusterFileStream>, Status> {
        let r = cluster_stream_request_from(request.into_inner()).map_err(Error::from)?;
        let rx = cluster_files::stream(self.core.clone(), r).await?;
        let chunks = ReceiverStream::new(rx).map(|c| c.map(chunk_to));
        Ok(Response::new(Box::pin(chunks)))
    }
}
