// Compatibility tests driven by the official @signe/sync client.
//
// HOW THE OFFICIAL CLIENT IS WIRED (verified against @signe/sync 3.1.1,
// partysocket 1.3.0, ws 8.23.0 on Node 20, with a scratch ws server):
//
//   import { connectionRoom } from '@signe/sync/client';
//   import WebSocket from 'ws';
//   const room = {};                       // the "room instance"
//   const client = await connectionRoom({
//     host: `127.0.0.1:${port}`,           // no scheme; a host starting with
//                                          // "127.0.0.1:" / "localhost:" gets ws://,
//                                          // anything else wss://
//     party: 'main',                       // default is "main" anyway
//     room: roomId,
//     id: sessionId,                       // sent as query param `_pk`
//                                          // (random UUID when omitted)
//     query: { name: 'Alice' },            // extra query params, after _pk
//     WebSocket,                           // partysocket option: WS constructor.
//                                          // Node 20 has no global WebSocket
//                                          // (setting globalThis.WebSocket also works)
//     maxRetries: 0,                       // partysocket option: no auto-reconnect,
//                                          // so a dropped socket stays dropped
//   }, room);
//   // -> connects to ws://127.0.0.1:<port>/parties/main/<roomId>?_pk=<id>&name=Alice
//
// - connectionRoom() is async but only constructs a PartySocket (a
//   ReconnectingWebSocket); the socket opens on a later tick. Every other
//   option not in {id, host, path, party, room, protocol, query, protocols}
//   is passed to ReconnectingWebSocket (WebSocket, maxRetries,
//   minReconnectionDelay, connectionTimeout, startClosed, debug, ...).
// - Incoming frames: JSON.parse(event.data); if type === "sync",
//   load(room, value, true) from '@signe/sync' walks the value and writes every
//   leaf by dotted path: missing intermediate objects are created as {},
//   "$delete" deletes the key, arrays/null/primitives are assigned. An empty
//   object patch creates nothing. Keys must not contain ".".
// - The room instance can therefore be a plain object `{}` (used here). A
//   class with @signe/reactive signals also works: `star = signal({})` is
//   mutated in place, a primitive signal (`pId = signal('')`) gets `.set()`,
//   and when `players` is declared with `sync({ classType: Player })` (legacy
//   decorator signature, applied by hand in plain JS:
//   `sync({ classType: Player })(Room.prototype, 'players')`), every new player
//   key becomes a `new Player()` whose signal fields are `.set()`. See the last
//   test.
// - client.emit(action, value) sends JSON {"action": action, "value": value};
//   emit('collect') (no value) sends {"action":"collect"}. Messages emitted
//   before the socket is open are queued and flushed on open.
// - client.on(type, cb) gets `value` of every frame with that `type`
//   (listeners added after connectionRoom's own, so the room is already
//   updated when cb runs). client.off() is broken upstream (it removes a fresh
//   closure, i.e. nothing). client.close() closes without reconnecting.
//   client.conn is the PartySocket (conn.id === the _pk, conn.url, readyState).
// - A non-JSON text frame from the server would make the client's listener
//   throw (uncaught in Node), so the server must only send JSON.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connectionRoom } from '@signe/sync/client';
import { sync } from '@signe/sync';
import { signal } from '@signe/reactive';

import {
  ARENA,
  PID_RE,
  startServer,
  connectWs,
  uniqueRoomId,
  uniqueSessionId,
  eventually,
  sleep,
  clone,
  httpJson,
  clampToArena,
  playerProblems,
} from './helpers.mjs';

const TEST_TIMEOUT = 30_000;

let server;
const openClients = new Set();

before(async () => {
  server = await startServer();
});

afterEach(async () => {
  for (const c of openClients) {
    try {
      await c.close();
    } catch {
      // ignore
    }
  }
  openClients.clear();
  server?.assertAlive();
});

after(async () => {
  await server?.stop();
});

/**
 * Join a room with the official client.
 * Returns { client, room, packets, id, pId, me, events, close } once the
 * first sync packet arrived and `hasPlayer(room, pId)` holds.
 */
