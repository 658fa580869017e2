//! How each service binary builds its tokio runtime: the number of runtime threads is a setting, so several
//! processes on a small machine do not each start one thread per core and spend their CPU switching between them.
//! One thread means tokio's current-thread runtime, which has no work stealing and no cross-thread wake-ups.

use std::io;

/// Builds the runtime with `threads` worker threads; 0 means one per available core, 1 a current-thread runtime.
pub fn build_service_runtime(threads: usize) -> io::Result<tokio::runtime::Runtime> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        threads => threads,
    };
    if threads == 1 {
        return tokio::runtime::Builder::new_current_thread().enable_all().build();
    }
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_means_one_per_core_and_one_means_a_current_thread_runtime() {
        let one = build_service_runtime(1).expect("runtime");
        assert_eq!(one.metrics().num_workers(), 1);
        assert_eq!(one.handle().runtime_flavor(), tokio::runtime::RuntimeFlavor::CurrentThread);
        let per_core = build_service_runtime(0).expect("runtime");
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        assert_eq!(per_core.metrics().num_workers(), cores);
        let three = build_service_runtime(3).expect("runtime");
        assert_eq!(three.metrics().num_workers(), 3);
        assert_eq!(three.handle().runtime_flavor(), tokio::runtime::RuntimeFlavor::MultiThread);
    }
}
