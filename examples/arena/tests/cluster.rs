//! Cluster mode over real processes: several `partyroom-arena --cluster <url>` nodes on one
//! PostgreSQL database (`PARTYROOM_TEST_POSTGRES_URL`; skipped when unset, except in CI),
//! killed, frozen and restarted under WebSocket clients that keep playing.
//!
//! What they show: a crashed owner's rooms come back on another node within the lease TTL
//! with nothing saved lost and the same public ids; a frozen owner is fenced (its clients are
//! closed, its writes refused); concurrent first requests to every node never make two
//! owners; a rolling restart with SIGTERM loses nothing; relayed requests need the secret; a
//! node cut off from the database (a simulated partition) stops serving before another node
//! can claim its rooms, and writes nothing when it comes back.
//!
//! The tests run one at a time (see `support::cluster::serial`), each on tables of its own.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use support::cluster::{
    Cluster, Event, PlayEnd, Player, RELAY_HEADER, SECRET, WsConn, http, http_with_body,
    move_number, percentile, postgres_url, serial, state_eventually, state_path,
    ws_handshake_status,
};
use support::db_link::DbLink;

/// The lease TTL of the test clusters (short, so that failovers are quick).
const LEASE_TTL: Duration = Duration::from_millis(1500);
/// A failover must serve clients again within the TTL and this much.
const FAILOVER_SLACK: Duration = Duration::from_millis(1500);
/// Owners killed in `kill_9_owner_under_load_fails_over` (at least; `FAILOVER_ROUNDS` in the
/// environment may ask for more, as `bench/cluster.sh` does).
const FAILOVER_ROUNDS: usize = 20;
/// Players in the failover and rolling-restart tests.
const PLAYERS: usize = 4;
/// How long players play before each kill (a random time in this range, in ms).
const PLAY_MS: std::ops::Range<u64> = 400..900;
/// A move acknowledged this long before a SIGKILL must have been saved (storage throttle 0:
/// the owner writes within milliseconds; the same rule as `crash.rs`).
const SAVED_MARGIN: Duration = Duration::from_millis(300);
/// Players send a move this often (well under the 100 messages/s limit).
const MOVE_INTERVAL: Duration = Duration::from_millis(25);
/// A client whose connection failed tries the next node after this long.
const RECONNECT_RETRY: Duration = Duration::from_millis(50);
/// One connection attempt may take this long (a node may hold it until a lease expires).
const ATTEMPT: Duration = Duration::from_millis(1500 + 2000);
/// A socket must be closed this soon after its owner died, stopped or resumed.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// Moves must be acknowledged this soon.
const ACK_WITHIN: Duration = Duration::from_secs(5);
/// Rooms claimed concurrently in `racing_claims_never_two_owners`.
const RACE_ROOMS: usize = 1000;
/// Rooms in flight at once there (three requests each).
const RACE_PARALLEL: usize = 24;
/// Its lease TTL: a thousand leases renewed every TTL/3 must not starve two cores.
const RACE_LEASE_TTL: Duration = Duration::from_millis(5000);

