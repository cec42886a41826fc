//! The Batch AI cluster JSON (`ClusterBaseProperties` on create,
//! `ClusterProperties` on read) and its conversion to and from `bai.v1.Cluster`.

use bai_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::JsonError;
use super::common::*;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ManualScaleJson {
    pub target_node_count: Option<i32>,
    pub node_deallocation_option: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AutoScaleJson {
    pub minimum_node_count: Option<i32>,
    pub maximum_node_count: Option<i32>,
    pub initial_node_count: Option<i32>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScaleSettingsJson {
    pub manual: Option<ManualScaleJson>,
    pub auto_scale: Option<AutoScaleJson>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageReferenceJson {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    pub version: String,
    pub virtual_machine_image_id: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VmConfigurationJson {
    pub image_reference: Option<ImageReferenceJson>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SetupTaskJson {
    pub command_line: String,
    pub environment_variables: Vec<EnvVarJson>,
    pub secrets: Vec<SecretJson>,
    pub std_out_err_path_prefix: String,
    pub std_out_err_path_suffix: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppInsightsJson {
    pub component: Option<IdJson>,
    #[serde(skip_serializing)]
    pub instrumentation_key: String,
    pub instrumentation_key_secret_reference: Option<KeyVaultRefJson>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PerfCountersJson {
    pub app_insights_reference: Option<AppInsightsJson>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSetupJson {
    pub setup_task: Option<SetupTaskJson>,
    pub mount_volumes: Option<MountVolumesJson>,
    pub performance_counters_settings: Option<PerfCountersJson>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserAccountJson {
    pub admin_user_name: String,
    pub admin_user_ssh_public_key: String,
    #[serde(skip_serializing)]
    pub admin_user_password: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStateCountsJson {
    pub idle_node_count: i32,
    pub running_node_count: i32,
    pub preparing_node_count: i32,
    pub unusable_node_count: i32,
    pub leaving_node_count: i32,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterJson {
    pub vm_size: String,
    pub vm_priority: String,
    pub scale_settings: Option<ScaleSettingsJson>,
    pub virtual_machine_configuration: Option<VmConfigurationJson>,
    pub node_setup: Option<NodeSetupJson>,
    pub user_account_settings: Option<UserAccountJson>,
    pub subnet: Option<IdJson>,
    // read-only
    pub creation_time: Option<String>,
    pub provisioning_state: String,
    pub provisioning_state_transition_time: Option<String>,
    pub allocation_state: String,
    pub allocation_state_transition_time: Option<String>,
    pub errors: Vec<BatchAiErrorJson>,
    pub current_node_count: Option<i32>,
    pub node_state_counts: Option<NodeStateCountsJson>,
}

impl ClusterJson {
    /// Converts create parameters; read-only members are ignored.
    pub fn into_pb(self) -> Result<pb::Cluster, JsonError> {
        let scale_settings = match self.scale_settings {
            Some(s) => {
                if s.manual.is_some() && s.auto_scale.is_some() {
                    return Err(JsonError::field(
                        "scaleSettings",
                        "give manual or autoScale, not both",
                    ));
                }
                let manual = match s.manual {
                    Some(m) => Some(pb::ManualScaleSettings {
                        target_node_count: m.target_node_count.unwrap_or(0),
                        node_deallocation_option: parse_enum(
                            "scaleSettings.manual.nodeDeallocationOption",
                            &m.node_deallocation_option,
                            DEALLOCATION,
                        )?,
                    }),
                    None => None,
                };
                let auto_scale = s.auto_scale.map(|a| pb::AutoScaleSettings {
                    minimum_node_count: a.minimum_node_count.unwrap_or(0),
                    maximum_node_count: a.maximum_node_count.unwrap_or(0),
                    initial_node_count: a.initial_node_count.unwrap_or(0),
                });
                (manual.is_some() || auto_scale.is_some())
                    .then_some(pb::ScaleSettings { manual, auto_scale })
            }
            None => None,
        };
        let node_setup = self.node_setup.map(|n| pb::NodeSetup {
            setup_task: n.setup_task.map(|t| pb::SetupTask {
                command_line: t.command_line,
                environment_variables: env_to_pb(t.environment_variables),
                secrets: secrets_to_pb(t.secrets),
                std_out_err_path_prefix: t.std_out_err_path_prefix,
                std_out_err_path_suffix: String::new(),
            }),
            mount_volumes: n.mount_volumes.map(MountVolumesJson::into_pb),
            performance_counters_settings: n.performance_counters_settings.map(|p| {
                pb::PerformanceCountersSettings {
                    app_insights_reference: p.app_insights_reference.map(|a| {
                        pb::AppInsightsReference {
                            component: a.component.map(|c| pb::ResourceId { id: c.id }),
                            instrumentation_key: a.instrumentation_key,
                            instrumentation_key_secret_reference: a
                                .instrumentation_key_secret_reference
                                .map(|k| pb::KeyVaultSecretReference {
                                    source_vault_id: k
                                        .source_vault
                                        .map(|s| s.id)
                                        .unwrap_or_default(),
                                    secret_url: k.secret_url,
                                }),
                        }
                    }),
                }
            }),
        });
        Ok(pb::Cluster {
            vm_size: self.vm_size,
            vm_priority: parse_enum("vmPriority", &self.vm_priority, VM_PRIORITY)?,
            scale_settings,
            virtual_machine_configuration: self.virtual_machine_configuration.map(|v| {
                pb::VirtualMachineConfiguration {
                    image_reference: v.image_reference.map(|i| pb::ImageReference {
                        publisher: i.publisher,
                        offer: i.offer,
                        sku: i.sku,
                        version: i.version,
                        virtual_machine_image_id: i.virtual_machine_image_id,
                    }),
                }
            }),
            node_setup,
            user_account_settings: self.user_account_settings.map(|u| pb::UserAccountSettings {
                admin_user_name: u.admin_user_name,
                admin_user_ssh_public_key: u.admin_user_ssh_public_key,
                admin_user_password: u.admin_user_password,
            }),
            subnet: self.subnet.map(|s| pb::ResourceId { id: s.id }),
            ..Default::default()
        })
    }

    /// The properties of a cluster as Batch AI prints them; no secret is copied.
    pub fn from_pb(c: &pb::Cluster) -> Self {
        ClusterJson {
            vm_size: c.vm_size.clone(),
            vm_priority: enum_name(c.vm_priority, VM_PRIORITY),
            scale_settings: c.scale_settings.as_ref().map(|s| ScaleSettingsJson {
                manual: s.manual.as_ref().map(|m| ManualScaleJson {
                    target_node_count: Some(m.target_node_count),
                    node_deallocation_option: enum_name(m.node_deallocation_option, DEALLOCATION),
                }),
                auto_scale: s.auto_scale.as_ref().map(|a| AutoScaleJson {
                    minimum_node_count: Some(a.minimum_node_count),
                    maximum_node_count: Some(a.maximum_node_count),
                    initial_node_count: Some(a.initial_node_count),
                }),
            }),
            virtual_machine_configuration: c.virtual_machine_configuration.as_ref().map(|v| {
                VmConfigurationJson {
                    image_reference: v.image_reference.as_ref().map(|i| ImageReferenceJson {
                        publisher: i.publisher.clone(),
                        offer: i.offer.clone(),
                        sku: i.sku.clone(),
                        version: i.version.clone(),
                        virtual_machine_image_id: i.virtual_machine_image_id.clone(),
                    }),
                }
            }),
            node_setup: c.node_setup.as_ref().map(|n| NodeSetupJson {
                setup_task: n.setup_task.as_ref().map(|t| SetupTaskJson {
                    command_line: t.command_line.clone(),
                    environment_variables: env_from_pb(&t.environment_variables),
                    secrets: secrets_from_pb(&t.secrets),
                    std_out_err_path_prefix: t.std_out_err_path_prefix.clone(),
                    std_out_err_path_suffix: t.std_out_err_path_suffix.clone(),
                }),
                mount_volumes: n.mount_volumes.as_ref().map(MountVolumesJson::from_pb),
                performance_counters_settings: n.performance_counters_settings.as_ref().map(|p| {
                    PerfCountersJson {
                        app_insights_reference: p.app_insights_reference.as_ref().map(|a| {
                            AppInsightsJson {
                                component: a
                                    .component
                                    .as_ref()
                                    .map(|c| IdJson { id: c.id.clone() }),
                                instrumentation_key: String::new(),
                                instrumentation_key_secret_reference: a
                                    .instrumentation_key_secret_reference
                                    .as_ref()
                                    .map(|k| KeyVaultRefJson {
                                        source_vault: Some(IdJson {
                                            id: k.source_vault_id.clone(),
                                        }),
                                        secret_url: k.secret_url.clone(),
                                    }),
                            }
                        }),
                    }
                }),
            }),
            user_account_settings: c.user_account_settings.as_ref().map(|u| UserAccountJson {
                admin_user_name: u.admin_user_name.clone(),
                admin_user_ssh_public_key: u.admin_user_ssh_public_key.clone(),
                admin_user_password: String::new(),
            }),
            subnet: c.subnet.as_ref().map(|s| IdJson { id: s.id.clone() }),
            creation_time: ts(c.creation_time.as_ref()),
            provisioning_state: enum_name(c.provisioning_state, PROVISIONING),
            provisioning_state_transition_time: ts(c.provisioning_state_transition_time.as_ref()),
            allocation_state: enum_name(c.allocation_state, ALLOCATION),
            allocation_state_transition_time: ts(c.allocation_state_transition_time.as_ref()),
            errors: errors_from_pb(&c.errors),
            current_node_count: Some(c.current_node_count),
            node_state_counts: Some(c.node_state_counts.as_ref().map_or_else(
                Default::default,
                |n| NodeStateCountsJson {
                    idle_node_count: n.idle_node_count,
                    running_node_count: n.running_node_count,
                    preparing_node_count: n.preparing_node_count,
                    unusable_node_count: n.unusable_node_count,
                    leaving_node_count: n.leaving_node_count,
                },
            )),
        }
    }
}
