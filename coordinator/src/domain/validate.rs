//! Validation of create requests. Every error names the field path and the
//! rule, e.g. `job.node_count: must be at least 1`. Validation is pure: a
//! request that fails here never reaches the store.
//!
//! Nothing is accepted and ignored: a field that would change what happens on
//! a node but that bai does not act on yet is refused with "is not supported
//! yet" and the issue that brings it ([`unsupported`]), once its shape has
//! been checked. `docs/fields.md` lists every create field and what bai does
//! with it; `coordinator/tests/fields.rs` keeps that list and this module in
//! step.

use super::auto_storage;
use super::names::{check_env_name, check_name};
use super::spec::{ClusterSpec, EnvVar, MountVolumes, ScaleSettings, SecretEnvVar, Toolkit};
use super::types::{Cluster, Experiment, Job, Node, Workspace};
use std::collections::HashSet;

/// Most nodes in a cluster (Batch AI's limit).
pub const MAX_NODES: u32 = 100;

/// A request field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct Invalid {
    pub field: String,
    pub rule: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

type Result<T = ()> = std::result::Result<T, Invalid>;

/// Checks a resource name at `field`.
pub fn name(field: &str, value: &str) -> Result {
    check_name(value).map_err(|rule| Invalid::new(field, rule))
}

/// A field bai cannot honour yet: `why` says what brings it, e.g.
/// "containers come with issue 11".
pub fn unsupported(field: &str, why: &str) -> Invalid {
    Invalid::new(field, format!("is not supported yet ({why})"))
}

fn required(field: &str, value: &str) -> Result {
    if value.trim().is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    Ok(())
}

pub fn workspace(ws: &Workspace) -> Result {
    name("workspace.name", &ws.name)?;
    for k in ws.tags.keys() {
        if k.is_empty() {
            return Err(Invalid::new("workspace.tags", "keys must not be empty"));
        }
    }
    Ok(())
}

pub fn experiment(e: &Experiment) -> Result {
    name("experiment.workspace", &e.workspace)?;
    name("experiment.name", &e.name)
}

pub fn cluster(c: &Cluster) -> Result {
    name("cluster.workspace", &c.workspace)?;
    name("cluster.name", &c.name)?;
    cluster_spec(&c.spec)
}

fn cluster_spec(s: &ClusterSpec) -> Result {
    scale_settings("cluster.scale_settings", &s.scale)?;
    if let Some(image) = &s.image {
        let f = "cluster.virtual_machine_configuration.image_reference";
        if image.virtual_machine_image_id.is_empty() {
            required(&format!("{f}.publisher"), &image.publisher)?;
            required(&format!("{f}.offer"), &image.offer)?;
            required(&format!("{f}.sku"), &image.sku)?;
        }
    }
    if let Some(setup) = &s.node_setup {
        if let Some(task) = &setup.setup_task {
            let f = "cluster.node_setup.setup_task";
            required(&format!("{f}.command_line"), &task.command_line)?;
            required(
                &format!("{f}.std_out_err_path_prefix"),
                &task.std_out_err_path_prefix,
            )?;
            output_prefix(
                &format!("{f}.std_out_err_path_prefix"),
                &task.std_out_err_path_prefix,
            )?;
            env_vars(f, &task.environment_variables, &task.secrets)?;
        }
        if let Some(m) = &setup.mount_volumes {
            mount_volumes("cluster.node_setup.mount_volumes", m)?;
        }
        if setup.app_insights.is_some() {
            return Err(unsupported(
                "cluster.node_setup.performance_counters_settings",
                "node metrics come with issue 8, without application insights",
            ));
        }
    }
    // Batch AI required an admin user; bai makes it optional (jobs then run
    // as the agent's user), so all-empty settings are no request for one.
    if let Some(user) = s.user_account.as_ref().filter(|u| {
        !(u.admin_user_name.is_empty()
            && u.admin_user_ssh_public_key.is_empty()
            && u.admin_user_password.is_empty())
    }) {
        user_account("cluster.user_account_settings", user)?;
    }
    Ok(())
}

