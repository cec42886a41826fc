//! What a cluster's nodes are prepared with before they take jobs (agent.proto
//! rule 6): the admin user, the cluster's mounts and the setup task, as one
//! [`NodeSetupPlan`] with a `generation` that names it. Pure: built from the
//! cluster, compared with what an agent reports.

use super::auto_storage::{self, AutoStorageAccount};
use super::spec::{EnvVar, MountVolumes, SecretEnvVar};
use super::types::Cluster;
use super::{BatchAiError, Secret};

/// The admin user created on every node (jobs run as it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser {
    pub name: String,
    pub ssh_public_key: String,
    pub password: Secret,
}

/// The cluster's setup task, with the output suffix the coordinator computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupTaskPlan {
    pub command_line: String,
    pub environment_variables: Vec<EnvVar>,
    pub secrets: Vec<SecretEnvVar>,
    pub std_out_err_path_prefix: String,
    pub std_out_err_path_suffix: String,
}

/// Everything a node of a cluster does before it is `idle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSetupPlan {
    /// Changes whenever any part of the setup changes. A cluster's setup is
    /// fixed at creation, so the cluster's creation time names it (a cluster
    /// deleted and created again under the same name gets a new one).
    pub generation: String,
    pub admin_user: Option<AdminUser>,
    /// The cluster's volumes, the auto-storage ones added
    /// ([`auto_storage::expand`]); `use_auto_storage` still set means this
    /// coordinator has no auto-storage account to add ([`Self::unpreparable`]).
    pub mounts: MountVolumes,
    pub setup_task: Option<SetupTaskPlan>,
}

impl NodeSetupPlan {
    /// Whether the node has nothing to do (it is ready as soon as it registers).
    pub fn is_empty(&self) -> bool {
        self.admin_user.is_none() && self.mounts.is_empty() && self.setup_task.is_none()
    }

    /// Why no node can be prepared for this plan, as the node's error: the
    /// cluster asks for auto-storage and this coordinator's configuration
    /// has no `[storage]` account (any more). The step is the share's mount.
    pub fn unpreparable(&self) -> Option<(String, BatchAiError)> {
        self.mounts.use_auto_storage.then(|| {
            (
                format!("mount {}", auto_storage::SHARE_PATH),
                BatchAiError::new(
                    "AutoStorageNotConfigured",
                    "the cluster uses auto-storage and this coordinator has no auto-storage \
                     account configured ([storage] auto_storage_account)",
                ),
            )
        })
    }
}

/// The setup output's place under a mount, after Batch AI's layout
/// (`<sub>/<rg>/workspaces/<ws>/clusters/<c>/<uuid>`; bai has no subscription or
/// resource group, and the generation stands for the uuid).
pub fn setup_output_suffix(c: &Cluster) -> String {
    format!(
        "workspaces/{}/clusters/{}/{}",
        c.workspace,
        c.name,
        generation(c)
    )
}

fn generation(c: &Cluster) -> String {
    format!("g{}", c.creation_time)
}

/// The node setup of cluster `c`, with `auto` the coordinator's auto-storage
/// account (if it has one).
pub fn plan(c: &Cluster, auto: Option<&AutoStorageAccount>) -> NodeSetupPlan {
    let admin_user = c
        .spec
        .user_account
        .as_ref()
        .filter(|u| !u.admin_user_name.is_empty())
        .map(|u| AdminUser {
            name: u.admin_user_name.clone(),
            ssh_public_key: u.admin_user_ssh_public_key.clone(),
            password: u.admin_user_password.clone(),
        });
    let setup = c.spec.node_setup.as_ref();
    let mounts = setup
        .and_then(|s| s.mount_volumes.as_ref())
        .map(|m| auto_storage::expand(m, auto))
        .unwrap_or_default();
    let setup_task = setup
        .and_then(|s| s.setup_task.as_ref())
        .map(|t| SetupTaskPlan {
            command_line: t.command_line.clone(),
            environment_variables: t.environment_variables.clone(),
            secrets: t.secrets.clone(),
            std_out_err_path_prefix: t.std_out_err_path_prefix.clone(),
            std_out_err_path_suffix: setup_output_suffix(c),
        });
    NodeSetupPlan {
        generation: generation(c),
        admin_user,
        mounts,
        setup_task,
    }
}

/// The phase of a node's preparation, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preparation {
    /// Working on `step` ("admin-user", "mount <path>", "setup-task").
    Preparing { step: String },
    /// Every step done: the node can take jobs.
    Ready,
    /// `step` failed (or a mount died): the error says why.
    Unusable { step: String, error: BatchAiError },
}

