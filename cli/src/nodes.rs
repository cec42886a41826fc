//! A cluster's or a job's nodes over SSH: `bai cluster node exec`,
//! `bai job node list` and `bai job node exec`. The login is Batch AI's
//! RemoteLoginInformation (a node's ipAddress and port) with the cluster's
//! admin user; `ssh` does the rest.

use bai_proto::v1 as pb;

use crate::app::Ctx;
use crate::args::{JobNodeCmd, JobRef, SshArgs};
use crate::batchai_json;
use crate::client::Api;
use crate::error::CliError;
use crate::render::Kind;
use crate::ssh::{self, SshRequest, SshTarget};

fn job_key(j: &JobRef) -> pb::JobKey {
    pb::JobKey {
        workspace: j.experiment.workspace.workspace.clone(),
        experiment: j.experiment.experiment.clone(),
        name: j.job.clone(),
    }
}

fn request(a: &SshArgs) -> Result<SshRequest, CliError> {
    for f in &a.forwards {
        ssh::check_forward(f)?;
    }
    Ok(SshRequest {
        exec: a.exec.clone(),
        forwards: a.forwards.clone(),
        private_key: a.ssh_private_key.clone(),
    })
}

async fn cluster_nodes(
    api: &Api,
    workspace: &str,
    cluster: &str,
) -> Result<Vec<pb::Node>, CliError> {
    api.log(format!("ListClusterNodes {workspace}/{cluster}"));
    Ok(api
        .clusters
        .clone()
        .list_cluster_nodes(pb::ListClusterNodesRequest {
            workspace: workspace.to_string(),
            cluster: cluster.to_string(),
        })
        .await
        .map_err(|s| api.error(s))?
        .into_inner()
        .nodes)
}

async fn admin_user(api: &Api, workspace: &str, cluster: &str) -> Result<String, CliError> {
    let c = api
        .clusters
        .clone()
        .get_cluster(pb::GetClusterRequest {
            workspace: workspace.to_string(),
            name: cluster.to_string(),
        })
        .await
        .map_err(|s| api.error(s))?
        .into_inner();
    c.user_account_settings
        .map(|u| u.admin_user_name)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            CliError::usage(format!(
                "cluster '{cluster}' has no admin user to log in as (userAccountSettings.adminUserName)"
            ))
        })
}

/// Where to log in to `node`: its address and SSH port (22 when it reports none).
pub fn login_target(user: String, node: &pb::Node) -> Result<SshTarget, CliError> {
    if node.ip_address.is_empty() {
        return Err(CliError::usage(format!(
            "node '{}' has reported no IP address yet",
            node.node_id
        )));
    }
    let port = match u16::try_from(node.port) {
        Ok(0) => ssh::DEFAULT_PORT,
        Ok(p) => p,
        Err(_) => {
            return Err(CliError::usage(format!(
                "node '{}' reports SSH port {}, which is not a port",
                node.node_id, node.port
            )));
        }
    };
    Ok(SshTarget {
        user,
        host: node.ip_address.clone(),
        port,
    })
}

/// Picks `wanted` (or the first of `default_order`) out of `nodes`.
fn pick<'a>(
    nodes: &'a [pb::Node],
    wanted: Option<&str>,
    default_order: &[String],
    whose: &str,
) -> Result<&'a pb::Node, CliError> {
    let id = match wanted {
        Some(id) => id.to_string(),
        None => default_order
            .first()
            .cloned()
            .ok_or_else(|| CliError::usage(format!("{whose} has no nodes")))?,
    };
    nodes
        .iter()
        .find(|n| n.node_id == id)
        .ok_or_else(|| CliError::usage(format!("-n/--node-id: {whose} has no node '{id}'")))
}

