//! The kernel's view of TCP sockets on the server's port: the queue lengths and socket memory
//! (`skmem`) that `ss -tmnH` (iproute2) prints, and the open file descriptors of a process
//! (`/proc/<pid>/fd`). Memory a socket holds in the kernel is not in the process's RSS.

use anyhow::{Context, bail};

/// Socket memory, from `ss -m`'s `skmem:(r..,rb..,t..,tb..,f..,w..,o..,bl..,d..)`, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkMem {
    /// `r`: memory of the receive queue (`rmem_alloc`).
    pub rmem_alloc: u64,
    /// `rb`: receive buffer size, the limit of `r` (`SO_RCVBUF`).
    pub rcvbuf: u64,
    /// `t`: memory of packets handed to the device and not yet freed (`wmem_alloc`).
    pub wmem_alloc: u64,
    /// `tb`: send buffer size, the limit of `w` (`SO_SNDBUF`).
    pub sndbuf: u64,
    /// `f`: memory charged in advance, not used yet (`sk_forward_alloc`).
    pub fwd_alloc: u64,
    /// `w`: memory of the send queue: bytes written and not yet acknowledged, with their
    /// buffers' overhead (`wmem_queued`).
    pub wmem_queued: u64,
    /// `o`: option memory (`optmem`).
    pub optmem: u64,
    /// `bl`: backlog queue memory.
    pub backlog: u64,
    /// `d`: packets dropped before they reached the socket.
    pub drops: u64,
}

/// One TCP socket as `ss -tmnH state all` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    /// `ESTAB`, `LISTEN`, `FIN-WAIT-1`, `TIME-WAIT`...
    pub state: String,
    /// Bytes received and not read by the application (`Recv-Q`; a listener's accept queue).
    pub recv_q: u64,
    /// Bytes written and not acknowledged by the peer (`Send-Q`).
    pub send_q: u64,
    /// Local port.
    pub local_port: u16,
    /// Peer port (`None` for `*`).
    pub peer_port: Option<u16>,
    /// Socket memory (`None` when `ss` printed none, e.g. for `TIME-WAIT`).
    pub mem: Option<SkMem>,
}

impl SocketInfo {
    /// Whether the connection is established.
    pub fn established(&self) -> bool {
        self.state == "ESTAB"
    }
}

/// The port of an address as `ss -n` prints it: `127.0.0.1:3000`, `[::1]:3000`,
/// `[::ffff:127.0.0.1]:3000`, `127.0.0.1%lo:3000`; `None` for `*`.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

/// The fields of `skmem:(r0,rb131072,...)`. Unknown fields are ignored, missing ones are 0.
fn parse_skmem(token: &str) -> Option<SkMem> {
    let inner = token.strip_prefix("skmem:(")?.strip_suffix(')')?;
    let mut m = SkMem::default();
    for field in inner.split(',') {
        let digits = field.find(|c: char| c.is_ascii_digit())?;
        let (key, value) = field.split_at(digits);
        let value: u64 = value.parse().ok()?;
        match key {
            "r" => m.rmem_alloc = value,
            "rb" => m.rcvbuf = value,
            "t" => m.wmem_alloc = value,
            "tb" => m.sndbuf = value,
            "f" => m.fwd_alloc = value,
            "w" => m.wmem_queued = value,
            "o" => m.optmem = value,
            "bl" => m.backlog = value,
            "d" => m.drops = value,
            _ => {}
        }
    }
    Some(m)
}

/// One socket's entry: `STATE RECV-Q SEND-Q LOCAL PEER [skmem:(...)]`.
fn parse_entry(entry: &str) -> Option<SocketInfo> {
    let mut tokens = entry.split_whitespace();
    let state = tokens.next()?.to_owned();
    let recv_q = tokens.next()?.parse().ok()?;
    let send_q = tokens.next()?.parse().ok()?;
    let local_port = port_of(tokens.next()?)?;
    let peer_port = port_of(tokens.next()?);
    let mem = tokens.find_map(parse_skmem);
    Some(SocketInfo {
        state,
        recv_q,
        send_q,
        local_port,
        peer_port,
        mem,
    })
}

/// The sockets of `ss -tmnH state all ...` output. `ss` prints each socket's `skmem` on a
/// continuation line that starts with white space (or on the same line with `-O`): both
/// forms are read. Lines that cannot be parsed are skipped.
pub fn parse_ss(output: &str) -> Vec<SocketInfo> {
    let mut entries: Vec<String> = Vec::new();
    for line in output.lines() {
        if line.trim().is_empty() {
            continue;
        }
        match entries.last_mut() {
            Some(last) if line.starts_with(char::is_whitespace) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => entries.push(line.trim().to_owned()),
        }
    }
    entries.iter().filter_map(|e| parse_entry(e)).collect()
}

