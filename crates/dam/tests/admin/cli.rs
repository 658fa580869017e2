//! The `dam` command line, end to end: the real binary against an in-process dam.

use std::process::Stdio;
use std::time::Duration;

use protocol::dead_letter::DeadLetter;
use protocol::{Lane, unix_time_ms};
use redis::AsyncCommands;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::support::{ADMIN_TOKEN, AdminTestApp, chat_envelope, dam_only};

#[derive(Debug)]
struct CliRun {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `dam` with `arguments`, only the environment given (no inherited admin URL or token), and `stdin`.
async fn run_dam_with(arguments: &[&str], environment: &[(&str, &str)], stdin: &str) -> CliRun {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dam"))
        .args(arguments)
        .env_remove("DAM_DAM__ADMIN_TOKEN")
        .env_remove("TRAFFIC_DAM_ADMIN_URL")
        .envs(environment.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the dam binary starts");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.expect("write stdin");
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the command ends within 30 s")
        .expect("output");
    CliRun {
        code: output.status.code().expect("an exit code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `dam --url <this dam> --token <its token> <arguments>`.
async fn run_dam(app: &AdminTestApp, arguments: &[&str]) -> CliRun {
    let url = app.dam_url();
    let mut all = vec!["--url", url.as_str(), "--token", ADMIN_TOKEN];
    all.extend_from_slice(arguments);
    run_dam_with(&all, &[], "").await
}

#[tokio::test]
async fn dam_status_prints_a_readable_table_and_json_for_scripts() {
    let app = AdminTestApp::start(dam_only()).await;
    let waiting = chat_envelope("waiting", Lane::Standard, 2_000);
    let _: () = app
        .redis()
        .await
        .rpush(app.keys().lane_queue(Lane::Standard), waiting.encode())
        .await
        .expect("rpush");

    let table = run_dam(&app, &["status"]).await;

    assert_eq!(table.code, 0, "{table:?}");
    for expected in
        ["Intake", "open", "Circuit breaker", "closed", "LANE", "DEPTH", "OLDEST WAIT", "standard", "LIMITS"]
    {
        assert!(table.stdout.contains(expected), "{expected:?} missing from:\n{}", table.stdout);
    }
    let standard_row =
        table.stdout.lines().find(|line| line.starts_with("standard")).expect("a standard lane row");
    assert!(standard_row.split_whitespace().nth(1) == Some("1"), "{standard_row}");

    let json = run_dam(&app, &["status", "--json"]).await;
    assert_eq!(json.code, 0, "{json:?}");
    let report: Value = serde_json::from_str(&json.stdout).expect("--json prints JSON");
    assert_eq!(report["lanes"][1]["depth"], 1);
}

#[tokio::test]
async fn dam_limits_set_changes_the_live_limits_and_a_refusal_names_the_field() {
    let app = AdminTestApp::start(dam_only()).await;

    let set = run_dam(&app, &["limits", "set", "tiers.premium.burst=9", "max_queue_depth=2000"]).await;
    assert_eq!(set.code, 0, "{set:?}");
    assert!(set.stdout.contains("tiers.premium.burst"), "{}", set.stdout);
    let from_json = run_dam(&app, &["limits", "set", "--json", r#"{"standard_weight": 2}"#]).await;
    assert_eq!(from_json.code, 0, "{from_json:?}");

    let (_, limits) = app.get("/admin/limits").await;
    assert_eq!(limits["source"], "live");
    assert_eq!(limits["limits"]["tiers"]["premium"]["burst"], 9);
    assert_eq!(limits["limits"]["max_queue_depth"], 2000);
    assert_eq!(limits["limits"]["standard_weight"], 2);
    let got = run_dam(&app, &["limits", "get", "--json"]).await;
    assert_eq!(serde_json::from_str::<Value>(&got.stdout).expect("json"), limits);

    let refused = run_dam(&app, &["limits", "set", "tiers.premium.burst=0"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("invalid_limits") && refused.stderr.contains("tiers.premium.burst"),
        "{}",
        refused.stderr
    );
    let nothing = run_dam(&app, &["limits", "set"]).await;
    assert_eq!(nothing.code, 2, "{nothing:?}");
    assert!(nothing.stderr.contains("nothing to set"), "{}", nothing.stderr);
}

#[tokio::test]
async fn a_wrong_or_missing_token_gives_a_clear_error_and_exit_code_4() {
    let app = AdminTestApp::start(dam_only()).await;
    let url = app.dam_url();
    for arguments in
        [vec!["--url", url.as_str(), "--token", "wrong", "status"], vec!["--url", url.as_str(), "status"]]
    {
        let run = run_dam_with(&arguments, &[], "").await;
        assert_eq!(run.code, 4, "{run:?}");
        assert!(run.stderr.contains("token") && run.stderr.contains("missing or wrong"), "{}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}

#[tokio::test]
async fn an_unreachable_dam_is_named_in_the_error_and_exits_3() {
    let url = format!("http://127.0.0.1:{}", test_support::free_loopback_port());
    let run = run_dam_with(&["--url", &url, "--token", "t", "status"], &[], "").await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains(&url) && run.stderr.contains("cannot reach"), "{}", run.stderr);
    let nonsense = run_dam_with(&["--url", "not a url", "status"], &[], "").await;
    assert_eq!(nonsense.code, 2, "{nonsense:?}");
}

#[tokio::test]
async fn the_url_and_token_can_come_from_the_environment() {
    let app = AdminTestApp::start(dam_only()).await;
    let url = app.dam_url();
    let run = run_dam_with(
        &["intake", "pause"],
        &[("TRAFFIC_DAM_ADMIN_URL", &url), ("DAM_DAM__ADMIN_TOKEN", ADMIN_TOKEN)],
        "",
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Intake paused"), "{}", run.stdout);
    let resumed = run_dam(&app, &["intake", "resume"]).await;
    assert!(resumed.stdout.contains("Intake open"), "{resumed:?}");
}

#[tokio::test]
async fn dlq_commands_list_preview_replay_and_report_unknown_ids() {
    let app = AdminTestApp::start(dam_only()).await;
    let envelope = chat_envelope("from the cli", Lane::Premium, 1_000);
    let letter = DeadLetter {
        job_id: Some(envelope.id),
        reason: "poison_job".to_owned(),
        last_error: "boom".to_owned(),
        attempts: 3,
        worker_id: "w1".to_owned(),
        dead_at_ms: unix_time_ms(),
        raw_envelope: envelope.encode(),
    };
    let _: () = app.redis().await.rpush(app.keys().dead_letters(), letter.encode()).await.expect("rpush");
    let id = envelope.id.to_string();

    let list = run_dam(&app, &["dlq", "list"]).await;
    assert!(list.code == 0 && list.stdout.contains(&id) && list.stdout.contains("poison_job"), "{list:?}");
    let preview = run_dam(&app, &["dlq", "replay", "--all", "--dry-run"]).await;
    assert!(
        preview.stdout.contains("Would replay 1") && preview.stdout.contains("nothing was changed"),
        "{preview:?}"
    );
    let replay = run_dam(&app, &["dlq", "replay", &id]).await;
    assert!(
        replay.code == 0 && replay.stdout.contains("Replayed") && replay.stdout.contains("premium"),
        "{replay:?}"
    );
    let queued: u64 = app.redis().await.llen(app.keys().lane_queue(Lane::Premium)).await.expect("llen");
    assert_eq!(queued, 1);
    let gone = run_dam(&app, &["dlq", "drop", &id]).await;
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.contains("dead_letter_not_found"), "{}", gone.stderr);
}

#[tokio::test]
async fn keys_and_block_commands_manage_keys_and_blocks_without_showing_keys() {
    let app = AdminTestApp::start(dam_only()).await;
    let api_key = "sk-cli-test-0123456789";

    let put =
        run_dam(&app, &["keys", "put", api_key, "--tier", "premium", "--burst", "5", "--name", "cli-user"])
            .await;
    assert!(put.code == 0 && put.stdout.contains("Created API key key:"), "{put:?}");
    let list = run_dam(&app, &["keys", "list"]).await;
    assert!(list.stdout.contains("cli-user") && list.stdout.contains("premium"), "{list:?}");
    assert!(!list.stdout.contains(api_key) && !put.stdout.contains(api_key), "keys never printed");
    let refused = run_dam(&app, &["keys", "put", "sk-cli-new-key-000000", "--rate", "2"]).await;
    assert!(refused.code == 1 && refused.stderr.contains("tier"), "{refused:?}");
    let delete = run_dam_with(
        &["--url", &app.dam_url(), "--token", ADMIN_TOKEN, "keys", "delete", "-"],
        &[],
        &format!("{api_key}\n"),
    )
    .await;
    assert!(delete.code == 0 && delete.stdout.contains("Deleted API key"), "{delete:?}");

    let add =
        run_dam(&app, &["block", "add", "ip:198.51.100.4", "--ttl-s", "600", "--reason", "scraping"]).await;
    assert!(add.code == 0 && add.stdout.contains("Blocked ip:198.51.100.4"), "{add:?}");
    let blocks = run_dam(&app, &["block", "list"]).await;
    assert!(blocks.stdout.contains("ip:198.51.100.4") && blocks.stdout.contains("scraping"), "{blocks:?}");
    let invalid = run_dam(&app, &["block", "add", "198.51.100.4", "--ttl-s", "60", "--reason", "x"]).await;
    assert!(invalid.code == 1 && invalid.stderr.contains("invalid_identity"), "{invalid:?}");
    let remove = run_dam(&app, &["block", "remove", "ip:198.51.100.4"]).await;
    assert!(remove.code == 0 && remove.stdout.contains("Unblocked"), "{remove:?}");
    assert!(run_dam(&app, &["block", "list"]).await.stdout.contains("No blocks"));
}

#[tokio::test]
async fn dam_settings_prints_what_the_services_would_load_and_refuses_a_bad_setting() {
    let printed = run_dam_with(
        &["settings"],
        &[("DAM_LIMITS__MAX_OPEN_STREAMS", "123"), ("DAM_LLM__API_KEY", "sk-never-shown")],
        "",
    )
    .await;
    assert_eq!(printed.code, 0, "{printed:?}");
    let settings: Value = serde_json::from_str(&printed.stdout).expect("the settings as JSON");
    assert_eq!(settings["limits"]["max_open_streams"], 123, "a DAM_ variable wins: {settings}");
    assert_eq!(settings["gateway"]["max_body_bytes"], 256 * 1024, "the built-in default: {settings}");
    assert!(!printed.stdout.contains("sk-never-shown"), "a secret is printed: {}", printed.stdout);

    let refused = run_dam_with(&["settings"], &[("DAM_LIMITS__MAX_OPEN_STREAMS", "many")], "").await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("max_open_streams"), "the refusal names the setting: {}", refused.stderr);
    assert!(refused.stdout.is_empty(), "nothing printed for scripts to misread: {}", refused.stdout);
}
