//! Tests of request validation: one per rule, each checking the field path.

use super::*;
use crate::domain::Secret;
use crate::domain::fixtures;
use crate::domain::spec::*;

fn err_of(j: &crate::domain::Job) -> String {
    job(j).unwrap_err().to_string()
}

/// The shared fixture with what bai refuses today left out: it carries an
/// admin user (the store tests check its password is kept).
fn valid_cluster(name: &str, target: u32) -> crate::domain::Cluster {
    let mut c = fixtures::cluster("w", name, target);
    c.spec.user_account = None;
    c
}

#[test]
fn a_valid_job_passes() {
    job(&fixtures::job("w", "e", "j", "c")).unwrap();
    cluster(&valid_cluster("c", 2)).unwrap();
    workspace(&fixtures::workspace("w")).unwrap();
    experiment(&fixtures::experiment("w", "e")).unwrap();
}

#[test]
fn names_are_checked_with_their_field() {
    let mut j = fixtures::job("w", "e", "bad name", "c");
    assert_eq!(
        err_of(&j),
        "job.name: must contain only letters, digits, '-' and '_'"
    );
    j.key.name = "ok".into();
    j.spec.cluster.name = String::new();
    assert_eq!(err_of(&j), "job.cluster.name: must not be empty");
    let mut ws = fixtures::workspace(&"x".repeat(65));
    assert_eq!(
        workspace(&ws).unwrap_err().to_string(),
        "workspace.name: must be at most 64 characters"
    );
    ws.name = "w".into();
    ws.tags.insert(String::new(), "v".into());
    assert_eq!(workspace(&ws).unwrap_err().field, "workspace.tags");
    let e = fixtures::experiment("w", "");
    assert_eq!(experiment(&e).unwrap_err().field, "experiment.name");
}

#[test]
fn node_count_rules() {
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.node_count = 0;
    assert_eq!(err_of(&j), "job.node_count: must be at least 1");
    j.spec.node_count = 101;
    assert_eq!(err_of(&j), "job.node_count: must be at most 100");
    j.spec.node_count = 3;
    assert_eq!(job(&j), Ok(()), "a custom job may use several nodes");
    j.spec.toolkit = Toolkit::Chainer {
        script: PythonScript {
            python_script_file_path: "train.py".into(),
            ..PythonScript::default()
        },
    };
    job(&j).expect("chainer runs across nodes through MPI");
    j.spec.toolkit = Toolkit::Caffe2 {
        script: PythonScript {
            python_script_file_path: "train.py".into(),
            ..PythonScript::default()
        },
    };
    job(&j).expect("caffe2 runs the script on every node");
    let mut c = valid_cluster("c", 2);
    j.spec.toolkit = Toolkit::Custom {
        command_line: "x".into(),
    };
    assert!(
        node_count(&j, &c)
            .unwrap_err()
            .to_string()
            .starts_with("job.node_count: must be at most 2")
    );
    c.target_node_count = 0;
    assert_eq!(
        node_count(&j, &c),
        Ok(()),
        "a parked cluster takes jobs that wait"
    );
}