/// A node's report about one generation of its setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparationReport {
    pub generation: String,
    pub preparation: Preparation,
    /// The setup task's current or last run.
    pub setup_run: String,
}

impl PreparationReport {
    /// Whether this report says the node is ready for `plan`.
    pub fn ready_for(&self, plan: &NodeSetupPlan) -> bool {
        self.generation == plan.generation && self.preparation == Preparation::Ready
    }
}

/// Whether a registering node is ready for `plan` without preparing: it has
/// nothing to do, or its agent says it finished this generation (and the
/// plan is one this coordinator can stand behind).
pub fn ready_on_register(plan: &NodeSetupPlan, report: Option<&PreparationReport>) -> bool {
    plan.unpreparable().is_none() && (plan.is_empty() || report.is_some_and(|r| r.ready_for(plan)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::{NodeSetup, SetupTask, UserAccountSettings};

    fn cluster() -> Cluster {
        let mut c = crate::domain::fixtures::cluster("w", "c", 1);
        c.spec.user_account = None;
        c
    }

    #[test]
    fn an_empty_setup_needs_no_preparation() {
        let p = plan(&cluster(), None);
        assert!(p.is_empty());
        assert!(ready_on_register(&p, None));
    }

    #[test]
    fn a_setup_is_ready_only_for_its_own_generation() {
        let mut c = cluster();
        c.spec.user_account = Some(UserAccountSettings {
            admin_user_name: "admin".into(),
            admin_user_ssh_public_key: String::new(),
            admin_user_password: Secret::new("pw"),
        });
        c.spec.node_setup = Some(NodeSetup {
            setup_task: Some(SetupTask {
                command_line: "true".into(),
                environment_variables: vec![],
                secrets: vec![],
                std_out_err_path_prefix: "$AZ_BATCHAI_MOUNT_ROOT/afs".into(),
            }),
            mount_volumes: None,
            app_insights: None,
        });
        let p = plan(&c, None);
        assert!(!p.is_empty());
        assert_eq!(
            p.admin_user.as_ref().map(|u| u.name.as_str()),
            Some("admin")
        );
        let task = p.setup_task.as_ref().expect("setup task");
        assert_eq!(
            task.std_out_err_path_suffix,
            format!("workspaces/w/clusters/c/{}", p.generation)
        );
        assert!(!ready_on_register(&p, None));
        let mut report = PreparationReport {
            generation: p.generation.clone(),
            preparation: Preparation::Ready,
            setup_run: "r1".into(),
        };
        assert!(ready_on_register(&p, Some(&report)));
        report.generation = "g0".into();
        assert!(!ready_on_register(&p, Some(&report)));
        report.generation = p.generation.clone();
        report.preparation = Preparation::Preparing {
            step: "setup-task".into(),
        };
        assert!(!ready_on_register(&p, Some(&report)));
    }

    #[test]
    fn auto_storage_is_added_to_the_plan_or_makes_it_unpreparable() {
        let mut c = cluster();
        c.spec.node_setup = Some(NodeSetup {
            setup_task: None,
            mount_volumes: Some(MountVolumes {
                use_auto_storage: true,
                ..MountVolumes::default()
            }),
            app_insights: None,
        });
        let account = AutoStorageAccount {
            account: "autoacct".into(),
            key: Secret::new("a2V5"),
        };
        let p = plan(&c, Some(&account));
        assert!(p.unpreparable().is_none());
        assert_eq!(p.mounts.azure_file_shares[0].relative_mount_path, "autoafs");
        assert_eq!(
            p.mounts.azure_blob_file_systems[0].container_name,
            "batchaicontainer"
        );
        let ready = PreparationReport {
            generation: p.generation.clone(),
            preparation: Preparation::Ready,
            setup_run: String::new(),
        };
        assert!(ready_on_register(&p, Some(&ready)));

        let p = plan(&c, None);
        let (step, error) = p.unpreparable().expect("no account");
        assert_eq!(step, "mount autoafs");
        assert_eq!(error.code, "AutoStorageNotConfigured");
        assert!(
            !ready_on_register(&p, Some(&ready)),
            "not even if it says so"
        );
    }

    #[test]
    fn a_new_cluster_of_the_same_name_is_a_new_generation() {
        let a = cluster();
        let mut b = cluster();
        b.creation_time += 1;
        assert_ne!(plan(&a, None).generation, plan(&b, None).generation);
    }
}
