//! JobService: create/get/list/delete, terminate, watch. Output file RPCs are
//! in `output_files`.

use super::convert::{job_from, job_key_from, job_read_to, job_to, output as output_convert};
use super::{name, output_files, required};
use crate::core::Core;
use crate::domain::paging::PageRequest;
use crate::domain::{Job, now_millis, validate};
use crate::error::{Error, to_status};
use crate::events::{JobEvent, Subscription};
use bai_proto::v1 as pb;
use bai_proto::v1::job_service_server::JobService;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct JobApi {
    core: Arc<Core>,
}

impl JobApi {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let j = required("job", request.into_inner().job)?;
        let job = job_from(j, now_millis()).map_err(Error::from)?;
        validate::job(&job).map_err(Error::from)?;
        if job.spec.node_count > 1 {
            let c = &job.spec.cluster;
            let cluster = self
                .core
                .store
                .get_cluster(&c.workspace, &c.name)
                .await
                .map_err(Error::from)?;
            validate::node_count(&job, &cluster).map_err(Error::from)?;
        }
        if job.spec.gpus_per_node > 0 {
            let c = &job.spec.cluster;
            let nodes = self
                .core
                .store
                .list_nodes(&c.workspace, &c.name)
                .await
                .map_err(Error::from)?;
            validate::gpus_per_node(&job, &nodes).map_err(Error::from)?;
        }
        let mounts = job.spec.mount_volumes.as_ref();
        super::auto_storage::prepare(&self.core, "job.mount_volumes", mounts).await?;
        let job = self.core.store.create_job(job).await.map_err(Error::from)?;
        tracing::info!(job = %job.id, name = %job.key, cluster = %job.spec.cluster, "job created");
        self.core.events.changed(&job);
        self.core.kick_scheduler();
        self.core.kick_autoscaler();
        Ok(Response::new(job_to(&job)))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let key = job_key_from(request.into_inner().job).map_err(Error::from)?;
        let job = self.core.store.get_job(&key).await.map_err(Error::from)?;
        let queue = self.core.queue_info(std::slice::from_ref(&job)).await?;
        let job = self.core.with_live_metrics(job);
        Ok(Response::new(job_read_to(&job, queue.get(&job.id))))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let r = request.into_inner();
        name("workspace", &r.workspace)?;
        name("experiment", &r.experiment)?;
        let page = PageRequest::new(r.max_results, &r.page_token).map_err(Error::from)?;
        let p = self
            .core
            .store
            .list_jobs(&r.workspace, &r.experiment, &page)
            .await
            .map_err(Error::from)?;
        // One queue read per cluster of the page's queued jobs.
        let queue = self.core.queue_info(&p.items).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: p
                .items
                .into_iter()
                .map(|j| {
                    let q = queue.get(&j.id);
                    job_read_to(&self.core.with_live_metrics(j), q)
                })
                .collect(),
            next_page_token: p.next_page_token.unwrap_or_default(),
        }))
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let key = job_key_from(request.into_inner().job).map_err(Error::from)?;
        self.core.delete_job(&key).await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn terminate_job(
        &self,
        request: Request<pb::TerminateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let key = job_key_from(request.into_inner().job).map_err(Error::from)?;
        let job = self.core.terminate_job(&key).await?;
        Ok(Response::new(job_to(&job)))
    }

    type WatchJobStream = UntilEnded;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let key = job_key_from(request.into_inner().job).map_err(Error::from)?;
        // Subscribe before reading, so no change falls between.
        let events = self.core.events.subscribe(&key);
        let job = self.core.store.get_job(&key).await.map_err(Error::from)?;
        let (tx, rx) = mpsc::channel(16);
        let span = tracing::info_span!("watch_job", job = %job.id);
        tokio::spawn(watch(self.core.clone(), job, events, tx).instrument(span));
        Ok(Response::new(UntilEnded {
            inner: ReceiverStream::new(rx),
            done: false,
        }))
    }

    async fn list_output_files(
        &self,
        request: Request<pb::ListOutputFilesRequest>,
    ) -> Result<Response<pb::ListOutputFilesResponse>, Status> {
        let r = output_convert::list_request_from(request.into_inner()).map_err(Error::from)?;
        let files = output_files::list(&self.core, r).await?;
        Ok(Response::new(output_convert::files_to(&files)))
    }

    type StreamOutputFileStream = OutputChunks;

    async fn stream_output_file(
        &self,
        request: Request<pb::StreamOutputFileRequest>,
    ) -> Result<Response<Self::StreamOutputFileStream>, Status> {
        let r = output_convert::stream_request_from(request.into_inner()).map_err(Error::from)?;
        let rx = output_files::stream(self.core.clone(), r).await?;
        let chunks = ReceiverStream::new(rx).map(|c| c.map(output_convert::chunk_to));
        Ok(Response::new(Box::pin(chunks)))
    }
}