/// Linux user names bai will not take over as the admin user.
const RESERVED_USERS: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "nobody",
    "sshd",
    "messagebus",
    "systemd-network",
];

/// SSH public key types an admin user's key may have.
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

fn user_account(field: &str, u: &super::spec::UserAccountSettings) -> Result {
    let f = format!("{field}.admin_user_name");
    required(&f, &u.admin_user_name)?;
    let n = &u.admin_user_name;
    let first_ok = n
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    if n.len() > 32
        || !first_ok
        || !n
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(Invalid::new(
            f,
            "must be a Linux user name: 1-32 of a-z, 0-9, '_' or '-', starting with a letter or '_'",
        ));
    }
    if RESERVED_USERS.contains(&n.as_str()) {
        return Err(Invalid::new(f, format!("{n} is a system account")));
    }
    if !u.admin_user_ssh_public_key.is_empty() {
        ssh_public_key(
            &format!("{field}.admin_user_ssh_public_key"),
            &u.admin_user_ssh_public_key,
        )?;
    } else if u.admin_user_password.is_empty() {
        return Err(Invalid::new(
            format!("{field}.admin_user_ssh_public_key"),
            "an ssh public key or admin_user_password is required",
        ));
    }
    if u.admin_user_password.expose().contains(['\n', '\r', '\0']) {
        return Err(Invalid::new(
            format!("{field}.admin_user_password"),
            "must be one line",
        ));
    }
    Ok(())
}

/// An OpenSSH public key line: `<type> <base64 blob> [comment]`, the blob
/// naming the same type.
fn ssh_public_key(field: &str, key: &str) -> Result {
    let bad = |why: &str| Invalid::new(field, format!("must be an OpenSSH public key ({why})"));
    let key = key.trim();
    if key.contains(['\n', '\r']) {
        return Err(bad("one line"));
    }
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(bad(
            "'<type> <base64>', e.g. the contents of ~/.ssh/id_rsa.pub",
        ));
    };
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(bad(&format!("unknown key type {kind}")));
    }
    let bytes = base64_decode(blob).ok_or_else(|| bad("the key is not base64"))?;
    // The blob starts with the type as an SSH string: a 4-byte length, the name.
    let named = bytes
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|len| bytes.get(4..4 + len));
    if named != Some(kind.as_bytes()) {
        return Err(bad("the key's data does not match its type"));
    }
    Ok(())
}

/// Standard base64 with padding; `None` if `s` is not that.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, q) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// Where setup output also goes: an absolute path, or one under
/// `$AZ_BATCHAI_MOUNT_ROOT` (the only variable a node expands there).
fn output_prefix(field: &str, p: &str) -> Result {
    let rest = p
        .strip_prefix("$AZ_BATCHAI_MOUNT_ROOT")
        .or_else(|| p.strip_prefix("${AZ_BATCHAI_MOUNT_ROOT}"));
    let ok = match rest {
        Some(r) => r.is_empty() || r.starts_with('/'),
        None => p.starts_with('/'),
    };
    if !ok || p.split('/').any(|s| s == "..") || p.contains('\0') {
        return Err(Invalid::new(
            field,
            "must be an absolute path or start with $AZ_BATCHAI_MOUNT_ROOT/, without '..'",
        ));
    }
    Ok(())
}

