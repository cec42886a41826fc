//! Tests of Batch AI JSON parsing, on the real recipe and example files from
//! `shared/reference` (skipped with a printed reason where that is absent).

use std::path::PathBuf;

use bai_proto::v1 as pb;
use pb::job::Toolkit;
use serde_json::Value;

use super::*;

/// `shared/reference`, beside the checkout (or further up, from a worktree).
/// Outside CI a checkout without it skips the recipe tests and says so; CI
/// has it, so there its absence fails the test rather than skip it silently.
pub(crate) fn reference_dir() -> Option<PathBuf> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let found = here
        .ancestors()
        .map(|a| a.join("shared/reference"))
        .find(|d| d.join("batchai-recipes").is_dir());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no shared/reference above {}: CI must run the recipe tests",
            here.display()
        );
        println!("skipped: no shared/reference above {}", here.display());
    }
    found
}

fn storage() -> StorageAccount {
    StorageAccount {
        name: Some("acct".into()),
        key: Some("k3y-secret".into()),
    }
}

/// Every recipe job file: `recipes__*job*.json` in the recipes folder and its
/// history sub-folders.
fn recipe_job_files(root: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join("batchai-recipes")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                dirs.push(p);
            } else if name.starts_with("recipes__")
                && name.contains("job")
                && name.ends_with(".json")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

const TOOLKIT_KEYS: &[&str] = &[
    "cntkSettings",
    "pyTorchSettings",
    "tensorFlowSettings",
    "caffeSettings",
    "caffe2Settings",
    "chainerSettings",
    "customToolkitSettings",
    "customMpiSettings",
    "horovodSettings",
];

fn toolkit_key(t: &Toolkit) -> &'static str {
    match t {
        Toolkit::CntkSettings(_) => "cntkSettings",
        Toolkit::PyTorchSettings(_) => "pyTorchSettings",
        Toolkit::TensorFlowSettings(_) => "tensorFlowSettings",
        Toolkit::CaffeSettings(_) => "caffeSettings",
        Toolkit::Caffe2Settings(_) => "caffe2Settings",
        Toolkit::ChainerSettings(_) => "chainerSettings",
        Toolkit::CustomToolkitSettings(_) => "customToolkitSettings",
        Toolkit::CustomMpiSettings(_) => "customMpiSettings",
        Toolkit::HorovodSettings(_) => "horovodSettings",
    }
}