#[test]
fn toolkit_rules() {
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.toolkit = Toolkit::Custom {
        command_line: " ".into(),
    };
    assert_eq!(
        err_of(&j),
        "job.custom_toolkit_settings.command_line: is required"
    );
    j.spec.toolkit = Toolkit::CustomMpi {
        command_line: "x".into(),
        process_count: 4,
    };
    job(&j).expect("4 MPI processes on one node");
    j.spec.toolkit = Toolkit::CustomMpi {
        command_line: "x".into(),
        process_count: 5,
    };
    assert_eq!(
        err_of(&j),
        "job.custom_mpi_settings.process_count: must be at most 4 (at most 4 MPI processes per node, node_count 1)"
    );
    j.spec.toolkit = Toolkit::CustomMpi {
        command_line: String::new(),
        process_count: 0,
    };
    assert_eq!(
        err_of(&j),
        "job.custom_mpi_settings.command_line: is required"
    );
    j.spec.toolkit = Toolkit::Horovod {
        script: PythonScript::default(),
    };
    assert_eq!(
        err_of(&j),
        "job.horovod_settings.python_script_file_path: is required"
    );
    j.spec.toolkit = Toolkit::PyTorch {
        script: PythonScript::default(),
        communication_backend: String::new(),
    };
    assert_eq!(
        err_of(&j),
        "job.py_torch_settings.python_script_file_path: is required"
    );
    j.spec.toolkit = Toolkit::PyTorch {
        script: PythonScript {
            python_script_file_path: "t.py".into(),
            process_count: 2,
            ..PythonScript::default()
        },
        communication_backend: String::new(),
    };
    assert!(err_of(&j).starts_with("job.py_torch_settings.process_count: must be at most"));
    j.spec.toolkit = Toolkit::Caffe {
        config_file_path: "a".into(),
        script: PythonScript {
            python_script_file_path: "b".into(),
            ..PythonScript::default()
        },
    };
    assert!(err_of(&j).starts_with("job.caffe_settings.config_file_path: exactly one"));
    j.spec.toolkit = Toolkit::Cntk {
        language_type: "Lua".into(),
        config_file_path: String::new(),
        script: PythonScript::default(),
    };
    assert_eq!(
        err_of(&j),
        "job.cntk_settings.language_type: must be BrainScript or Python"
    );
    // Without languageType the file given says the language.
    let cntk = |language: &str, config: &str, py: &str| Toolkit::Cntk {
        language_type: language.into(),
        config_file_path: config.into(),
        script: PythonScript {
            python_script_file_path: py.into(),
            ..PythonScript::default()
        },
    };
    for ok in [
        cntk("", "", "train.py"),
        cntk("", "net.cntk", ""),
        cntk("python", "", "train.py"),
        cntk("BrainScript", "net.cntk", ""),
    ] {
        j.spec.toolkit = ok.clone();
        assert!(job(&j).is_ok(), "{ok:?}");
    }
    for (bad, field) in [
        (
            cntk("", "net.cntk", "train.py"),
            "language_type: is required when both",
        ),
        (cntk("", "", ""), "config_file_path: is required"),
        (
            cntk("Python", "net.cntk", "train.py"),
            "config_file_path: is for languageType BrainScript",
        ),
        (
            cntk("BrainScript", "", "train.py"),
            "python_script_file_path: is for languageType Python",
        ),
        (
            cntk("Python", "", ""),
            "python_script_file_path: is required",
        ),
    ] {
        j.spec.toolkit = bad;
        let e = err_of(&j);
        assert!(e.starts_with(&format!("job.cntk_settings.{field}")), "{e}");
    }
    j.spec.toolkit = fixtures::tensorflow(0, 1);
    job(&j).expect("one node may run a worker and a ps");
    let tf = |j: &mut Job, workers: u32, ps: u32, nodes: u32| {
        j.spec.node_count = nodes;
        if let Toolkit::TensorFlow {
            worker_count,
            parameter_server_count,
            ..
        } = &mut j.spec.toolkit
        {
            (*worker_count, *parameter_server_count) = (workers, ps);
        }
    };
    tf(&mut j, 0, 2, 1);
    assert_eq!(
        err_of(&j),
        "job.tensor_flow_settings.parameter_server_count: must be at most node_count (1): one per node"
    );
    tf(&mut j, 9, 1, 2);
    assert!(
        err_of(&j)
            .starts_with("job.tensor_flow_settings.worker_count: must be at most 4 per node (8)")
    );
    tf(&mut j, 8, 2, 2);
    job(&j).expect("4 workers and 1 ps per node");
}

#[test]
fn environment_rules() {
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.environment_variables[0].name = "1X".into();
    assert_eq!(
        err_of(&j),
        "job.environment_variables[0].name: must start with a letter or '_'"
    );
    j.spec.environment_variables[0].name = "AZ_BATCHAI_X".into();
    assert!(
        err_of(&j)
            .starts_with("job.environment_variables[0].name: must not start with AZ_BATCHAI_")
    );
    j.spec.environment_variables[0].name = "TOKEN".into();
    assert_eq!(err_of(&j), "job.secrets[0].name: duplicate variable TOKEN");
    j.spec.environment_variables[0].name = "A".into();
    j.spec.secrets[0].value = Secret::new("");
    assert_eq!(err_of(&j), "job.secrets[0].value: is required");
}

