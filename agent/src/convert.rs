//! The only module that knows `bai_proto`: maps protocol messages to the
//! agent's domain types ([`crate::model`]) and back.
//!
//! Messages are built with `..Default::default()` so that fields added to the
//! protocol later (additively, by other issues) keep this module compiling.
#![allow(clippy::needless_update)]

use crate::model::{
    Ack, ContainerImage, EnvVar, HeldJob, Inbound, JobError, JobExit, JobId, JobSpec, MpiHosts,
    Outbound, STREAMS, Stream,
};
use crate::node::mounts::{Secret, Volume};
use crate::node::{AdminUser, NodeSetup, NodeStatus, Phase, SetupTask};
use bai_proto::v1 as pb;
use pb::agent_message::Msg as AgentMsg;
use pb::coordinator_message::Msg as CoordMsg;
use std::time::{Duration, SystemTime};

/// Encodes an outbound message. Output data is moved, not copied.
pub fn to_pb(msg: Outbound) -> pb::AgentMessage {
    let msg = match msg {
        Outbound::Register(r) => {
            let r = *r;
            AgentMsg::Register(pb::Register {
                node_id: r.node_id,
                workspace: r.workspace,
                cluster: r.cluster,
                hostname: r.hostname,
                ip_address: r.ip_address,
                cpu_count: r.cpu_count,
                memory_bytes: r.memory_bytes,
                agent_version: r.agent_version,
                jobs: r.jobs.into_iter().map(held_job).collect(),
                boot_id: r.boot_id,
                ssh_port: r.ssh_port,
                file_share_driver: r.file_share_driver,
                blob_driver: r.blob_driver,
                status: r.status.map(node_status),
                gpus: r.gpus.gpus.into_iter().map(gpu_to_pb).collect(),
                gpu_backend: r.gpus.backend,
                gpu_driver_version: r.gpus.driver_version,
                cuda_version: r.gpus.cuda_version,
                job_cgroups: r.job_cgroups,
                gpu_isolation: r.gpu_isolation,
                container_runtime: r.container_runtime,
                ..Default::default()
            })
        }
        Outbound::NodeStatus(st) => AgentMsg::NodeStatus(node_status(st)),
        Outbound::GpuHealth(r) => {
            use crate::gpu::health::ReportKind as K;
            let fault = r.is_fault();
            let (kind, code) = match r.kind {
                K::Xid(c) => (pb::GpuHealthEventKind::Xid, c),
                K::DoubleBitEcc(n) => (pb::GpuHealthEventKind::DoubleBitEcc, n),
                K::Recovered => (pb::GpuHealthEventKind::Recovered, 0),
                K::CheckFailed => (pb::GpuHealthEventKind::CheckFailed, 0),
            };
            AgentMsg::GpuEvent(pb::GpuHealthEvent {
                uuid: r.uuid,
                index: r.index,
                time: Some(r.time.into()),
                kind: kind as i32,
                code,
                fault,
                message: r.message,
                ..Default::default()
            })
        }
        Outbound::SetupOutput(c) => AgentMsg::SetupOutput(pb::SetupOutput {
            run: c.run,
            stream: stream_to_pb(c.stream) as i32,
            offset: c.offset,
            data: c.data,
            ..Default::default()
        }),
        Outbound::Heartbeat { time, sample } => AgentMsg::Heartbeat(pb::Heartbeat {
            time: Some(time.into()),
            cpu_percent: sample.host.cpu_percent,
            memory_used_bytes: sample.host.memory_used_bytes,
            memory_total_bytes: sample.host.memory_total_bytes,
            disk_used_bytes: sample.host.disk_used_bytes,
            disk_total_bytes: sample.host.disk_total_bytes,
            network_rx_bytes: sample.host.network_rx_bytes,
            network_tx_bytes: sample.host.network_tx_bytes,
            gpu_problems: sample.gpu_problems,
            gpus: sample.gpus.into_iter().map(gpu_metrics_to_pb).collect(),
            jobs: sample.jobs.into_iter().map(job_metrics_to_pb).collect(),
            ..Default::default()
        }),
        Outbound::JobStarted {
            job_id,
            start_time,
            pid,
        } => AgentMsg::JobStarted(pb::JobStarted {
            job_id: job_id.as_str().to_owned(),
            start_time: Some(start_time.into()),
            pid,
            ..Default::default()
        }),
        Outbound::JobExited {
            job_id,
            exit,
            metrics,
        } => AgentMsg::JobExited(pb::JobExited {
            metrics: metrics.map(job_metrics_to_pb),
            ..job_exited(&job_id, exit)
        }),
        Outbound::Refused { raw_job_id, reason } => AgentMsg::JobExited(job_exited_with_id(
            raw_job_id,
            JobExit {
                exit_code: -1,
                end_time: SystemTime::now(),
                error: Some(JobError::new("InvalidAssignment", reason)),
                terminated: false,
                lengths: [0; STREAMS],
            },
        )),
        Outbound::Output {
            job_id,
            stream,
            offset,
            data,
        } => AgentMsg::Output(pb::OutputChunk {
            job_id: job_id.as_str().to_owned(),
            stream: stream_to_pb(stream) as i32,
            offset,
            data,
            ..Default::default()
        }),
    };
    pb::AgentMessage { msg: Some(msg) }
}

