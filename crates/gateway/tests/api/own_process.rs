//! Runs one ignored test of this binary in a process of its own. The metrics registry is one per process and
//! every test of this binary runs gateways in it, so a test that counts metrics exactly runs its requests there.

use std::time::Duration;

/// Set in the child process, where the ignored test does its work; elsewhere that test returns at once.
const OWN_PROCESS: &str = "DAM_TEST_IN_A_PROCESS_OF_ITS_OWN";

/// True inside the child process [`run_in_a_process_of_its_own`] started.
pub fn in_a_process_of_its_own() -> bool {
    std::env::var_os(OWN_PROCESS).is_some()
}

/// Runs the ignored test `test_path` (`module::name`) alone in this test binary started again, and fails with its
/// output unless it passed.
pub async fn run_in_a_process_of_its_own(test_path: &str) {
    let child = tokio::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test_path, "--ignored", "--nocapture"])
        .env(OWN_PROCESS, "1")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("the child test ends")
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test_path} failed in its own process:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