/// Rejoin a panic raised in a spawned task.
fn join<T>(r: Result<T, tokio::task::JoinError>) -> T {
    r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// kill -9 of a room's owner while clients play on it, directly and relayed through another
/// node, twenty times over (a fresh node replaces each dead one). Each time every client gets
/// a closed socket, reconnects (trying the live nodes in turn every 50 ms) with the same
/// session and gets the same public id from a new owner (the lease's epoch + 1), within the
/// TTL + 1.5 s (p99); and every move the client saw acknowledged 300 ms before the kill is in
/// the restored state (storage throttle 0).
///
/// `FAILOVER_LEASE_TTL_MS` and `FAILOVER_ROUNDS` in the environment change the TTL and the
/// number of rounds (the failover benchmark runs this test with the 3 s lease of a real
/// deployment); the line `failover: rounds=… p50=…ms p99=…ms` on stderr is its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_owner_under_load_fails_over() {
    let Some(url) = postgres_url() else { return };
    let _serial = serial().await;
    let env_number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let lease_ttl = env_number("FAILOVER_LEASE_TTL_MS").map_or(LEASE_TTL, Duration::from_millis);
    let rounds = env_number("FAILOVER_ROUNDS").map_or(FAILOVER_ROUNDS, |n| {
        usize::try_from(n)
            .unwrap_or(usize::MAX)
            .max(FAILOVER_ROUNDS)
    });
    let attempt = lease_ttl + Duration::from_secs(2);
    let mut cluster = Cluster::start(&url, lease_ttl, &["--storage-throttle-ms", "0"], 3);
    let pg = cluster.pg().await;
    let room = "failover";
    let mut rng = fastrand::Rng::with_seed(11);
    let mut players: Vec<Player> = (0..PLAYERS)
        .map(|i| Player::new(format!("fo-{i}")))
        .collect();
    let first = cluster.live()[0].clone();
    for p in &mut players {
        p.connect(&first.0, first.1, room, attempt).await.unwrap();
        p.step(ACK_WITHIN).await.unwrap();
    }
    let mut epoch = 1;
    let mut samples = Vec::new();

    for round in 0..rounds {
        let lease = pg.lease(room).await.expect("the room has a lease");
        assert!(lease.live, "round {round}: live lease {lease:?}");
        assert_eq!(lease.epoch, epoch, "round {round}: lease {lease:?}");
        let owner = lease.owner.clone();
        let live = cluster.live();
        let others: Vec<_> = live.iter().filter(|(id, _)| *id != owner).collect();
        assert!(!others.is_empty());

        // Even players on the owner, odd ones relayed through the other nodes.
        for (i, p) in players.iter_mut().enumerate() {
            let (id, port) = if i % 2 == 0 {
                cluster
                    .live()
                    .into_iter()
                    .find(|(id, _)| *id == owner)
                    .unwrap()
            } else {
                others[(i / 2) % others.len()].clone()
            };
            if p.node() != Some(id.as_str()) {
                p.connect(&id, port, room, attempt).await.unwrap();
            }
        }

        // Play, and kill the owner under the moves.
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = players
            .drain(..)
            .map(|mut p| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let end = p.play(&stop, MOVE_INTERVAL).await;
                    (p, end)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.u64(PLAY_MS))).await;
        let killed_at = Instant::now();
        cluster.remove(&owner).kill9();

        // Every socket closes: direct ones with the process, relayed ones by their node.
        for (i, task) in tasks.into_iter().enumerate() {
            match tokio::time::timeout_at((killed_at + CLOSE_WITHIN).into(), task).await {
                Ok(r) => {
                    let (p, end) = join(r);
                    assert!(matches!(end, PlayEnd::Closed(_)), "round {round}: {end:?}");
                    players.push(p);
                }
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    panic!(
                        "round {round}: player fo-{i} ({}) still connected {CLOSE_WITHIN:?} \
                         after its room's owner {owner} was killed",
                        if i % 2 == 0 {
                            "on the owner"
                        } else {
                            "relayed"
                        }
                    );
                }
            }
        }

        // Reconnect through the live nodes, each player starting with another one.
        let live = cluster.live();
        let deadline = killed_at + lease_ttl + Duration::from_secs(10);
        let sure_before = killed_at.checked_sub(SAVED_MARGIN).unwrap();
        let back = futures_util::future::join_all(players.iter_mut().enumerate().map(|(i, p)| {
            let live = &live;
            async move {
                let sure = p.acked_before(sure_before);
                let r = p
                    .reconnect(room, live, i, RECONNECT_RETRY, attempt, deadline)
                    .await;
                (sure, r)
            }
        }))
        .await;
        let mut slowest = Duration::ZERO;
        for (p, (sure, r)) in players.iter().zip(back) {
            let r = r.unwrap_or_else(|e| panic!("round {round}: {e}"));
            slowest = slowest.max(r.at - killed_at);
            let restored = r.restored.unwrap_or(0);
            assert!(
                restored >= sure && restored <= p.sent,
                "round {round}: {} restored at move {:?} by {}; acknowledged {SAVED_MARGIN:?} \
                 before the kill: {sure}; sent: {}",
                p.session,
                r.restored,
                r.node,
                p.sent
            );
        }
        samples.push(slowest);

        let lease = pg.lease(room).await.expect("lease");
        assert!(
            lease.live && lease.owner != owner && lease.epoch == epoch + 1,
            "round {round}: after {owner} (epoch {epoch}) died: {lease:?}"
        );
        epoch = lease.epoch;
        cluster.start_node();
    }

    let p50 = percentile(&samples, 50.0);
    let p99 = percentile(&samples, 99.0);
    eprintln!(
        "failover: rounds={rounds} p50={}ms p99={}ms (ttl {}ms, {PLAYERS} players, \
         half of them relayed)",
        p50.as_millis(),
        p99.as_millis(),
        lease_ttl.as_millis()
    );
    let acked: u64 = players.iter().map(Player::acked).sum();
    assert!(acked > 0, "the players moved");
    assert!(
        p99 < lease_ttl + FAILOVER_SLACK,
        "failover p99 {p99:?} >= ttl {lease_ttl:?} + {FAILOVER_SLACK:?}; samples: {samples:?}"
    );
}

