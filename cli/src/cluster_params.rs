//! Builds `cluster create`'s request from a ClusterCreateParameters file and
//! the flags, which override it (az's rules, including the --min/--max ones,
//! the admin user's defaults and the storage flags). Pure apart from reading
//! SSH public key files and the current user; the environment is passed in.

use std::path::{Path, PathBuf};

use bai_proto::v1 as pb;

use crate::args::ClusterCreateArgs;
use crate::batchai_json::{self, StorageAccount};
use crate::error::CliError;
use crate::storage_flags;

/// VM size when neither the flags nor the file name one.
pub const DEFAULT_VM_SIZE: &str = "local";

/// Looks up an environment variable (injected so tests need no `set_var`).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The scale settings from `-t`, `--min`, `--max` and the file's settings.
///
/// `--min` and `--max` go together with min ≤ max; equal values give a manual
/// cluster of that size, otherwise auto-scale with initial = target or 0.
/// `-t` alone gives a manual cluster. Without flags the file must have them.
pub fn scale_settings(
    target: Option<i32>,
    min: Option<i32>,
    max: Option<i32>,
    from_file: Option<pb::ScaleSettings>,
) -> Result<pb::ScaleSettings, CliError> {
    let manual = |n: i32| pb::ScaleSettings {
        manual: Some(pb::ManualScaleSettings {
            target_node_count: n,
            node_deallocation_option: 0,
        }),
        auto_scale: None,
    };
    match (min, max) {
        (Some(min), Some(max)) => {
            if min > max {
                return Err(CliError::usage(format!(
                    "--min ({min}) must not be greater than --max ({max})"
                )));
            }
            if min == max {
                return Ok(manual(min));
            }
            Ok(pb::ScaleSettings {
                manual: None,
                auto_scale: Some(pb::AutoScaleSettings {
                    minimum_node_count: min,
                    maximum_node_count: max,
                    initial_node_count: target.unwrap_or(0),
                }),
            })
        }
        (Some(_), None) | (None, Some(_)) => Err(CliError::usage(
            "give both --min and --max for auto-scaling",
        )),
        (None, None) => match (target, from_file) {
            (Some(t), _) => Ok(manual(t)),
            (None, Some(s)) if s.manual.is_some() || s.auto_scale.is_some() => Ok(s),
            _ => Err(CliError::usage(
                "no scale settings: give -t/--target, or --min and --max, or scaleSettings in the config file",
            )),
        },
    }
}

/// `-i`: an alias (UbuntuLTS, UbuntuDSVM) or publisher:offer:sku[:version].
pub fn image_reference(
    image: &str,
    custom_image: Option<&str>,
) -> Result<pb::ImageReference, CliError> {
    let parts: Vec<&str> = match image.to_ascii_lowercase().as_str() {
        "ubuntults" => vec!["Canonical", "UbuntuServer", "16.04-LTS", "latest"],
        "ubuntudsvm" => vec![
            "microsoft-ads",
            "linux-data-science-vm-ubuntu",
            "linuxdsvmubuntu",
            "latest",
        ],
        _ => image.split(':').collect(),
    };
    if !(3..=4).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return Err(CliError::usage(format!(
            "-i/--image: {image:?} is neither UbuntuLTS, UbuntuDSVM nor publisher:offer:sku[:version]"
        )));
    }
    Ok(pb::ImageReference {
        publisher: parts[0].to_string(),
        offer: parts[1].to_string(),
        sku: parts[2].to_string(),
        version: parts
            .get(3)
            .map_or_else(|| "latest".to_string(), |v| (*v).to_string()),
        virtual_machine_image_id: custom_image.unwrap_or_default().to_string(),
    })
}

/// Whether `text` looks like an OpenSSH public key line.
fn is_public_key(text: &str) -> bool {
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"]
        .iter()
        .any(|p| text.starts_with(p))
        && text.split_whitespace().count() >= 2
}

/// `~/x` → `$HOME/x`.
fn expand_home(value: &str, env: EnvLookup<'_>) -> PathBuf {
    match (value.strip_prefix("~/"), env("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(value),
    }
}

/// Reads a public key file; `flag` names where the path came from.
fn read_public_key(flag: &str, path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("{flag}: cannot read {}: {e}", path.display())))?;
    let key = text.trim();
    if key.starts_with("-----BEGIN") {
        return Err(CliError::usage(format!(
            "{flag}: {} is a private key; give the public key (the .pub file)",
            path.display()
        )));
    }
    if !is_public_key(key) {
        return Err(CliError::usage(format!(
            "{flag}: {} does not hold an SSH public key",
            path.display()
        )));
    }
    Ok(key.to_string())
}

/// `-k`: a key, or a path to a file holding one (`~/` allowed).
fn ssh_key(value: &str, env: EnvLookup<'_>) -> Result<String, CliError> {
    let value = value.trim();
    if is_public_key(value) {
        return Ok(value.to_string());
    }
    let p = expand_home(value, env);
    if p.is_file() {
        return read_public_key("-k/--ssh-key", &p);
    }
    Err(CliError::usage(format!(
        "-k/--ssh-key: {value:?} is neither an SSH public key nor a readable file"
    )))
}

/// `~/.ssh/id_rsa.pub`, az's default key (None without a home directory).
pub fn default_public_key_path(env: EnvLookup<'_>) -> Option<PathBuf> {
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".ssh").join("id_rsa.pub"))
}