fn gpu_to_pb(g: crate::gpu::Gpu) -> pb::Gpu {
    pb::Gpu {
        index: g.index,
        uuid: g.uuid,
        name: g.name,
        memory_bytes: g.memory_bytes,
        pci_bus_id: g.pci_bus_id,
        mig_mode: g.mig_mode,
        ..Default::default()
    }
}

fn job_metrics_to_pb(j: crate::metrics::JobFigures) -> pb::JobMetrics {
    pb::JobMetrics {
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
        ..Default::default()
    }
}

fn gpu_metrics_to_pb(f: crate::gpu::health::GpuFigures) -> pb::GpuMetrics {
    let g = f.sample;
    pb::GpuMetrics {
        index: f.index,
        uuid: g.uuid,
        utilization_percent: g.utilization_percent as f32,
        memory_used_bytes: g.memory_used_bytes,
        memory_total_bytes: f.memory_total_bytes,
        last_xid: f.last_xid,
        temperature_celsius: g.temperature_c as f32,
        power_watts: g.power_milliwatts as f32 / 1000.0,
        sm_clock_mhz: g.sm_clock_mhz,
        ecc_double_bit_errors: g.ecc_double_bit,
        xid_errors: g.xid_count,
        ..Default::default()
    }
}

fn node_status(st: NodeStatus) -> pb::NodeStatus {
    pb::NodeStatus {
        generation: st.generation,
        phase: match st.phase {
            Phase::Preparing => pb::NodePhase::Preparing,
            Phase::Ready => pb::NodePhase::Ready,
            Phase::Unusable => pb::NodePhase::Unusable,
        } as i32,
        step: st.step,
        error: st.error.map(|e| pb::BatchAiError {
            code: e.code,
            message: e.message,
            details: e
                .details
                .into_iter()
                .map(|(name, value)| pb::NameValuePair { name, value })
                .collect(),
        }),
        setup_run: st.setup_run,
        ..Default::default()
    }
}

/// The volumes of a `MountVolumes`, in Batch AI's order (shares, containers,
/// file servers, unmanaged); `use_auto_storage` is the coordinator's to expand.
fn volumes(m: pb::MountVolumes) -> Result<Vec<Volume>, String> {
    if m.use_auto_storage {
        return Err("mount_volumes.use_auto_storage: the coordinator did not expand it".into());
    }
    let key = |c: Option<pb::AzureStorageCredentialsInfo>| {
        Secret::new(c.map(|c| c.account_key).unwrap_or_default())
    };
    let mut out = Vec::new();
    for a in m.azure_file_shares {
        out.push(Volume::AzureFileShare {
            account_name: a.account_name,
            azure_file_url: a.azure_file_url,
            account_key: key(a.credentials),
            relative_mount_path: a.relative_mount_path,
            file_mode: a.file_mode,
            directory_mode: a.directory_mode,
        });
    }
    for b in m.azure_blob_file_systems {
        out.push(Volume::AzureBlob {
            account_name: b.account_name,
            container_name: b.container_name,
            account_key: key(b.credentials),
            relative_mount_path: b.relative_mount_path,
            mount_options: b.mount_options,
        });
    }
    for f in m.file_servers {
        out.push(Volume::Nfs {
            server: f.file_server.map(|r| r.id).unwrap_or_default(),
            source_directory: f.source_directory,
            relative_mount_path: f.relative_mount_path,
            mount_options: f.mount_options,
        });
    }
    for u in m.unmanaged_file_systems {
        out.push(Volume::Unmanaged {
            mount_command: u.mount_command,
            relative_mount_path: u.relative_mount_path,
        });
    }
    Ok(out)
}