/// Checks scale settings at `field` (e.g. `cluster.scale_settings`).
pub fn scale_settings(field: &str, s: &ScaleSettings) -> Result {
    match *s {
        ScaleSettings::Manual {
            target_node_count, ..
        } => {
            if target_node_count > MAX_NODES {
                return Err(Invalid::new(
                    format!("{field}.manual.target_node_count"),
                    format!("must be at most {MAX_NODES}"),
                ));
            }
        }
        ScaleSettings::AutoScale {
            minimum_node_count,
            maximum_node_count,
            initial_node_count,
        } => {
            let f = format!("{field}.auto_scale");
            if maximum_node_count > MAX_NODES {
                return Err(Invalid::new(
                    format!("{f}.maximum_node_count"),
                    format!("must be at most {MAX_NODES}"),
                ));
            }
            if maximum_node_count == 0 {
                return Err(Invalid::new(
                    format!("{f}.maximum_node_count"),
                    "must be at least 1",
                ));
            }
            if maximum_node_count < minimum_node_count {
                return Err(Invalid::new(
                    format!("{f}.maximum_node_count"),
                    "must be at least minimum_node_count",
                ));
            }
            if initial_node_count > maximum_node_count {
                return Err(Invalid::new(
                    format!("{f}.initial_node_count"),
                    "must be at most maximum_node_count",
                ));
            }
        }
    }
    Ok(())
}

/// Checks user and secret environment variables under `field`: valid names,
/// no duplicates across both lists, nothing in the reserved `AZ_BATCHAI_`
/// namespace, and a value for every secret.
pub fn env_vars(field: &str, vars: &[EnvVar], secrets: &[SecretEnvVar]) -> Result {
    let mut seen = HashSet::new();
    let all = vars
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("{field}.environment_variables[{i}]"), &v.name))
        .chain(
            secrets
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{field}.secrets[{i}]"), &v.name)),
        );
    for (f, n) in all {
        check_env_name(n).map_err(|rule| Invalid::new(format!("{f}.name"), rule))?;
        if n.starts_with("AZ_BATCHAI_") {
            return Err(Invalid::new(
                format!("{f}.name"),
                "must not start with AZ_BATCHAI_ (reserved)",
            ));
        }
        if !seen.insert(n.as_str()) {
            return Err(Invalid::new(
                format!("{f}.name"),
                format!("duplicate variable {n}"),
            ));
        }
    }
    for (i, s) in secrets.iter().enumerate() {
        if s.value.is_empty() {
            return Err(Invalid::new(
                format!("{field}.secrets[{i}].value"),
                "is required",
            ));
        }
    }
    Ok(())
}

/// Checks mount volumes under `field`. With `use_auto_storage`, the
/// auto-storage mount points (`autoafs`, `autobfs`) are taken; whether this
/// coordinator has an auto-storage account is
/// [`auto_storage::check_configured`]'s to say.
pub fn mount_volumes(field: &str, m: &MountVolumes) -> Result {
    let mut paths = HashSet::new();
    let mut path = |f: String, p: &str| -> Result {
        required(&f, p)?;
        if p.starts_with('/') || p.split('/').any(|s| s == ".." || s == ".") || p.contains('\0') {
            return Err(Invalid::new(f, "must be a relative path without '..'"));
        }
        if let Some(taken) = auto_storage::reserved_path(p).filter(|_| m.use_auto_storage) {
            return Err(Invalid::new(
                f,
                format!("{taken} is where use_auto_storage mounts the auto-storage account"),
            ));
        }
        if !paths.insert(p.to_string()) {
            return Err(Invalid::new(f, format!("duplicate mount path {p}")));
        }
        Ok(())
    };
    for (i, a) in m.azure_file_shares.iter().enumerate() {
        let f = format!("{field}.azure_file_shares[{i}]");
        storage_account(&format!("{f}.account_name"), &a.account_name)?;
        file_url(&format!("{f}.azure_file_url"), &a.azure_file_url)?;
        key(&format!("{f}.credentials.account_key"), &a.credentials)?;
        path(format!("{f}.relative_mount_path"), &a.relative_mount_path)?;
        mode(&format!("{f}.file_mode"), &a.file_mode)?;
        mode(&format!("{f}.directory_mode"), &a.directory_mode)?;
    }
    for (i, b) in m.azure_blob_file_systems.iter().enumerate() {
        let f = format!("{field}.azure_blob_file_systems[{i}]");
        storage_account(&format!("{f}.account_name"), &b.account_name)?;
        container(&format!("{f}.container_name"), &b.container_name)?;
        key(&format!("{f}.credentials.account_key"), &b.credentials)?;
        path(format!("{f}.relative_mount_path"), &b.relative_mount_path)?;
        one_line(&format!("{f}.mount_options"), &b.mount_options)?;
    }
    for (i, s) in m.file_servers.iter().enumerate() {
        let f = format!("{field}.file_servers[{i}]");
        nfs_server(&format!("{f}.file_server.id"), &s.file_server_id)?;
        if !s.source_directory.is_empty() && !s.source_directory.starts_with('/') {
            return Err(Invalid::new(
                format!("{f}.source_directory"),
                "must be an absolute path on the server",
            ));
        }
        path(format!("{f}.relative_mount_path"), &s.relative_mount_path)?;
        mount_options(&format!("{f}.mount_options"), &s.mount_options)?;
    }
    for (i, u) in m.unmanaged_file_systems.iter().enumerate() {
        let f = format!("{field}.unmanaged_file_systems[{i}]");
        required(&format!("{f}.mount_command"), &u.mount_command)?;
        one_line(&format!("{f}.mount_command"), &u.mount_command)?;
        path(format!("{f}.relative_mount_path"), &u.relative_mount_path)?;
    }
    Ok(())
}