/// Every TCP socket whose local or peer port is `port`, from `ss` (iproute2).
pub async fn snapshot(port: u16) -> anyhow::Result<Vec<SocketInfo>> {
    let p = format!(":{port}");
    let out = tokio::process::Command::new("ss")
        .args([
            "-tmnH", "state", "all", "(", "sport", "=", &p, "or", "dport", "=", &p, ")",
        ])
        .output()
        .await
        .context("running `ss` (iproute2); install it (apt-get install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ss` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_ss(&String::from_utf8_lossy(&out.stdout)))
}

/// Open file descriptors of process `pid` (`None`: no such process, or not readable).
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Pages of memory used by every TCP socket of the machine (`TCP: ... mem N` in
/// `/proc/net/sockstat`): a cross-check of the per-socket figures, for all processes.
pub fn tcp_mem_pages() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    parse_sockstat_mem(&stat)
}

fn parse_sockstat_mem(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    it.find(|&t| t == "mem")?;
    it.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `ss -tmnH state all '( sport = :51793 or dport = :51793 )'` (iproute2
    /// 6.1): a listener, the server's side of a connection, and the client's side holding
    /// 5,000 unread bytes.
    const SAMPLE: &str = "LISTEN 0      128    127.0.0.1:51793   0.0.0.0:*    \n\
\t skmem:(r0,rb131072,t0,tb16384,f0,w0,o0,bl0,d0)  \n\
ESTAB  0      0      127.0.0.1:51793 127.0.0.1:49850\n\
\t skmem:(r0,rb131072,t0,tb3939840,f0,w0,o0,bl0,d0)\n\
ESTAB  5000   0      127.0.0.1:49850 127.0.0.1:51793\n\
\t skmem:(r5832,rb131072,t0,tb3939840,f2360,w0,o0,bl0,d0)\n";

    #[test]
    fn ss_output_is_parsed() {
        let s = parse_ss(SAMPLE);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].state, "LISTEN");
        assert_eq!(s[0].local_port, 51793);
        assert_eq!(s[0].peer_port, None);
        assert!(s[1].established());
        assert_eq!((s[1].local_port, s[1].peer_port), (51793, Some(49850)));
        assert_eq!(s[1].mem.map(|m| m.sndbuf), Some(3_939_840));
        assert_eq!((s[2].recv_q, s[2].send_q), (5000, 0));
        let m = s[2].mem.expect("skmem");
        assert_eq!(
            m,
            SkMem {
                rmem_alloc: 5832,
                rcvbuf: 131_072,
                sndbuf: 3_939_840,
                fwd_alloc: 2360,
                ..SkMem::default()
            }
        );
    }

    #[test]
    fn one_line_form_ipv6_and_odd_lines() {
        // `-O` (one line per socket), a server blocked on a slow reader, IPv6, a TIME-WAIT
        // socket without skmem, and lines that are not sockets.
        let out = "ESTAB 0 1318912 [::1]:3000 [::1]:40112 skmem:(r0,rb131072,t0,tb2626560,f2048,w1345536,o0,bl0,d0)\n\
TIME-WAIT 0 0 127.0.0.1%lo:3000 127.0.0.1:40000\n\
garbage\n\
ESTAB x 0 127.0.0.1:1 127.0.0.1:2\n\
\n";
        let s = parse_ss(out);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].send_q, 1_318_912);
        assert_eq!((s[0].local_port, s[0].peer_port), (3000, Some(40112)));
        let m = s[0].mem.expect("skmem");
        assert_eq!(
            (m.wmem_queued, m.sndbuf, m.fwd_alloc),
            (1_345_536, 2_626_560, 2048)
        );
        assert_eq!(s[1].state, "TIME-WAIT");
        assert_eq!(s[1].local_port, 3000);
        assert_eq!(s[1].mem, None);
        assert!(parse_skmem("skmem:(r1,zz)").is_none());
        assert_eq!(
            parse_skmem("skmem:(r1,new9)").map(|m| m.rmem_alloc),
            Some(1)
        );
    }

    #[test]
    fn sockstat_and_fds() {
        let stat =
            "sockets: used 190\nTCP: inuse 5 orphan 0 tw 2 alloc 7 mem 13\nUDP: inuse 1 mem 2\n";
        assert_eq!(parse_sockstat_mem(stat), Some(13));
        assert_eq!(parse_sockstat_mem("UDP: inuse 1 mem 2\n"), None);
        assert!(fd_count(std::process::id()).is_some_and(|n| n > 0));
    }
}
