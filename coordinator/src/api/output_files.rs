//! ListOutputFiles and StreamOutputFile over the coordinator's copy of a
//! job's `stdouterr` directory.
//!
//! StreamOutputFile reads the file in chunks of up to 1 MiB, only up to its
//! durable length. With `follow` it then waits, without polling, on the file's
//! durable-length watch and on job events, and ends once the job has ended and
//! every byte was sent (a job's end is committed only after all its output is
//! durable, so the length read after seeing the end is final).
//!
//! Requests and answers are in the domain form below; `convert::output`
//! converts them from and to the wire.

use super::output_dirs;
use crate::core::Core;
use crate::domain::paging::{Page, PageRequest};
use crate::domain::validate::Invalid;
use crate::domain::{Job, JobKey, Millis};
use crate::error::{Error, to_status};
use crate::events::{JobEvent, Subscription};
use crate::output::{FileId, OutputFile};
use crate::store::StoreError;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

/// Largest chunk sent.
pub const CHUNK: u64 = 1 << 20;

const STDOUTERR: &str = "stdouterr";

/// Where a request reads: the coordinator's copy of `stdouterr`, or one of
/// the job's output directories on this machine (its path and prefix).
enum Directory {
    StdOutErr,
    Output { root: PathBuf, prefix: PathBuf },
}

/// Resolves the output directory id of a request, and its attempt: the
/// current (or last) one's `stdouterr` is the live copy; an earlier
/// attempt's is its own directory, which no longer changes.
fn directory(core: &Core, job: &Job, id: &str, attempt: u32) -> Result<Directory, Error> {
    let attempts = job.attempts.len() as u32;
    if attempt > attempts {
        return Err(Invalid::new(
            "attempt",
            format!("job {} has {attempts} attempts so far", job.key),
        )
        .into());
    }
    if id == STDOUTERR && (attempt == 0 || attempt == attempts) {
        return Ok(Directory::StdOutErr);
    }
    if id == STDOUTERR {
        let dir = core.outputs.attempt_dir(job, attempt);
        return Ok(Directory::Output {
            root: dir.clone(),
            prefix: dir,
        });
    }
    if attempt != 0 {
        return Err(Invalid::new(
            "attempt",
            "only stdouterr keeps each attempt's files apart; output directories hold the last one's",
        )
        .into());
    }
    match output_dirs::root(job, id)? {
        Some((root, prefix)) => Ok(Directory::Output { root, prefix }),
        None => Err(Error::not_found("output directory", id)),
    }
}

/// A ListOutputFiles request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub job: JobKey,
    /// Required: an output directory id, or "stdouterr".
    pub output_directory_id: String,
    /// A sub-directory; empty or "." for the directory itself.
    pub directory: String,
    /// 1..=1000; 0 for the default (1000).
    pub max_results: i32,
    /// The previous page's `next_page_token`; empty for the first page.
    pub page_token: String,
    /// An earlier attempt's `stdouterr`; 0 for the current (or last) one's.
    pub attempt: u32,
}

/// One file of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    /// The durable length (what a stream can read now); 0 for a directory.
    pub length: u64,
    pub modified: Millis,
    pub is_dir: bool,
}

/// A StreamOutputFile request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    pub job: JobKey,
    /// Empty for "stdouterr".
    pub output_directory_id: String,
    /// The file's path inside the directory, e.g. "stdout.txt".
    pub path: String,
    pub offset: u64,
    pub follow: bool,
    /// An earlier attempt's `stdouterr`; 0 for the current (or last) one's.
    pub attempt: u32,
}

/// Bytes of a file from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// A stream's chunks; an error (made by `error::to_status`) ends it.
pub type Chunks = mpsc::Receiver<Result<OutputChunk, tonic::Status>>;

pub async fn list(core: &Core, r: ListRequest) -> Result<Page<FileEntry>, Error> {
    let key = r.job;
    if r.output_directory_id.is_empty() {
        return Err(Invalid::new("output_directory_id", "is required (e.g. stdouterr)").into());
    }
    // File names are not resource names: the token is the last one listed.
    let mut page = PageRequest::new(r.max_results, "")?;
    if !r.page_token.is_empty() {
        if r.page_token.contains(['/', '\0']) {
            return Err(
                Invalid::new("page_token", "is not a token from an earlier list response").into(),
            );
        }
        page.after = Some(r.page_token.clone());
    }
    let sub = r.directory.trim_matches('/').to_string();
    if sub.split('/').any(|p| p == "..") {
        return Err(Invalid::new("directory", "must not contain '..'").into());
    }
    let job = core.store.get_job(&key).await?;
    let (root, prefix) = match directory(core, &job, &r.output_directory_id, r.attempt)? {
        Directory::StdOutErr => return stdouterr_list(core, &job, &sub, &page).await,
        Directory::Output { root, prefix } => (root, prefix),
    };
    let listed =
        tokio::task::spawn_blocking(move || output_dirs::list(&root, &prefix, &sub, &page))
            .await??;
    Ok(Page {
        items: listed
            .items
            .into_iter()
            .map(|e| FileEntry {
                name: e.name,
                length: e.length,
                modified: e.modified,
                is_dir: e.is_dir,
            })
            .collect(),
        next_page_token: listed.next_page_token,
    })
}