/// SIGSTOP of a room's owner A past the TTL: B claims the room (epoch + 1) when a client asks
/// it and restores what A saved; the client moves there. A move sent to A while it is frozen
/// reaches A after SIGCONT, when A has lost the lease: A closes its client (1012), drops the
/// room, and its write is refused, so the stored state is B's, in the table, through B, and
/// through a fresh node after A stopped and B was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_owner_is_fenced() {
    let Some(url) = postgres_url() else { return };
    let _serial = serial().await;
    let mut cluster = Cluster::start(&url, LEASE_TTL, &["--storage-throttle-ms", "0"], 2);
    let pg = cluster.pg().await;
    let room = "fence";
    let live = cluster.live();
    let ((a, a_port), (b, b_port)) = (live[0].clone(), live[1].clone());

    // A owns the room; its client's move is saved.
    let mut on_a = Player::new("fenced");
    on_a.connect(&a, a_port, room, ATTEMPT).await.unwrap();
    let lease = pg.lease(room).await.expect("lease");
    assert!(lease.live && lease.owner == a, "A claimed: {lease:?}");
    let e1 = lease.epoch;
    let a_move = on_a.step(ACK_WITHIN).await.unwrap();
    // Saved before the freeze (an acknowledgement comes before its write commits; a write
    // frozen halfway is ended by the database and lost, as a crash would lose it).
    stored_eventually(&pg, room, on_a.pid(), a_move).await;

    cluster.node(&a).stop();
    let stopped_at = Instant::now();
    pg.wait_lease(
        room,
        LEASE_TTL + Duration::from_secs(3),
        "A's lease ran out",
        |l| l.as_ref().is_some_and(|l| !l.live),
    )
    .await;
    assert!(stopped_at.elapsed() > LEASE_TTL / 2);

    // B claims and restores A's saved move; the same session is the same player.
    let mut on_b = Player::new("fenced");
    on_b.pid = on_a.pid.clone();
    on_b.sent = on_a.sent;
    let restored = on_b.connect(&b, b_port, room, ATTEMPT).await.unwrap();
    assert_eq!(restored, Some(a_move), "B restored what A saved");
    let lease = pg.lease(room).await.expect("lease");
    assert!(
        lease.live && lease.owner == b && lease.epoch == e1 + 1,
        "B claimed with the next epoch ({}): {lease:?}",
        e1 + 1
    );
    on_b.step(ACK_WITHIN).await.unwrap();

    // A move for the frozen A (its kernel buffers it), far from any of B's.
    on_a.sent += 10_000;
    assert!(
        on_a.send_next().await,
        "the stopped node's socket takes the move"
    );
    let stale = on_a.sent;

    cluster.node(&a).cont();
    let code = on_a
        .wait_closed(CLOSE_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("A closes its client after losing the lease: {e}"));
    assert!(
        code.is_none() || code == Some(1012),
        "A's client closed with {code:?}, want 1012"
    );
    // A dropped the room; the lease is still B's.
    let deadline = Instant::now() + CLOSE_WITHIN;
    loop {
        let view = cluster.node(&a).cluster_view().await;
        if !view.rooms.iter().any(|r| r.room == room) {
            break;
        }
        assert!(Instant::now() < deadline, "A still lists {room}: {view:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lease = pg.lease(room).await.expect("lease");
    assert!(
        lease.live && lease.owner == b && lease.epoch == e1 + 1,
        "still B's after A resumed: {lease:?}"
    );

    // B still serves; its last move is the room's, in memory and stored.
    let b_move = on_b.step(ACK_WITHIN).await.unwrap();
    let pid = on_b.pid().to_owned();
    let state = cluster.node(&b).state(room).await;
    assert_eq!(
        move_number(&state["players"][&pid]),
        Some(b_move),
        "B's state: {state}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let row = pg.player_row(room, &pid).await;
        let shown = row.as_ref().and_then(move_number);
        assert_ne!(shown, Some(stale), "A's fenced write was stored: {row:?}");
        if shown == Some(b_move) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored row of {pid}: {row:?}, want B's move {b_move}; rows: {:?}",
            pg.state_rows(room).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // After A's clean exit and B's crash, a fresh node restores B's state.
    let status = cluster.remove(&a).terminate().await;
    assert!(
        status.success(),
        "the fenced node exits cleanly: {status:?}"
    );
    cluster.remove(&b).kill9();
    let c = cluster.start_node();
    let c_port = cluster.node(&c).port();
    let state = state_eventually(c_port, room, LEASE_TTL + Duration::from_secs(5)).await;
    assert_eq!(
        move_number(&state["players"][&pid]),
        Some(b_move),
        "restored on {c}: {state}"
    );
    let lease = pg.lease(room).await.expect("lease");
    assert!(
        lease.owner == c && lease.epoch == e1 + 2,
        "{c} claimed after B: {lease:?}"
    );
}

/// A thousand rooms, each asked for by `GET /state` on all three nodes at the same moment:
/// every room ends up with exactly one lease row, at epoch 1; the nodes' `GET /cluster` lists
/// are disjoint, cover every room, and agree with the lease table; and the three answers for
/// a room are the same JSON (the star is random per room instance, so one instance served
/// all three).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_never_two_owners() {
    let Some(url) = postgres_url() else { return };
    let _serial = serial().await;
    let cluster = Cluster::start(&url, RACE_LEASE_TTL, &["--idle-timeout-ms", "600000"], 3);
    let pg = cluster.pg().await;
    let live = cluster.live();
    let started = Instant::now();
    let answers: Vec<(usize, Vec<_>)> = futures_util::stream::iter(0..RACE_ROOMS)
        .map(|i| {
            let live = &live;
            async move {
                let path = state_path(&format!("race-{i}"));
                let (r0, r1, r2) = tokio::join!(
                    http(live[0].1, "GET", &path, &[]),
                    http(live[1].1, "GET", &path, &[]),
                    http(live[2].1, "GET", &path, &[]),
                );
                (i, vec![r0, r1, r2])
            }
        })
        .buffer_unordered(RACE_PARALLEL)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let mut differing = Vec::new();
    for (i, rs) in &answers {
        let bodies: Vec<_> = rs
            .iter()
            .zip(&live)
            .map(|(r, (node, _))| match r {
                Ok(r) if r.status == 200 => r.json(),
                other => panic!("race-{i} on {node}: {other:?}"),
            })
            .collect();
        if bodies.iter().any(|b| *b != bodies[0]) {
            differing.push((*i, bodies));
        }
    }
    assert!(
        differing.is_empty(),
        "{} rooms answered differently by the nodes (two instances), e.g. {:?}",
        differing.len(),
        differing.first()
    );

    // The lease table: one row per room, epoch 1, live.
    let leases: BTreeMap<String, _> = pg
        .leases()
        .await
        .into_iter()
        .filter(|l| l.party == "main" && l.room.starts_with("race-"))
        .map(|l| (l.room.clone(), l))
        .collect();
    let all: BTreeSet<String> = (0..RACE_ROOMS).map(|i| format!("race-{i}")).collect();
    assert_eq!(
        leases.keys().cloned().collect::<BTreeSet<_>>(),
        all,
        "one lease row per room"
    );
    let bad: Vec<_> = leases
        .values()
        .filter(|l| l.epoch != 1 || !l.live)
        .collect();
    assert!(
        bad.is_empty(),
        "{} leases not live at epoch 1: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );

    // The nodes' own lists: disjoint, all rooms, the lease table's owners.
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut per_node = Vec::new();
    for (id, _) in &live {
        let view = cluster.node(id).cluster_view().await;
        assert_eq!(&view.node, id, "GET /cluster names its node");
        let mut count = 0;
        for r in view
            .rooms
            .iter()
            .filter(|r| r.party == "main" && r.room.starts_with("race-"))
        {
            assert_eq!(r.epoch, 1, "{id} lists {r:?}");
            listed.entry(r.room.clone()).or_default().push(id.clone());
            count += 1;
        }
        per_node.push(format!("{id}={count}"));
    }
    let twice: Vec<_> = listed.iter().filter(|(_, nodes)| nodes.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "rooms listed by two nodes: {:?}",
        &twice[..twice.len().min(5)]
    );
    let missing: Vec<_> = all.iter().filter(|r| !listed.contains_key(*r)).collect();
    assert!(
        missing.is_empty(),
        "{} rooms listed by no node, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (room, nodes) in &listed {
        assert_eq!(
            leases[room].owner, nodes[0],
            "{room}: lease owner vs /cluster"
        );
    }
    eprintln!(
        "race: {RACE_ROOMS} rooms x 3 nodes in {}ms; owners {}",
        elapsed.as_millis(),
        per_node.join(" ")
    );
}

/// A partition between a room's owner A and the database, then an outage of the database
/// for every node, each simulated by cutting nodes' links to PostgreSQL (every byte stops,
/// nothing is refused: see `support::db_link`), each lasting longer than a lease.
///
/// Partition: A stops serving the room within the TTL (its client is closed with 1012), and
/// A, unable to reach the database, answers a new client with 503 instead of hanging; B
/// claims the room (epoch + 1) once the lease ran out and restores A's last saved move; when
/// the link heals, nothing A had in flight is stored, the lease stays B's, and A relays the
/// room to B. Outage: every node stops serving and refuses new clients; once the database is
/// back, the client reconnects and finds its last saved move (epoch + 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_partition_and_outage_are_fenced() {
    let Some(url) = postgres_url() else { return };
    let _serial = serial().await;
    let link_a = DbLink::start(&url).await;
    let link_b = DbLink::start(&url).await;
    let mut cluster = Cluster::start(&url, LEASE_TTL, &["--storage-throttle-ms", "0"], 0);
    let a = cluster.start_node_via(link_a.url());
    let b = cluster.start_node_via(link_b.url());
    let (a_port, b_port) = (cluster.node(&a).port(), cluster.node(&b).port());
    let nodes = cluster.live();
    let pg = cluster.pg().await;
    let room = "partition";
    let refused_within = LEASE_TTL + Duration::from_secs(4);

    // A owns the room; the player's moves are saved.
    let mut player = Player::new("cut-off");
    player.connect(&a, a_port, room, ATTEMPT).await.unwrap();
    let lease = pg.lease(room).await.expect("lease");
    assert!(lease.live && lease.owner == a, "A claimed: {lease:?}");
    let e1 = lease.epoch;
    for _ in 0..5 {
        player.step(ACK_WITHIN).await.unwrap();
    }
    let pid = player.pid().to_owned();
    let saved = player.acked();
    stored_eventually(&pg, room, &pid, saved).await;

    // Partition A from the database.
    link_a.cut();
    let cut_at = Instant::now();
    let code = player
        .wait_closed(LEASE_TTL + Duration::from_secs(1))
        .await
        .unwrap_or_else(|e| panic!("A stops serving once it cannot renew its lease: {e}"));
    assert!(
        code.is_none() || code == Some(1012),
        "A's client closed with {code:?}, want 1012"
    );
    let closed_after = cut_at.elapsed();
    let lease = pg.lease(room).await.expect("lease");
    eprintln!(
        "partition: A closed its client {closed_after:?} after the cut; lease then: {lease:?}"
    );
    assert!(
        lease.owner == a && lease.epoch == e1,
        "nobody else claimed while A served: {lease:?}"
    );
    assert!(
        !cluster
            .node(&a)
            .cluster_view()
            .await
            .rooms
            .iter()
            .any(|r| r.room == room),
        "A dropped the room"
    );
    let status = tokio::time::timeout(
        refused_within,
        ws_handshake_status(a_port, room, "probe-a", &[]),
    )
    .await
    .expect("A answers while cut off from the database");
    assert_eq!(status, Ok(503), "A, cut off, refuses new clients");

    // B claims the room once the lease ran out; the player resumes there.
    let back = player
        .reconnect(
            room,
            &[(b.clone(), b_port)],
            0,
            RECONNECT_RETRY,
            ATTEMPT,
            Instant::now() + LEASE_TTL + Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(back.restored, Some(saved), "B restored A's last saved move");
    let lease = pg.lease(room).await.expect("lease");
    assert!(
        lease.live && lease.owner == b && lease.epoch == e1 + 1,
        "B claimed with the next epoch: {lease:?}"
    );
    let b_move = player.step(ACK_WITHIN).await.unwrap();
    stored_eventually(&pg, room, &pid, b_move).await;

    // The partition heals: A writes nothing, and relays the room to B.
    link_a.heal();
    tokio::time::sleep(LEASE_TTL).await;
    let lease = pg.lease(room).await.expect("lease");
    assert!(
        lease.live && lease.owner == b && lease.epoch == e1 + 1,
        "still B's after A came back: {lease:?}"
    );
    let row = pg.player_row(room, &pid).await;
    assert_eq!(
        row.as_ref().and_then(move_number),
        Some(b_move),
        "the stored row is B's: {row:?}"
    );
    let via_a = WsConn::connect(&a, a_port, room, "via-a", ATTEMPT)
        .await
        .unwrap_or_else(|e| panic!("A serves the room again, relayed to B: {e}"));
    assert_eq!(
        move_number(&via_a.mirror.state()["players"][&pid]),
        Some(b_move),
        "through A: B's state"
    );
    via_a.close().await;

    // The database goes away for every node.
    for _ in 0..3 {
        player.step(ACK_WITHIN).await.unwrap();
    }
    let last = player.acked();
    stored_eventually(&pg, room, &pid, last).await;
    link_a.cut();
    link_b.cut();
    let code = player
        .wait_closed(LEASE_TTL + Duration::from_secs(1))
        .await
        .unwrap_or_else(|e| panic!("B stops serving once it cannot renew its lease: {e}"));
    assert!(
        code.is_none() || code == Some(1012),
        "B's client closed with {code:?}"
    );
    for (id, port) in &nodes {
        let status = tokio::time::timeout(
            refused_within,
            ws_handshake_status(*port, room, "probe-outage", &[]),
        )
        .await
        .unwrap_or_else(|_| panic!("{id} answers during the outage"));
        assert_eq!(
            status,
            Ok(503),
            "{id} refuses new clients during the outage"
        );
    }

    // Back: the player reconnects and finds its last saved move.
    link_a.heal();
    link_b.heal();
    let back = player
        .reconnect(
            room,
            &nodes,
            1,
            RECONNECT_RETRY,
            ATTEMPT,
            Instant::now() + LEASE_TTL + Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(back.restored, Some(last), "restored after the outage");
    let lease = pg.lease(room).await.expect("lease");
    assert!(
        lease.live && lease.epoch == e1 + 2,
        "claimed again after the outage: {lease:?}"
    );
    player.step(ACK_WITHIN).await.unwrap();
}

/// Wait until the stored row of player `pid` in `room` shows move `want`.
async fn stored_eventually(pg: &support::cluster::Pg, room: &str, pid: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let row = pg.player_row(room, pid).await;
        if row.as_ref().and_then(move_number) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stored row of {pid}: {row:?}, want move {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A rolling restart under play: each of the three nodes in turn gets SIGTERM (it must exit
/// 0, closing its clients with 1001) and a replacement starts; every client whose socket
/// closed reconnects through the live nodes with the same public id, and every move it saw
/// acknowledged before that SIGTERM is there (SIGTERM saves, so no margin). At the end, all
/// nodes stop and the stored rows hold every player's last move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_nothing() {
    let Some(url) = postgres_url() else { return };
    let _serial = serial().await;
    let mut cluster = Cluster::start(&url, LEASE_TTL, &["--storage-throttle-ms", "0"], 3);
    let pg = cluster.pg().await;
    let room = "rolling";
    let originals = cluster.ids();
    let live = cluster.live();
    let mut players: Vec<Player> = (0..PLAYERS)
        .map(|i| Player::new(format!("roll-{i}")))
        .collect();
    // Player 0 first, through n1: n1 owns the room, so the first restart is the owner's.
    for (i, p) in players.iter_mut().enumerate() {
        let (id, port) = &live[i % live.len()];
        p.connect(id, *port, room, ATTEMPT).await.unwrap();
        p.step(ACK_WITHIN).await.unwrap();
    }
    assert_eq!(pg.lease(room).await.expect("lease").owner, originals[0]);
    let mut reconnects = 0;

    for (step, victim) in originals.iter().enumerate() {
        let owner = pg.lease(room).await.expect("lease").owner;
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = players
            .drain(..)
            .map(|mut p| {
                let stop = stop.clone();
                let direct = p.node() == Some(victim.as_str());
                let task = tokio::spawn(async move {
                    let end = p.play(&stop, MOVE_INTERVAL).await;
                    (p, end)
                });
                (direct, task)
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;

        let termed_at = Instant::now();
        let status = cluster.remove(victim).terminate().await;
        assert!(
            status.success(),
            "step {step}: {victim} exits 0 on SIGTERM: {status:?}"
        );
        cluster.start_node();

        // The victim's own clients were closed with 1001; then everyone stops playing.
        let mut waiting = Vec::new();
        for (direct, task) in tasks {
            if direct {
                let (p, end) = join(
                    tokio::time::timeout(CLOSE_WITHIN, task)
                        .await
                        .unwrap_or_else(|_| panic!("step {step}: {victim}'s client still open")),
                );
                assert_eq!(
                    end,
                    PlayEnd::Closed(Some(1001)),
                    "step {step}: {} on {victim}",
                    p.session
                );
                players.push(p);
            } else {
                waiting.push(task);
            }
        }
        stop.store(true, Ordering::Relaxed);
        for task in waiting {
            players.push(join(task.await).0);
        }

        // Whoever lost its socket reconnects; then everyone's moves are acknowledged again.
        let live = cluster.live();
        for (i, p) in players.iter_mut().enumerate() {
            let sure = p.acked_before(termed_at);
            let mut tries = 0;
            loop {
                if p.conn.is_none() {
                    let deadline = Instant::now() + LEASE_TTL + Duration::from_secs(10);
                    let r = p
                        .reconnect(room, &live, i, RECONNECT_RETRY, ATTEMPT, deadline)
                        .await
                        .unwrap_or_else(|e| panic!("step {step}: {e}"));
                    let restored = r.restored.unwrap_or(0);
                    assert!(
                        restored >= sure && restored <= p.sent,
                        "step {step}: {} came back at move {:?} through {}; acknowledged \
                         before {victim}'s SIGTERM: {sure}; sent {}",
                        p.session,
                        r.restored,
                        r.node,
                        p.sent
                    );
                    reconnects += 1;
                }
                match p.step(ACK_WITHIN).await {
                    Ok(_) => break,
                    Err(e) => {
                        tries += 1;
                        assert!(p.conn.is_none() && tries < 3, "step {step}: {e}");
                    }
                }
            }
        }
        let lease = pg.lease(room).await.expect("lease");
        assert!(lease.live, "step {step}: {lease:?}");
        if owner == *victim {
            assert_ne!(
                lease.owner, *victim,
                "step {step}: the owner's lease passed on"
            );
        }
    }

    let lease = pg.lease(room).await.expect("lease");
    assert!(
        lease.epoch >= 2,
        "the owner was restarted at least once: {lease:?}"
    );
    // Stop everything, the owner first (it saves and releases; no one claims after it).
    let mut order = cluster.ids();
    order.sort_by_key(|id| *id != lease.owner);
    for id in order {
        let status = cluster.remove(&id).terminate().await;
        assert!(status.success(), "final {id} exits 0: {status:?}");
    }
    for p in &players {
        let row = pg.player_row(room, p.pid()).await;
        let stored = row.as_ref().and_then(move_number);
        assert!(
            stored.is_some_and(|s| s >= p.acked() && s <= p.sent),
            "{} stored at {row:?} (move {stored:?}), last acknowledged {}",
            p.session,
            p.acked()
        );
    }
    eprintln!(
        "rolling restart: 3 nodes restarted, {reconnects} reconnections, final epoch {}",
        lease.epoch
    );
}

/// A request that claims to be relayed (`x-partyroom-relay`) with the wrong secret gets 401,
/// on HTTP and on the WebSocket upgrade, on the owner and on another node; the right secret
/// is not refused, and a plain request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_relay_header_is_refused() {
    let Some(url) = postgres_url() else { return };
    let _serial = serial().await;
    let cluster = Cluster::start(&url, LEASE_TTL, &[], 2);
    let room = "forge";
    let path = state_path(room);
    for (id, port) in cluster.live() {
        let plain = http(port, "GET", &path, &[]).await.unwrap();
        assert_eq!(plain.status, 200, "plain GET on {id}: {plain:?}");
        let forged = http(port, "GET", &path, &[(RELAY_HEADER, "wrong")])
            .await
            .unwrap();
        assert_eq!(forged.status, 401, "forged GET on {id}: {forged:?}");
        let ws = ws_handshake_status(port, room, "forger", &[(RELAY_HEADER, "wrong")])
            .await
            .unwrap();
        assert_eq!(ws, 401, "forged WebSocket upgrade on {id}");
        let ws = ws_handshake_status(port, room, "plain", &[]).await.unwrap();
        assert_eq!(ws, 101, "plain WebSocket upgrade on {id}");
    }
    // A broken handshake is refused the same through the owner and through the relay (the
    // room lives on one of the two nodes now).
    for (id, port) in cluster.live() {
        let no_key = http(
            port,
            "GET",
            &format!("/parties/main/{room}?id=broken"),
            &[
                ("upgrade", "websocket"),
                ("connection", "upgrade"),
                ("sec-websocket-version", "13"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            no_key.status, 400,
            "upgrade without a key on {id}: {no_key:?}"
        );
    }
    // The right secret is not refused (wherever the room lives).
    let (id, port) = cluster.live()[0].clone();
    let relayed = http(port, "GET", &path, &[(RELAY_HEADER, SECRET)])
        .await
        .unwrap();
    assert_ne!(
        relayed.status, 401,
        "GET with the secret on {id}: {relayed:?}"
    );

    // The node-to-node handoff endpoint of session transfers: the secret, then a well-formed
    // handoff for a room that exists, or nothing is queued.
    let handoff = json!({"party": "main", "room": "forge", "handoff":
        {"token": "t", "privateId": "p", "publicId": "Abcdefgh", "user": null}})
    .to_string();
    let post = |headers: Vec<(&'static str, &'static str)>, body: String| async move {
        http_with_body(port, "POST", "/cluster/handoff", &headers, &body)
            .await
            .unwrap()
    };
    let json_type = ("content-type", "application/json");
    assert_eq!(post(vec![json_type], handoff.clone()).await.status, 401);
    assert_eq!(
        post(vec![json_type, (RELAY_HEADER, "wrong")], handoff.clone())
            .await
            .status,
        401
    );
    let authed = vec![json_type, (RELAY_HEADER, SECRET)];
    assert_eq!(post(authed.clone(), "{not json".into()).await.status, 400);
    assert_eq!(
        post(authed.clone(), json!({"party": "main"}).to_string())
            .await
            .status,
        400
    );
    let unknown = handoff.replace("\"party\":\"main\"", "\"party\":\"nope\"");
    assert_eq!(post(authed.clone(), unknown).await.status, 404);
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(5 << 20));
    assert_eq!(post(authed.clone(), huge).await.status, 413);
    let ok = post(authed, handoff).await;
    assert!(ok.status == 204 || ok.status == 409, "{ok:?}");
}

/// A session transfer between rooms owned by different nodes (the arena's `travel` action),
/// with every connection made through the node that does not own its room: the client gets
/// a token from room A (owned by n1), presents it at once to room B (owned by n2) with
/// another session id, and finds its public id and its position there. A forged token does
/// not: it waits for a handoff that never comes, then joins as a new player.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_transfer_crosses_nodes() {
    let Some(url) = postgres_url() else { return };
    let _serial = serial().await;
    let cluster = Cluster::start(&url, LEASE_TTL, &[], 2);
    let (n1, n2) = (cluster.node("n1"), cluster.node("n2"));
    // Each room claimed by the node asked first.
    let (a, b) = ("travel-a", "travel-b");
    assert_eq!(
        http(n1.port(), "GET", &state_path(a), &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        http(n2.port(), "GET", &state_path(b), &[])
            .await
            .unwrap()
            .status,
        200
    );
    let pg = cluster.pg().await;
    assert_eq!(pg.lease(a).await.expect("lease of A").owner, "n1");
    assert_eq!(pg.lease(b).await.expect("lease of B").owner, "n2");

    let timeout = Duration::from_secs(5);
    let mut traveler = WsConn::connect("n2", n2.port(), a, "traveler", timeout)
        .await
        .unwrap();
    let pid = traveler.pid().to_owned();
    assert!(traveler.send_move(123.0, 45.5).await);
    assert!(traveler.send_action("travel", json!({"room": b})).await);
    let deadline = Instant::now() + timeout;
    let token = loop {
        if let Some(t) = traveler.received.iter().find(|m| m["type"] == "travel") {
            assert!(t.get("error").is_none(), "travel refused: {t}");
            break t["token"].as_str().expect("token").to_owned();
        }
        match traveler.next_until(deadline).await {
            Event::Frame => {}
            other => panic!("no travel answer from A: {other:?}"),
        }
    };
    traveler.close().await;

    // At once, on the node that does not own B, with another device's session id.
    let arrived = WsConn::connect_with(
        "n1",
        n1.port(),
        b,
        "other-device",
        &format!("&transferToken={token}"),
        timeout,
    )
    .await
    .unwrap();
    assert_eq!(
        arrived.pid(),
        pid,
        "the transferred session keeps its public id"
    );
    let me = &arrived.mirror.state()["players"][&pid];
    assert_eq!(
        (me["x"].as_f64(), me["y"].as_f64()),
        (Some(123.0), Some(45.5)),
        "{me}"
    );
    // Only one node ever served B.
    assert_eq!(pg.lease(b).await.expect("lease of B").owner, "n2");

    // A token nobody handed off: the connection waits for it, then joins as someone new.
    let started = Instant::now();
    let stranger = WsConn::connect_with(
        "n1",
        n1.port(),
        b,
        "stranger",
        "&transferToken=forged-token",
        timeout,
    )
    .await
    .unwrap();
    assert_ne!(stranger.pid(), pid);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "an unknown token waits for its handoff ({:?})",
        started.elapsed()
    );
    arrived.close().await;
    stranger.close().await;
}
