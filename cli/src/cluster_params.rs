//! Builds `cluster create`'s request from a ClusterCreateParameters file and
//! the flags, which override it (az's rules, including the --min/--max ones).
//! Pure apart from reading an SSH key file; the environment is passed in.

use std::path::Path;

use bai_proto::v1 as pb;

use crate::args::ClusterCreateArgs;
use crate::batchai_json::{self, StorageAccount};
use crate::error::CliError;

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

/// `-k`: a key, or a path to a file holding one.
fn ssh_key(value: &str) -> Result<String, CliError> {
    let p = Path::new(value);
    if !value.starts_with("ssh-") && !value.starts_with("ecdsa-") && p.is_file() {
        let key = std::fs::read_to_string(p)
            .map_err(|e| CliError::usage(format!("-k/--ssh-key: cannot read {value}: {e}")))?;
        return Ok(key.trim().to_string());
    }
    Ok(value.trim().to_string())
}

/// The full create request: the file (if any), then the flags on top.
/// `password` is the admin password from --password-stdin or -p, if given.
pub fn build_cluster(
    args: &ClusterCreateArgs,
    file_text: Option<&str>,
    password: Option<String>,
    env: EnvLookup<'_>,
) -> Result<pb::Cluster, CliError> {
    let storage = StorageAccount {
        name: args.storage_account_name.clone(),
        key: env("AZURE_BATCHAI_STORAGE_KEY"),
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

    // No admin user by default (az took $USER and ~/.ssh/id_rsa.pub): bai does
    // not create one yet and the coordinator refuses the settings when set, so
    // only what the user asked for is sent (and refused by name).
    let mut user = c.user_account_settings.take().unwrap_or_default();
    if let Some(u) = &args.user_name {
        user.admin_user_name = u.clone();
    }
    if let Some(p) = password.or_else(|| env("BAI_ADMIN_PASSWORD")) {
        user.admin_user_password = p;
    }
    if let Some(k) = &args.ssh_key {
        user.admin_user_ssh_public_key = ssh_key(k)?;
    }
    c.user_account_settings = (user != pb::UserAccountSettings::default()).then_some(user);

    if let (Some(cmd), Some(out)) = (&args.setup_task, &args.setup_task_output) {
        let node_setup = c.node_setup.get_or_insert_with(Default::default);
        let task = node_setup.setup_task.get_or_insert_with(Default::default);
        task.command_line = cmd.clone();
        task.std_out_err_path_prefix = out.clone();
    }
    if let Some(s) = &args.subnet {
        c.subnet = Some(pb::ResourceId { id: s.clone() });
    }
    Ok(c)
}

#[cfg(test)]
mod tests;
