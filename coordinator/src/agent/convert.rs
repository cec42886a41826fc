//! The only place on the agent side that knows prost types: agent messages
//! into domain form, coordinator messages out of it. AssignJob is the one
//! message that carries secret values (to the node that runs the job).

use super::registry::Outbound;
use crate::api::convert::{
    self as c, Secrets, container_to, env_to, error_from, mounts_to, secrets_as_env, tool_type_to,
};
use crate::domain::env::Assignment;
use crate::domain::gpus::{Gpu, GpuEvent, GpuEventKind};
use crate::domain::node_setup::{NodeSetupPlan, Preparation, PreparationReport};
use crate::domain::{BatchAiError, JobExit, Millis, NodeInfo};
use crate::metrics::{GpuSample, JobSample, NodeSample};
use crate::output::StreamKind;
use crate::setup_output::Held;
use bai_proto::v1 as pb;
use bai_proto::v1::agent_message::Msg as In;
use bai_proto::v1::coordinator_message::Msg as Out;

/// A job the agent holds, from its Register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldJob {
    pub job_id: String,
    pub start_time: Option<Millis>,
    pub exited: Option<Exited>,
    pub lengths: Vec<(StreamKind, u64)>,
}

/// A JobExited message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    pub job_id: String,
    pub exit: JobExit,
    pub lengths: Vec<(StreamKind, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub node_id: String,
    pub workspace: String,
    pub cluster: String,
    pub info: NodeInfo,
    pub held: Vec<HeldJob>,
    /// Where the node's preparation stood when the agent registered.
    pub status: Option<PreparationReport>,
}

/// An agent message in domain form.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Register(Box<Register>),
    /// With the node's sample (host, GPUs, jobs).
    Heartbeat(Box<NodeSample>),
    Started {
        job_id: String,
        start_time: Millis,
    },
    Exited(Exited),
    Output {
        job_id: String,
        stream: Option<StreamKind>,
        offset: u64,
        data: Vec<u8>,
    },
    NodeStatus(PreparationReport),
    /// A GPU health event (its node id is the session's, filled in later).
    GpuEvent(Box<GpuEvent>),
    SetupOutput {
        run: String,
        stream: Option<StreamKind>,
        offset: u64,
        data: Vec<u8>,
    },
    /// An empty message (a newer agent's message this build does not know).
    Unknown,
}

impl Inbound {
    /// Bytes of output carried (for batching limits).
    pub fn size(&self) -> usize {
        match self {
            Self::Output { data, .. } | Self::SetupOutput { data, .. } => data.len(),
            _ => 64,
        }
    }
}

pub fn stream_from(v: i32) -> Option<StreamKind> {
    match pb::OutputStream::try_from(v).ok()? {
        pb::OutputStream::Stdout => Some(StreamKind::Stdout),
        pb::OutputStream::Stderr => Some(StreamKind::Stderr),
        pb::OutputStream::ExecutionLog => Some(StreamKind::ExecutionLog),
        pb::OutputStream::JobPrepStdout => Some(StreamKind::JobPrepStdout),
        pb::OutputStream::JobPrepStderr => Some(StreamKind::JobPrepStderr),
        pb::OutputStream::Unspecified => None,
    }
}

pub fn stream_to(s: StreamKind) -> pb::OutputStream {
    match s {
        StreamKind::Stdout => pb::OutputStream::Stdout,
        StreamKind::Stderr => pb::OutputStream::Stderr,
        StreamKind::ExecutionLog => pb::OutputStream::ExecutionLog,
        StreamKind::JobPrepStdout => pb::OutputStream::JobPrepStdout,
        StreamKind::JobPrepStderr => pb::OutputStream::JobPrepStderr,
    }
}

fn lengths_from(v: Vec<pb::StreamLength>) -> Vec<(StreamKind, u64)> {
    v.into_iter()
        .filter_map(|l| stream_from(l.stream).map(|s| (s, l.length)))
        .collect()
}