fn one_line(field: &str, v: &str) -> Result {
    if v.contains(['\n', '\r', '\0']) {
        return Err(Invalid::new(field, "must be one line"));
    }
    Ok(())
}

/// Azure's storage account name rule.
fn storage_account(field: &str, v: &str) -> Result {
    required(field, v)?;
    if !(3..=24).contains(&v.len())
        || !v
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(Invalid::new(
            field,
            "must be a storage account name: 3-24 lowercase letters or digits",
        ));
    }
    Ok(())
}

/// Azure's blob container name rule.
fn container(field: &str, v: &str) -> Result {
    required(field, v)?;
    let ok = (3..=63).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-')
        && !v.contains("--");
    if !ok {
        return Err(Invalid::new(
            field,
            "must be a container name: 3-63 lowercase letters, digits or single '-', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

/// `https://<host>/<share>` as Azure gives it (or `smb://<host>[:port]/<share>`).
fn file_url(field: &str, v: &str) -> Result {
    required(field, v)?;
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("smb://"));
    let ok = rest.is_some_and(|r| {
        let mut it = r.trim_end_matches('/').splitn(2, '/');
        let host = it.next().unwrap_or_default();
        let share = it.next().unwrap_or_default();
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            && !share.is_empty()
            && !share.contains('/')
            && share
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !ok {
        return Err(Invalid::new(
            field,
            "must be https://<account>.file.core.windows.net/<share> (or smb://<host>[:port]/<share>)",
        ));
    }
    Ok(())
}

fn key(field: &str, c: &super::spec::StorageCredentials) -> Result {
    if c.account_key.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    if c.account_key.expose().contains(['\n', '\r', '\0']) {
        return Err(Invalid::new(field, "must be one line"));
    }
    Ok(())
}

/// A file or directory mode: up to four octal digits.
fn mode(field: &str, v: &str) -> Result {
    if v.is_empty() || v.len() > 4 || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(Invalid::new(field, "must be an octal mode such as 0777"));
    }
    Ok(())
}

/// bai has no Batch AI file-server resource: the id is the NFS server's
/// host name or IP address.
fn nfs_server(field: &str, v: &str) -> Result {
    required(field, v)?;
    if v.starts_with("/subscriptions/") {
        return Err(Invalid::new(
            field,
            "bai has no Batch AI file servers: give the NFS server's host name or address",
        ));
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return Err(Invalid::new(
            field,
            "must be the NFS server's host name or IP address",
        ));
    }
    Ok(())
}

/// Mount options for `-o`: comma-separated, no spaces.
fn mount_options(field: &str, v: &str) -> Result {
    if v.contains(char::is_whitespace) || v.contains('\0') {
        return Err(Invalid::new(
            field,
            "must be comma-separated mount options without spaces",
        ));
    }
    Ok(())
}

fn directory_id(field: String, id: &str, seen: &mut HashSet<String>) -> Result {
    if id.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Invalid::new(
            field,
            "must be 1-64 letters, digits or '_' (it names an environment variable)",
        ));
    }
    if id.eq_ignore_ascii_case("stdouterr") {
        return Err(Invalid::new(field, "stdouterr is reserved"));
    }
    if !seen.insert(id.to_ascii_uppercase()) {
        return Err(Invalid::new(field, format!("duplicate id {id}")));
    }
    Ok(())
}

/// Checks a job create request. Only single-node jobs are accepted until gang
/// scheduling lands; MPI-based toolkits (custom MPI, Horovod) need it too.
/// Checks `job.gpus_per_node` against the nodes its cluster has: more GPUs
/// than its largest node has can never be given. A cluster with no node
/// yet takes any count (its nodes are not known).
pub fn gpus_per_node(j: &Job, nodes: &[Node]) -> Result {
    let want = j.spec.gpus_per_node;
    if want == 0 {
        return Ok(());
    }
    let Some(largest) = nodes.iter().max_by_key(|n| n.info.gpus.len()) else {
        return Ok(());
    };
    let most = largest.info.gpus.len();
    if want as usize > most {
        return Err(Invalid::new(
            "job.gpus_per_node",
            format!(
                "must be at most {most}: the largest node of cluster {} ({}) has {most} GPUs",
                j.spec.cluster, largest.node_id
            ),
        ));
    }
    Ok(())
}

pub fn job(j: &Job) -> Result {
    name("job.workspace", &j.key.workspace)?;
    name("job.experiment", &j.key.experiment)?;
    name("job.name", &j.key.name)?;
    let s = &j.spec;
    name("job.cluster.workspace", &s.cluster.workspace)?;
    name("job.cluster.name", &s.cluster.name)?;
    if s.node_count < 1 {
        return Err(Invalid::new("job.node_count", "must be at least 1"));
    }
    if let Some(m) = &s.mount_volumes {
        mount_volumes("job.mount_volumes", m)?;
    }
    if let Some(c) = &s.container_settings {
        let f = "job.container_settings.image_source_registry";
        required(&format!("{f}.image"), &c.image)?;
        super::container::parse_image(&c.image).map_err(|why| {
            Invalid::new(
                format!("{f}.image"),
                format!("{why}: not an image reference (e.g. tensorflow/tensorflow:1.8.0-gpu)"),
            )
        })?;
        if !c.server_url.is_empty() {
            super::container::check_server_url(&c.server_url)
                .map_err(|why| Invalid::new(format!("{f}.server_url"), why))?;
        }
        if !c.shm_size.is_empty() {
            super::container::parse_shm_size(&c.shm_size)
                .map_err(|why| Invalid::new("job.container_settings.shm_size", why))?;
        }
        if let Some(cred) = &c.credentials {
            let f = "job.container_settings.image_source_registry.credentials";
            required(&format!("{f}.username"), &cred.username)?;
            if cred.password.is_empty() {
                return Err(Invalid::new(format!("{f}.password"), "is required"));
            }
        }
    }
    if let Some(cmd) = &s.job_preparation_command_line {
        required("job.job_preparation.command_line", cmd)?;
    }
    if s.node_count > MAX_NODES {
        return Err(Invalid::new(
            "job.node_count",
            format!("must be at most {MAX_NODES}"),
        ));
    }
    // After what the node cannot give the job at all, so a recipe that needs
    // a container hears that first. Every toolkit runs on several nodes
    // (`domain::env::runs_on_rank` says which ranks run what).
    toolkit(&s.toolkit, s.node_count)?;
    let mut ids = HashSet::new();
    for (i, d) in s.input_directories.iter().enumerate() {
        directory_id(format!("job.input_directories[{i}].id"), &d.id, &mut ids)?;
        required(&format!("job.input_directories[{i}].path"), &d.path)?;
    }
    let mut ids = HashSet::new();
    for (i, d) in s.output_directories.iter().enumerate() {
        directory_id(format!("job.output_directories[{i}].id"), &d.id, &mut ids)?;
        required(
            &format!("job.output_directories[{i}].path_prefix"),
            &d.path_prefix,
        )?;
    }
    env_vars("job", &s.environment_variables, &s.secrets)?;
    if s.max_wall_clock_time_ms == 0 {
        return Err(Invalid::new(
            "job.constraints.max_wall_clock_time",
            "must be positive",
        ));
    }
    Ok(())
}

/// A job's node count against its cluster's size: at most the autoscale
/// maximum, or a manual cluster's target (a cluster scaled to 0 takes jobs
/// that wait for it to grow).
pub fn node_count(j: &Job, c: &crate::domain::Cluster) -> Result {
    let (most, what) = match c.spec.scale {
        crate::domain::ScaleSettings::AutoScale {
            maximum_node_count, ..
        } => (maximum_node_count, "maximum_node_count"),
        crate::domain::ScaleSettings::Manual { .. } if c.target_node_count == 0 => return Ok(()),
        crate::domain::ScaleSettings::Manual { .. } => (c.target_node_count, "target node count"),
    };
    if j.spec.node_count > most {
        return Err(Invalid::new(
            "job.node_count",
            format!(
                "must be at most {most}, cluster {}/{}'s {what}: a job runs on that many nodes at once",
                c.workspace, c.name
            ),
        ));
    }
    Ok(())
}

/// How a toolkit's processes are started: one per node by bai, or by
/// `mpirun` over the job's hostfile (up to 4 per node, Batch AI's limit).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Launch {
    PerNode,
    Mpi,
}

fn process_count(field: &str, count: u32, node_count: u32, launch: Launch) -> Result {
    let (most, why) = match launch {
        Launch::PerNode => (node_count, "one process per node"),
        Launch::Mpi => (4 * node_count, "at most 4 MPI processes per node"),
    };
    if count > most {
        return Err(Invalid::new(
            field,
            format!("must be at most {most} ({why}, node_count {node_count})"),
        ));
    }
    Ok(())
}

fn toolkit(t: &Toolkit, node_count: u32) -> Result {
    match t {
        Toolkit::Custom { command_line } => {
            required("job.custom_toolkit_settings.command_line", command_line)
        }
        Toolkit::CustomMpi {
            command_line,
            process_count: count,
        } => {
            let f = "job.custom_mpi_settings";
            required(&format!("{f}.command_line"), command_line)?;
            process_count(
                &format!("{f}.process_count"),
                *count,
                node_count,
                Launch::Mpi,
            )
        }
        Toolkit::Horovod { script } => {
            python("job.horovod_settings", script, node_count, Launch::Mpi)
        }
        Toolkit::PyTorch {
            script,
            communication_backend,
        } => {
            let f = "job.py_torch_settings";
            python(f, script, node_count, Launch::PerNode)?;
            // The backend reaches the script as AZ_BATCHAI_PYTORCH_BACKEND
            // (domain::env), lower-cased; the script's init_process_group
            // uses it. MPI would need every rank started by mpirun.
            let f = format!("{f}.communication_backend");
            match communication_backend.to_ascii_lowercase().as_str() {
                "" | "tcp" | "gloo" | "nccl" => Ok(()),
                "mpi" => Err(unsupported(
                    &f,
                    "the MPI backend needs the MPI launch across nodes, which comes later in issue 9; use gloo or nccl",
                )),
                _ => Err(Invalid::new(f, "must be one of tcp, gloo, nccl, mpi")),
            }
        }
        Toolkit::Chainer { script } => {
            python("job.chainer_settings", script, node_count, Launch::Mpi)
        }
        Toolkit::Caffe2 { script } => {
            python("job.caffe2_settings", script, node_count, Launch::PerNode)
        }
        Toolkit::TensorFlow {
            script,
            worker_count,
            parameter_server_count,
            worker_command_line_args,
            parameter_server_command_line_args,
            ..
        } => {
            let f = "job.tensor_flow_settings";
            python(f, script, node_count, Launch::PerNode)?;
            // Batch AI's limits: at most 4 GPU workers and 1 ps per node.
            if *worker_count > 4 * node_count {
                return Err(Invalid::new(
                    format!("{f}.worker_count"),
                    format!("must be at most 4 per node ({})", 4 * node_count),
                ));
            }
            if *parameter_server_count > node_count {
                return Err(Invalid::new(
                    format!("{f}.parameter_server_count"),
                    format!("must be at most node_count ({node_count}): one per node"),
                ));
            }
            // A single process (one node, at most one worker, no ps) runs
            // the master's arguments alone: the others would be ignored.
            let distributed = node_count > 1 || *worker_count > 1 || *parameter_server_count > 0;
            let workers = if *worker_count == 0 {
                node_count
            } else {
                *worker_count
            };
            for (name, args, used) in [
                (
                    "worker_command_line_args",
                    worker_command_line_args,
                    distributed && workers > 1,
                ),
                (
                    "parameter_server_command_line_args",
                    parameter_server_command_line_args,
                    distributed,
                ),
            ] {
                if !args.is_empty() && !used {
                    return Err(Invalid::new(
                        format!("{f}.{name}"),
                        "runs no task of this job: a single worker runs master_command_line_args (set worker_count or parameter_server_count, or node_count above 1)",
                    ));
                }
            }
            Ok(())
        }
        Toolkit::Cntk {
            language_type,
            config_file_path,
            script,
        } => {
            let f = "job.cntk_settings";
            let has_config = !config_file_path.is_empty();
            let has_script = !script.python_script_file_path.is_empty();
            // Without languageType the language is the one whose file is
            // given, as the service inferred it.
            let language = match language_type.to_ascii_lowercase().as_str() {
                "brainscript" => "brainscript",
                "python" => "python",
                "" if has_config && has_script => {
                    return Err(Invalid::new(
                        format!("{f}.language_type"),
                        "is required when both config_file_path (BrainScript) and python_script_file_path (Python) are given",
                    ));
                }
                "" if has_script => "python",
                "" => "brainscript",
                _ => {
                    return Err(Invalid::new(
                        format!("{f}.language_type"),
                        "must be BrainScript or Python",
                    ));
                }
            };
            if language == "brainscript" {
                if has_script {
                    return Err(Invalid::new(
                        format!("{f}.python_script_file_path"),
                        "is for languageType Python; BrainScript takes config_file_path",
                    ));
                }
                required(&format!("{f}.config_file_path"), config_file_path)?;
                process_count(
                    &format!("{f}.process_count"),
                    script.process_count,
                    node_count,
                    Launch::Mpi,
                )
            } else {
                if has_config {
                    return Err(Invalid::new(
                        format!("{f}.config_file_path"),
                        "is for languageType BrainScript; Python takes python_script_file_path",
                    ));
                }
                python(f, script, node_count, Launch::Mpi)
            }
        }
        Toolkit::Caffe {
            config_file_path,
            script,
        } => {
            let f = "job.caffe_settings";
            match (
                config_file_path.is_empty(),
                script.python_script_file_path.is_empty(),
            ) {
                (false, false) | (true, true) => Err(Invalid::new(
                    format!("{f}.config_file_path"),
                    "exactly one of config_file_path or python_script_file_path is required",
                )),
                (false, true) => process_count(
                    &format!("{f}.process_count"),
                    script.process_count,
                    node_count,
                    Launch::Mpi,
                ),
                (true, false) => python(f, script, node_count, Launch::Mpi),
            }
        }
    }
}

fn python(field: &str, s: &super::spec::PythonScript, node_count: u32, launch: Launch) -> Result {
    required(
        &format!("{field}.python_script_file_path"),
        &s.python_script_file_path,
    )?;
    process_count(
        &format!("{field}.process_count"),
        s.process_count,
        node_count,
        launch,
    )
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