#[test]
fn directory_rules() {
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.input_directories = vec![InputDirectory {
        id: "A-B".into(),
        path: "/x".into(),
    }];
    assert!(err_of(&j).starts_with("job.input_directories[0].id: must be 1-64 letters"));
    j.spec.input_directories = vec![
        InputDirectory {
            id: "A".into(),
            path: "/x".into(),
        },
        InputDirectory {
            id: "a".into(),
            path: "/y".into(),
        },
    ];
    assert_eq!(err_of(&j), "job.input_directories[1].id: duplicate id a");
    j.spec.input_directories.clear();
    j.spec.output_directories = vec![OutputDirectory {
        id: "M".into(),
        path_prefix: String::new(),
        path_suffix: String::new(),
    }];
    assert_eq!(
        err_of(&j),
        "job.output_directories[0].path_prefix: is required"
    );
    j.spec.output_directories[0].id = "stdouterr".into();
    assert_eq!(
        err_of(&j),
        "job.output_directories[0].id: stdouterr is reserved"
    );
}

#[test]
fn other_job_rules() {
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.max_wall_clock_time_ms = 0;
    assert_eq!(
        err_of(&j),
        "job.constraints.max_wall_clock_time: must be positive"
    );
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.job_preparation_command_line = Some(String::new());
    assert_eq!(err_of(&j), "job.job_preparation.command_line: is required");
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.container_settings = Some(ContainerSettings {
        server_url: String::new(),
        image: String::new(),
        credentials: None,
        shm_size: String::new(),
    });
    assert_eq!(
        err_of(&j),
        "job.container_settings.image_source_registry.image: is required"
    );
    // Bad container settings are named before containers are refused.
    let container = |image: &str, server: &str, shm: &str| {
        let mut j = fixtures::job("w", "e", "j", "c");
        j.spec.container_settings = Some(ContainerSettings {
            server_url: server.into(),
            image: image.into(),
            credentials: None,
            shm_size: shm.into(),
        });
        err_of(&j)
    };
    let f = "job.container_settings";
    for (image, server, shm, want) in [
        (
            "Ubuntu:x",
            "",
            "",
            format!("{f}.image_source_registry.image: has a name"),
        ),
        (
            "ubuntu",
            "ftp://x",
            "",
            format!("{f}.image_source_registry.server_url: is not"),
        ),
        (
            "ubuntu",
            "",
            "-1g",
            format!("{f}.shm_size: must be a positive size"),
        ),
        (
            "ubuntu",
            "",
            "lots",
            format!("{f}.shm_size: must be a positive size"),
        ),
    ] {
        let e = container(image, server, shm);
        assert!(e.starts_with(&want), "{image} {server} {shm}: {e}");
    }
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.mount_volumes = Some(MountVolumes {
        unmanaged_file_systems: vec![UnmanagedFileSystem {
            mount_command: "mount -t nfs x:/y".into(),
            relative_mount_path: "../up".into(),
        }],
        ..MountVolumes::default()
    });
    assert_eq!(
        err_of(&j),
        "job.mount_volumes.unmanaged_file_systems[0].relative_mount_path: must be a relative path without '..'"
    );
    j.spec.mount_volumes = Some(MountVolumes {
        azure_file_shares: vec![AzureFileShare {
            account_name: "acct".into(),
            azure_file_url: "https://acct.file.core.windows.net/s".into(),
            credentials: StorageCredentials::default(),
            relative_mount_path: "afs".into(),
            file_mode: "0777".into(),
            directory_mode: "0777".into(),
        }],
        ..MountVolumes::default()
    });
    assert_eq!(
        err_of(&j),
        "job.mount_volumes.azure_file_shares[0].credentials.account_key: is required"
    );
}