fn node_setup(p: pb::PrepareNode) -> Result<NodeSetup, String> {
    let mut held_lengths = [0; 3];
    for l in p.setup_output_lengths {
        if let Some(s) = stream_from_pb(l.stream)
            && let Some(held) = held_lengths.get_mut(s.index())
        {
            *held = l.length;
        }
    }
    Ok(NodeSetup {
        generation: p.generation,
        admin_user: p.admin_user.map(|u| AdminUser {
            name: u.name,
            ssh_public_key: u.ssh_public_key,
            password: Secret::new(u.password),
        }),
        volumes: p
            .mount_volumes
            .map(volumes)
            .transpose()?
            .unwrap_or_default(),
        setup_task: p.setup_task.map(|t| SetupTask {
            command_line: t.command_line,
            environment_variables: env(t.environment_variables),
            secrets: env(t.secrets),
            std_out_err_path_prefix: t.std_out_err_path_prefix,
            std_out_err_path_suffix: t.std_out_err_path_suffix,
        }),
        held_run: p.setup_run,
        held_lengths,
    })
}

fn held_job(j: HeldJob) -> pb::HeldJob {
    pb::HeldJob {
        job_id: j.job_id.as_str().to_owned(),
        start_time: j.start_time.map(Into::into),
        exited: j.exit.map(|e| job_exited(&j.job_id, e)),
        lengths: lengths(&j.lengths),
        ..Default::default()
    }
}

fn job_exited(job_id: &JobId, exit: JobExit) -> pb::JobExited {
    job_exited_with_id(job_id.as_str().to_owned(), exit)
}

fn job_exited_with_id(job_id: String, exit: JobExit) -> pb::JobExited {
    pb::JobExited {
        job_id,
        end_time: Some(exit.end_time.into()),
        exit_code: exit.exit_code,
        error: exit.error.map(|e| pb::BatchAiError {
            code: e.code,
            message: e.message,
            details: Vec::new(),
        }),
        lengths: lengths(&exit.lengths),
        terminated: exit.terminated,
        ..Default::default()
    }
}

fn lengths(l: &[u64; STREAMS]) -> Vec<pb::StreamLength> {
    Stream::ALL
        .iter()
        .map(|s| pb::StreamLength {
            stream: stream_to_pb(*s) as i32,
            length: l[s.index()],
        })
        .collect()
}

fn stream_to_pb(s: Stream) -> pb::OutputStream {
    match s {
        Stream::Stdout => pb::OutputStream::Stdout,
        Stream::Stderr => pb::OutputStream::Stderr,
        Stream::ExecutionLog => pb::OutputStream::ExecutionLog,
        Stream::JobPrepStdout => pb::OutputStream::JobPrepStdout,
        Stream::JobPrepStderr => pb::OutputStream::JobPrepStderr,
    }
}

fn stream_from_pb(v: i32) -> Option<Stream> {
    match pb::OutputStream::try_from(v).ok()? {
        pb::OutputStream::Stdout => Some(Stream::Stdout),
        pb::OutputStream::Stderr => Some(Stream::Stderr),
        pb::OutputStream::ExecutionLog => Some(Stream::ExecutionLog),
        pb::OutputStream::JobPrepStdout => Some(Stream::JobPrepStdout),
        pb::OutputStream::JobPrepStderr => Some(Stream::JobPrepStderr),
        pb::OutputStream::Unspecified => None,
    }
}

/// A protobuf duration as a std one; negative or absent means none.
fn duration(d: Option<prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(d).ok())
}