async function joinOfficial(
  roomId,
  { id = uniqueSessionId(), name, room = {}, hasPlayer = (r, pId) => r.players?.[pId] } = {},
) {
  const packets = [];
  const events = { open: 0, close: 0, error: 0 };
  const client = await connectionRoom(
    {
      host: `127.0.0.1:${server.port}`,
      party: 'main',
      room: roomId,
      id,
      query: name === undefined ? undefined : { name },
      WebSocket,
      maxRetries: 0,
    },
    room,
  );
  client.on('sync', (value) => packets.push(value));
  client.conn.addEventListener('open', () => events.open++);
  client.conn.addEventListener('close', () => events.close++);
  client.conn.addEventListener('error', () => events.error++);

  const j = {
    client,
    room,
    packets,
    id,
    events,
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
  await server.explainFailure(() =>
    eventually(() => PID_RE.test(packets[0]?.pId ?? '') && hasPlayer(room, packets[0].pId), 5_000, {
      message: `official client in ${roomId} receives its pId and own player`,
    }),
  );
  return j;
}

async function joinPlain(roomId, query) {
  const c = await server.explainFailure(() => connectWs(server.port, roomId, query));
  const rawClose = c.close;
  c.close = async () => {
    openClients.delete(c);
    return rawClose();
  };
  openClients.add(c);
  await server.explainFailure(() => c.waitFor((f) => f?.type === 'sync' && f.value?.pId, 5_000));
  return c;
}

/** Move onto the star and collect it with the official client. Returns the star that was collected. */
async function collectStar(j) {
  const star = clone(j.room.star);
  assert.ok(Number.isInteger(star?.x) && Number.isInteger(star?.y), `star in state: ${JSON.stringify(star)}`);
  const target = clampToArena(star);
  j.client.emit('move', target);
  await eventually(() => j.me?.x === target.x && j.me?.y === target.y, 5_000, {
    message: `own player moved onto the star ${JSON.stringify(target)}`,
  });
  const before = j.me.score;
  // The arena's `collect` takes `{}` (the original validates it with z.object({}) and drops
  // a message without a value).
  j.client.emit('collect', {});
  await eventually(() => j.me?.score === before + 1, 5_000, { message: 'score increments after collect' });
  return star;
}

test('a. join and receive state (pId, own player with defaults)', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const a = await joinOfficial(roomId, { name: 'Alice' });

  // The client put the _pk in the URL.
  assert.match(a.client.conn.url ?? '', new RegExp(`^ws://127\\.0\\.0\\.1:${server.port}/parties/main/${roomId}\\?_pk=${a.id}&name=Alice$`));
  assert.equal(a.client.conn.id, a.id);

  const first = a.packets[0];
  assert.match(first.pId, PID_RE, 'first sync packet carries an 8-char [A-Za-z0-9] pId');
  assert.equal(a.room.pId, first.pId, 'load() stored pId on the room instance');

  const me = a.room.players[first.pId];
  assert.deepEqual(playerProblems(me), []);
  assert.equal(me.name, 'Alice');
  assert.equal(me.connected, true);
  assert.equal(me.score, 0);
  assert.ok(me.x >= 0 && me.x <= ARENA.width, `x inside arena: ${me.x}`);
  assert.ok(me.y >= 0 && me.y <= ARENA.height, `y inside arena: ${me.y}`);

  assert.ok(Number.isInteger(a.room.star?.x) && Number.isInteger(a.room.star?.y), `integer star: ${JSON.stringify(a.room.star)}`);
  assert.ok(a.room.star.x >= 0 && a.room.star.x <= ARENA.width);
  assert.ok(a.room.star.y >= 0 && a.room.star.y <= ARENA.height);

  // A second official client sees the first one too, and gets its own pId.
  const b = await joinOfficial(roomId);
  assert.notEqual(b.pId, a.pId);
  assert.equal(b.room.players[a.pId]?.name, 'Alice');
  assert.equal(b.me.name, 'Anonymous', 'no name param -> "Anonymous"');
  await eventually(() => a.room.players[b.pId]?.connected === true, 5_000, {
    message: 'A sees B join',
  });
  assert.equal(a.events.close, 0);
});

test('b. see another client move', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const a = await joinOfficial(roomId, { name: 'A' });
  const b = await joinOfficial(roomId, { name: 'B' });

  b.client.emit('move', { x: 100, y: 200 });
  await eventually(() => a.room.players[b.pId]?.x === 100 && a.room.players[b.pId]?.y === 200, 5_000, {
    message: "A's state shows B at (100, 200)",
  });
  await eventually(() => b.me.x === 100 && b.me.y === 200, 5_000, { message: 'B sees its own move' });

  // A plain ws client's move is seen by the official client as well.
  const c = await joinPlain(roomId, { id: uniqueSessionId(), name: 'C' });
  c.emit('move', { x: 450, y: 300 });
  await eventually(() => a.room.players[c.pId]?.x === 450 && a.room.players[c.pId]?.y === 300, 5_000, {
    message: "A's state shows plain-ws C at (450, 300)",
  });
  // Other players untouched.
  assert.equal(a.room.players[b.pId].x, 100);
  assert.equal(a.room.players[b.pId].y, 200);
});

