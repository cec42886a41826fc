//! `bai cluster create|show|list|delete|resize|auto-scale|node list`
//! (`node exec` is in `nodes`, `file` in `cluster_files`).

use std::io::BufRead;

use bai_proto::v1 as pb;

use crate::app::{Ctx, confirm};
use crate::args::{ClusterCmd, ClusterCreateArgs, ClusterNodeCmd, NodeGpuCmd};
use crate::batchai_json;
use crate::client::Api;
use crate::cluster_params::{build_cluster, scale_settings};
use crate::error::CliError;
use crate::render::Kind;

pub async fn run(ctx: &Ctx, cmd: ClusterCmd) -> Result<(), CliError> {
    // Local checks first: bad flags, files or a refused confirmation need no coordinator.
    let prepared = match &cmd {
        ClusterCmd::Create(args) => {
            let args = args.clone();
            Some(
                tokio::task::spawn_blocking(move || request(&args))
                    .await
                    .map_err(|e| CliError::Io(format!("preparing the request failed: {e}")))??,
            )
        }
        ClusterCmd::Delete { name, confirm: c } => {
            confirm(c.yes, &format!("delete cluster '{}'", name.name))?;
            None
        }
        _ => None,
    };
    let scale = match &cmd {
        ClusterCmd::Resize { target, .. } => Some(scale_settings(Some(*target), None, None, None)?),
        ClusterCmd::AutoScale { min, max, .. } => {
            if min == max {
                return Err(CliError::usage(
                    "--min and --max are equal: use `bai cluster resize -t` instead",
                ));
            }
            Some(scale_settings(None, Some(*min), Some(*max), None)?)
        }
        _ => None,
    };
    let api = ctx.api().await?;
    let mut client = api.clusters.clone();
    let err = |s| api.error(s);
    match cmd {
        ClusterCmd::Create(_) => {
            let cluster = prepared.unwrap_or_default();
            api.log(format!(
                "CreateCluster {}/{}",
                cluster.workspace, cluster.name
            ));
            let c = client
                .create_cluster(pb::CreateClusterRequest {
                    cluster: Some(cluster),
                })
                .await
                .map_err(err)?
                .into_inner();
            ctx.print_one(Kind::Cluster, &batchai_json::cluster(&c))
        }
        ClusterCmd::Show(n) => {
            let c = client
                .get_cluster(pb::GetClusterRequest {
                    workspace: n.workspace.workspace,
                    name: n.name,
                })
                .await
                .map_err(err)?
                .into_inner();
            ctx.print_one(Kind::Cluster, &batchai_json::cluster(&c))
        }
        ClusterCmd::Events(n) => {
            let mut events = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = client
                    .list_cluster_events(pb::ListClusterEventsRequest {
                        workspace: n.workspace.workspace.clone(),
                        cluster: n.name.clone(),
                        max_results: 0,
                        page_token,
                    })
                    .await
                    .map_err(err)?
                    .into_inner();
                events.extend(r.events.iter().map(batchai_json::cluster_event));
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            ctx.print_many(Kind::ClusterEvent, &events)
        }
        ClusterCmd::List(w) => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = client
                    .list_clusters(pb::ListClustersRequest {
                        workspace: w.workspace.clone(),
                        max_results: 0,
                        page_token,
                    })
                    .await
                    .map_err(err)?
                    .into_inner();
                all.extend(r.clusters.iter().map(batchai_json::cluster));
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            ctx.print_many(Kind::Cluster, &all)
        }
        ClusterCmd::Delete { name, .. } => {
            client
                .delete_cluster(pb::DeleteClusterRequest {
                    workspace: name.workspace.workspace,
                    name: name.name,
                })
                .await
                .map_err(err)?;
            Ok(())
        }
        ClusterCmd::Resize { name, .. } | ClusterCmd::AutoScale { name, .. } => {
            let scale = scale.unwrap_or_default();
            update(ctx, api, name.workspace.workspace, name.name, scale).await
        }
        ClusterCmd::Node(ClusterNodeCmd::Exec { .. }) | ClusterCmd::File(_) => Ok(()),
        ClusterCmd::Node(ClusterNodeCmd::Top {
            cluster,
            node,
            count,
        }) => {
            let req = pb::WatchMetricsRequest {
                workspace: cluster.workspace.workspace,
                cluster: cluster.cluster,
                node_id: node.unwrap_or_default(),
                job: None,
            };
            crate::metrics::watch(ctx, api, req, count)
                .await
                .map(|_| ())
        }
        ClusterCmd::Node(ClusterNodeCmd::Preempt { cluster, node }) => {
            let n = client
                .preempt_node(pb::PreemptNodeRequest {
                    workspace: cluster.workspace.workspace,
                    cluster: cluster.cluster,
                    node_id: node,
                })
                .await
                .map_err(err)?
                .into_inner();
            ctx.print_one(Kind::Node, &batchai_json::node(&n))
        }
        ClusterCmd::Node(ClusterNodeCmd::Gpu(NodeGpuCmd::Clear { cluster, node, gpu })) => {
            let n = client
                .clear_node_gpu(pb::ClearNodeGpuRequest {
                    workspace: cluster.workspace.workspace,
                    cluster: cluster.cluster,
                    node_id: node,
                    gpu,
                })
                .await
                .map_err(err)?
                .into_inner();
            ctx.print_one(Kind::Node, &batchai_json::node(&n))
        }
        ClusterCmd::Node(ClusterNodeCmd::Gpu(NodeGpuCmd::Events { cluster, node })) => {
            let r = client
                .list_gpu_events(pb::ListGpuEventsRequest {
                    workspace: cluster.workspace.workspace,
                    cluster: cluster.cluster,
                    node_id: node.unwrap_or_default(),
                })
                .await
                .map_err(err)?
                .into_inner();
            let events: Vec<_> = r.events.iter().map(batchai_json::gpu_event).collect();
            ctx.print_many(Kind::GpuEvent, &events)
        }
        ClusterCmd::Node(ClusterNodeCmd::List { workspace, cluster }) => {
            let r = client
                .list_cluster_nodes(pb::ListClusterNodesRequest {
                    workspace: workspace.workspace,
                    cluster,
                })
                .await
                .map_err(err)?
                .into_inner();
            let nodes: Vec<_> = r.nodes.iter().map(batchai_json::node).collect();
            ctx.print_many(Kind::Node, &nodes)
        }
    }
}

