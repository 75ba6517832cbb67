// Cluster mode seen through the official @signe/sync client: two arena nodes
// (`$ARENA_BIN --port 0 --cluster <url> --node-id n1|n2 ...`) on one PostgreSQL
// database and one table prefix, so any node serves any room and each room has
// one owner at a time (a lease in `<prefix>_leases`).
//
// What is checked, in order, on one room:
//   1. the first request for a fresh room, made on n1, makes n1 its owner
//      (`GET /cluster` on both nodes, and the lease row), and n2 relays HTTP to it;
//   2. an official client connected to n2 (not the owner, so n2 relays the
//      WebSocket) gets its first sync with its own player, and sees its own move;
//   3. a second official client on n1 (the owner): both see both players, and the
//      same authoritative state after moves from both sides (also equal to
//      `GET /state` through either node);
//   4. the first client closes and reconnects through n2 with the same session
//      id (`_pk`): it gets the same public id and its position back;
//   5. SIGTERM stops both nodes gracefully (exit code 0): the clients' sockets
//      close, the owner releases its lease and the players are saved.
//
// PARTYROOM_TEST_POSTGRES_URL names the database. Without it the tests are
// skipped, except in CI (CI=true), where they fail: cluster mode is never
// silently left untested. `psql` (on PATH, or PostgreSQL's own bin directory)
// reads the lease and state tables and drops the tables of this run's prefix
// (`compat_<random>`) at the end; without psql those checks are skipped and the
// tables are left behind (their prefix is unique to the run, so they collide
// with nothing).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { connectionRoom } from '@signe/sync/client';

import {
  ARENA,
  PID_RE,
  startServer,
  uniqueRoomId,
  uniqueSessionId,
  eventually,
  sleep,
  clone,
  httpJson,
  playerProblems,
} from './helpers.mjs';

const TEST_TIMEOUT = 30_000;
const URL_VAR = 'PARTYROOM_TEST_POSTGRES_URL';
const PG_URL = process.env[URL_VAR]?.trim() || '';
const IN_CI = (process.env.CI ?? '').toLowerCase() === 'true';
const SECRET = 'compat-cluster-secret';
/** Short, so that a lease left behind by a crashed run expires quickly. */
const LEASE_TTL_MS = 1_500;
/** A fresh prefix per run: parallel runs on one database never share tables. */
const PREFIX = `compat_${randomBytes(5).toString('hex')}`;
/** How long a node may take to exit after SIGTERM (it saves its rooms and releases its leases). */
const EXIT_GRACE_MS = 15_000;

if (!PG_URL && IN_CI) {
  test(`cluster mode needs ${URL_VAR}`, () => {
    throw new Error(
      `${URL_VAR} is not set, and CI=true: cluster mode must be tested in CI ` +
        '(scripts/test.sh starts a PostgreSQL server and sets it)',
    );
  });
} else {
  const skip = PG_URL
    ? false
    : `set ${URL_VAR} (e.g. postgres://postgres@127.0.0.1:55432/partyroom_test) to run the cluster tests`;
  describe('cluster mode with the official client', { skip }, clusterSuite);
}

