//! `bai experiment create|show|list|delete`.

use bai_proto::v1 as pb;

use crate::app::{Ctx, confirm};
use crate::args::ExperimentCmd;
use crate::batchai_json;
use crate::error::CliError;
use crate::render::Kind;

pub async fn run(ctx: &Ctx, cmd: ExperimentCmd) -> Result<(), CliError> {
    match cmd {
        ExperimentCmd::Create(n) => {
            let api = ctx.api().await?;
            let experiment = pb::Experiment {
                workspace: n.workspace.workspace,
                name: n.name,
                ..Default::default()
            };
            api.log(format!(
                "CreateExperiment {}/{}",
                experiment.workspace, experiment.name
            ));
            let e = api
                .experiments
                .clone()
                .create_experiment(pb::CreateExperimentRequest {
                    experiment: Some(experiment),
                })
                .await
                .map_err(|s| api.error(s))?
                .into_inner();
            ctx.print_one(Kind::Experiment, &batchai_json::experiment(&e))
        }
        ExperimentCmd::Show(n) => {
            let api = ctx.api().await?;
            let e = api
                .experiments
                .clone()
                .get_experiment(pb::GetExperimentRequest {
                    workspace: n.workspace.workspace,
                    name: n.name,
                })
                .await
                .map_err(|s| api.error(s))?
                .into_inner();
            ctx.print_one(Kind::Experiment, &batchai_json::experiment(&e))
        }
        ExperimentCmd::List(w) => {
            let api = ctx.api().await?;
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = api
                    .experiments
                    .clone()
                    .list_experiments(pb::ListExperimentsRequest {
                        workspace: w.workspace.clone(),
                        max_results: 0,
                        page_token,
                    })
                    .await
                    .map_err(|s| api.error(s))?
                    .into_inner();
                all.extend(r.experiments.iter().map(batchai_json::experiment));
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            ctx.print_many(Kind::Experiment, &all)
        }
        ExperimentCmd::Delete { name, confirm: c } => {
            confirm(
                c.yes,
                &format!("delete experiment '{}' and its jobs", name.name),
            )?;
            let api = ctx.api().await?;
            api.experiments
                .clone()
                .delete_experiment(pb::DeleteExperimentRequest {
                    workspace: name.workspace.workspace,
                    name: name.name,
                })
                .await
                .map_err(|s| api.error(s))?;
            Ok(())
        }
    }
}
