//! A hook and every process it starts, stopped together.
//!
//! Unix: the hook leads its own process group (`process_group(0)` before the
//! spawn) and the group is sent SIGKILL. Windows: the hook is put in a job
//! object that kills its members when its last handle closes; stopping the
//! tree terminates the job. A process the hook started before it was put in
//! the job (the first instant of its life) is the one gap.

use tokio::process::{Child, Command};

/// Prepare `cmd` so that what it starts can be stopped as one tree.
pub(super) fn prepare(cmd: &mut Command) {
    #[cfg(unix)]
    cmd.process_group(0);
    #[cfg(not(unix))]
    let _ = cmd;
}

/// The started hook's tree; dropping it on Windows kills what is left of it.
pub(super) struct ProcessTree {
    #[cfg(windows)]
    job: Option<windows::Job>,
}

impl ProcessTree {
    /// Take charge of `child`'s tree. On Windows a job object that cannot be
    /// made (a hook already in a job that forbids nesting) leaves only the
    /// child itself to be killed; that is logged, not an error.
    pub(super) fn adopt(child: &Child) -> ProcessTree {
        #[cfg(windows)]
        {
            let job = child.raw_handle().and_then(|h| match windows::Job::holding(h) {
                Ok(job) => Some(job),
                Err(e) => {
                    tracing::warn!("hook process tree: no job object ({e}); only the hook itself can be stopped");
                    None
                }
            });
            ProcessTree { job }
        }
        #[cfg(not(windows))]
        {
            let _ = child;
            ProcessTree {}
        }
    }

    /// Kill the hook and everything it started, then reap it.
    pub(super) async fn kill(self, child: &mut Child) {
        #[cfg(unix)]
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) has no memory effects. The child was started with
            // process_group(0), so its pid is its group id, and it has not been
            // reaped yet (we hold it), so the id cannot have been reused.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        #[cfg(windows)]
        if let Some(job) = &self.job {
            job.terminate();
        }
        let _ = child.kill().await;
    }
}

#[cfg(windows)]
mod windows {
    use std::os::windows::io::RawHandle;

    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation, SetInformationJobObject,
        TerminateJobObject,
    };

    /// An owned job object handle that kills its processes when closed.
    pub(super) struct Job(HANDLE);

    // SAFETY: a job handle is a kernel handle usable from any thread.
    unsafe impl Send for Job {}
    unsafe impl Sync for Job {}

    impl Job {
        /// A new kill-on-close job holding the process behind `process`.
        pub(super) fn holding(process: RawHandle) -> std::io::Result<Job> {
            // SAFETY: null attributes and name make an unnamed job with default
            // security; the handle is checked before use and owned by `Job`.
            let handle = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
            if handle.is_null() {
                return Err(std::io::Error::last_os_error());
            }
            let job = Job(handle);
            // SAFETY: an all-zero JOBOBJECT_EXTENDED_LIMIT_INFORMATION is valid
            // (no limits); the pointer and size describe that local value.
            let ok = unsafe {
                let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
                info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
                SetInformationJobObject(
                    job.0,
                    JobObjectExtendedLimitInformation,
                    (&raw const info).cast(),
                    u32::try_from(std::mem::size_of_val(&info)).unwrap_or(u32::MAX),
                )
            };
            if ok == 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: both handles are open: the job is ours, the process
            // handle belongs to a child that has not been reaped.
            if unsafe { AssignProcessToJobObject(job.0, process as HANDLE) } == 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(job)
        }

        /// Terminate every process in the job.
        pub(super) fn terminate(&self) {
            // SAFETY: the handle is open for as long as `self` lives.
            unsafe {
                TerminateJobObject(self.0, 1);
            }
        }
    }

    impl Drop for Job {
        fn drop(&mut self) {
            // SAFETY: the handle is owned and closed once; closing it kills
            // what is left in the job (KILL_ON_JOB_CLOSE).
            unsafe {
                CloseHandle(self.0);
            }
        }
    }
}