function clusterSuite() {
  /** @type {Record<string, Awaited<ReturnType<typeof startServer>>>} */
  const nodes = {};
  const openClients = new Set();
  const roomId = uniqueRoomId('cluster');
  const psql = findPsql();
  /** What the steps hand to the next ones. */
  const ctx = {};

  before(async () => {
    // Both nodes start at once, as a deployment would start them: the first
    // one to run creates the tables, the other waits for it.
    const started = await Promise.allSettled(['n1', 'n2'].map((id) => startNode(id)));
    started.forEach((r, i) => {
      if (r.status === 'fulfilled') nodes[`n${i + 1}`] = r.value;
    });
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  });

  const dropTables = `DROP TABLE IF EXISTS "${PREFIX}_state", "${PREFIX}_leases", "${PREFIX}_members"`;
  let cleanedUp = false;
  // Should the runner exit without running `after` (an uncaught error, a
  // broken output pipe), still kill the nodes and drop the tables.
  process.once('exit', () => {
    if (cleanedUp) return;
    for (const n of Object.values(nodes)) n.proc.kill('SIGKILL');
    if (psql) {
      try {
        execFileSync(psql, ['-X', '-q', '-d', PG_URL, '-c', dropTables], {
          stdio: 'ignore',
          timeout: 5_000,
          env: { ...process.env, PGCONNECT_TIMEOUT: '3' },
        });
      } catch {
        // best effort: the prefix is unique to this run
      }
    }
  });

  after(async () => {
    for (const c of openClients) c.client.close();
    openClients.clear();
    await Promise.all(Object.values(nodes).map((n) => n.stop({ graceMs: 5_000 })));
    if (psql) {
      try {
        await sql(dropTables);
      } catch (err) {
        process.stderr.write(`could not drop the tables of prefix ${PREFIX}: ${err.message}\n`);
      }
    } else {
      process.stderr.write(
        `psql not found: the cluster tables of prefix ${PREFIX} are left in the test database\n`,
      );
    }
    cleanedUp = true;
  });

  function startNode(id) {
    return startServer({
      name: id,
      memory: false,
      extraArgs: [
        '--cluster', PG_URL,
        '--node-id', id,
        '--cluster-secret', SECRET,
        '--lease-ttl-ms', String(LEASE_TTL_MS),
        '--cluster-table-prefix', PREFIX,
      ],
      env: {
        // Only the flags above configure the node (and it binds 127.0.0.1).
        HOST: undefined,
        PORT: undefined,
        PARTYROOM_CLUSTER: undefined,
        PARTYROOM_NODE_ID: undefined,
        PARTYROOM_ADVERTISE_URL: undefined,
        PARTYROOM_CLUSTER_SECRET: undefined,
        NO_COLOR: '1',
        RUST_LOG: process.env.RUST_LOG ?? 'info',
      },
    });
  }

  /** Run a step; on failure, add the nodes' output (and a crashed node's exit) to the error. */
  async function withLogs(fn) {
    try {
      return await fn();
    } catch (err) {
      await sleep(100);
      let logs = '';
      for (const [id, n] of Object.entries(nodes)) {
        const exit = n.exitInfo();
        logs +=
          `\n--- node ${id} (port ${n.port}${exit ? `, exited: code ${exit.code}, signal ${exit.signal}` : ''}) ` +
          `output tail ---\n${n.output().slice(-4_000)}`;
      }
      if (err instanceof Error) {
        err.message += logs;
        throw err;
      }
      throw new Error(`${String(err)}${logs}`);
    }
  }

  function requireSteps(...keys) {
    for (const k of keys) {
      assert.ok(ctx[k] !== undefined, `an earlier step did not complete (no ${k}); see its failure`);
    }
  }

  /** Run one SQL statement with psql; resolves with the unaligned, tuples-only output lines. */
  function sql(statement) {
    return new Promise((resolve, reject) => {
      execFile(
        psql,
        ['-X', '-q', '-A', '-t', '-F', '|', '-v', 'ON_ERROR_STOP=1', '-d', PG_URL, '-c', statement],
        { timeout: 10_000, env: { ...process.env, PGCONNECT_TIMEOUT: '5' } },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`psql: ${statement}: ${err.message}\n${stderr}`));
          else resolve(stdout.split('\n').filter((l) => l.length > 0));
        },
      );
    });
  }

  /** The lease row of the room ({owner, epoch, live}), or null. */
  async function lease() {
    assert.match(roomId, /^[A-Za-z0-9_-]+$/);
    const rows = await sql(
      `SELECT owner, epoch, expires_at > now() FROM "${PREFIX}_leases" ` +
        `WHERE party = 'main' AND room = '${roomId}'`,
    );
    if (rows.length === 0) return null;
    const [owner, epoch, live] = rows[0].split('|');
    return { owner, epoch: Number(epoch), live: live === 't' };
  }

  /** `GET /cluster` on a node: its id and the rooms it owns. */
  async function clusterView(id) {
    const r = await httpJson(nodes[id].url, '/cluster');
    assert.equal(r.status, 200, `GET /cluster on ${id}: ${r.text}`);
    assert.ok(Array.isArray(r.body?.rooms), `GET /cluster on ${id}: no rooms array: ${r.text}`);
    return r.body;
  }

  const owns = (view) => view.rooms.some((r) => r.party === 'main' && r.room === roomId);

  /** Join the room through node `id` with the official client; resolves after its first sync. */
  async function joinOfficial(id, { session = uniqueSessionId(), name } = {}) {
    const node = nodes[id];
    const room = {};
    const packets = [];
    const closes = [];
    const client = await connectionRoom(
      {
        host: `127.0.0.1:${node.port}`,
        party: 'main',
        room: roomId,
        id: session,
        query: name === undefined ? undefined : { name },
        WebSocket,
        maxRetries: 0,
      },
      room,
    );
    client.on('sync', (value) => packets.push(value));
    client.conn.addEventListener('close', (ev) => closes.push(ev.code));
    const j = {
      node: id,
      client,
      room,
      packets,
      closes,
      session,
      get pId() {
        return packets[0]?.pId;
      },
      get me() {
        return room.players?.[packets[0]?.pId];
      },
      async close() {
        openClients.delete(j);
        client.close();
        // Let the close handshake reach the server.
        await sleep(50);
      },
    };
    openClients.add(j);
    await eventually(() => PID_RE.test(packets[0]?.pId ?? '') && room.players?.[packets[0].pId], 10_000, {
      message: `official client through ${id} receives its pId and own player in ${roomId}`,
    });
    return j;
  }

  test('the first request on n1 makes n1 the owner; n2 relays HTTP to it', { timeout: TEST_TIMEOUT }, async () => {
    await withLogs(async () => {
      assert.ok(nodes.n1 && nodes.n2, 'both nodes started');

      const first = await httpJson(nodes.n1.url, `/parties/main/${roomId}/state`);
      assert.equal(first.status, 200, first.text);
      assert.deepEqual(first.body.players, {}, 'a fresh room has no players');

      const v1 = await clusterView('n1');
      const v2 = await clusterView('n2');
      assert.equal(v1.node, 'n1');
      assert.equal(v2.node, 'n2');
      assert.ok(owns(v1), `n1 owns ${roomId}: ${JSON.stringify(v1)}`);
      assert.ok(!owns(v2), `n2 does not own ${roomId}: ${JSON.stringify(v2)}`);
      const epoch = v1.rooms.find((r) => r.room === roomId).epoch;
      assert.equal(epoch, 1, 'first claim of the room');

      if (psql) {
        assert.deepEqual(await lease(), { owner: 'n1', epoch: 1, live: true }, 'lease row');
      }

      // The same room through n2 is the same state (relayed to n1, not claimed by n2).
      const relayed = await httpJson(nodes.n2.url, `/parties/main/${roomId}/state`);
      assert.equal(relayed.status, 200, relayed.text);
      assert.deepEqual(relayed.body, first.body, 'GET /state through n2 answers from the owner');
      assert.ok(!owns(await clusterView('n2')), 'n2 still does not own the room');
      ctx.owned = true;
    });
  });

  test('an official client on n2 (relayed to the owner) gets its player and sees its move', { timeout: TEST_TIMEOUT }, async () => {
    requireSteps('owned');
    await withLogs(async () => {
      const a = await joinOfficial('n2', { session: uniqueSessionId('A'), name: 'Alice' });
      assert.match(
        a.client.conn.url ?? '',
        new RegExp(`^ws://127\\.0\\.0\\.1:${nodes.n2.port}/parties/main/${roomId}\\?_pk=${a.session}&name=Alice$`),
      );
      assert.match(a.pId, PID_RE);
      assert.equal(a.room.pId, a.pId);
      assert.deepEqual(playerProblems(a.me), []);
      assert.equal(a.me.name, 'Alice');
      assert.equal(a.me.connected, true);
      assert.equal(a.me.score, 0);
      assert.ok(Number.isInteger(a.room.star?.x) && Number.isInteger(a.room.star?.y), `star: ${JSON.stringify(a.room.star)}`);

      // Spawn points are integers: a .5 position can only come from this move.
      a.client.emit('move', { x: 101.5, y: 202.5 });
      await eventually(() => a.me?.x === 101.5 && a.me?.y === 202.5, 5_000, {
        message: 'the client on n2 sees its own move',
      });

      // The owner's view has the player where the client put it, and ownership did not move.
      const st = await httpJson(nodes.n1.url, `/parties/main/${roomId}/state`);
      assert.equal(st.status, 200, st.text);
      assert.deepEqual(st.body.players[a.pId], a.me, "the owner's state equals the client's view of its player");
      assert.ok(owns(await clusterView('n1')), 'n1 still owns the room');
      assert.ok(!owns(await clusterView('n2')), 'n2 still does not own the room');
      assert.deepEqual(a.closes, [], 'no close on the relayed socket');
      ctx.a = a;
    });
  });

  test('a second official client on n1 (the owner): both see both players and the same state', { timeout: TEST_TIMEOUT }, async () => {
    requireSteps('a');
    await withLogs(async () => {
      const { a } = ctx;
      const b = await joinOfficial('n1', { session: uniqueSessionId('B'), name: 'Bob' });
      assert.notEqual(b.pId, a.pId);
      assert.equal(b.me.name, 'Bob');
      assert.deepEqual(b.room.players[a.pId], a.me, 'B sees A where A moved (in its first sync)');
      await eventually(() => a.room.players?.[b.pId]?.connected === true, 5_000, {
        message: 'A (through n2) sees B join on n1',
      });

      b.client.emit('move', { x: 303.5, y: 404.5 });
      a.client.emit('move', { x: 505.5, y: 106.5 });
      await eventually(
        () =>
          a.room.players[b.pId]?.x === 303.5 && a.room.players[b.pId]?.y === 404.5 &&
          b.room.players[a.pId]?.x === 505.5 && b.room.players[a.pId]?.y === 106.5 &&
          a.me.x === 505.5 && b.me.x === 303.5,
        5_000,
        { message: 'both clients see both moves' },
      );
      // Same authoritative state on both sides, and through either node's /state.
      await eventually(() => {
        assert.deepEqual(clone(a.room.players), clone(b.room.players));
        assert.deepEqual(a.room.star, b.room.star);
        return true;
      }, 5_000, { message: 'both clients hold the same state' });
      assert.deepEqual(Object.keys(a.room.players).sort(), [a.pId, b.pId].sort());
      for (const id of ['n1', 'n2']) {
        const st = await httpJson(nodes[id].url, `/parties/main/${roomId}/state`);
        assert.equal(st.status, 200, st.text);
        assert.deepEqual(st.body.players, clone(a.room.players), `GET /state through ${id} equals the clients' state`);
        assert.deepEqual(st.body.star, a.room.star);
      }
      assert.deepEqual(a.closes, []);
      assert.deepEqual(b.closes, []);
      ctx.b = b;
    });
  });

  test('the first client reconnects through n2 with the same session id and gets the same public id', { timeout: TEST_TIMEOUT }, async () => {
    requireSteps('a', 'b');
    await withLogs(async () => {
      const { a, b } = ctx;
      const pId = a.pId;
      const last = clone(a.me);

      await a.close();
      await eventually(() => b.room.players[pId]?.connected === false, ARENA.sessionExpiryMs - 100, {
        message: 'B sees A go offline (before the session expires)',
      });

      const a2 = await joinOfficial('n2', { session: a.session, name: 'Alice' });
      assert.equal(a2.pId, pId, 'same session id -> same public id');
      assert.equal(a2.me.connected, true);
      assert.equal(a2.me.name, 'Alice');
      assert.equal(a2.me.x, last.x, 'position kept across the reconnect');
      assert.equal(a2.me.y, last.y);
      assert.ok(a2.room.players[b.pId], 'the reconnected client sees B');
      await eventually(() => b.room.players[pId]?.connected === true, 5_000, {
        message: 'B sees A online again',
      });

      // A late close of the first socket must not take the player away once
      // its session is live again.
      await sleep(ARENA.sessionExpiryMs + 500);
      assert.equal(b.room.players[pId]?.connected, true, 'A still connected after the expiry delay');
      assert.equal(a2.me?.connected, true);

      a2.client.emit('move', { x: 707.5, y: 308.5 });
      await eventually(() => b.room.players[pId]?.x === 707.5 && b.room.players[pId]?.y === 308.5, 5_000, {
        message: 'B sees the reconnected client move',
      });
      await eventually(() => a2.me.x === 707.5 && a2.me.y === 308.5, 5_000);
      assert.ok(owns(await clusterView('n1')), 'n1 still owns the room');
      ctx.a = a2;
      ctx.reconnected = true;
    });
  });

  test('SIGTERM drains both nodes (exit code 0), the lease is released and the players are saved', { timeout: 2 * EXIT_GRACE_MS + 10_000 }, async () => {
    requireSteps('a', 'b', 'reconnected');
    await withLogs(async () => {
      const { a, b } = ctx;

      // The relaying node first, with a client on it.
      const exit2 = await nodes.n2.stop({ graceMs: EXIT_GRACE_MS });
      assert.deepEqual(exit2, { code: 0, signal: null, killed: false }, 'n2 exits 0 on SIGTERM');
      await eventually(() => a.closes.length > 0, 5_000, { message: "the relayed client's socket closes" });
      await eventually(() => b.room.players[a.pId]?.connected === false, ARENA.sessionExpiryMs - 100, {
        message: 'the owner sees the relayed player go offline',
      });
      assert.deepEqual(b.closes, [], 'the client on the owner stays connected');
      assert.ok(owns(await clusterView('n1')), 'n1 still owns the room');

      // Then the owner, with a client on it.
      const exit1 = await nodes.n1.stop({ graceMs: EXIT_GRACE_MS });
      assert.deepEqual(exit1, { code: 0, signal: null, killed: false }, 'n1 exits 0 on SIGTERM');
      await eventually(() => b.closes.length > 0, 5_000, { message: "the owner's client socket closes" });

      if (psql) {
        const l = await lease();
        assert.ok(l && l.owner === 'n1' && !l.live, `the drained owner released its lease: ${JSON.stringify(l)}`);
        const keys = await sql(
          `SELECT key FROM "${PREFIX}_state" WHERE party = 'main' AND room = '${roomId}' ORDER BY key`,
        );
        for (const pId of [a.pId, b.pId]) {
          assert.ok(
            keys.some((k) => k.startsWith('state/') && k.endsWith(`/${pId}`)),
            `player ${pId} saved by the drain; stored keys: ${JSON.stringify(keys)}`,
          );
        }
        const members = await sql(`SELECT node FROM "${PREFIX}_members" ORDER BY node`);
        assert.deepEqual(members, [], 'both nodes left the cluster');
      }
    });
  });
}

/** psql on PATH, else in PostgreSQL's own bin directory (newest version), else null. */
function findPsql() {
  try {
    const found = execFileSync('sh', ['-c', 'command -v psql'], { encoding: 'utf8' }).trim();
    if (found) return found;
  } catch {
    // not on PATH
  }
  const root = '/usr/lib/postgresql';
  try {
    const versions = readdirSync(root)
      .filter((v) => existsSync(`${root}/${v}/bin/psql`))
      .sort((x, y) => Number.parseFloat(y) - Number.parseFloat(x));
    if (versions.length > 0) return `${root}/${versions[0]}/bin/psql`;
  } catch {
    // no PostgreSQL installation there
  }
  return null;
}
