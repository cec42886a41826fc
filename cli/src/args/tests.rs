//! Command-line parsing tests (`try_parse_from`).

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use super::*;

fn parse(argv: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("bai").chain(argv.iter().copied()))
}

#[test]
fn global_flags_work_anywhere() {
    let cli = parse(&[
        "job",
        "list",
        "-w",
        "w",
        "-e",
        "e",
        "-o",
        "table",
        "--coordinator",
        "h:1",
        "--verbose",
    ])
    .unwrap();
    assert_eq!(cli.output, OutputFormat::Table);
    assert_eq!(cli.coordinator, "h:1");
    assert!(cli.verbose);
    let Command::Job(JobCmd::List(e)) = cli.command else {
        panic!("not job list")
    };
    assert_eq!(
        (e.workspace.workspace.as_str(), e.experiment.as_str()),
        ("w", "e")
    );
}

#[test]
fn output_defaults_to_json_and_rejects_unknown_formats() {
    assert_eq!(
        parse(&["workspace", "list"]).unwrap().output,
        OutputFormat::Json
    );
    assert_eq!(
        parse(&["workspace", "list", "-o", "yaml"])
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidValue
    );
}

#[test]
fn workspace_create() {
    let cli = parse(&["workspace", "create", "-n", "w", "--tags", "a=1", "b=x=y"]).unwrap();
    let Command::Workspace(WorkspaceCmd::Create {
        name,
        location,
        tags,
    }) = cli.command
    else {
        panic!()
    };
    assert_eq!((name.as_str(), location.as_str()), ("w", "local"));
    assert_eq!(
        tags,
        vec![("a".into(), "1".into()), ("b".into(), "x=y".into())]
    );
    assert!(parse(&["workspace", "create", "-n", "w", "--tags", "novalue"]).is_err());
}

