//! ListOutputFiles and StreamOutputFile: requests into `output_files`'
//! domain form, files and chunks back to the wire.

use super::{file_to, job_key_from};
use crate::api::cluster_files::{ClusterFile, StreamRequest as ClusterStreamRequest};
use crate::api::output_files::{FileEntry, ListRequest, OutputChunk, StreamRequest};
use crate::domain::paging::Page;
use crate::domain::validate::Invalid;
use bai_proto::v1 as pb;

pub fn list_request_from(r: pb::ListOutputFilesRequest) -> Result<ListRequest, Invalid> {
    Ok(ListRequest {
        job: job_key_from(r.job)?,
        output_directory_id: r.output_directory_id,
        directory: r.directory,
        max_results: r.max_results,
        page_token: r.page_token,
        attempt: r.attempt,
    })
}

pub fn files_to(page: &Page<FileEntry>) -> pb::ListOutputFilesResponse {
    pb::ListOutputFilesResponse {
        files: page
            .items
            .iter()
            .map(|f| {
                let mut file = file_to(&f.name, f.length, Some(f.modified));
                if f.is_dir {
                    file.file_type = pb::FileType::Directory as i32;
                }
                file
            })
            .collect(),
        next_page_token: page.next_page_token.clone().unwrap_or_default(),
    }
}

pub fn stream_request_from(r: pb::StreamOutputFileRequest) -> Result<StreamRequest, Invalid> {
    Ok(StreamRequest {
        job: job_key_from(r.job)?,
        output_directory_id: r.output_directory_id,
        path: r.path,
        offset: r.offset,
        follow: r.follow,
        attempt: r.attempt,
    })
}

pub fn cluster_files_to(files: &[ClusterFile]) -> pb::ListClusterFilesResponse {
    pb::ListClusterFilesResponse {
        files: files
            .iter()
            .map(|f| file_to(&f.name, f.length, Some(f.modified)))
            .collect(),
    }
}

pub fn cluster_stream_request_from(
    r: pb::StreamClusterFileRequest,
) -> Result<ClusterStreamRequest, Invalid> {
    for (field, v) in [
        ("workspace", &r.workspace),
        ("cluster", &r.cluster),
        ("node_id", &r.node_id),
    ] {
        crate::domain::validate::name(field, v)?;
    }
    if r.path.is_empty() {
        return Err(Invalid::new(
            "path",
            "is required (stdout.txt, stderr.txt or execution.log)",
        ));
    }
    Ok(ClusterStreamRequest {
        workspace: r.workspace,
        cluster: r.cluster,
        node_id: r.node_id,
        path: r.path,
        offset: r.offset,
        follow: r.follow,
    })
}

pub fn chunk_to(c: OutputChunk) -> pb::OutputFileChunk {
    pb::OutputFileChunk {
        offset: c.offset,
        data: c.data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_their_fields_and_check_the_job_key() {
        let key = pb::JobKey {
            workspace: "w".into(),
            experiment: "e".into(),
            name: "j".into(),
        };
        let l = list_request_from(pb::ListOutputFilesRequest {
            job: Some(key.clone()),
            output_directory_id: "stdouterr".into(),
            directory: "sub".into(),
            max_results: 7,
            page_token: "stdout.txt".into(),
            attempt: 2,
        })
        .unwrap();
        assert_eq!((l.page_token.as_str(), l.attempt), ("stdout.txt", 2));
        assert_eq!(l.job.to_string(), "w/e/j");
        assert_eq!(
            (
                l.output_directory_id.as_str(),
                l.directory.as_str(),
                l.max_results
            ),
            ("stdouterr", "sub", 7)
        );
        let s = stream_request_from(pb::StreamOutputFileRequest {
            job: Some(key),
            output_directory_id: String::new(),
            path: "stdout.txt".into(),
            offset: 9,
            follow: true,
            attempt: 1,
        })
        .unwrap();
        assert_eq!(
            (s.path.as_str(), s.offset, s.follow, s.attempt),
            ("stdout.txt", 9, true, 1)
        );
        let e = stream_request_from(pb::StreamOutputFileRequest::default()).unwrap_err();
        assert!(e.to_string().starts_with("job.workspace: "), "{e}");
    }

    #[test]
    fn files_and_chunks_go_back_unchanged() {
        let r = files_to(&Page {
            items: vec![
                FileEntry {
                    name: "stdout.txt".to_string(),
                    length: 12,
                    modified: 1_500,
                    is_dir: false,
                },
                FileEntry {
                    name: "models".to_string(),
                    length: 0,
                    modified: 1_500,
                    is_dir: true,
                },
            ],
            next_page_token: Some("models".into()),
        });
        assert_eq!(r.files.len(), 2);
        assert_eq!(r.next_page_token, "models");
        assert_eq!(r.files[1].file_type, pb::FileType::Directory as i32);
        let f = &r.files[0];
        assert_eq!(f.file_type, pb::FileType::File as i32);
        assert_eq!((f.name.as_str(), f.content_length), ("stdout.txt", 12));
        assert_eq!(
            f.last_modified.map(|t| (t.seconds, t.nanos)),
            Some((1, 500_000_000))
        );
        let c = chunk_to(OutputChunk {
            offset: 4,
            data: b"abc".to_vec(),
        });
        assert_eq!((c.offset, c.data.as_slice()), (4, &b"abc"[..]));
    }
}