/// The `stdouterr` files: rank 0's (Batch AI's names), then each other
/// rank's; a page token names the last file of the previous page.
async fn stdouterr_list(
    core: &Core,
    job: &Job,
    sub: &str,
    page: &PageRequest,
) -> Result<Page<FileEntry>, Error> {
    if !(sub.is_empty() || sub == ".") {
        return Err(Error::not_found("directory", format!("{STDOUTERR}/{sub}")));
    }
    let mut files = Vec::new();
    for id in FileId::all(job.spec.node_count) {
        let Some(f) = core.outputs.file(job, id).await? else {
            continue;
        };
        let path = f.path().to_path_buf();
        let modified = tokio::task::spawn_blocking(move || modified_millis(&path)).await?;
        if let Some(modified) = modified {
            files.push(FileEntry {
                name: id.file_name(),
                length: f.durable_len(),
                modified,
                is_dir: false,
            });
        }
    }
    if let Some(after) = &page.after {
        let Some(at) = files.iter().position(|f| &f.name == after) else {
            return Err(
                Invalid::new("page_token", "is not a token from an earlier list response").into(),
            );
        };
        files.drain(..=at);
    }
    files.truncate(page.limit as usize + 1);
    Ok(Page::from_overfetch(files, page.limit, |f| f.name.clone()))
}

/// The file's modification time, or `None` if it does not exist.
fn modified_millis(path: &std::path::Path) -> Option<Millis> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    let d = m.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

type ChunkSender = mpsc::Sender<Result<OutputChunk, tonic::Status>>;

pub async fn stream(core: Arc<Core>, r: StreamRequest) -> Result<Chunks, Error> {
    let key = r.job;
    let dir = if r.output_directory_id.is_empty() {
        STDOUTERR.to_string()
    } else {
        r.output_directory_id
    };
    let events = core.events.subscribe(&key);
    let job = core.store.get_job(&key).await?;
    if let Directory::Output { root, prefix } = directory(&core, &job, &dir, r.attempt)? {
        let path = r.path.clone();
        let file =
            tokio::task::spawn_blocking(move || output_dirs::open(&root, &prefix, &path)).await??;
        let (tx, rx) = mpsc::channel(4);
        // An earlier attempt's files do not grow.
        let past = r.attempt != 0 && (r.attempt as usize) < job.attempts.len();
        let tail = Tail {
            core,
            job_id: job.id.clone(),
            ended: past || job.execution_state.is_ended(),
            file: Arc::new(file),
            offset: r.offset,
            follow: r.follow,
            tx,
        };
        let span = tracing::info_span!("stream_output", job = %job.id, file = %r.path);
        tokio::spawn(tail.run().instrument(span));
        return Ok(rx);
    }
    let id = FileId::from_file_name(r.path.trim_start_matches("./"))
        .filter(|id| id.rank < job.spec.node_count.max(1))
        .ok_or_else(|| Error::not_found("file", format!("{dir}/{}", r.path)))?;
    let file = core
        .outputs
        .file(&job, id)
        .await?
        .ok_or_else(|| Error::not_found("job", key.to_string()))?;
    let (tx, rx) = mpsc::channel(4);
    let span = tracing::info_span!("stream_output", job = %job.id, file = id.file_name());
    let follower = Follower {
        core,
        key,
        job_id: job.id.clone(),
        ended: job.execution_state.is_ended(),
        file,
        offset: r.offset,
        follow: r.follow,
        events,
        tx,
        handle: None,
    };
    tokio::spawn(follower.run().instrument(span));
    Ok(rx)
}

struct Follower {
    core: Arc<Core>,
    key: JobKey,
    job_id: String,
    ended: bool,
    file: Arc<OutputFile>,
    offset: u64,
    follow: bool,
    events: Subscription,
    tx: ChunkSender,
    handle: Option<Arc<File>>,
}

impl Follower {
    async fn run(mut self) {
        if let Err(e) = self.pump().await {
            // In the stream's span: an internal error is logged with the job.
            let _ = self.tx.send(Err(to_status(&e))).await;
        }
    }

    async fn pump(&mut self) -> Result<(), Error> {
        let mut durable = self.file.watch();
        let mut shutdown = self.core.shutdown();
        let mut high = 0;
        loop {
            let len = *durable.borrow_and_update();
            if len < high {
                return Err(self.restarted().await);
            }
            high = len;
            if self.offset < len {
                self.send_up_to(len).await?;
                continue;
            }
            if !self.follow {
                return Ok(());
            }
            if self.ended {
                // Output is durable before the end is committed: this length is final.
                if self.file.durable_len() > self.offset {
                    continue;
                }
                return Ok(());
            }
            tokio::select! {
                _ = self.tx.closed() => return Ok(()),
                _ = crate::core::stopped(&mut shutdown) => {
                    return Err(Error::Unavailable("the coordinator is shutting down".into()));
                }
                changed = durable.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                ev = self.events.recv() => self.on_event(ev).await?,
            }
        }
    }