fn exited_from(e: pb::JobExited, now: Millis) -> Exited {
    let end_time = e.end_time.as_ref().map(c::from_ts).unwrap_or(now);
    Exited {
        exit: JobExit {
            end_time,
            exit_code: e.exit_code,
            error: e.error.map(error_from),
            terminated: e.terminated,
            metrics: e.metrics.map(|m| job_sample_from(m).summary(end_time)),
        },
        lengths: lengths_from(e.lengths),
        job_id: e.job_id,
    }
}

/// An agent message; `now` fills in times the agent left out.
pub fn inbound(m: pb::AgentMessage, now: Millis) -> Inbound {
    match m.msg {
        // Certificate renewal (agent.proto rule 8) is not served yet: this
        // coordinator never sends RenewCertificate, so a CSR is unasked for.
        None | Some(In::CertificateRequest(_)) => Inbound::Unknown,
        Some(In::Register(r)) => Inbound::Register(Box::new(Register {
            node_id: r.node_id,
            workspace: r.workspace,
            cluster: r.cluster,
            info: NodeInfo {
                hostname: r.hostname,
                ip_address: r.ip_address,
                agent_version: r.agent_version,
                cpu_count: r.cpu_count,
                memory_bytes: r.memory_bytes,
                ssh_port: r.ssh_port,
                file_share_driver: r.file_share_driver,
                blob_driver: r.blob_driver,
                gpus: r.gpus.into_iter().map(gpu_from).collect(),
                gpu_backend: r.gpu_backend,
                gpu_driver_version: r.gpu_driver_version,
                cuda_version: r.cuda_version,
                job_cgroups: r.job_cgroups,
                gpu_isolation: r.gpu_isolation,
                container_runtime: r.container_runtime,
            },
            status: r.status.map(report_from),
            held: r
                .jobs
                .into_iter()
                .map(|h| HeldJob {
                    start_time: h.start_time.as_ref().map(c::from_ts),
                    exited: h.exited.map(|e| {
                        let mut e = exited_from(e, now);
                        if e.job_id.is_empty() {
                            e.job_id = h.job_id.clone();
                        }
                        e
                    }),
                    lengths: lengths_from(h.lengths),
                    job_id: h.job_id,
                })
                .collect(),
        })),
        Some(In::Heartbeat(h)) => Inbound::Heartbeat(Box::new(sample_from(h, now))),
        Some(In::JobStarted(s)) => Inbound::Started {
            start_time: s.start_time.as_ref().map(c::from_ts).unwrap_or(now),
            job_id: s.job_id,
        },
        Some(In::JobExited(e)) => Inbound::Exited(exited_from(e, now)),
        Some(In::Output(o)) => Inbound::Output {
            stream: stream_from(o.stream),
            job_id: o.job_id,
            offset: o.offset,
            data: o.data,
        },
        Some(In::NodeStatus(st)) => Inbound::NodeStatus(report_from(st)),
        Some(In::GpuEvent(e)) => Inbound::GpuEvent(Box::new(gpu_event_from(e, "", now))),
        Some(In::SetupOutput(o)) => Inbound::SetupOutput {
            stream: stream_from(o.stream),
            run: o.run,
            offset: o.offset,
            data: o.data,
        },
    }
}

fn report_from(st: pb::NodeStatus) -> PreparationReport {
    let error = || {
        st.error
            .clone()
            .map(error_from)
            .unwrap_or_else(|| BatchAiError::new("PreparationFailed", "the node gave no reason"))
    };
    let preparation = match pb::NodePhase::try_from(st.phase) {
        Ok(pb::NodePhase::Ready) => Preparation::Ready,
        Ok(pb::NodePhase::Unusable) => Preparation::Unusable {
            step: st.step.clone(),
            error: error(),
        },
        Ok(pb::NodePhase::Preparing) | Ok(pb::NodePhase::Unspecified) | Err(_) => {
            Preparation::Preparing {
                step: st.step.clone(),
            }
        }
    };
    PreparationReport {
        generation: st.generation,
        preparation,
        setup_run: st.setup_run,
    }
}