/// The user running the CLI: `$USER`, `$LOGNAME`, or the password database.
fn current_user(env: EnvLookup<'_>) -> Option<String> {
    env("USER")
        .or_else(|| env("LOGNAME"))
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
}

/// The admin user: the file's settings, then the flags; az's defaults for
/// what neither gives (the current user; `~/.ssh/id_rsa.pub` when there is
/// no password). `--generate-ssh-keys` has made the default key exist.
fn admin_user(
    args: &ClusterCreateArgs,
    from_file: Option<pb::UserAccountSettings>,
    password: Option<String>,
    env: EnvLookup<'_>,
) -> Result<pb::UserAccountSettings, CliError> {
    let mut user = from_file.unwrap_or_default();
    if let Some(u) = &args.user_name {
        user.admin_user_name = u.clone();
    }
    if user.admin_user_name.is_empty() {
        user.admin_user_name = current_user(env).ok_or_else(|| {
            CliError::usage(
                "-u/--user-name: cannot tell the current user; give the admin user's name",
            )
        })?;
    }
    if let Some(p) = password.or_else(|| env("BAI_ADMIN_PASSWORD")) {
        user.admin_user_password = p;
    }
    if let Some(k) = &args.ssh_key {
        user.admin_user_ssh_public_key = ssh_key(k, env)?;
    } else if args.generate_ssh_keys {
        let path = default_public_key_path(env)
            .ok_or_else(|| CliError::usage("--generate-ssh-keys: HOME is not set"))?;
        user.admin_user_ssh_public_key = read_public_key("--generate-ssh-keys", &path)?;
    } else if user.admin_user_ssh_public_key.is_empty()
        && user.admin_user_password.is_empty()
        && let Some(path) = default_public_key_path(env).filter(|p| p.is_file())
    {
        user.admin_user_ssh_public_key = read_public_key("-k/--ssh-key (default)", &path)?;
    }
    if user.admin_user_ssh_public_key.is_empty() && user.admin_user_password.is_empty() {
        return Err(CliError::usage(
            "no admin credentials: give -k/--ssh-key, -p/--password, --password-stdin or \
             --generate-ssh-keys (there is no ~/.ssh/id_rsa.pub to use by default)",
        ));
    }
    Ok(user)
}

/// The full create request: the file (if any), then the flags on top.
/// `password` is the admin password from --password-stdin or -p, if given.
pub fn build_cluster(
    args: &ClusterCreateArgs,
    file_text: Option<&str>,
    password: Option<String>,
    env: EnvLookup<'_>,
) -> Result<pb::Cluster, CliError> {
    let key = args
        .storage
        .storage_account_key
        .as_ref()
        .map(|k| k.expose().to_string())
        .or_else(|| env("AZURE_BATCHAI_STORAGE_KEY"));
    let storage = StorageAccount {
        name: args.storage.storage_account_name.clone(),
        key: key.clone(),
    };
    let mut c = match file_text {
        Some(t) => batchai_json::parse_cluster(t, &storage)?,
        None => pb::Cluster::default(),
    };
    c.workspace = args.workspace.clone();
    c.name = args.name.clone();
    if let Some(s) = &args.vm_size {
        c.vm_size = s.clone();
    }
    if c.vm_size.is_empty() {
        c.vm_size = DEFAULT_VM_SIZE.to_string();
    }
    if let Some(p) = &args.vm_priority {
        c.vm_priority = if p == "lowpriority" {
            pb::VmPriority::Lowpriority as i32
        } else {
            pb::VmPriority::Dedicated as i32
        };
    }
    c.scale_settings = Some(scale_settings(
        args.target,
        args.min,
        args.max,
        c.scale_settings.take(),
    )?);
    if let Some(image) = &args.image {
        c.virtual_machine_configuration = Some(pb::VirtualMachineConfiguration {
            image_reference: Some(image_reference(image, args.custom_image.as_deref())?),
        });
    }

    if let (Some(cmd), Some(out)) = (&args.setup_task, &args.setup_task_output) {
        let node_setup = c.node_setup.get_or_insert_with(Default::default);
        let task = node_setup.setup_task.get_or_insert_with(Default::default);
        task.command_line = cmd.clone();
        task.std_out_err_path_prefix = out.clone();
    }
    if let Some(task) = c.node_setup.as_ref().and_then(|n| n.setup_task.as_ref())
        && task.std_out_err_path_prefix.trim().is_empty()
    {
        return Err(CliError::usage(
            "nodeSetup.setupTask.stdOutErrPathPrefix: required with a setup task \
             (--setup-task-output)",
        ));
    }
    let file_mounts = c.node_setup.as_mut().and_then(|n| n.mount_volumes.take());
    if let Some(m) = storage_flags::add_volumes(&args.storage, key.as_deref(), file_mounts)? {
        c.node_setup
            .get_or_insert_with(Default::default)
            .mount_volumes = Some(m);
    }
    if let Some(s) = &args.subnet {
        c.subnet = Some(pb::ResourceId { id: s.clone() });
    }
    c.user_account_settings = Some(admin_user(
        args,
        c.user_account_settings.take(),
        password,
        env,
    )?);
    Ok(c)
}

#[cfg(test)]
mod tests;