    /// Why the file's length went down: a requeue empties it for the next
    /// attempt, and a delete empties it too (after committing the delete,
    /// and possibly before this stream sees the deleted event).
    async fn restarted(&self) -> Error {
        match self.core.store.get_job_by_id(&self.job_id).await {
            Ok(_) => Error::Aborted(format!(
                "{}: the job's output restarted (the job was requeued); stream it again from offset 0",
                self.file.id().file_name()
            )),
            Err(StoreError::NotFound { .. }) => Error::Deleted {
                kind: "job",
                name: self.key.to_string(),
            },
            Err(e) => e.into(),
        }
    }

    async fn on_event(
        &mut self,
        ev: Result<JobEvent, broadcast::error::RecvError>,
    ) -> Result<(), Error> {
        match ev {
            Ok(JobEvent::Changed(j)) if j.id == self.job_id => {
                self.ended = j.execution_state.is_ended();
            }
            Ok(JobEvent::Deleted { id }) if id == self.job_id => {
                return Err(Error::Deleted {
                    kind: "job",
                    name: self.key.to_string(),
                });
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let j = self.core.store.get_job_by_id(&self.job_id).await?;
                self.ended = j.execution_state.is_ended();
            }
            Err(broadcast::error::RecvError::Closed) => self.ended = true,
        }
        Ok(())
    }

    /// Sends one chunk of up to [`CHUNK`] bytes from the offset (below `len`).
    async fn send_up_to(&mut self, len: u64) -> Result<(), Error> {
        let want = (len - self.offset).min(CHUNK) as usize;
        let handle = match &self.handle {
            Some(h) => h.clone(),
            None => {
                let path = self.file.path().to_path_buf();
                let f = tokio::task::spawn_blocking(move || File::open(path))
                    .await?
                    .map_err(|e| Error::internal("open output", e))?;
                let f = Arc::new(f);
                self.handle = Some(f.clone());
                f
            }
        };
        let offset = self.offset;
        let data = tokio::task::spawn_blocking(move || read_at(&handle, offset, want))
            .await?
            .map_err(|e| Error::internal("read output", e))?;
        if data.is_empty() {
            return Err(Error::Internal(format!(
                "read output: {} is shorter than its durable length",
                self.file.id().file_name()
            )));
        }
        let n = data.len() as u64;
        if self
            .tx
            .send(Ok(OutputChunk { offset, data }))
            .await
            .is_err()
        {
            return Err(Error::Cancelled("the client went away".into()));
        }
        self.offset += n;
        Ok(())
    }
}

/// A file of an output directory, sent from an offset; with `follow`, its
/// growth too (polled: the coordinator is not told when a node writes to a
/// share) until the job has ended and the file stopped growing.
struct Tail {
    core: Arc<Core>,
    job_id: String,
    ended: bool,
    file: Arc<File>,
    offset: u64,
    follow: bool,
    tx: ChunkSender,
}

/// How often a followed output-directory file is looked at.
const TAIL_POLL: std::time::Duration = std::time::Duration::from_millis(500);

impl Tail {
    async fn run(mut self) {
        if let Err(e) = self.pump().await {
            let _ = self.tx.send(Err(to_status(&e))).await;
        }
    }

    async fn pump(&mut self) -> Result<(), Error> {
        let mut shutdown = self.core.shutdown();
        loop {
            let (f, offset) = (self.file.clone(), self.offset);
            let data = tokio::task::spawn_blocking(move || read_at(&f, offset, CHUNK as usize))
                .await?
                .map_err(|e| Error::internal("read output", e))?;
            if !data.is_empty() {
                let n = data.len() as u64;
                if self
                    .tx
                    .send(Ok(OutputChunk { offset, data }))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                self.offset += n;
                continue;
            }
            if !self.follow || self.ended {
                return Ok(());
            }
            tokio::select! {
                _ = self.tx.closed() => return Ok(()),
                _ = crate::core::stopped(&mut shutdown) => {
                    return Err(Error::Unavailable("the coordinator is shutting down".into()));
                }
                _ = tokio::time::sleep(TAIL_POLL) => {}
            }
            // Ended now: one more read takes what was written before the end.
            match self.core.store.get_job_by_id(&self.job_id).await {
                Ok(j) => self.ended = j.execution_state.is_ended(),
                Err(StoreError::NotFound { .. }) => self.ended = true,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

pub(crate) fn read_at(f: &File, offset: u64, want: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        let n = f.read_at(&mut buf[got..], offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}