fn prepare_node(plan: NodeSetupPlan, held: Held) -> pb::PrepareNode {
    pb::PrepareNode {
        generation: plan.generation,
        admin_user: plan.admin_user.map(|u| pb::AdminUser {
            name: u.name,
            ssh_public_key: u.ssh_public_key,
            password: u.password.expose().to_string(),
        }),
        mount_volumes: (!plan.mounts.is_empty()).then(|| mounts_to(&plan.mounts, Secrets::Reveal)),
        setup_task: plan.setup_task.map(|t| pb::NodeSetupTask {
            command_line: t.command_line,
            environment_variables: env_to(&t.environment_variables),
            secrets: secrets_as_env(&t.secrets),
            std_out_err_path_prefix: t.std_out_err_path_prefix,
            std_out_err_path_suffix: t.std_out_err_path_suffix,
        }),
        setup_output_lengths: StreamKind::STDOUTERR
            .into_iter()
            .filter(|s| !held.run.is_empty() && held.len(*s) > 0)
            .map(|s| pb::StreamLength {
                stream: stream_to(s) as i32,
                length: held.len(s),
            })
            .collect(),
        setup_run: held.run,
    }
}

fn ack(job_id: String, stream: StreamKind, offset: u64) -> pb::OutputAck {
    pb::OutputAck {
        job_id,
        stream: stream_to(stream) as i32,
        offset,
    }
}

