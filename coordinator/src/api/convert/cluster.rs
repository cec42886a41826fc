//! Clusters, scale settings and nodes on the wire.

use super::common::{env_from, env_to, mounts_from, mounts_to, secrets_from, secrets_to};
use super::{Secrets, count, errors_to, set, ts, ts_opt, unknown_enum};
use crate::domain::cluster_events::ClusterEvent;
use crate::domain::validate::Invalid;
use crate::domain::*;
use bai_proto::v1 as pb;

pub fn scale_from(field: &str, s: Option<pb::ScaleSettings>) -> Result<ScaleSettings, Invalid> {
    let exactly_one = || Invalid::new(field, "exactly one of manual or auto_scale is required");
    match s.map(|s| (s.manual, s.auto_scale)) {
        Some((Some(m), None)) => {
            let option = match pb::DeallocationOption::try_from(m.node_deallocation_option)
                .map_err(|_| {
                    unknown_enum(
                        &format!("{field}.manual.node_deallocation_option"),
                        m.node_deallocation_option,
                    )
                })? {
                pb::DeallocationOption::Unspecified | pb::DeallocationOption::Requeue => {
                    DeallocationOption::Requeue
                }
                pb::DeallocationOption::Terminate => DeallocationOption::Terminate,
                pb::DeallocationOption::Waitforjobcompletion => {
                    DeallocationOption::WaitForJobCompletion
                }
            };
            Ok(ScaleSettings::Manual {
                target_node_count: count(
                    &format!("{field}.manual.target_node_count"),
                    m.target_node_count,
                )?,
                deallocation: option,
            })
        }
        Some((None, Some(a))) => {
            let f = format!("{field}.auto_scale");
            Ok(ScaleSettings::AutoScale {
                minimum_node_count: count(
                    &format!("{f}.minimum_node_count"),
                    a.minimum_node_count,
                )?,
                maximum_node_count: count(
                    &format!("{f}.maximum_node_count"),
                    a.maximum_node_count,
                )?,
                initial_node_count: count(
                    &format!("{f}.initial_node_count"),
                    a.initial_node_count,
                )?,
            })
        }
        _ => Err(exactly_one()),
    }
}

pub fn scale_to(s: &ScaleSettings) -> pb::ScaleSettings {
    match *s {
        ScaleSettings::Manual {
            target_node_count,
            deallocation,
        } => pb::ScaleSettings {
            manual: Some(pb::ManualScaleSettings {
                target_node_count: target_node_count as i32,
                node_deallocation_option: match deallocation {
                    DeallocationOption::Requeue => pb::DeallocationOption::Requeue,
                    DeallocationOption::Terminate => pb::DeallocationOption::Terminate,
                    DeallocationOption::WaitForJobCompletion => {
                        pb::DeallocationOption::Waitforjobcompletion
                    }
                } as i32,
            }),
            auto_scale: None,
        },
        ScaleSettings::AutoScale {
            minimum_node_count,
            maximum_node_count,
            initial_node_count,
        } => pb::ScaleSettings {
            manual: None,
            auto_scale: Some(pb::AutoScaleSettings {
                minimum_node_count: minimum_node_count as i32,
                maximum_node_count: maximum_node_count as i32,
                initial_node_count: initial_node_count as i32,
            }),
        },
    }
}