/// A StreamOutputFile response stream, converted from `output_files`' chunks.
pub type OutputChunks = Pin<Box<dyn Stream<Item = Result<pb::OutputFileChunk, Status>> + Send>>;

/// A WatchJob response stream that ends right after the message that ends
/// it (the ended job, or an error), without waiting for the watch task to go:
/// the final message and the end of the stream then leave together, so a
/// client that stops reading at the ended job does not reset a live stream.
pub struct UntilEnded {
    inner: ReceiverStream<Result<pb::Job, Status>>,
    done: bool,
}

impl Stream for UntilEnded {
    type Item = Result<pb::Job, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        self.done = match &item {
            Some(Ok(j)) => matches!(
                pb::ExecutionState::try_from(j.execution_state),
                Ok(pb::ExecutionState::Succeeded | pb::ExecutionState::Failed)
            ),
            Some(Err(_)) | None => true,
        };
        Poll::Ready(item)
    }
}

/// The job as a read shows it: with its place in the queue while queued.
/// An error is sent for the watcher (`Err`) and ends the watch.
async fn read_view(core: &Core, job: &Job) -> Result<pb::Job, Status> {
    let queue = core
        .queue_info(std::slice::from_ref(job))
        .await
        .map_err(|e| to_status(&e))?;
    Ok(job_read_to(job, queue.get(&job.id)))
}

/// Sends the job, then every change of its execution state, until it ends;
/// a queued job with its place in the queue as of the message.
async fn watch(
    core: Arc<Core>,
    job: Job,
    mut events: Subscription,
    tx: mpsc::Sender<Result<pb::Job, Status>>,
) {
    let mut shutdown = core.shutdown();
    let id = job.id.clone();
    let mut last = job.execution_state;
    let first = read_view(&core, &job).await;
    let failed = first.is_err();
    if tx.send(first).await.is_err() || failed || last.is_ended() {
        return;
    }
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            _ = crate::core::stopped(&mut shutdown) => {
                let e = Error::Unavailable("the coordinator is shutting down".into());
                let _ = tx.send(Err(to_status(&e))).await;
                return;
            }
            ev = events.recv() => ev,
        };
        let job = match next {
            Ok(JobEvent::Changed(j)) if j.id == id => (*j).clone(),
            Ok(JobEvent::Deleted { id: gone }) if gone == id => {
                let e = Error::Deleted {
                    kind: "job",
                    name: job.key.to_string(),
                };
                let _ = tx.send(Err(to_status(&e))).await;
                return;
            }
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                match core.store.get_job_by_id(&id).await {
                    Ok(j) => j,
                    Err(e) => {
                        let _ = tx.send(Err(to_status(&Error::from(e)))).await;
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if job.execution_state != last {
            last = job.execution_state;
            let view = read_view(&core, &job).await;
            let failed = view.is_err();
            if tx.send(view).await.is_err() || failed {
                return;
            }
        }
        if last.is_ended() {
            return;
        }
    }
}