test('c. reconnect with the same id keeps pId and score', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const session = uniqueSessionId('S');
  const observer = await joinOfficial(roomId, { name: 'observer' });

  const s1 = await joinOfficial(roomId, { id: session, name: 'Sam' });
  const pId = s1.pId;
  const star = await collectStar(s1);
  assert.equal(s1.me.score, 1);
  await eventually(() => s1.room.star.x !== star.x || s1.room.star.y !== star.y, 5_000, {
    message: 'the star moves after it is collected',
  });
  await eventually(() => observer.room.players[pId]?.score === 1, 5_000, { message: 'observer sees score 1' });

  await s1.close();
  await eventually(() => observer.room.players[pId]?.connected === false, 1_900, {
    message: 'observer sees the player go offline (before session expiry)',
  });

  const s2 = await joinOfficial(roomId, { id: session, name: 'Sam' });
  assert.equal(s2.pId, pId, 'same session id -> same pId');
  assert.equal(s2.me.score, 1, 'score kept across reconnect');
  assert.equal(s2.me.connected, true);
  assert.equal(s2.me.name, 'Sam');
  await eventually(() => observer.room.players[pId]?.connected === true, 5_000, {
    message: 'observer sees the player online again',
  });
  assert.equal(observer.room.players[pId].score, 1);

  // The player must not be deleted later on (the session is live again).
  await sleep(ARENA.sessionExpiryMs + 500);
  assert.ok(observer.room.players[pId], 'player still present after the expiry delay');
  assert.equal(observer.room.players[pId].connected, true);
  assert.equal(observer.room.players[pId].score, 1);

  // PartySocket#reconnect() on the same socket reuses the same _pk as well.
  s2.client.conn.reconnect();
  await eventually(() => s2.packets.length >= 2 && s2.packets.slice(1).some((p) => p.pId === pId), 5_000, {
    message: 'PartySocket.reconnect() gets a new first packet with the same pId',
  });
  await sleep(300); // a late close of the replaced socket must not mark the player offline
  assert.equal(s2.me.score, 1);
  assert.equal(s2.me.connected, true);
  await eventually(() => observer.room.players[pId]?.connected === true, 5_000);
});

test('d. invalid messages are ignored and the connection stays open', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const a = await joinOfficial(roomId, { name: 'A' });
  const obs = await joinPlain(roomId, { id: uniqueSessionId(), name: 'obs' });

  a.client.emit('move', { x: 200, y: 150 });
  await eventually(() => a.me.x === 200 && a.me.y === 150 && obs.state.players?.[a.pId]?.x === 200, 5_000);

  const beforeState = clone(obs.state);
  const markA = a.packets.length;
  const markObs = obs.frames.length;

  a.client.emit('move', { x: 'a', y: 1 });
  a.client.emit('move', { x: 1 });
  a.client.emit('move', { y: 1 });
  a.client.emit('move', null);
  a.client.emit('move'); // {"action":"move"} (no value)
  a.client.emit('move', []);
  a.client.emit('move', [300, 300]);
  a.client.emit('move', 'x=1,y=1');
  a.client.emit('move', { x: null, y: 5 });
  a.client.emit('teleport', { x: 5, y: 5 }); // unknown action
  a.client.conn.send('this is not json');
  a.client.conn.send('{"action":"move","value":{"x":1,');
  a.client.conn.send('[]');
  a.client.conn.send('null');
  a.client.conn.send('42');
  a.client.conn.send('"move"');
  a.client.conn.send('{}');
  a.client.conn.send('{"value":{"x":5,"y":5}}');
  await sleep(300);

  assert.equal(a.client.conn.readyState, 1, 'official client socket still OPEN');
  assert.equal(a.events.close, 0, 'no close event on the official client');
  assert.equal(obs.isOpen, true);

  // Nothing about A's position may have changed.
  const touchedPos = (v) => {
    const p = v?.players?.[a.pId];
    return p !== undefined && (typeof p !== 'object' || p === null || 'x' in p || 'y' in p);
  };
  assert.deepEqual(a.packets.slice(markA).filter(touchedPos), [], 'no sync of A position to A');
  assert.deepEqual(
    obs.frames.slice(markObs).filter((f) => touchedPos(f?.value)),
    [],
    'no sync of A position to the observer',
  );
  assert.deepEqual(obs.state.players[a.pId], beforeState.players[a.pId]);
  assert.equal(a.me.x, 200);
  assert.equal(a.me.y, 150);

  // A later valid move still works on the same connection.
  a.client.emit('move', { x: 321, y: 234 });
  await eventually(() => a.me.x === 321 && a.me.y === 234, 5_000, { message: 'valid move after garbage' });
  await obs.waitForState((s) => s.players?.[a.pId]?.x === 321 && s.players[a.pId].y === 234);
  assert.equal(a.events.close, 0);
  assert.equal(obs.state.players[a.pId].score, beforeState.players[a.pId].score);
  assert.equal(obs.state.players[a.pId].connected, true);
});