fn duration(d: std::time::Duration) -> prost_types::Duration {
    c::duration(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn sample_from(h: pb::Heartbeat, now: Millis) -> NodeSample {
    NodeSample {
        time: h.time.as_ref().map(c::from_ts).unwrap_or(now),
        cpu_percent: h.cpu_percent,
        memory_used_bytes: h.memory_used_bytes,
        memory_total_bytes: h.memory_total_bytes,
        disk_used_bytes: h.disk_used_bytes,
        disk_total_bytes: h.disk_total_bytes,
        network_rx_bytes: h.network_rx_bytes,
        network_tx_bytes: h.network_tx_bytes,
        gpu_problems: h.gpu_problems,
        gpus: h
            .gpus
            .into_iter()
            .map(|g| GpuSample {
                index: g.index,
                uuid: g.uuid,
                utilization_percent: g.utilization_percent,
                memory_used_bytes: g.memory_used_bytes,
                memory_total_bytes: g.memory_total_bytes,
                temperature_celsius: g.temperature_celsius,
                power_watts: g.power_watts,
                sm_clock_mhz: g.sm_clock_mhz,
                ecc_double_bit_errors: g.ecc_double_bit_errors,
                xid_errors: g.xid_errors,
                last_xid: g.last_xid,
            })
            .collect(),
        jobs: h.jobs.into_iter().map(job_sample_from).collect(),
    }
}

fn job_sample_from(j: pb::JobMetrics) -> JobSample {
    JobSample {
        job_id: j.job_id,
        cpu_seconds: j.cpu_seconds,
        memory_bytes: j.memory_bytes,
        memory_peak_bytes: j.memory_peak_bytes,
        gpu_memory_bytes: j.gpu_memory_bytes,
        gpu_memory_peak_bytes: j.gpu_memory_peak_bytes,
        gpu_utilization_percent: j.gpu_utilization_percent,
        gpu_utilization_mean: j.gpu_utilization_mean,
        gpu_utilization_max: j.gpu_utilization_max,
        samples: j.samples,
        gpu_uuids: j.gpu_uuids,
    }
}

fn gpu_from(g: pb::Gpu) -> Gpu {
    Gpu {
        index: g.index,
        uuid: g.uuid,
        name: g.name,
        memory_bytes: g.memory_bytes,
        pci_bus_id: g.pci_bus_id,
        mig_mode: g.mig_mode,
        // Health is the coordinator's record, not the agent's to set.
        fault: None,
    }
}

fn gpu_event_from(e: pb::GpuHealthEvent, node_id: &str, now: Millis) -> GpuEvent {
    let kind = match pb::GpuHealthEventKind::try_from(e.kind) {
        Ok(pb::GpuHealthEventKind::DoubleBitEcc) => GpuEventKind::DoubleBitEcc,
        Ok(pb::GpuHealthEventKind::Recovered) => GpuEventKind::Recovered,
        Ok(pb::GpuHealthEventKind::CheckFailed) => GpuEventKind::CheckFailed,
        Ok(pb::GpuHealthEventKind::Xid | pb::GpuHealthEventKind::Unspecified) | Err(_) => {
            GpuEventKind::Xid
        }
    };
    GpuEvent {
        node_id: node_id.to_owned(),
        uuid: e.uuid,
        index: e.index,
        time: e.time.as_ref().map(c::from_ts).unwrap_or(now),
        kind,
        code: e.code,
        // A recovery never faults, whatever the flag says.
        fault: e.fault && kind != GpuEventKind::Recovered,
        message: e.message,
        job_id: None,
    }
}

pub fn assign_job(a: Assignment) -> pb::AssignJob {
    pb::AssignJob {
        job_id: a.job_id,
        workspace: a.workspace,
        experiment: a.experiment,
        job_name: a.job_name,
        command_line: a.command_line,
        environment_variables: env_to(&a.environment_variables),
        secrets: secrets_as_env(&a.secrets),
        system_environment_variables: env_to(&a.system_environment_variables),
        max_wall_clock_time: Some(c::duration(a.max_wall_clock_time_ms)),
        node_count: a.node_count,
        node_rank: a.node_rank,
        node_ids: a.node_ids,
        gpu_uuids: a.gpu_uuids,
        mount_volumes: a
            .mount_volumes
            .as_ref()
            .map(|m| mounts_to(m, Secrets::Reveal)),
        container_settings: a
            .container_settings
            .as_ref()
            .map(|c| container_to(c, Secrets::Reveal)),
        job_preparation_command_line: a.job_preparation_command_line.unwrap_or_default(),
        tool_type: tool_type_to(a.tool_type) as i32,
        mpi_slots: a.mpi_slots,
    }
}

pub fn outbound(m: Outbound) -> pb::CoordinatorMessage {
    let msg = match m {
        Outbound::Registered {
            node_id,
            heartbeat_interval,
            resume,
        } => Out::Registered(pb::Registered {
            node_id,
            heartbeat_interval: Some(duration(heartbeat_interval)),
            resume: resume
                .into_iter()
                .map(|(job, s, off)| ack(job, s, off))
                .collect(),
        }),
        Outbound::Assign(a) => Out::AssignJob(assign_job(*a)),
        Outbound::Terminate { job_id, grace } => Out::TerminateJob(pb::TerminateJob {
            job_id,
            grace_period: Some(duration(grace)),
        }),
        Outbound::Ack {
            job_id,
            stream,
            offset,
        } => Out::OutputAck(ack(job_id, stream, offset)),
        Outbound::Release { job_id } => Out::ReleaseJob(pb::ReleaseJob { job_id }),
        Outbound::Shutdown { reason } => Out::Shutdown(pb::Shutdown { reason }),
        Outbound::Prepare { plan, held } => Out::PrepareNode(prepare_node(*plan, held)),
        Outbound::SetupAck {
            run,
            stream,
            offset,
        } => Out::SetupOutputAck(pb::SetupOutputAck {
            run,
            stream: stream_to(stream) as i32,
            offset,
        }),
    };
    pb::CoordinatorMessage { msg: Some(msg) }
}