/// A cluster create request (read-only fields ignored; times set to `now`).
pub fn cluster_from(c: pb::Cluster, now: Millis) -> Result<Cluster, Invalid> {
    let vm_priority = match pb::VmPriority::try_from(c.vm_priority)
        .map_err(|_| unknown_enum("cluster.vm_priority", c.vm_priority))?
    {
        pb::VmPriority::Unspecified | pb::VmPriority::Dedicated => VmPriority::Dedicated,
        pb::VmPriority::Lowpriority => VmPriority::LowPriority,
    };
    let scale = scale_from("cluster.scale_settings", c.scale_settings)?;
    let node_setup = match set(c.node_setup) {
        None => None,
        Some(ns) => {
            let setup_task = match set(ns.setup_task) {
                None => None,
                Some(t) => Some(SetupTask {
                    command_line: t.command_line,
                    environment_variables: env_from(t.environment_variables),
                    secrets: secrets_from("cluster.node_setup.setup_task.secrets", t.secrets)?,
                    std_out_err_path_prefix: t.std_out_err_path_prefix,
                }),
            };
            let mount_volumes = ns
                .mount_volumes
                .map(|m| mounts_from("cluster.node_setup.mount_volumes", m))
                .transpose()?
                .filter(|m| !m.is_empty());
            let app_insights = match ns
                .performance_counters_settings
                .and_then(|p| set(p.app_insights_reference))
            {
                None => None,
                Some(r) => {
                    if r.instrumentation_key_secret_reference.is_some() {
                        return Err(Invalid::new(
                            "cluster.node_setup.performance_counters_settings.app_insights_reference.instrumentation_key_secret_reference",
                            "key vault references are not supported; pass the value",
                        ));
                    }
                    Some(AppInsightsReference {
                        component_id: r.component.map(|c| c.id).unwrap_or_default(),
                        instrumentation_key: Secret::new(r.instrumentation_key),
                    })
                }
            };
            Some(NodeSetup {
                setup_task,
                mount_volumes,
                app_insights,
            })
        }
    };
    Ok(Cluster {
        target_node_count: scale.initial_target(),
        spec: ClusterSpec {
            vm_size: c.vm_size,
            vm_priority,
            scale,
            image: c
                .virtual_machine_configuration
                .and_then(|v| set(v.image_reference))
                .map(|i| ImageReference {
                    publisher: i.publisher,
                    offer: i.offer,
                    sku: i.sku,
                    version: i.version,
                    virtual_machine_image_id: i.virtual_machine_image_id,
                }),
            node_setup,
            user_account: set(c.user_account_settings).map(|u| UserAccountSettings {
                admin_user_name: u.admin_user_name,
                admin_user_ssh_public_key: u.admin_user_ssh_public_key,
                admin_user_password: Secret::new(u.admin_user_password),
            }),
            subnet_id: c.subnet.map(|s| s.id).unwrap_or_default(),
        },
        workspace: c.workspace,
        name: c.name,
        creation_time: now,
        allocation_state_transition_time: now,
        errors: Vec::new(),
    })
}