test('e. HTTP /state, /reset, CORS and 404', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const a = await joinOfficial(roomId, { name: 'Alice' });
  const b = await joinOfficial(roomId, { name: 'Bob' });
  await eventually(() => a.room.players[b.pId]?.connected === true);
  await collectStar(a);
  await eventually(() => b.room.players[a.pId]?.score === 1);
  await sleep(100); // let every sync settle

  const base = `/parties/main/${roomId}`;
  const st = await httpJson(server.url, `${base}/state`);
  assert.equal(st.status, 200, st.text);
  assert.equal(st.headers.get('access-control-allow-origin'), '*');
  assert.match(st.headers.get('content-type') ?? '', /application\/json/);
  checkStateShape(st.body);
  assert.deepEqual(Object.keys(st.body.players).sort(), [a.pId, b.pId].sort());
  assert.equal(st.body.players[a.pId].name, 'Alice');
  assert.equal(st.body.players[b.pId].name, 'Bob');
  assert.equal(st.body.players[a.pId].score, 1);
  assert.equal(st.body.players[b.pId].score, 0);
  assert.equal(st.body.players[a.pId].connected, true);
  // The official client's merged view equals the server's view.
  assert.deepEqual(st.body.players, a.room.players);
  assert.deepEqual(st.body.star, a.room.star);
  assert.deepEqual(st.body.players, b.room.players);

  const starBefore = clone(st.body.star);
  const rs = await httpJson(server.url, `${base}/reset`, { method: 'POST' });
  assert.equal(rs.status, 200, rs.text);
  assert.equal(rs.headers.get('access-control-allow-origin'), '*');
  assert.match(rs.headers.get('content-type') ?? '', /application\/json/);
  checkStateShape(rs.body);
  assert.deepEqual(Object.keys(rs.body.players).sort(), [a.pId, b.pId].sort());
  for (const [id, p] of Object.entries(rs.body.players)) assert.equal(p.score, 0, `score of ${id} reset`);
  assert.ok(rs.body.star.x !== starBefore.x || rs.body.star.y !== starBefore.y, 'reset moves the star');
  // Positions/names survive a reset.
  assert.equal(rs.body.players[a.pId].name, 'Alice');

  // Connected clients receive the reset.
  await eventually(
    () => a.me.score === 0 && a.room.star.x === rs.body.star.x && a.room.star.y === rs.body.star.y,
    5_000,
    { message: 'A sees reset score and new star' },
  );
  await eventually(() => b.room.players[a.pId]?.score === 0, 5_000);

  const st2 = await httpJson(server.url, `${base}/state`);
  assert.equal(st2.status, 200);
  assert.deepEqual(st2.body, rs.body, '/state after /reset equals the /reset response');

  const nf = await httpJson(server.url, `${base}/nope`);
  assert.equal(nf.status, 404);
  assert.deepEqual(nf.body, { error: 'Not found' });
});

