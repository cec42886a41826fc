//! `bai cluster file list|stream`: the setup task's output files of a
//! cluster's nodes (az's `cluster file list`, plus streaming like
//! `bai job file stream`).

use bai_proto::v1 as pb;

use crate::app::Ctx;
use crate::args::ClusterFileCmd;
use crate::batchai_json;
use crate::error::CliError;
use crate::render::Kind;
use crate::streaming::{ClusterFileTarget, stream_cluster_file};

pub async fn run(ctx: &Ctx, cmd: ClusterFileCmd) -> Result<(), CliError> {
    match cmd {
        ClusterFileCmd::List { cluster, node } => {
            let api = ctx.api().await?;
            let node = node.filter(|n| !n.is_empty());
            api.log(format!(
                "ListClusterFiles {}/{}",
                cluster.workspace.workspace, cluster.cluster
            ));
            let r = api
                .clusters
                .clone()
                .list_cluster_files(pb::ListClusterFilesRequest {
                    workspace: cluster.workspace.workspace,
                    cluster: cluster.cluster,
                    node_id: node.clone().unwrap_or_default(),
                })
                .await
                .map_err(|s| api.error(s))?
                .into_inner();
            let files: Vec<_> = r
                .files
                .iter()
                .map(|f| batchai_json::cluster_file(f, node.as_deref()))
                .collect();
            ctx.print_many(Kind::ClusterFile, &files)
        }
        ClusterFileCmd::Stream {
            cluster,
            node,
            file_name,
            no_follow,
        } => {
            ctx.refuse_query("bai cluster file stream")?;
            let target = ClusterFileTarget {
                workspace: cluster.workspace.workspace,
                cluster: cluster.cluster,
                node_id: node,
                path: file_name,
                follow: !no_follow,
            };
            let api = ctx.api().await?;
            let mut out = std::io::stdout().lock();
            stream_cluster_file(api, &target, &mut out)
                .await
                .map(|_| ())
        }
    }
}