/// A cluster for an API read (secrets blanked).
pub fn cluster_to(v: &ClusterView) -> pb::Cluster {
    let c = &v.cluster;
    let s = &c.spec;
    let mode = Secrets::Redact;
    pb::Cluster {
        workspace: c.workspace.clone(),
        name: c.name.clone(),
        vm_size: s.vm_size.clone(),
        vm_priority: match s.vm_priority {
            VmPriority::Dedicated => pb::VmPriority::Dedicated,
            VmPriority::LowPriority => pb::VmPriority::Lowpriority,
        } as i32,
        scale_settings: Some(scale_to(&s.scale)),
        virtual_machine_configuration: s.image.as_ref().map(|i| pb::VirtualMachineConfiguration {
            image_reference: Some(pb::ImageReference {
                publisher: i.publisher.clone(),
                offer: i.offer.clone(),
                sku: i.sku.clone(),
                version: i.version.clone(),
                virtual_machine_image_id: i.virtual_machine_image_id.clone(),
            }),
        }),
        node_setup: s.node_setup.as_ref().map(|ns| pb::NodeSetup {
            setup_task: ns.setup_task.as_ref().map(|t| pb::SetupTask {
                command_line: t.command_line.clone(),
                environment_variables: env_to(&t.environment_variables),
                secrets: secrets_to(&t.secrets, mode),
                std_out_err_path_prefix: t.std_out_err_path_prefix.clone(),
                std_out_err_path_suffix: crate::domain::node_setup::setup_output_suffix(c),
            }),
            mount_volumes: ns.mount_volumes.as_ref().map(|m| mounts_to(m, mode)),
            performance_counters_settings: ns.app_insights.as_ref().map(|a| {
                pb::PerformanceCountersSettings {
                    app_insights_reference: Some(pb::AppInsightsReference {
                        component: Some(pb::ResourceId {
                            id: a.component_id.clone(),
                        }),
                        instrumentation_key: String::new(),
                        instrumentation_key_secret_reference: None,
                    }),
                }
            }),
        }),
        user_account_settings: s.user_account.as_ref().map(|u| pb::UserAccountSettings {
            admin_user_name: u.admin_user_name.clone(),
            admin_user_ssh_public_key: u.admin_user_ssh_public_key.clone(),
            admin_user_password: String::new(),
        }),
        subnet: (!s.subnet_id.is_empty()).then(|| pb::ResourceId {
            id: s.subnet_id.clone(),
        }),
        id: format!("/workspaces/{}/clusters/{}", c.workspace, c.name),
        creation_time: Some(ts(c.creation_time)),
        provisioning_state: pb::ProvisioningState::Succeeded as i32,
        provisioning_state_transition_time: Some(ts(c.creation_time)),
        allocation_state: match v.allocation_state {
            AllocationState::Steady => pb::AllocationState::Steady,
            AllocationState::Resizing => pb::AllocationState::Resizing,
        } as i32,
        allocation_state_transition_time: Some(ts(c.allocation_state_transition_time)),
        errors: errors_to(&[c.errors.as_slice(), v.node_errors.as_slice()].concat()),
        current_node_count: v.current_node_count as i32,
        recent_events: Vec::new(),
        node_state_counts: Some(pb::NodeStateCounts {
            idle_node_count: v.counts.idle as i32,
            running_node_count: v.counts.running as i32,
            preparing_node_count: v.counts.preparing as i32,
            unusable_node_count: v.counts.unusable as i32,
            leaving_node_count: v.counts.leaving as i32,
        }),
    }
}

pub fn node_state_to(s: NodeState) -> pb::NodeState {
    match s {
        NodeState::Preparing => pb::NodeState::Preparing,
        NodeState::Idle => pb::NodeState::Idle,
        NodeState::Running => pb::NodeState::Running,
        NodeState::Leaving => pb::NodeState::Leaving,
        NodeState::Unusable => pb::NodeState::Unusable,
    }
}

pub fn node_to(n: &Node) -> pb::Node {
    pb::Node {
        node_id: n.node_id.clone(),
        workspace: n.workspace.clone(),
        cluster: n.cluster.clone(),
        state: node_state_to(n.state) as i32,
        state_transition_time: Some(ts(n.state_transition_time)),
        hostname: n.info.hostname.clone(),
        ip_address: n.info.ip_address.clone(),
        agent_version: n.info.agent_version.clone(),
        cpu_count: n.info.cpu_count,
        memory_bytes: n.info.memory_bytes,
        connected: n.connected,
        last_heartbeat_time: ts_opt(n.last_heartbeat_time),
        running_job_ids: n.running_job_ids.clone(),
        errors: errors_to(&n.errors),
        port: n.info.ssh_port,
        preparation_step: n.preparation_step.clone(),
        file_share_driver: n.info.file_share_driver.clone(),
        blob_driver: n.info.blob_driver.clone(),
        gpus: n
            .info
            .gpus
            .iter()
            .map(|g| pb::Gpu {
                index: g.index,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                memory_bytes: g.memory_bytes,
                pci_bus_id: g.pci_bus_id.clone(),
                mig_mode: g.mig_mode.clone(),
                job_id: gpus::holder(n, &g.uuid).unwrap_or_default().to_string(),
                health: if g.fault.is_some() {
                    "faulted"
                } else {
                    "healthy"
                }
                .to_string(),
                fault_reason: g
                    .fault
                    .as_ref()
                    .map(|f| f.reason.clone())
                    .unwrap_or_default(),
                fault_time: g.fault.as_ref().map(|f| ts(f.time)),
            })
            .collect(),
        gpu_backend: n.info.gpu_backend.clone(),
        gpu_driver_version: n.info.gpu_driver_version.clone(),
        cuda_version: n.info.cuda_version.clone(),
        job_cgroups: n.info.job_cgroups.clone(),
        gpu_isolation: n.info.gpu_isolation.clone(),
        container_runtime: n.info.container_runtime.clone(),
        gpu_problems: Vec::new(),
    }
}