test('f. other clients see a disconnect, then the player is deleted on session expiry', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const a = await joinOfficial(roomId, { name: 'A' });
  const b = await joinOfficial(roomId, { name: 'B' });
  const bId = b.pId;
  await eventually(() => a.room.players[bId]?.connected === true);

  const mark = a.packets.length;
  const closedAt = Date.now();
  await b.close();

  await eventually(() => a.room.players[bId]?.connected === false, 1_900, {
    message: "A sees players[B].connected === false before expiry",
  });
  assert.ok(a.room.players[bId], 'B stays in the state until the session expires');
  assert.ok(
    a.packets.slice(mark).some((v) => v?.players?.[bId]?.connected === false),
    'a sync packet set players[B].connected = false',
  );

  const deleted = await eventually(
    () => a.packets.slice(mark).find((v) => v?.players?.[bId] === '$delete'),
    ARENA.sessionExpiryMs + 3_000,
    { message: 'A receives {"players":{"<B>":"$delete"}}' },
  );
  const elapsed = Date.now() - closedAt;
  assert.deepEqual(deleted, { players: { [bId]: '$delete' } });
  assert.ok(elapsed >= 1_000, `deletion should wait for session expiry (~2 s), came after ${elapsed} ms`);
  assert.equal(a.room.players[bId], undefined, 'official client removed B from its state');
  assert.ok(a.room.players[a.pId], 'A itself is still there');

  const st = await httpJson(server.url, `/parties/main/${roomId}/state`);
  assert.deepEqual(Object.keys(st.body.players), [a.pId]);

  // Rejoining with B's old session after expiry works (fresh or same pId is
  // not specified; it must simply be a connected player again).
  const b2 = await joinOfficial(roomId, { id: b.id, name: 'B' });
  assert.equal(b2.me.connected, true);
  await eventually(() => a.room.players[b2.pId]?.connected === true);
});

test('g. signal-based room instance (@signe/reactive, sync classType) is filled by the client', { timeout: TEST_TIMEOUT }, async () => {
  class Player {
    name = signal('');
    connected = signal(false);
    x = signal(0);
    y = signal(0);
    color = signal('');
    score = signal(0);
  }
  class Room {
    constructor() {
      this.pId = signal('');
      this.star = signal({});
      this.players = signal({});
    }
  }
  // Equivalent of `@sync() pId`, `@sync() star`, `@sync(Player) players`.
  sync()(Room.prototype, 'pId');
  sync()(Room.prototype, 'star');
  sync({ classType: Player })(Room.prototype, 'players');

  const roomId = uniqueRoomId();
  const room = new Room();
  const a = await joinOfficial(roomId, { name: 'Sig', room, hasPlayer: (r, pId) => r.players()[pId] });
  assert.equal(room.pId(), a.pId);
  const me = room.players()[a.pId];
  assert.ok(me instanceof Player, 'players are created as Player instances');
  assert.equal(me.name(), 'Sig');
  assert.equal(me.connected(), true);
  assert.ok(Number.isInteger(room.star().x) && Number.isInteger(room.star().y));

  const changes = [];
  const sub = me.x.observable.subscribe((v) => changes.push(v));
  a.client.emit('move', { x: 123, y: 456 });
  await eventually(() => me.x() === 123 && me.y() === 456, 5_000, { message: 'signal fields updated by sync' });
  assert.ok(changes.includes(123), 'the x signal emitted the new value');
  sub.unsubscribe();

  // Another player appears as a Player instance too, and is removed with "$delete".
  const other = await joinPlain(roomId, { id: uniqueSessionId(), name: 'Other' });
  await eventually(() => room.players()[other.pId] instanceof Player && room.players()[other.pId].name() === 'Other');
  await other.close();
  await eventually(() => room.players()[other.pId]?.connected() === false, 1_900);
  await eventually(() => !(other.pId in room.players()), ARENA.sessionExpiryMs + 3_000, {
    message: 'other player removed from the signal container',
  });
});

function checkStateShape(body) {
  assert.ok(body && typeof body === 'object', `JSON body: ${JSON.stringify(body)}`);
  assert.deepEqual(Object.keys(body).sort(), ['arena', 'players', 'star']);
  assert.deepEqual(body.arena, { width: ARENA.width, height: ARENA.height });
  assert.deepEqual(Object.keys(body.star).sort(), ['x', 'y']);
  assert.ok(Number.isInteger(body.star.x) && Number.isInteger(body.star.y), `integer star: ${JSON.stringify(body.star)}`);
  for (const [id, p] of Object.entries(body.players)) {
    assert.match(id, PID_RE);
    assert.deepEqual(playerProblems(p), [], `player ${id}`);
    assert.deepEqual(Object.keys(p).sort(), ['color', 'connected', 'name', 'score', 'x', 'y']);
  }
}
