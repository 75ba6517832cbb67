//! The open-file limit over a real process: the arena started under a soft `RLIMIT_NOFILE` of
//! 256 raises it to its hard limit before it listens, so connections are capped by
//! `--max-connections`, not by the 1,024 soft limit most systems start with.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Kills the arena when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The "Max open files" soft and hard limits in `/proc/<pid>/limits` (`None`: unlimited).
fn open_file_limits(pid: u32) -> (Option<u64>, Option<u64>) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-file line in {limits}"));
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse::<u64>().ok());
    (values.next().unwrap(), values.next().unwrap())
}

fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn arena_raises_a_low_soft_open_file_limit_to_the_hard_limit() {
    let (_, hard) = open_file_limits(std::process::id());
    if hard.is_some_and(|h| h <= 256) {
        eprintln!("hard open-file limit {hard:?}: nothing to raise, skipped");
        return;
    }
    // `exec` keeps the shell's pid: the child's pid is the arena's.
    let child = Command::new("sh")
        .args(["-c", r#"ulimit -S -n 256 && exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_partyroom-arena"))
        .args(["--memory", "--port", "0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("arena binary starts");
    let mut child = Killed(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut output = Vec::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the arena exited before listening: {output:#?}"))
            .unwrap();
        let listening = line.contains("listening on http://");
        output.push(line);
        if listening {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});

    let (soft, now_hard) = open_file_limits(child.0.id());
    assert_eq!(now_hard, hard, "the hard limit is left alone");
    let target = hard.unwrap_or_else(nr_open);
    assert_eq!(
        soft,
        Some(target),
        "soft limit of the arena, started at 256: {output:#?}"
    );
    assert!(
        output
            .iter()
            .any(|l| l.contains(&format!("open-file limit raised from 256 to {target}"))),
        "the raise is logged: {output:#?}"
    );
}
