//! The process's open-file limit (`RLIMIT_NOFILE`): every connection holds one descriptor,
//! so under the common soft limit of 1,024 a server tops out near 1,000 clients whatever its
//! `ServerConfig::max_connections` says. [`raise_fd_limit`] lifts the soft limit to the hard
//! one, which needs no privilege.

/// The open-file limit before and after [`raise_fd_limit`].
///
/// Unlimited values are `u64::MAX` in `before` and `after`, and `None` in `hard`. Where the
/// system has no such limit (not Unix), all three say unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit found at the call.
    pub before: u64,
    /// The soft limit after the call: `before` when it was already at its target.
    pub after: u64,
    /// The hard limit (`None`: unlimited), which the call leaves as it was.
    pub hard: Option<u64>,
}

impl FdLimit {
    /// Whether the call raised the soft limit.
    pub fn raised(&self) -> bool {
        self.after > self.before
    }

    /// [`raise_fd_limit`], logged: at info the limit the process now has, and a warning when
    /// raising it failed or when it stays below `max_connections` (the server's
    /// `ServerConfig::max_connections`). Never fails: `None` when the limit is unknown.
    pub fn raise_and_log(max_connections: usize) -> Option<FdLimit> {
        let limit = match raise_fd_limit() {
            Ok(limit) => limit,
            Err(error) => {
                tracing::warn!(%error, "could not raise the open-file limit");
                return None;
            }
        };
        if limit.raised() {
            tracing::info!(
                "open-file limit raised from {} to {}",
                limit.before,
                limit.after
            );
        } else if limit.after == u64::MAX {
            tracing::info!("open-file limit is unlimited");
        } else {
            tracing::info!("open-file limit is {}", limit.after);
        }
        let max = u64::try_from(max_connections).unwrap_or(u64::MAX);
        if limit.after < max {
            tracing::warn!(
                "open-file limit {} is below max connections {max}: each connection uses one \
                 descriptor, so fewer than {} clients can connect (raise the hard limit, e.g. \
                 `ulimit -Hn` or systemd's LimitNOFILE)",
                limit.after,
                limit.after
            );
        }
        Some(limit)
    }
}

/// The soft limit aimed at when the hard limit is unlimited and the system says no better
/// (Linux's default `fs.nr_open`).
#[cfg(unix)]
const UNLIMITED_TARGET: u64 = 1 << 20;

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard limit.
///
/// An unlimited hard limit is capped: on Linux to `fs.nr_open` (the most the kernel lets a
/// process open), elsewhere to 1,048,576 (on macOS, to `OPEN_MAX` if the kernel refuses
/// that). A soft limit already at or above the target is left alone. On systems without
/// such limits (not Unix) this does nothing.
///
/// # Errors
///
/// The system's error when it refuses the new limit. Callers should log it and go on: the
/// server works, with fewer connections (see [`FdLimit::raise_and_log`]).
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    imp::raise()
}

#[cfg(unix)]
mod imp {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    use super::{FdLimit, UNLIMITED_TARGET};

    pub(super) fn raise() -> std::io::Result<FdLimit> {
        let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
        let before = current.unwrap_or(u64::MAX);
        let target = maximum.unwrap_or_else(unlimited_target);
        if before >= target {
            return Ok(FdLimit {
                before,
                after: before,
                hard: maximum,
            });
        }
        if let Err(error) = set_soft(target, maximum) {
            retry_below_open_max(target, maximum, error)?;
        }
        let after = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        Ok(FdLimit {
            before,
            after,
            hard: maximum,
        })
    }

    fn set_soft(soft: u64, hard: Option<u64>) -> rustix::io::Result<()> {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(soft),
                maximum: hard,
            },
        )
    }

    /// The target under an unlimited hard limit.
    pub(super) fn unlimited_target() -> u64 {
        #[cfg(target_os = "linux")]
        if let Some(nr_open) = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            return nr_open;
        }
        UNLIMITED_TARGET
    }

    /// macOS refuses a soft limit above `OPEN_MAX` (10,240) on some versions, even under a
    /// higher hard limit.
    #[cfg(target_vendor = "apple")]
    fn retry_below_open_max(
        target: u64,
        hard: Option<u64>,
        error: rustix::io::Errno,
    ) -> std::io::Result<()> {
        const OPEN_MAX: u64 = 10_240;
        if error == rustix::io::Errno::INVAL && target > OPEN_MAX {
            set_soft(OPEN_MAX, hard)?;
            return Ok(());
        }
        Err(error.into())
    }

    #[cfg(not(target_vendor = "apple"))]
    fn retry_below_open_max(
        _target: u64,
        _hard: Option<u64>,
        error: rustix::io::Errno,
    ) -> std::io::Result<()> {
        Err(error.into())
    }
}

#[cfg(not(unix))]
mod imp {
    use super::FdLimit;

    pub(super) fn raise() -> std::io::Result<FdLimit> {
        Ok(FdLimit {
            before: u64::MAX,
            after: u64::MAX,
            hard: None,
        })
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// The soft limit the test process should have once raised.
    fn expected(limit: &FdLimit) -> u64 {
        limit.hard.unwrap_or_else(imp::unlimited_target)
    }

    #[test]
    fn fd_limit_reaches_the_hard_limit_and_stays() {
        let first = raise_fd_limit().expect("raising to the hard limit needs no privilege");
        assert!(first.after >= expected(&first), "{first:?}");
        assert!(first.after >= first.before, "{first:?}");
        let second = raise_fd_limit().unwrap();
        assert_eq!(second.before, first.after, "{second:?}");
        assert_eq!(
            second.after, second.before,
            "nothing left to raise: {second:?}"
        );
        assert!(!second.raised());
        assert_eq!(second.hard, first.hard);
    }

    /// Set in the child process of [`fd_limit_raises_a_lowered_soft_limit`].
    const CHILD: &str = "PARTYROOM_FD_LIMIT_TEST_CHILD";

    /// The soft limit is lowered in a child process (this test binary again, running only
    /// this test), not here, where other tests hold descriptors.
    #[test]
    fn fd_limit_raises_a_lowered_soft_limit() {
        if std::env::var_os(CHILD).is_some() {
            let before = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            assert_eq!(
                before.current,
                Some(256),
                "the parent lowered the soft limit"
            );
            let limit = raise_fd_limit().unwrap();
            assert_eq!(limit.before, 256);
            assert!(limit.raised(), "{limit:?}");
            assert_eq!(limit.after, expected(&limit), "{limit:?}");
            let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            assert_eq!(now.current, Some(limit.after));
            assert_eq!(now.maximum, before.maximum, "the hard limit is untouched");
            return;
        }
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        if hard.is_some_and(|h| h <= 256) {
            eprintln!("hard open-file limit {hard:?}: nothing to raise, skipped");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new("sh")
            .args(["-c", r#"ulimit -S -n 256 && exec "$0" "$@""#])
            .arg(exe)
            .args([
                "--exact",
                "fd_limit::tests::fd_limit_raises_a_lowered_soft_limit",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("1 passed"),
            "the child ran the test: {stdout}"
        );
    }
}
