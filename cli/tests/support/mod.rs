//! Test support: an in-process fake coordinator (a real tonic server on
//! 127.0.0.1:0 implementing JobService and ClusterService, scripted per test
//! and recording every request) and a TCP proxy whose connections a test can cut, to drop streams
//! the way a network or a coordinator restart does.

#![allow(dead_code)]

pub mod setup;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bai_proto::v1 as pb;
use bai_proto::v1::cluster_service_server::{ClusterService, ClusterServiceServer};
use bai_proto::v1::job_service_server::{JobService, JobServiceServer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// One WatchJob call's script: the jobs to send, then how the stream ends.
#[derive(Clone)]
pub struct WatchScript {
    pub jobs: Vec<pb::Job>,
    /// `Some(status)`: end with this error (a dropped stream looks like UNAVAILABLE).
    pub then_error: Option<Status>,
}

/// The scripted behaviour and the recorded requests.
#[derive(Default)]
pub struct State {
    pub create_requests: Vec<pb::Job>,
    pub create_error: Option<Status>,
    pub watch_scripts: VecDeque<WatchScript>,
    pub watch_calls: usize,
    pub get_job: Option<pb::Job>,
    /// The bytes StreamOutputFile serves.
    pub file: Vec<u8>,
    /// The first StreamOutputFile call sends up to here, then hangs (follow).
    pub first_call_stops_at: Option<usize>,
    /// (offset, path, output_directory_id, follow) of each StreamOutputFile call.
    pub stream_requests: Vec<(u64, String, String, bool)>,
    /// CreateCluster requests; the answer echoes the request.
    pub create_cluster_requests: Vec<pb::Cluster>,
    /// What GetCluster answers (NotFound when unset).
    pub cluster: Option<pb::Cluster>,
    /// What ListClusterNodes answers.
    pub nodes: Vec<pb::Node>,
    /// What ListClusterFiles answers, and the requests it got.
    pub cluster_files: Vec<pb::File>,
    pub list_cluster_files_requests: Vec<pb::ListClusterFilesRequest>,
    /// The bytes StreamClusterFile serves, and the requests it got.
    pub cluster_file: Vec<u8>,
    pub stream_cluster_file_requests: Vec<pb::StreamClusterFileRequest>,
    /// StreamClusterFile answers NotFound this many times first.
    pub cluster_file_missing_for: usize,
}

#[derive(Clone, Default)]
pub struct Fake {
    pub state: Arc<Mutex<State>>,
}

impl Fake {
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Serves the fake on 127.0.0.1:0; returns its address.
    pub async fn serve(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = JobServiceServer::new(self.clone());
        let clusters = ClusterServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .add_service(clusters)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        addr
    }
}

fn key_of(k: Option<&pb::JobKey>) -> pb::JobKey {
    k.cloned().unwrap_or_default()
}

fn stream_of<T: Send + 'static>(items: Vec<Result<T, Status>>, hang: bool) -> BoxStream<T> {
    let (tx, rx) = mpsc::channel(items.len().max(1));
    tokio::spawn(async move {
        for i in items {
            if tx.send(i).await.is_err() {
                return;
            }
        }
        if hang {
            // Keep the stream open (follow mode) until the client goes away.
            tx.closed().await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl JobService for Fake {
    async fn create_job(
        &self,
        req: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let job = req.into_inner().job.unwrap_or_default();
        self.with(|s| {
            s.create_requests.push(job.clone());
            if let Some(e) = &s.create_error {
                return Err(e.clone());
            }
            // Echo the request back like a coordinator would, secrets included,
            // to prove the CLI never prints them.
            Ok(Response::new(pb::Job {
                id: "0f6c5a3e-1111-2222-3333-444455556666".into(),
                execution_state: pb::ExecutionState::Queued as i32,
                provisioning_state: pb::ProvisioningState::Succeeded as i32,
                tool_type: pb::ToolType::Custom as i32,
                ..job
            }))
        })
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let key = key_of(req.get_ref().job.as_ref());
        self.with(|s| match &s.get_job {
            Some(j) => Ok(Response::new(j.clone())),
            None => Err(Status::not_found(format!("job '{}' not found", key.name))),
        })
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_job(
        &self,
        _: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn terminate_job(
        &self,
        _: Request<pb::TerminateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchJobStream = BoxStream<pb::Job>;

    async fn watch_job(
        &self,
        _: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let script = self.with(|s| {
            s.watch_calls += 1;
            s.watch_scripts.pop_front()
        });
        let Some(script) = script else {
            return Err(Status::internal("fake: no watch script left"));
        };
        let mut items: Vec<Result<pb::Job, Status>> = script.jobs.into_iter().map(Ok).collect();
        if let Some(e) = script.then_error {
            items.push(Err(e));
        }
        Ok(Response::new(stream_of(items, false)))
    }

    async fn list_output_files(
        &self,
        _: Request<pb::ListOutputFilesRequest>,
    ) -> Result<Response<pb::ListOutputFilesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type StreamOutputFileStream = BoxStream<pb::OutputFileChunk>;

    async fn stream_output_file(
        &self,
        req: Request<pb::StreamOutputFileRequest>,
    ) -> Result<Response<Self::StreamOutputFileStream>, Status> {
        let r = req.into_inner();
        let (data, stop, first) = self.with(|s| {
            s.stream_requests.push((
                r.offset,
                r.path.clone(),
                r.output_directory_id.clone(),
                r.follow,
            ));
            (
                s.file.clone(),
                s.first_call_stops_at,
                s.stream_requests.len() == 1,
            )
        });
        let start = usize::try_from(r.offset).unwrap().min(data.len());
        let end = if first {
            stop.unwrap_or(data.len())
        } else {
            data.len()
        };
        let chunks: Vec<Result<pb::OutputFileChunk, Status>> = (start..end)
            .step_by(4096)
            .map(|o| {
                Ok(pb::OutputFileChunk {
                    offset: o as u64,
                    data: data[o..(o + 4096).min(end)].to_vec(),
                })
            })
            .collect();
        let hang = first && stop.is_some();
        let stream = stream_of(chunks, hang);
        Ok(Response::new(stream))
    }
}

#[tonic::async_trait]
impl ClusterService for Fake {
    async fn create_cluster(
        &self,
        req: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        let c = req.into_inner().cluster.unwrap_or_default();
        self.with(|s| s.create_cluster_requests.push(c.clone()));
        // Echo it back, secrets included, to prove the CLI never prints them.
        Ok(Response::new(c))
    }

    async fn get_cluster(
        &self,
        req: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        let name = req.into_inner().name;
        self.with(|s| match &s.cluster {
            Some(c) => Ok(Response::new(c.clone())),
            None => Err(Status::not_found(format!("cluster '{name}' not found"))),
        })
    }

    async fn list_clusters(
        &self,
        _: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_cluster(
        &self,
        _: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn update_cluster(
        &self,
        _: Request<pb::UpdateClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_cluster_nodes(
        &self,
        _: Request<pb::ListClusterNodesRequest>,
    ) -> Result<Response<pb::ListClusterNodesResponse>, Status> {
        let nodes = self.with(|s| s.nodes.clone());
        Ok(Response::new(pb::ListClusterNodesResponse { nodes }))
    }

    async fn list_cluster_files(
        &self,
        req: Request<pb::ListClusterFilesRequest>,
    ) -> Result<Response<pb::ListClusterFilesResponse>, Status> {
        let r = req.into_inner();
        let files = self.with(|s| {
            s.list_cluster_files_requests.push(r.clone());
            s.cluster_files.clone()
        });
        Ok(Response::new(pb::ListClusterFilesResponse { files }))
    }

    type StreamClusterFileStream = BoxStream<pb::OutputFileChunk>;

    async fn stream_cluster_file(
        &self,
        req: Request<pb::StreamClusterFileRequest>,
    ) -> Result<Response<Self::StreamClusterFileStream>, Status> {
        let r = req.into_inner();
        let data = self.with(|s| {
            s.stream_cluster_file_requests.push(r.clone());
            if s.stream_cluster_file_requests.len() <= s.cluster_file_missing_for {
                return Err(Status::not_found(format!("{} not found", r.path)));
            }
            Ok(s.cluster_file.clone())
        })?;
        let start = usize::try_from(r.offset).unwrap().min(data.len());
        let chunks: Vec<Result<pb::OutputFileChunk, Status>> = (start..data.len())
            .step_by(1000)
            .map(|o| {
                Ok(pb::OutputFileChunk {
                    offset: o as u64,
                    data: data[o..(o + 1000).min(data.len())].to_vec(),
                })
            })
            .collect();
        Ok(Response::new(stream_of(chunks, false)))
    }

    async fn clear_node_gpu(
        &self,
        _: Request<pb::ClearNodeGpuRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_gpu_events(
        &self,
        _: Request<pb::ListGpuEventsRequest>,
    ) -> Result<Response<pb::ListGpuEventsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn preempt_node(
        &self,
        _: Request<pb::PreemptNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_cluster_events(
        &self,
        _: Request<pb::ListClusterEventsRequest>,
    ) -> Result<Response<pb::ListClusterEventsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchMetricsStream = BoxStream<pb::NodeMetrics>;

    async fn watch_metrics(
        &self,
        _: Request<pb::WatchMetricsRequest>,
    ) -> Result<Response<Self::WatchMetricsStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A TCP proxy in front of an address; `cut()` drops every open connection.
pub struct Proxy {
    pub addr: SocketAddr,
    generation: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (generation, rx) = watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let mut rx = rx.clone();
                let born = *rx.borrow();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = rx.wait_for(|g| *g != born) => {}
                    }
                });
            }
        });
        Proxy { addr, generation }
    }

    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}
