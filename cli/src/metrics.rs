//! Live metrics: `bai job metrics` (a job's summary, or `--follow` its
//! samples until it ends) and `bai cluster node top` (every node's samples
//! as they arrive), both over `WatchMetrics`.

use crate::app::Ctx;
use crate::batchai_json;
use crate::client::Api;
use crate::error::CliError;
use crate::render::Kind;
use bai_proto::v1 as pb;

/// Prints the samples of `req` as they arrive, until the stream ends or
/// `count` were printed; returns how many.
pub async fn watch(
    ctx: &Ctx,
    api: &Api,
    req: pb::WatchMetricsRequest,
    count: Option<u64>,
) -> Result<u64, CliError> {
    api.log(format!(
        "WatchMetrics {}/{} {}",
        req.workspace, req.cluster, req.node_id
    ));
    let mut stream = api
        .clusters
        .clone()
        .watch_metrics(req)
        .await
        .map_err(|s| api.error(s))?
        .into_inner();
    let mut n = 0;
    while count.is_none_or(|c| n < c) {
        match stream.message().await.map_err(|s| api.error(s))? {
            Some(m) => {
                ctx.print_streamed(Kind::Sample, &batchai_json::node_metrics(&m), n == 0)?;
                n += 1;
            }
            None => break,
        }
    }
    Ok(n)
}

/// `bai job metrics`: the job's summary; with `follow`, its samples first,
/// until it ends (or `count`), then the summary.
pub async fn job(
    ctx: &Ctx,
    api: &Api,
    key: pb::JobKey,
    follow: bool,
    count: Option<u64>,
) -> Result<(), CliError> {
    if follow {
        let req = pb::WatchMetricsRequest {
            job: Some(key.clone()),
            ..Default::default()
        };
        watch(ctx, api, req, count).await?;
    }
    let j = api
        .jobs
        .clone()
        .get_job(pb::GetJobRequest { job: Some(key) })
        .await
        .map_err(|s| api.error(s))?
        .into_inner();
    let v = batchai_json::job(&j);
    match v
        .pointer("/properties/metrics")
        .or_else(|| v.pointer("/metrics"))
    {
        Some(m) => ctx.print_one(Kind::JobMetrics, m),
        None => {
            eprintln!(
                "job '{}' has no metrics yet (its node has sent no sample of it)",
                j.name
            );
            Ok(())
        }
    }
}
