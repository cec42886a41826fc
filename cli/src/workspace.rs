//! `bai workspace create|show|list|delete`.

use bai_proto::v1 as pb;

use crate::app::{Ctx, confirm};
use crate::args::WorkspaceCmd;
use crate::batchai_json;
use crate::error::CliError;
use crate::render::Kind;

pub async fn run(ctx: &Ctx, cmd: WorkspaceCmd) -> Result<(), CliError> {
    match cmd {
        WorkspaceCmd::Create {
            name,
            location,
            tags,
        } => {
            let api = ctx.api().await?;
            let workspace = pb::Workspace {
                name,
                location,
                tags: tags.into_iter().collect(),
                ..Default::default()
            };
            api.log(format!("CreateWorkspace {}", workspace.name));
            let w = api
                .workspaces
                .clone()
                .create_workspace(pb::CreateWorkspaceRequest {
                    workspace: Some(workspace),
                })
                .await
                .map_err(|s| api.error(s))?
                .into_inner();
            ctx.print_one(Kind::Workspace, &batchai_json::workspace(&w))
        }
        WorkspaceCmd::Show(n) => {
            let api = ctx.api().await?;
            let w = api
                .workspaces
                .clone()
                .get_workspace(pb::GetWorkspaceRequest { name: n.name })
                .await
                .map_err(|s| api.error(s))?
                .into_inner();
            ctx.print_one(Kind::Workspace, &batchai_json::workspace(&w))
        }
        WorkspaceCmd::List => {
            let api = ctx.api().await?;
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = api
                    .workspaces
                    .clone()
                    .list_workspaces(pb::ListWorkspacesRequest {
                        max_results: 0,
                        page_token,
                    })
                    .await
                    .map_err(|s| api.error(s))?
                    .into_inner();
                all.extend(r.workspaces.iter().map(batchai_json::workspace));
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            ctx.print_many(Kind::Workspace, &all)
        }
        WorkspaceCmd::Delete { name, confirm: c } => {
            confirm(
                c.yes,
                &format!("delete workspace '{}' and everything in it", name.name),
            )?;
            let api = ctx.api().await?;
            api.log(format!("DeleteWorkspace {}", name.name));
            api.workspaces
                .clone()
                .delete_workspace(pb::DeleteWorkspaceRequest { name: name.name })
                .await
                .map_err(|s| api.error(s))?;
            Ok(())
        }
    }
}