#[test]
fn every_recipe_job_file_parses_faithfully() {
    let Some(root) = reference_dir() else { return };
    let files = recipe_job_files(&root);
    assert!(
        files.len() >= 20,
        "expected the recipe job files, found {}",
        files.len()
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let raw: Value = serde_json::from_str(&text).unwrap();
        let props = &raw["properties"];
        let job = parse_job(&text, &storage()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = f.file_name().unwrap().to_string_lossy();

        let want_toolkit = TOOLKIT_KEYS
            .iter()
            .find(|k| props.get(**k).is_some())
            .unwrap();
        assert_eq!(
            toolkit_key(job.toolkit.as_ref().unwrap()),
            *want_toolkit,
            "{name}"
        );
        assert_eq!(
            i64::from(job.node_count),
            props["nodeCount"].as_i64().unwrap(),
            "{name}"
        );
        assert_eq!(
            job.std_out_err_path_prefix,
            props["stdOutErrPathPrefix"].as_str().unwrap_or(""),
            "{name}"
        );
        let image = props
            .pointer("/containerSettings/imageSourceRegistry/image")
            .and_then(Value::as_str);
        assert_eq!(
            job.container_settings
                .as_ref()
                .and_then(|c| c.image_source_registry.as_ref())
                .map(|r| r.image.as_str()),
            image,
            "{name}"
        );
        let n_in = props["inputDirectories"].as_array().map_or(0, Vec::len);
        let n_out = props["outputDirectories"].as_array().map_or(0, Vec::len);
        assert_eq!(
            (job.input_directories.len(), job.output_directories.len()),
            (n_in, n_out),
            "{name}"
        );
        assert_eq!(
            job.job_preparation
                .as_ref()
                .map(|p| p.command_line.as_str()),
            props
                .pointer("/jobPreparation/commandLine")
                .and_then(Value::as_str),
            "{name}"
        );
        if let Some(m) = &job.mount_volumes {
            for a in &m.azure_file_shares {
                assert!(
                    !a.azure_file_url.contains('<'),
                    "{name}: placeholder left in {}",
                    a.azure_file_url
                );
                assert_eq!(
                    a.account_name, "acct",
                    "{name}: account derived from the URL"
                );
                assert_eq!(
                    a.credentials.as_ref().unwrap().account_key,
                    "k3y-secret",
                    "{name}: key filled in"
                );
            }
            for b in &m.azure_blob_file_systems {
                assert_eq!(b.account_name, "acct", "{name}");
            }
        }
        // Rendering the parsed job and reading it back gives the same request
        // (the secret values aside, which are never rendered).
        let rendered = job_value(&job);
        let again = parse_job(&rendered.to_string(), &storage()).unwrap();
        assert_eq!(again.toolkit, job.toolkit, "{name}: toolkit round trip");
        assert_eq!(again.node_count, job.node_count, "{name}");
        assert_eq!(again.input_directories, job.input_directories, "{name}");
        assert_eq!(again.output_directories, job.output_directories, "{name}");
        assert_eq!(
            again.container_settings.map(|c| c.shm_size),
            job.container_settings.map(|c| c.shm_size)
        );
    }
}

fn job_value(j: &pb::Job) -> Value {
    job(j)
}

/// The create parameters of a REST example (`parameters.parameters`).
fn example_parameters(root: &std::path::Path, file: &str) -> String {
    let text = std::fs::read_to_string(root.join("examples").join(file)).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["parameters"]["parameters"].to_string()
}

fn example_response(root: &std::path::Path, file: &str) -> String {
    let text = std::fs::read_to_string(root.join("examples").join(file)).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["responses"]["200"]["body"].to_string()
}

#[test]
fn put_job_example() {
    let Some(root) = reference_dir() else { return };
    let job = parse_job(
        &example_parameters(&root, "PutJob.json"),
        &StorageAccount::default(),
    )
    .unwrap();
    let c = job.cluster.as_ref().unwrap();
    assert_eq!(
        (c.workspace.as_str(), c.name.as_str()),
        ("demo_workspace", "demo_cluster")
    );
    assert_eq!(job.node_count, 1);
    assert_eq!(
        job.toolkit,
        Some(Toolkit::CustomToolkitSettings(pb::CustomToolkitSettings {
            command_line: "echo hi | tee $AZ_BATCHAI_OUTPUT_OUTPUTS/hi.txt".into()
        }))
    );
    assert_eq!(job.scheduling_priority, pb::JobPriority::Normal as i32);
    assert_eq!(
        job.std_out_err_path_prefix,
        "$AZ_BATCHAI_MOUNT_ROOT/azfiles"
    );
    assert_eq!(
        job.input_directories,
        vec![pb::InputDirectory {
            id: "INPUT".into(),
            path: "$AZ_BATCHAI_MOUNT_ROOT/azfiles/input".into()
        }]
    );
    assert_eq!(
        job.output_directories,
        vec![pb::OutputDirectory {
            id: "OUTPUTS".into(),
            path_prefix: "$AZ_BATCHAI_MOUNT_ROOT/azfiles/".into(),
            path_suffix: "files".into()
        }]
    );
    assert_eq!(
        job.container_settings
            .unwrap()
            .image_source_registry
            .unwrap()
            .image,
        "ubuntu"
    );

    // The response body has read-only members and `priority`; it reads too.
    let resp = parse_job(
        &example_response(&root, "GetJob.json"),
        &StorageAccount::default(),
    )
    .unwrap();
    assert_eq!(resp.scheduling_priority, pb::JobPriority::Normal as i32);
    assert_eq!(
        resp.constraints
            .unwrap()
            .max_wall_clock_time
            .unwrap()
            .seconds,
        7 * 86_400
    );
    assert_eq!(
        resp.execution_state, 0,
        "read-only members are not create parameters"
    );
}

#[test]
fn put_cluster_example() {
    let Some(root) = reference_dir() else { return };
    let c = parse_cluster(
        &example_parameters(&root, "PutCluster.json"),
        &StorageAccount::default(),
    )
    .unwrap();
    assert_eq!(c.vm_size, "STANDARD_NC6");
    assert_eq!(c.vm_priority, pb::VmPriority::Dedicated as i32);
    let manual = c.scale_settings.as_ref().unwrap().manual.unwrap();
    assert_eq!(manual.target_node_count, 1);
    assert_eq!(
        manual.node_deallocation_option,
        pb::DeallocationOption::Requeue as i32
    );
    let u = c.user_account_settings.as_ref().unwrap();
    assert_eq!(u.admin_user_name, "admin_user_name");
    assert_eq!(
        u.admin_user_password, "admin_user_password",
        "write-only values are read"
    );
    let m = c
        .node_setup
        .as_ref()
        .unwrap()
        .mount_volumes
        .as_ref()
        .unwrap();
    assert_eq!(m.file_servers[0].mount_options, "rw");
    assert_eq!(m.azure_file_shares[0].relative_mount_path, "azfiles");
    assert!(
        m.azure_file_shares[0]
            .credentials
            .as_ref()
            .unwrap()
            .account_key
            .ends_with("==")
    );

    // …and are never written back.
    let out = cluster(&pb::Cluster {
        workspace: "w".into(),
        name: "c".into(),
        ..c
    })
    .to_string();
    assert!(
        !out.contains("admin_user_password") && !out.contains("0000=="),
        "{out}"
    );
    assert!(out.contains("admin_user_name"));

    let resp = parse_cluster(
        &example_response(&root, "GetCluster.json"),
        &StorageAccount::default(),
    )
    .unwrap();
    assert_eq!(
        resp.virtual_machine_configuration
            .unwrap()
            .image_reference
            .unwrap()
            .sku,
        "16.04-LTS"
    );
}

#[test]
fn documentation_cluster_blocks() {
    let Some(root) = reference_dir() else { return };
    let dir = root.join("batchai-recipes");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();

    let c = parse_cluster(
        &read("documentation__using-azure-cli-20.md__block-03-line625.json"),
        &storage(),
    )
    .unwrap();
    let task = c.node_setup.unwrap().setup_task.unwrap();
    assert_eq!(
        task.command_line,
        "$AZ_BATCHAI_MOUNT_ROOT/afs/setup_script.sh"
    );
    assert_eq!(task.environment_variables.len(), 2);
    assert_eq!(task.secrets[0].value, "Value 3");
    let kv = task.secrets[1].value_secret_reference.as_ref().unwrap();
    assert!(kv.source_vault_id.ends_with("/vaults/demokeyvault"));

    let c = parse_cluster(
        &read("documentation__using-azure-cli-20.md__block-04-line680.json"),
        &storage(),
    )
    .unwrap();
    let m = c.node_setup.unwrap().mount_volumes.unwrap();
    assert_eq!(
        m.azure_file_shares[0].azure_file_url,
        "https://acct.file.core.windows.net/dataset1"
    );
    assert_eq!(
        m.azure_blob_file_systems[1]
            .credentials
            .as_ref()
            .unwrap()
            .account_key,
        "k3y-secret"
    );
    assert_eq!(
        m.unmanaged_file_systems[0].mount_command,
        "mount -t glusterfs 10.0.0.4:/gv0"
    );
    let e = parse_cluster(
        &read("documentation__using-azure-cli-20.md__block-04-line680.json"),
        &StorageAccount::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("AZURE_BATCHAI_STORAGE_ACCOUNT"),
        "{e}"
    );

    // An az `cluster show` output (flat, with nulls) reads as well.
    let c = parse_cluster(
        &read("documentation__using-azure-cli-20.md__block-06-line838.json"),
        &storage(),
    )
    .unwrap();
    assert_eq!(
        c.scale_settings.unwrap().manual.unwrap().target_node_count,
        2
    );
    assert_eq!(c.user_account_settings.unwrap().admin_user_name, "myuser");

    let j = parse_job(
        &read("documentation__using-azure-cli-20.md__block-08-line1243.json"),
        &storage(),
    )
    .unwrap();
    assert_eq!(j.secrets.len(), 2);
    assert_eq!(j.container_settings.unwrap().shm_size, "16gb");
}

#[test]
fn job_files_in_both_shapes_with_durations_and_errors() {
    let flat = r#"{"$schema": "x", "nodeCount": 2, "customMpiSettings": {"commandLine": "hostname", "processCount": 4},
                   "constraints": {"maxWallClockTime": "1.02:03:04"}, "schedulingPriority": "High",
                   "cluster": {"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.BatchAI/workspaces/w2/clusters/c2"}}"#;
    let j = parse_job(flat, &StorageAccount::default()).unwrap();
    assert_eq!(j.node_count, 2);
    assert_eq!(j.scheduling_priority, pb::JobPriority::High as i32);
    assert_eq!(
        j.constraints.unwrap().max_wall_clock_time.unwrap().seconds,
        93_784
    );
    assert_eq!(
        j.cluster.unwrap(),
        pb::ClusterRef {
            workspace: "w2".into(),
            name: "c2".into()
        }
    );
    let wrapped = format!(r#"{{"properties": {flat}}}"#);
    assert_eq!(
        parse_job(&wrapped, &StorageAccount::default())
            .unwrap()
            .node_count,
        2
    );

    let old = r#"{"properties": {"priority": -5, "customToolkitSettings": {"commandLine": "x"}}}"#;
    assert_eq!(
        parse_job(old, &StorageAccount::default())
            .unwrap()
            .scheduling_priority,
        pb::JobPriority::Low as i32
    );

    let bad = |t: &str| {
        parse_job(t, &StorageAccount::default())
            .unwrap_err()
            .to_string()
    };
    assert!(
        bad(r#"{"nodeCount": "two"}"#).starts_with("nodeCount: "),
        "{}",
        bad(r#"{"nodeCount": "two"}"#)
    );
    let e = bad(r#"{"constraints": {"maxWallClockTime": "forever"}}"#);
    assert!(e.starts_with("constraints.maxWallClockTime: "), "{e}");
    let e = bad(r#"{"cntkSettings": {}, "customToolkitSettings": {"commandLine": "x"}}"#);
    assert!(e.contains("cntkSettings and customToolkitSettings"), "{e}");
    assert!(bad(r#"{"schedulingPriority": "urgent"}"#).starts_with("schedulingPriority: "));
    assert!(bad("[1, 2]").contains("object"));
    assert!(bad("{not json").contains("not valid JSON"));
}
