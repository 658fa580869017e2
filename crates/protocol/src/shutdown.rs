//! How every service binary ends: the shutdown signal it waits for (SIGINT, i.e. Ctrl-C, or SIGTERM from
//! orchestrators and `make run`), and its exit status with a readable last word, causes included, when it failed.

/// Completes on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// The process's exit status; a failure is printed with its causes, the line an operator reads.
pub fn exit_code<E: std::error::Error>(outcome: Result<(), E>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_with_causes(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its chain of sources on one line, `what failed: why: why that`. A cause whose text the line
/// already holds is skipped, for errors that spell their source out in their own message.
pub fn error_with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        let text = source.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = source.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("could not start")]
        Wrapped(#[source] Middle),
        #[error("invalid settings: {0}")]
        SpelledOut(#[source] std::io::Error),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:80")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_cause_is_on_the_line_once() {
        let denied = || std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        assert_eq!(
            error_with_causes(&Outer::Wrapped(Middle(denied()))),
            "could not start: cannot listen on 127.0.0.1:80: permission denied"
        );
        assert_eq!(error_with_causes(&Outer::SpelledOut(denied())), "invalid settings: permission denied");
    }
}