#[test]
fn scale_rules() {
    let f = "cluster.scale_settings";
    let s = ScaleSettings::Manual {
        target_node_count: 101,
        deallocation: DeallocationOption::Requeue,
    };
    assert_eq!(
        scale_settings(f, &s).unwrap_err().to_string(),
        "cluster.scale_settings.manual.target_node_count: must be at most 100"
    );
    let s = ScaleSettings::AutoScale {
        minimum_node_count: 3,
        maximum_node_count: 2,
        initial_node_count: 0,
    };
    assert_eq!(
        scale_settings(f, &s).unwrap_err().to_string(),
        "cluster.scale_settings.auto_scale.maximum_node_count: must be at least minimum_node_count"
    );
    let s = ScaleSettings::AutoScale {
        minimum_node_count: 0,
        maximum_node_count: 2,
        initial_node_count: 3,
    };
    assert_eq!(
        scale_settings(f, &s).unwrap_err().field,
        "cluster.scale_settings.auto_scale.initial_node_count"
    );
    let s = ScaleSettings::AutoScale {
        minimum_node_count: 1,
        maximum_node_count: 4,
        initial_node_count: 0,
    };
    // Well-formed: the autoscaler sizes it with its queue.
    scale_settings(f, &s).expect("autoScale is taken");
    assert_eq!(s.initial_target(), 1);
    assert_eq!(s.retarget(9), 4);
}

#[test]
fn cluster_rules() {
    let mut c = valid_cluster("c", 1);
    c.spec.node_setup = Some(NodeSetup {
        setup_task: Some(SetupTask {
            command_line: String::new(),
            environment_variables: vec![],
            secrets: vec![],
            std_out_err_path_prefix: String::new(),
        }),
        mount_volumes: None,
        app_insights: None,
    });
    assert_eq!(
        cluster(&c).unwrap_err().to_string(),
        "cluster.node_setup.setup_task.command_line: is required"
    );
    let mut c = valid_cluster("c", 1);
    c.spec.node_setup = Some(NodeSetup {
        setup_task: Some(SetupTask {
            command_line: "true".into(),
            environment_variables: vec![],
            secrets: vec![],
            std_out_err_path_prefix: String::new(),
        }),
        mount_volumes: None,
        app_insights: None,
    });
    assert_eq!(
        cluster(&c).unwrap_err().to_string(),
        "cluster.node_setup.setup_task.std_out_err_path_prefix: is required"
    );
    let mut c = valid_cluster("c", 1);
    c.spec.user_account = Some(UserAccountSettings::default());
    cluster(&c).expect("empty user account settings are not a request for one");
    let mut c = valid_cluster("c", 1);
    c.spec.image = Some(ImageReference::default());
    assert_eq!(
        cluster(&c).unwrap_err().field,
        "cluster.virtual_machine_configuration.image_reference.publisher"
    );
}