#[test]
fn job_create_flags() {
    let cli = parse(&[
        "job",
        "create",
        "-w",
        "w",
        "-e",
        "e",
        "-n",
        "j",
        "-c",
        "c1",
        "--command-line",
        "echo hi",
        "--node-count",
        "2",
        "--env",
        "A=1",
        "--env",
        "B=2",
        "--secret-env",
        "TOKEN",
        "-f",
        "job.json",
    ])
    .unwrap();
    let Command::Job(JobCmd::Create(a)) = cli.command else {
        panic!()
    };
    assert_eq!(a.cluster.as_deref(), Some("c1"));
    assert_eq!(a.command_line.as_deref(), Some("echo hi"));
    assert_eq!(a.node_count, Some(2));
    assert_eq!(a.env.len(), 2);
    assert_eq!(a.secret_env, vec!["TOKEN".to_string()]);
    assert_eq!(
        a.config_file.as_deref(),
        Some(std::path::Path::new("job.json"))
    );
    let e = parse(&[
        "job",
        "create",
        "-w",
        "w",
        "-e",
        "e",
        "-n",
        "j",
        "--node-count",
        "0",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
}

#[test]
fn there_is_no_secret_value_flag() {
    let e = parse(&[
        "job", "create", "-w", "w", "-e", "e", "-n", "j", "--secret", "A=1",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownArgument);
}

#[test]
fn cluster_create_min_max_go_together() {
    let base = ["cluster", "create", "-w", "w", "-n", "c"];
    let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
    assert!(with(&["--min", "1"]).is_err(), "--min needs --max");
    assert!(with(&["--max", "1"]).is_err(), "--max needs --min");
    assert!(with(&["--min", "1", "--max", "3", "-t", "2"]).is_ok());
    assert!(
        with(&["--setup-task", "x"]).is_err(),
        "--setup-task needs --setup-task-output"
    );
    assert!(with(&["--setup-task-output", "x"]).is_err());
    assert!(with(&["--setup-task", "x", "--setup-task-output", "/tmp"]).is_ok());
    assert!(with(&["-t", "-1"]).is_err());
    assert!(with(&["--vm-priority", "spot"]).is_err());
    assert!(with(&["-p", "pw", "--password-stdin"]).is_err());
    let Command::Cluster(ClusterCmd::Create(a)) =
        with(&["-s", "NC6", "-t", "2", "-i", "UbuntuLTS"])
            .unwrap()
            .command
    else {
        panic!()
    };
    assert_eq!(
        (a.vm_size.as_deref(), a.target, a.image.as_deref()),
        (Some("NC6"), Some(2), Some("UbuntuLTS"))
    );
}

#[test]
fn cluster_node_list_takes_c_or_n() {
    for flag in ["-c", "-n", "--cluster", "--name"] {
        let cli = parse(&["cluster", "node", "list", "-w", "w", flag, "c1"]).unwrap();
        let Command::Cluster(ClusterCmd::Node(ClusterNodeCmd::List { cluster, .. })) = cli.command
        else {
            panic!()
        };
        assert_eq!(cluster, "c1");
    }
}

#[test]
fn job_file_defaults() {
    let cli = parse(&["job", "file", "stream", "-w", "w", "-e", "e", "-j", "j"]).unwrap();
    let Command::Job(JobCmd::File(JobFileCmd::Stream {
        file_name,
        output_directory_id,
        path,
        ..
    })) = cli.command
    else {
        panic!()
    };
    assert_eq!(
        (
            file_name.as_str(),
            output_directory_id.as_str(),
            path.as_str()
        ),
        ("stdout.txt", "stdouterr", ".")
    );
    let cli = parse(&[
        "job", "file", "list", "-w", "w", "-e", "e", "-j", "j", "-d", "MODEL", "-p", "sub",
    ])
    .unwrap();
    let Command::Job(JobCmd::File(JobFileCmd::List {
        output_directory_id,
        path,
        ..
    })) = cli.command
    else {
        panic!()
    };
    assert_eq!(
        (output_directory_id.as_str(), path.as_str()),
        ("MODEL", "sub")
    );
}

#[test]
fn deletes_take_yes() {
    let cli = parse(&["job", "delete", "-w", "w", "-e", "e", "-n", "j", "-y"]).unwrap();
    let Command::Job(JobCmd::Delete { confirm, .. }) = cli.command else {
        panic!()
    };
    assert!(confirm.yes);
    let cli = parse(&["cluster", "delete", "-w", "w", "-n", "c"]).unwrap();
    let Command::Cluster(ClusterCmd::Delete { confirm, .. }) = cli.command else {
        panic!()
    };
    assert!(!confirm.yes);
}

#[test]
fn demo_defaults() {
    let Command::Demo(d) = parse(&["demo"]).unwrap().command else {
        panic!()
    };
    assert_eq!((d.target, d.node_count, d.keep), (1, 1, false));
    let Command::Demo(d) = parse(&["demo", "--keep", "-t", "3", "--command-line", "true"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(
        (d.target, d.keep, d.command_line.as_deref()),
        (3, true, Some("true"))
    );
}

#[test]
fn missing_required_flags_are_usage_errors() {
    let e = parse(&["experiment", "create", "-n", "e"]);
    // -w may come from BAI_WORKSPACE in the test environment; without it this fails.
    if std::env::var_os("BAI_WORKSPACE").is_none() {
        assert_eq!(e.unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    }
    assert_eq!(
        parse(&[]).unwrap_err().kind(),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
}

#[test]
fn the_command_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn storage_admin_and_query_flags() {
    let cli = parse(&[
        "cluster",
        "create",
        "-w",
        "w",
        "-n",
        "c",
        "-t",
        "1",
        "--storage-account-name",
        "store",
        "--afs-name",
        "afsmount",
        "--bfs-name",
        "bfsmount",
        "--bfs-mount-path",
        "data",
        "--nfs-name",
        "10.0.0.4",
        "--use-auto-storage",
        "--generate-ssh-keys",
        "-u",
        "adminuser",
        "--query",
        "name",
    ])
    .unwrap();
    assert_eq!(cli.query.as_deref(), Some("name"));
    let Command::Cluster(ClusterCmd::Create(a)) = cli.command else {
        panic!()
    };
    let s = &a.storage;
    assert_eq!(s.storage_account_name.as_deref(), Some("store"));
    assert_eq!(
        (s.afs_name.as_deref(), s.afs_mount_path.as_deref()),
        (Some("afsmount"), None)
    );
    assert_eq!(s.bfs_mount_path.as_deref(), Some("data"));
    assert_eq!(s.nfs.as_deref(), Some("10.0.0.4"), "--nfs-name is --nfs");
    assert!(s.use_auto_storage && a.generate_ssh_keys);
    assert_eq!(a.user_name.as_deref(), Some("adminuser"));

    let base = ["cluster", "create", "-w", "w", "-n", "c", "-t", "1"];
    let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
    assert!(
        with(&["--afs-mount-path", "x"]).is_err(),
        "a mount path needs its volume"
    );
    assert!(with(&["--generate-ssh-keys", "-k", "ssh-rsa x"]).is_err());
    assert!(
        parse(&[
            "job",
            "create",
            "-w",
            "w",
            "-e",
            "e",
            "-n",
            "j",
            "--bfs-name",
            "b"
        ])
        .is_ok()
    );
}

#[test]
fn secrets_are_redacted_in_debug() {
    let cli = parse(&[
        "cluster",
        "create",
        "-w",
        "w",
        "-n",
        "c",
        "-p",
        "hunter2-pw",
        "--storage-account-key",
        "k3y-value",
    ])
    .unwrap();
    let debug = format!("{cli:?}");
    assert!(
        !debug.contains("hunter2-pw") && !debug.contains("k3y-value"),
        "{debug}"
    );
    assert!(debug.contains("Secret(<redacted>)"), "{debug}");
}

#[test]
fn cluster_file_node_and_job_node_commands() {
    let cli = parse(&[
        "cluster",
        "file",
        "stream",
        "-w",
        "w",
        "-c",
        "c",
        "-n",
        "n1",
        "--no-follow",
    ])
    .unwrap();
    let Command::Cluster(ClusterCmd::File(ClusterFileCmd::Stream {
        cluster,
        node,
        file_name,
        no_follow,
    })) = cli.command
    else {
        panic!()
    };
    assert_eq!(
        (
            cluster.cluster.as_str(),
            node.as_str(),
            file_name.as_str(),
            no_follow
        ),
        ("c", "n1", "stdout.txt", true)
    );
    assert!(parse(&["cluster", "file", "list", "-w", "w", "-c", "c"]).is_ok());
    let cli = parse(&[
        "cluster", "node", "exec", "-w", "w", "-c", "c", "-n", "n1", "--exec", "ls", "-L", "1:h:2",
        "-L", "3:h:4", "-k", "/key",
    ])
    .unwrap();
    let Command::Cluster(ClusterCmd::Node(ClusterNodeCmd::Exec { node, ssh, .. })) = cli.command
    else {
        panic!()
    };
    assert_eq!(node.as_deref(), Some("n1"));
    assert_eq!(ssh.forwards, ["1:h:2", "3:h:4"]);
    assert_eq!(ssh.exec.as_deref(), Some("ls"));
    let cli = parse(&["job", "node", "exec", "-w", "w", "-e", "e", "-j", "j"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Job(JobCmd::Node(JobNodeCmd::Exec { node: None, .. }))
    ));
    assert!(parse(&["job", "node", "list", "-w", "w", "-e", "e", "-j", "j"]).is_ok());
}