async fn update(
    ctx: &Ctx,
    api: &Api,
    workspace: String,
    name: String,
    scale: pb::ScaleSettings,
) -> Result<(), CliError> {
    api.log(format!("UpdateCluster {workspace}/{name}"));
    let c = api
        .clusters
        .clone()
        .update_cluster(pb::UpdateClusterRequest {
            workspace,
            name,
            scale_settings: Some(scale),
        })
        .await
        .map_err(|s| api.error(s))?
        .into_inner();
    ctx.print_one(Kind::Cluster, &batchai_json::cluster(&c))
}

/// Reads the config file and the password, makes the key pair that
/// --generate-ssh-keys asks for, then merges them with the flags. Blocking
/// (files, stdin, ssh-keygen): run it on the blocking pool.
fn request(args: &ClusterCreateArgs) -> Result<pb::Cluster, CliError> {
    let text = match &args.config_file {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            CliError::usage(format!(
                "-f/--config-file: cannot read {}: {e}",
                p.display()
            ))
        })?),
        None => None,
    };
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let p = line.trim_end_matches(['\r', '\n']).to_string();
        if p.is_empty() {
            return Err(CliError::usage(
                "--password-stdin: stdin gave an empty password",
            ));
        }
        Some(p)
    } else if let Some(p) = &args.password {
        eprintln!(
            "warning: a password on the command line is visible to other users; \
             prefer --password-stdin or BAI_ADMIN_PASSWORD"
        );
        Some(p.expose().to_string())
    } else {
        None
    };
    let env = |name: &str| std::env::var(name).ok();
    if let Some(w) = crate::storage_flags::key_on_command_line_warning(&args.storage, &env) {
        eprintln!("{w}");
    }
    if args.generate_ssh_keys {
        let home = env("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| CliError::usage("--generate-ssh-keys: HOME is not set"))?;
        crate::ssh::ensure_key_pair(std::path::Path::new(&home))?;
    }
    build_cluster(args, text.as_deref(), password, &env)
}