pub fn cluster_event_to(e: &ClusterEvent) -> pb::ClusterEvent {
    pb::ClusterEvent {
        seq: e.seq,
        time: Some(ts(e.time)),
        kind: e.kind.as_str().to_owned(),
        node_id: e.node_id.clone().unwrap_or_default(),
        target: e.target.map(|(from, to)| pb::TargetChange {
            from: from as i32,
            to: to as i32,
        }),
        message: e.message.clone(),
    }
}

pub fn gpu_event_to(e: &gpus::GpuEvent) -> pb::GpuHealthRecord {
    pb::GpuHealthRecord {
        node_id: e.node_id.clone(),
        uuid: e.uuid.clone(),
        index: e.index,
        time: Some(ts(e.time)),
        kind: e.kind.as_str().to_string(),
        code: e.code,
        fault: e.fault,
        message: e.message.clone(),
        job_id: e.job_id.clone().unwrap_or_default(),
    }
}

/// A node's sample as `WatchMetrics` sends it; each GPU names its holder.
pub fn node_metrics_to(
    src: &crate::metrics::Source,
    s: &crate::metrics::NodeSample,
) -> pb::NodeMetrics {
    let holder = |uuid: &str| {
        s.jobs
            .iter()
            .find(|j| j.gpu_uuids.iter().any(|u| u == uuid))
            .map(|j| j.job_id.clone())
            .unwrap_or_default()
    };
    pb::NodeMetrics {
        workspace: src.workspace.clone(),
        cluster: src.cluster.clone(),
        node_id: src.node_id.clone(),
        time: Some(ts(s.time)),
        cpu_percent: s.cpu_percent,
        memory_used_bytes: s.memory_used_bytes,
        memory_total_bytes: s.memory_total_bytes,
        disk_used_bytes: s.disk_used_bytes,
        disk_total_bytes: s.disk_total_bytes,
        network_rx_bytes: s.network_rx_bytes,
        network_tx_bytes: s.network_tx_bytes,
        gpus: s
            .gpus
            .iter()
            .map(|g| pb::GpuMetrics {
                index: g.index,
                uuid: g.uuid.clone(),
                utilization_percent: g.utilization_percent,
                memory_used_bytes: g.memory_used_bytes,
                memory_total_bytes: g.memory_total_bytes,
                temperature_celsius: g.temperature_celsius,
                power_watts: g.power_watts,
                sm_clock_mhz: g.sm_clock_mhz,
                ecc_double_bit_errors: g.ecc_double_bit_errors,
                xid_errors: g.xid_errors,
                last_xid: g.last_xid,
                job_id: holder(&g.uuid),
            })
            .collect(),
        jobs: s
            .jobs
            .iter()
            .map(|j| pb::JobMetrics {
                job_id: j.job_id.clone(),
                cpu_seconds: j.cpu_seconds,
                memory_bytes: j.memory_bytes,
                memory_peak_bytes: j.memory_peak_bytes,
                gpu_memory_bytes: j.gpu_memory_bytes,
                gpu_memory_peak_bytes: j.gpu_memory_peak_bytes,
                gpu_utilization_percent: j.gpu_utilization_percent,
                gpu_utilization_mean: j.gpu_utilization_mean,
                gpu_utilization_max: j.gpu_utilization_max,
                samples: j.samples,
                gpu_uuids: j.gpu_uuids.clone(),
            })
            .collect(),
    }
}
