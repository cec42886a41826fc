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