#[test]
fn what_bai_cannot_honour_yet_is_refused_by_name() {
    let unsupported = |r: Result| {
        let e = r.unwrap_err();
        assert!(
            e.rule.starts_with("is not supported yet (") && e.rule.contains("issue"),
            "{e}"
        );
        e.field
    };
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.container_settings = Some(ContainerSettings {
        server_url: String::new(),
        image: "ubuntu".into(),
        credentials: None,
        shm_size: String::new(),
    });
    job(&j).expect("a container job on one node");
    j.spec.job_preparation_command_line = Some("pip install x".into());
    job(&j).expect("its preparation runs inside the container");
    j.spec.node_count = 2;
    job(&j).expect("each rank in its own container");
    j.spec.node_count = 1;
    if let Some(c) = &mut j.spec.container_settings {
        c.credentials = Some(PrivateRegistryCredentials {
            username: "me".into(),
            password: Secret::new("pw"),
        });
    }
    job(&j).expect("registry credentials are taken");
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.job_preparation_command_line = Some("apt install -y unzip".into());
    assert_eq!(job(&j), Ok(()), "job preparation is honoured");
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.mount_volumes = Some(MountVolumes {
        unmanaged_file_systems: vec![UnmanagedFileSystem {
            mount_command: "mount -t nfs x:/y".into(),
            relative_mount_path: "nfs".into(),
        }],
        ..MountVolumes::default()
    });
    job(&j).expect("a job's own mounts are taken");
    j.spec.mount_volumes = Some(MountVolumes::default());
    job(&j).expect("no mounts is fine");
    j.spec.toolkit = Toolkit::PyTorch {
        script: PythonScript {
            python_script_file_path: "train.py".into(),
            ..PythonScript::default()
        },
        communication_backend: "Gloo".into(),
    };
    job(&j).expect("gloo reaches the script");
    for (backend, want) in [
        (
            "mpi",
            "job.py_torch_settings.communication_backend: is not supported yet",
        ),
        (
            "smoke",
            "job.py_torch_settings.communication_backend: must be one of",
        ),
    ] {
        if let Toolkit::PyTorch {
            communication_backend,
            ..
        } = &mut j.spec.toolkit
        {
            *communication_backend = backend.into();
        }
        assert!(err_of(&j).starts_with(want), "{backend}: {}", err_of(&j));
    }

    j.spec.toolkit = Toolkit::TensorFlow {
        script: PythonScript {
            python_script_file_path: "train.py".into(),
            ..PythonScript::default()
        },
        master_command_line_args: "--m".into(),
        worker_command_line_args: "--w".into(),
        parameter_server_command_line_args: String::new(),
        worker_count: 0,
        parameter_server_count: 0,
    };
    // One node, one worker: the worker's and ps's args would run nowhere.
    assert!(
        err_of(&j).starts_with("job.tensor_flow_settings.worker_command_line_args: runs no task"),
        "{}",
        err_of(&j)
    );
    j.spec.node_count = 2;
    job(&j).expect("two nodes: worker 1 runs the worker args");

    let mut c = valid_cluster("c", 1);
    c.spec.node_setup = Some(NodeSetup {
        setup_task: None,
        mount_volumes: None,
        app_insights: Some(AppInsightsReference {
            component_id: "/x".into(),
            instrumentation_key: Secret::new("k"),
        }),
    });
    assert_eq!(
        unsupported(cluster(&c)),
        "cluster.node_setup.performance_counters_settings"
    );
}