fn env(v: Vec<pb::EnvironmentVariable>) -> Vec<EnvVar> {
    v.into_iter()
        .map(|e| EnvVar::new(e.name, e.value))
        .collect()
}

fn ack(a: pb::OutputAck) -> Result<Ack, String> {
    let job_id = JobId::parse(&a.job_id)?;
    let stream = stream_from_pb(a.stream)
        .ok_or_else(|| format!("output ack for job {job_id} names no stream"))?;
    Ok(Ack {
        job_id,
        stream,
        offset: a.offset,
    })
}

/// Why this agent cannot run an assignment as sent, naming the first field it
/// carries that the agent does not implement yet. Dropping such a field would
/// run the job without its container or preparation and tell no one;
/// the coordinator refuses these at create, so this is defense in depth (and
/// guards against a newer coordinator). Empty or default values are fine.
fn not_implemented(a: &pb::AssignJob) -> Result<(), String> {
    let refuse = |field: &str, why: &str| {
        Err(format!(
            "assign_job.{field}: this agent does not implement it yet ({why})"
        ))
    };
    if let Some(c) = &a.container_settings
        && *c != pb::ContainerSettings::default()
    {
        let registry = c.image_source_registry.clone().unwrap_or_default();
        if registry.image.is_empty() {
            return Err(
                "assign_job.container_settings.image_source_registry.image: is required".into(),
            );
        }
        if let Some(c) = &registry.credentials
            && (c.username.is_empty() || c.password.is_empty())
        {
            return Err(
                "assign_job.container_settings.image_source_registry.credentials: a username and a password are required".into(),
            );
        }
    }
    // A rank of a multi-node job runs like a job of its own: the
    // coordinator gives it its environment (rank, peers) and its GPUs.
    if a.node_count > 1
        && (a.node_rank >= a.node_count || a.node_ids.len() != a.node_count as usize)
    {
        return Err(format!(
            "assign_job.node_rank: rank {} of {} with {} node ids is not a rank of the job",
            a.node_rank,
            a.node_count,
            a.node_ids.len()
        ));
    }
    match pb::ToolType::try_from(a.tool_type) {
        Ok(_) => Ok(()),
        Err(_) => refuse("tool_type", "an unknown toolkit"),
    }
}