async fn exec(
    api: &Api,
    workspace: &str,
    cluster: &str,
    node: Option<&str>,
    default_order: Option<&[String]>,
    whose: &str,
    req: &SshRequest,
) -> Result<u8, CliError> {
    let user = admin_user(api, workspace, cluster).await?;
    let nodes = cluster_nodes(api, workspace, cluster).await?;
    let all: Vec<String> = nodes.iter().map(|n| n.node_id.clone()).collect();
    let n = pick(&nodes, node, default_order.unwrap_or(&all), whose)?;
    let argv = ssh::ssh_argv(&login_target(user, n)?, req)?;
    api.log(format!(
        "ssh {}",
        argv.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    Err(ssh::exec_ssh(&argv))
}

/// `bai cluster node exec`: becomes ssh (returns only on an error).
pub async fn cluster_exec(
    ctx: &Ctx,
    workspace: &str,
    cluster: &str,
    node: Option<&str>,
    ssh_args: &SshArgs,
) -> Result<u8, CliError> {
    ctx.refuse_query("bai cluster node exec")?;
    let req = request(ssh_args)?;
    let api = ctx.api().await?;
    exec(
        api,
        workspace,
        cluster,
        node,
        None,
        &format!("cluster '{cluster}'"),
        &req,
    )
    .await
}

/// The job, and the workspace and name of its cluster.
async fn job_and_cluster(api: &Api, j: &JobRef) -> Result<(pb::Job, String, String), CliError> {
    let job = api
        .jobs
        .clone()
        .get_job(pb::GetJobRequest {
            job: Some(job_key(j)),
        })
        .await
        .map_err(|s| api.error(s))?
        .into_inner();
    let cluster = job.cluster.clone().unwrap_or_default();
    let workspace = if cluster.workspace.is_empty() {
        j.experiment.workspace.workspace.clone()
    } else {
        cluster.workspace
    };
    Ok((job, workspace, cluster.name))
}

/// The job's nodes in the job's order, as the cluster lists them (a node the
/// cluster no longer has shows only its id).
pub fn job_nodes(job: &pb::Job, cluster_nodes: &[pb::Node]) -> Vec<pb::Node> {
    job.node_ids
        .iter()
        .map(|id| {
            cluster_nodes
                .iter()
                .find(|n| &n.node_id == id)
                .cloned()
                .unwrap_or_else(|| pb::Node {
                    node_id: id.clone(),
                    ..Default::default()
                })
        })
        .collect()
}

/// `bai job node list|exec`; the result is the exit code (exec becomes ssh).
pub async fn job_run(ctx: &Ctx, cmd: JobNodeCmd) -> Result<u8, CliError> {
    match cmd {
        JobNodeCmd::List { job } => {
            let api = ctx.api().await?;
            let (j, workspace, cluster) = job_and_cluster(api, &job).await?;
            let nodes = if j.node_ids.is_empty() {
                Vec::new()
            } else {
                cluster_nodes(api, &workspace, &cluster).await?
            };
            let listed: Vec<_> = job_nodes(&j, &nodes)
                .iter()
                .map(batchai_json::node)
                .collect();
            ctx.print_many(Kind::Node, &listed)?;
            Ok(0)
        }
        JobNodeCmd::Exec { job, node, ssh } => {
            ctx.refuse_query("bai job node exec")?;
            let req = request(&ssh)?;
            let api = ctx.api().await?;
            let (j, workspace, cluster) = job_and_cluster(api, &job).await?;
            if let Some(n) = &node
                && !j.node_ids.contains(n)
            {
                return Err(CliError::usage(format!(
                    "-n/--node-id: job '{}' does not run on node '{n}' (its nodes: {})",
                    job.job,
                    j.node_ids.join(", ")
                )));
            }
            exec(
                api,
                &workspace,
                &cluster,
                node.as_deref(),
                Some(&j.node_ids),
                &format!("job '{}'", job.job),
                &req,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, ip: &str, port: u32) -> pb::Node {
        pb::Node {
            node_id: id.into(),
            ip_address: ip.into(),
            port,
            ..Default::default()
        }
    }

    #[test]
    fn login_targets_use_the_nodes_address_and_port() {
        let t = login_target("admin".into(), &node("n", "10.0.0.4", 50001)).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.4", 50001));
        assert_eq!(
            login_target("a".into(), &node("n", "h", 0)).unwrap().port,
            22
        );
        assert!(login_target("a".into(), &node("n", "", 22)).is_err());
        assert!(login_target("a".into(), &node("n", "h", 70000)).is_err());
    }

    #[test]
    fn job_nodes_keep_the_jobs_order_and_unknown_ids() {
        let job = pb::Job {
            node_ids: vec!["b".into(), "gone".into(), "a".into()],
            ..Default::default()
        };
        let listed = job_nodes(
            &job,
            &[node("a", "1", 0), node("b", "2", 0), node("c", "3", 0)],
        );
        let ids: Vec<_> = listed.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, ["b", "gone", "a"]);
        assert_eq!(listed[0].ip_address, "2");
        assert!(listed[1].ip_address.is_empty());
    }

    #[test]
    fn picking_a_node() {
        let nodes = [node("a", "1", 0), node("b", "2", 0)];
        let order = ["b".to_string()];
        assert_eq!(pick(&nodes, None, &order, "job 'j'").unwrap().node_id, "b");
        assert_eq!(pick(&nodes, Some("a"), &order, "x").unwrap().node_id, "a");
        let e = pick(&nodes, Some("z"), &order, "cluster 'c'").unwrap_err();
        assert!(e.to_string().contains("cluster 'c' has no node 'z'"), "{e}");
        assert!(pick(&nodes, None, &[], "job 'j'").is_err());
    }
}