fn key_line(kind: &str) -> String {
    // An SSH string of the type name, then some key bytes, in base64.
    let mut blob = (kind.len() as u32).to_be_bytes().to_vec();
    blob.extend_from_slice(kind.as_bytes());
    blob.extend_from_slice(&[0, 0, 0, 1, 35, 0, 0, 0, 2, 1, 1]);
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in blob.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(table[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("{kind} {out} me@laptop")
}

#[test]
fn node_setup_rules() {
    let err = |c: &Cluster| cluster(c).unwrap_err().to_string();
    let user = |name: &str, key: &str, pw: &str| {
        let mut c = valid_cluster("c", 1);
        c.spec.user_account = Some(UserAccountSettings {
            admin_user_name: name.into(),
            admin_user_ssh_public_key: key.into(),
            admin_user_password: Secret::new(pw),
        });
        c
    };
    cluster(&fixtures::cluster("w", "c", 1)).expect("a user with a password");
    cluster(&user("admin", &key_line("ssh-rsa"), "")).expect("a user with a key");
    cluster(&user("_svc-1", &key_line("ssh-ed25519"), "pw")).expect("both");
    assert_eq!(
        err(&user("Admin", "", "pw")),
        "cluster.user_account_settings.admin_user_name: must be a Linux user name: 1-32 of a-z, \
         0-9, '_' or '-', starting with a letter or '_'"
    );
    assert_eq!(
        err(&user("root", "", "pw")),
        "cluster.user_account_settings.admin_user_name: root is a system account"
    );
    assert_eq!(
        err(&user("", "", "pw")),
        "cluster.user_account_settings.admin_user_name: is required"
    );
    assert_eq!(
        err(&user("admin", "", "")),
        "cluster.user_account_settings.admin_user_ssh_public_key: an ssh public key or \
         admin_user_password is required"
    );
    for bad in [
        "ssh-rsa".to_string(),
        "ssh-dss AAAAB3NzaC1kc3MAAAA=".to_string(),
        "ssh-rsa not*base64".to_string(),
        key_line("ssh-ed25519").replace("ssh-ed25519 ", "ssh-rsa "),
        format!("{}\n{}", key_line("ssh-rsa"), key_line("ssh-rsa")),
    ] {
        let e = cluster(&user("admin", &bad, "")).unwrap_err();
        assert_eq!(
            e.field, "cluster.user_account_settings.admin_user_ssh_public_key",
            "{bad}"
        );
        assert!(e.rule.starts_with("must be an OpenSSH public key"), "{e}");
    }
    let e = cluster(&user("admin", "", "hunter2\nroot:x")).unwrap_err();
    assert_eq!(e.field, "cluster.user_account_settings.admin_user_password");
    assert!(!e.to_string().contains("hunter2"));

    let task = |prefix: &str| {
        let mut c = valid_cluster("c", 1);
        c.spec.node_setup = Some(NodeSetup {
            setup_task: Some(SetupTask {
                command_line: "apt install -y unzip".into(),
                environment_variables: vec![],
                secrets: vec![],
                std_out_err_path_prefix: prefix.into(),
            }),
            mount_volumes: None,
            app_insights: None,
        });
        c
    };
    cluster(&task("$AZ_BATCHAI_MOUNT_ROOT/afs")).expect("on a mount");
    cluster(&task("/var/log/setup")).expect("absolute");
    assert_eq!(
        err(&task("")),
        "cluster.node_setup.setup_task.std_out_err_path_prefix: is required"
    );
    for bad in ["logs", "$HOME/x", "$AZ_BATCHAI_MOUNT_ROOT/../etc"] {
        assert_eq!(
            cluster(&task(bad)).unwrap_err().field,
            "cluster.node_setup.setup_task.std_out_err_path_prefix",
            "{bad}"
        );
    }

    let mounts = |m: MountVolumes| {
        let mut c = valid_cluster("c", 1);
        c.spec.node_setup = Some(NodeSetup {
            setup_task: None,
            mount_volumes: Some(m),
            app_insights: None,
        });
        cluster(&c).map_err(|e| e.to_string())
    };
    let key = StorageCredentials {
        account_key: Secret::new("k=="),
    };
    let share = |account: &str, url: &str, path: &str, mode: &str| AzureFileShare {
        account_name: account.into(),
        azure_file_url: url.into(),
        credentials: key.clone(),
        relative_mount_path: path.into(),
        file_mode: mode.into(),
        directory_mode: "0777".into(),
    };
    let url = "https://acct.file.core.windows.net/data";
    let blob = |account: &str, container: &str, path: &str| AzureBlobFileSystem {
        account_name: account.into(),
        container_name: container.into(),
        credentials: key.clone(),
        relative_mount_path: path.into(),
        mount_options: String::new(),
    };
    let ok = MountVolumes {
        azure_file_shares: vec![share("acct", url, "afs", "0777")],
        azure_blob_file_systems: vec![blob("acct", "my-container", "bfs")],
        file_servers: vec![FileServerMount {
            file_server_id: "10.0.0.4".into(),
            source_directory: "/export".into(),
            relative_mount_path: "nfs".into(),
            mount_options: "rw,hard".into(),
        }],
        unmanaged_file_systems: vec![UnmanagedFileSystem {
            mount_command: "mount --bind /srv/data".into(),
            relative_mount_path: "data".into(),
        }],
        use_auto_storage: false,
    };
    mounts(ok.clone()).expect("the seed's mounts");
    mounts(MountVolumes {
        use_auto_storage: true,
        ..ok.clone()
    })
    .expect("the seed's mounts beside the auto-storage ones");
    let mut own = ok.clone();
    own.azure_file_shares[0].relative_mount_path = "autoafs".into();
    mounts(own).expect("autoafs is the request's own without use_auto_storage");
    let f = "cluster.node_setup.mount_volumes";
    let cases: Vec<(MountVolumes, String)> = vec![
        (
            MountVolumes {
                azure_file_shares: vec![share("Bad_Name", url, "afs", "0777")],
                ..MountVolumes::default()
            },
            format!("{f}.azure_file_shares[0].account_name"),
        ),
        (
            MountVolumes {
                azure_file_shares: vec![share("acct", "ftp://x/y", "afs", "0777")],
                ..MountVolumes::default()
            },
            format!("{f}.azure_file_shares[0].azure_file_url"),
        ),
        (
            MountVolumes {
                azure_file_shares: vec![share("acct", url, "/abs", "0777")],
                ..MountVolumes::default()
            },
            format!("{f}.azure_file_shares[0].relative_mount_path"),
        ),
        (
            MountVolumes {
                azure_file_shares: vec![share("acct", url, "afs", "rwx")],
                ..MountVolumes::default()
            },
            format!("{f}.azure_file_shares[0].file_mode"),
        ),
        (
            MountVolumes {
                azure_blob_file_systems: vec![blob("acct", "Bad--name", "bfs")],
                ..MountVolumes::default()
            },
            format!("{f}.azure_blob_file_systems[0].container_name"),
        ),
        (
            MountVolumes {
                azure_blob_file_systems: vec![blob("acct", "box", "a/../b")],
                ..MountVolumes::default()
            },
            format!("{f}.azure_blob_file_systems[0].relative_mount_path"),
        ),
        (
            MountVolumes {
                file_servers: vec![FileServerMount {
                    file_server_id: "/subscriptions/x/fileservers/y".into(),
                    source_directory: String::new(),
                    relative_mount_path: "nfs".into(),
                    mount_options: String::new(),
                }],
                ..MountVolumes::default()
            },
            format!("{f}.file_servers[0].file_server.id"),
        ),
        (
            MountVolumes {
                azure_file_shares: vec![share("acct", url, "x", "0777")],
                azure_blob_file_systems: vec![blob("acct", "box", "x")],
                ..MountVolumes::default()
            },
            format!("{f}.azure_blob_file_systems[0].relative_mount_path"),
        ),
        (
            MountVolumes {
                azure_file_shares: vec![share("acct", url, "autoafs", "0777")],
                use_auto_storage: true,
                ..MountVolumes::default()
            },
            format!("{f}.azure_file_shares[0].relative_mount_path"),
        ),
        (
            MountVolumes {
                unmanaged_file_systems: vec![UnmanagedFileSystem {
                    mount_command: "mount --bind /srv".into(),
                    relative_mount_path: "autobfs/inside".into(),
                }],
                use_auto_storage: true,
                ..MountVolumes::default()
            },
            format!("{f}.unmanaged_file_systems[0].relative_mount_path"),
        ),
    ];
    for (m, field) in cases {
        let e = mounts(m).unwrap_err();
        assert!(e.starts_with(&format!("{field}: ")), "{field}: {e}");
        assert!(!e.contains("k=="), "{e}");
    }
}

#[test]
fn gpus_per_node_fits_the_largest_node_of_the_cluster() {
    let mut j = fixtures::job("w", "e", "j", "c");
    j.spec.gpus_per_node = 3;
    assert!(gpus_per_node(&j, &[]).is_ok(), "no node known yet");
    let with = |id: &str, n: u32| {
        let mut node = fixtures::node(id, "w", "c", crate::domain::NodeState::Idle);
        node.info.gpus = (0..n)
            .map(|i| crate::domain::gpus::Gpu {
                index: i,
                uuid: format!("{id}-{i}"),
                ..Default::default()
            })
            .collect();
        node
    };
    let nodes = [with("small", 1), with("big", 2)];
    let e = gpus_per_node(&j, &nodes).unwrap_err().to_string();
    assert_eq!(
        e,
        "job.gpus_per_node: must be at most 2: the largest node of cluster w/c (big) has 2 GPUs"
    );
    j.spec.gpus_per_node = 2;
    assert!(gpus_per_node(&j, &nodes).is_ok());
    j.spec.gpus_per_node = 0;
    assert!(gpus_per_node(&j, &[with("cpu", 0)]).is_ok(), "whole node");
}