/// Decodes a coordinator message. Malformed content becomes
/// [`Inbound::Ignored`] or [`Inbound::BadAssignment`], never an error: one bad
/// message does not end the session.
pub fn from_pb(m: pb::CoordinatorMessage) -> Inbound {
    let Some(msg) = m.msg else {
        return Inbound::Ignored("empty coordinator message".into());
    };
    match msg {
        CoordMsg::Registered(r) => {
            let mut resume = Vec::with_capacity(r.resume.len());
            for a in r.resume {
                match ack(a) {
                    Ok(a) => resume.push(a),
                    Err(e) => return Inbound::Ignored(format!("registered: {e}")),
                }
            }
            Inbound::Registered {
                node_id: r.node_id,
                heartbeat_interval: duration(r.heartbeat_interval),
                resume,
            }
        }
        CoordMsg::AssignJob(mut a) => match JobId::parse(&a.job_id).and_then(|id| {
            not_implemented(&a)?;
            let volumes = a
                .mount_volumes
                .take()
                .map(volumes)
                .transpose()
                .map_err(|e| format!("assign_job.{e}"))?
                .unwrap_or_default();
            Ok((id, volumes))
        }) {
            Ok((job_id, volumes)) => Inbound::AssignJob(Box::new(JobSpec {
                job_id,
                workspace: a.workspace,
                experiment: a.experiment,
                job_name: a.job_name,
                command_line: a.command_line,
                environment_variables: env(a.environment_variables),
                secrets: env(a.secrets),
                system_environment_variables: env(a.system_environment_variables),
                max_wall_clock_time: duration(a.max_wall_clock_time).filter(|d| !d.is_zero()),
                volumes,
                gpu_uuids: a.gpu_uuids,
                preparation: Some(a.job_preparation_command_line).filter(|c| !c.is_empty()),
                rank: a.node_rank,
                nodes: a.node_count.max(1),
                container: a
                    .container_settings
                    .take()
                    .filter(|c| *c != pb::ContainerSettings::default())
                    .map(|c| {
                        let r = c.image_source_registry.unwrap_or_default();
                        ContainerImage {
                            image: r.image,
                            server_url: r.server_url,
                            shm_size: c.shm_size,
                            credentials: r.credentials.map(|c| (c.username, c.password)),
                        }
                    }),
                mpi: (a.mpi_slots > 0).then(|| MpiHosts {
                    node_ids: a.node_ids.clone(),
                    slots: a.mpi_slots,
                }),
            })),
            Err(reason) => Inbound::BadAssignment {
                raw_job_id: a.job_id,
                reason,
            },
        },
        CoordMsg::TerminateJob(t) => match JobId::parse(&t.job_id) {
            Ok(job_id) => Inbound::TerminateJob {
                job_id,
                grace_period: duration(t.grace_period),
            },
            Err(e) => Inbound::Ignored(format!("terminate: {e}")),
        },
        CoordMsg::OutputAck(a) => match ack(a) {
            Ok(a) => Inbound::OutputAck(a),
            Err(e) => Inbound::Ignored(format!("output ack: {e}")),
        },
        CoordMsg::ReleaseJob(r) => match JobId::parse(&r.job_id) {
            Ok(id) => Inbound::ReleaseJob(id),
            Err(e) => Inbound::Ignored(format!("release: {e}")),
        },
        CoordMsg::Shutdown(s) => Inbound::Shutdown { reason: s.reason },
        // agent.proto rule 8 is not built yet on this side (issue 12).
        CoordMsg::RenewCertificate(_) | CoordMsg::CertificateIssued(_) => {
            Inbound::Ignored("certificate renewal is not supported by this agent yet".into())
        }
        CoordMsg::PrepareNode(p) => match node_setup(p) {
            Ok(setup) => Inbound::PrepareNode(Box::new(setup)),
            Err(e) => Inbound::Ignored(format!("prepare node: {e}")),
        },
        CoordMsg::SetupOutputAck(a) => match stream_from_pb(a.stream) {
            Some(stream) => Inbound::SetupAck {
                run: a.run,
                stream,
                offset: a.offset,
            },
            None => Inbound::Ignored("setup output ack names no stream".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_round_trips_into_domain() {
        let m = pb::CoordinatorMessage {
            msg: Some(CoordMsg::AssignJob(pb::AssignJob {
                job_id: "j-1".into(),
                command_line: "echo hi".into(),
                secrets: vec![pb::EnvironmentVariable {
                    name: "S".into(),
                    value: "v".into(),
                }],
                max_wall_clock_time: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                ..Default::default()
            })),
        };
        let Inbound::AssignJob(spec) = from_pb(m) else {
            panic!("not an assignment")
        };
        assert_eq!(spec.job_id.as_str(), "j-1");
        assert_eq!(spec.secrets, vec![EnvVar::new("S", "v")]);
        assert_eq!(spec.max_wall_clock_time, Some(Duration::from_secs(5)));
    }

    #[test]
    fn unsafe_job_id_is_a_bad_assignment() {
        let m = pb::CoordinatorMessage {
            msg: Some(CoordMsg::AssignJob(pb::AssignJob {
                job_id: "../../etc".into(),
                ..Default::default()
            })),
        };
        assert!(matches!(from_pb(m), Inbound::BadAssignment { .. }));
    }

    #[test]
    fn fields_the_agent_does_not_implement_refuse_the_assignment() {
        type Edit = fn(&mut pb::AssignJob);
        let assign = |f: Edit| {
            let mut a = pb::AssignJob {
                job_id: "j-1".into(),
                command_line: "true".into(),
                node_count: 1,
                node_ids: vec!["n".into()],
                tool_type: pb::ToolType::Custom as i32,
                mount_volumes: Some(pb::MountVolumes::default()),
                container_settings: Some(pb::ContainerSettings::default()),
                ..Default::default()
            };
            f(&mut a);
            from_pb(pb::CoordinatorMessage {
                msg: Some(CoordMsg::AssignJob(a)),
            })
        };
        assert!(
            matches!(assign(|_| {}), Inbound::AssignJob(_)),
            "defaults and empty messages are fine"
        );
        let rank = |a: &mut pb::AssignJob| {
            a.node_count = 2;
            a.node_rank = 1;
            a.node_ids = vec!["m".into(), "n".into()];
        };
        assert!(
            matches!(assign(rank), Inbound::AssignJob(_)),
            "a rank of a multi-node job is taken"
        );
        let mpi = assign(|a| {
            a.node_count = 2;
            a.node_rank = 1;
            a.node_ids = vec!["m".into(), "n".into()];
            a.tool_type = pb::ToolType::Horovod as i32;
            a.mpi_slots = 2;
        });
        let Inbound::AssignJob(spec) = mpi else {
            panic!("an MPI job is refused: {mpi:?}");
        };
        assert_eq!(
            spec.mpi.as_ref().map(|m| m.hostfile()).as_deref(),
            Some("m slots=2\nn slots=2\n")
        );
        let cases: [(&str, Edit); 4] = [
            ("container_settings", |a| {
                a.container_settings = Some(pb::ContainerSettings {
                    shm_size: "1g".into(),
                    ..Default::default()
                });
            }),
            ("node_rank", |a| {
                a.node_count = 2;
                a.node_rank = 2;
                a.node_ids = vec!["m".into(), "n".into()];
            }),
            ("node_rank", |a| {
                a.node_count = 3;
                a.node_rank = 1;
                a.node_ids = vec!["m".into(), "n".into()];
            }),
            ("tool_type", |a| a.tool_type = 99),
        ];
        for (field, set) in cases {
            match assign(set) {
                Inbound::BadAssignment { raw_job_id, reason } => {
                    assert_eq!(raw_job_id, "j-1");
                    assert!(reason.contains(&format!("assign_job.{field}")), "{reason}");
                }
                other => panic!("{field}: accepted as {other:?}"),
            }
        }
    }

    #[test]
    fn output_keeps_bytes_and_stream() {
        let m = to_pb(Outbound::Output {
            job_id: JobId::parse("j").unwrap(),
            stream: Stream::Stderr,
            offset: 7,
            data: vec![0, 255, 1],
        });
        let Some(AgentMsg::Output(c)) = m.msg else {
            panic!("not output")
        };
        assert_eq!(c.stream, pb::OutputStream::Stderr as i32);
        assert_eq!((c.offset, c.data), (7, vec![0, 255, 1]));
    }

    #[test]
    fn a_jobs_mounts_become_its_volumes_and_auto_storage_is_refused() {
        let assign = |m: pb::MountVolumes| {
            from_pb(pb::CoordinatorMessage {
                msg: Some(CoordMsg::AssignJob(pb::AssignJob {
                    job_id: "j-1".into(),
                    command_line: "true".into(),
                    node_count: 1,
                    tool_type: pb::ToolType::Custom as i32,
                    mount_volumes: Some(m),
                    ..Default::default()
                })),
            })
        };
        let m = pb::MountVolumes {
            unmanaged_file_systems: vec![pb::UnmanagedFileSystemReference {
                mount_command: "mount --bind /srv/data".into(),
                relative_mount_path: "data".into(),
            }],
            azure_blob_file_systems: vec![pb::AzureBlobFileSystemReference {
                account_name: "acct".into(),
                container_name: "c".into(),
                credentials: Some(pb::AzureStorageCredentialsInfo {
                    account_key: "s3cret".into(),
                    account_key_secret_reference: None,
                }),
                relative_mount_path: "bfs".into(),
                mount_options: String::new(),
            }],
            ..Default::default()
        };
        let Inbound::AssignJob(spec) = assign(m) else {
            panic!("refused");
        };
        let paths: Vec<&str> = spec
            .volumes
            .iter()
            .map(|v| v.relative_mount_path())
            .collect();
        assert_eq!(paths, ["bfs", "data"], "Batch AI's order");
        assert!(!format!("{spec:?}").contains("s3cret"), "{spec:?}");
        match assign(pb::MountVolumes {
            use_auto_storage: true,
            ..Default::default()
        }) {
            Inbound::BadAssignment { reason, .. } => {
                assert!(
                    reason.contains("assign_job.mount_volumes.use_auto_storage"),
                    "{reason}"
                );
            }
            other => panic!("accepted as {other:?}"),
        }
    }
}
