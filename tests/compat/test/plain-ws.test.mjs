// Compatibility tests with a plain `ws` client speaking the wire protocol
// directly: ws://127.0.0.1:<port>/parties/main/<roomId>?id=<session>&name=<name>
// Client -> server: {"action": "...", "value": ...}
// Server -> client: {"type": "sync", "value": <partial state patch>}, deep-merged
// by clients ("$delete" deletes a key); the first frame on each socket has pId.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';

import {
  ARENA,
  PID_RE,
  startServer,
  connectWs,
  uniqueRoomId,
  uniqueSessionId,
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

/** Connect and wait for the first sync frame (with pId). */
async function join(roomId, query = {}) {
  const c = await server.explainFailure(() => connectWs(server.port, roomId, query));
  const rawClose = c.close;
  c.close = async () => {
    openClients.delete(c);
    return rawClose();
  };
  openClients.add(c);
  await server.explainFailure(() => c.waitFor((f) => f?.type === 'sync' && f.value?.pId !== undefined, 5_000));
  return c;
}

/**
 * Send a move and wait until this client's state shows it, so that everything
 * sent before has been processed (the server handles a socket's messages in order).
 */
async function moveAndWait(c, pos, expected = pos) {
  c.emit('move', pos);
  await c.waitForState((s) => s.players?.[c.pId]?.x === expected.x && s.players[c.pId].y === expected.y);
}

test('first packet shape', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const a = await join(roomId, { id: uniqueSessionId() });
  const first = a.frames[0];
  assert.deepEqual(Object.keys(first).sort(), ['type', 'value']);
  assert.equal(first.type, 'sync');
  assert.deepEqual(Object.keys(first.value).sort(), ['pId', 'players', 'star']);
  assert.match(first.value.pId, PID_RE);
  assert.deepEqual(Object.keys(first.value.star).sort(), ['x', 'y']);
  assert.ok(Number.isInteger(first.value.star.x) && Number.isInteger(first.value.star.y));

  const me = first.value.players[first.value.pId];
  assert.deepEqual(playerProblems(me), []);
  assert.deepEqual(Object.keys(me).sort(), ['color', 'connected', 'name', 'score', 'x', 'y']);
  assert.equal(me.name, 'Anonymous');
  assert.equal(me.connected, true);
  assert.equal(me.score, 0);
  assert.equal(a.badFrames.length, 0, 'all frames are JSON');

  // A second player's first packet contains the full current state, including A.
  const b = await join(roomId, { id: uniqueSessionId(), name: 'Bee' });
  const bFirst = b.frames[0];
  assert.equal(bFirst.type, 'sync');
  assert.match(bFirst.value.pId, PID_RE);
  assert.notEqual(bFirst.value.pId, a.pId);
  assert.deepEqual(bFirst.value.star, a.state.star);
  assert.deepEqual(Object.keys(bFirst.value.players).sort(), [a.pId, b.pId].sort());
  assert.equal(bFirst.value.players[a.pId].name, 'Anonymous');
  assert.equal(bFirst.value.players[b.pId].name, 'Bee');

  // A learns about B through a sync patch (no pId in later frames for A).
  await a.waitForState((s) => s.players?.[b.pId]?.name === 'Bee' && s.players[b.pId].connected === true);
  for (const f of a.frames) assert.equal(f.type, 'sync');
  assert.equal(a.state.pId, a.pId);
});

test('two sockets with the same id are the same player', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const session = uniqueSessionId();
  const tab1 = await join(roomId, { id: session, name: 'Twin' });
  const tab2 = await join(roomId, { id: session, name: 'Twin' });
  assert.equal(tab2.pId, tab1.pId);
  assert.deepEqual(Object.keys(tab2.frames[0].value.players), [tab1.pId], 'only one player in the room');

  const st = await httpJson(server.url, `/parties/main/${roomId}/state`);
  assert.equal(st.status, 200);
  assert.deepEqual(Object.keys(st.body.players), [tab1.pId]);

  // A move from one tab is seen by the other tab.
  tab2.emit('move', { x: 111, y: 222 });
  await tab1.waitForState((s) => s.players?.[tab1.pId]?.x === 111 && s.players[tab1.pId].y === 222);

  // `_pk` (what the official client sends) names the same session as `id`.
  const tab3 = await join(roomId, { _pk: session, name: 'Twin' });
  assert.equal(tab3.pId, tab1.pId, '_pk=<session> is the same player as id=<session>');
  const other = await join(roomId, { _pk: uniqueSessionId() });
  assert.notEqual(other.pId, tab1.pId);
});

test('closing one of two tabs does not mark the player offline', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const session = uniqueSessionId();
  const observer = await join(roomId, { id: uniqueSessionId(), name: 'obs' });
  const tab1 = await join(roomId, { id: session, name: 'Tabby' });
  const tab2 = await join(roomId, { id: session, name: 'Tabby' });
  const pId = tab1.pId;
  assert.equal(tab2.pId, pId);
  await observer.waitForState((s) => s.players?.[pId]?.connected === true);

  const mark = observer.frames.length;
  await tab1.close();
  // Wait past the session expiry: nothing may happen to the player.
  await sleep(ARENA.sessionExpiryMs + 500);
  const touched = observer.frames
    .slice(mark)
    .filter((f) => f.value?.players?.[pId] === '$delete' || f.value?.players?.[pId]?.connected === false);
  assert.deepEqual(touched, [], 'no offline/delete patch while another tab is open');
  assert.equal(observer.state.players[pId]?.connected, true);
  const st = await httpJson(server.url, `/parties/main/${roomId}/state`);
  assert.equal(st.body.players[pId]?.connected, true);

  // The remaining tab still works.
  await moveAndWait(tab2, { x: 400, y: 400 });
  await observer.waitForState((s) => s.players?.[pId]?.x === 400);

  // Closing the last tab marks the player offline.
  await tab2.close();
  await observer.waitForState((s) => s.players?.[pId]?.connected === false, 1_900);
});

test('name query param: trimmed, max 40 chars, empty -> "Anonymous"', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const cases = [
    { name: 'Bob', expected: 'Bob' },
    { name: '  Carol  ', expected: 'Carol' },
    { name: '', expected: 'Anonymous' },
    { name: '    ', expected: 'Anonymous' },
    { name: undefined, expected: 'Anonymous' },
    { name: 'x'.repeat(60), expected: 'x'.repeat(40) },
    { name: 'y'.repeat(40), expected: 'y'.repeat(40) },
    { name: 'é'.repeat(50), expected: 'é'.repeat(40) }, // characters, not bytes
    { name: 'Zoë & <Ann>', expected: 'Zoë & <Ann>' },
  ];
  // Objects are encoded with URLSearchParams, i.e. spaces become "+" exactly
  // as the official client (partysocket) sends them; raw strings test %20.
  const pIds = [];
  for (const { name, expected } of cases) {
    const c = await join(roomId, { id: uniqueSessionId(), name });
    assert.equal(c.state.players[c.pId].name, expected, `name=${JSON.stringify(name)}`);
    pIds.push([c.pId, expected, name]);
  }
  for (const [raw, expected] of [
    ['%20%20Dan%20', 'Dan'],
    ['Eve%20Smith', 'Eve Smith'],
    ['Fay+Lee', 'Fay Lee'],
  ]) {
    const c = await join(roomId, `id=${uniqueSessionId()}&name=${raw}`);
    assert.equal(c.state.players[c.pId].name, expected, `raw name=${raw}`);
    pIds.push([c.pId, expected, raw]);
  }
  const st = await httpJson(server.url, `/parties/main/${roomId}/state`);
  for (const [pId, expected, name] of pIds) {
    assert.equal(st.body.players[pId]?.name, expected, `/state name for name=${JSON.stringify(name)}`);
  }
});

test('moves are broadcast and clamped to the arena', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const a = await join(roomId, { id: uniqueSessionId(), name: 'A' });
  const b = await join(roomId, { id: uniqueSessionId(), name: 'B' });

  b.emit('move', { x: 100, y: 200 });
  await a.waitForState((s) => s.players?.[b.pId]?.x === 100 && s.players[b.pId].y === 200);

  await moveAndWait(b, { x: -100, y: 99_999 }, { x: ARENA.minX, y: ARENA.maxY });
  await a.waitForState((s) => s.players?.[b.pId]?.x === ARENA.minX && s.players[b.pId].y === ARENA.maxY);
  await moveAndWait(b, { x: 5_000, y: -3 }, { x: ARENA.maxX, y: ARENA.minY });
  await moveAndWait(b, { x: 0, y: 0 }, { x: ARENA.minX, y: ARENA.minY });
  await moveAndWait(b, { x: 900, y: 560 }, { x: ARENA.maxX, y: ARENA.maxY });
  await moveAndWait(b, { x: 16, y: 544 });
  await moveAndWait(b, { x: 884, y: 16 });
  await moveAndWait(b, { x: 123.5, y: 77.25 }); // numbers, not only integers
  await a.waitForState((s) => s.players?.[b.pId]?.x === 123.5 && s.players[b.pId].y === 77.25);

  const st = await httpJson(server.url, `/parties/main/${roomId}/state`);
  assert.equal(st.body.players[b.pId].x, 123.5);
  assert.equal(st.body.players[b.pId].y, 77.25);
  assert.deepEqual(st.body.players, a.state.players, 'merged client state equals /state');
  assert.deepEqual(st.body.star, a.state.star);
});

test('collect scores only near the star, and the star moves', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const a = await join(roomId, { id: uniqueSessionId(), name: 'A' });
  const obs = await join(roomId, { id: uniqueSessionId(), name: 'obs' });

  // Far from the star: collecting does nothing.
  const star0 = clone(a.state.star);
  const far = {
    x: star0.x < ARENA.width / 2 ? ARENA.maxX : ARENA.minX,
    y: star0.y < ARENA.height / 2 ? ARENA.maxY : ARENA.minY,
  };
  await moveAndWait(a, far);
  a.send({ action: 'collect', value: {} });
  await moveAndWait(a, { x: far.x, y: far.y === ARENA.minY ? ARENA.minY + 1 : ARENA.maxY - 1 }); // sentinel
  assert.equal(a.state.players[a.pId].score, 0, 'no point when far from the star');
  assert.deepEqual(a.state.star, star0, 'star did not move');

  // On the star: one point, the star moves, everybody sees it.
  const target = clampToArena(star0);
  await moveAndWait(a, target);
  a.send({ action: 'collect', value: {} });
  await a.waitForState((s) => s.players[a.pId].score === 1);
  await a.waitForState((s) => s.star.x !== star0.x || s.star.y !== star0.y);
  assert.ok(Number.isInteger(a.state.star.x) && Number.isInteger(a.state.star.y));
  await obs.waitForState((s) => s.players?.[a.pId]?.score === 1 && s.star.x === a.state.star.x && s.star.y === a.state.star.y);

  // Just inside the radius (distance <= 37) of the new star also scores.
  const star1 = clone(a.state.star);
  const near = clampToArena({ x: star1.x + (star1.x > ARENA.width / 2 ? -30 : 30), y: star1.y });
  const dist = Math.hypot(near.x - star1.x, near.y - star1.y);
  assert.ok(dist <= ARENA.collectRadius, `test setup: distance ${dist}`);
  await moveAndWait(a, near);
  a.send({ action: 'collect', value: {} });
  await a.waitForState((s) => s.players[a.pId].score === 2);

  const st = await httpJson(server.url, `/parties/main/${roomId}/state`);
  assert.equal(st.body.players[a.pId].score, 2);
  assert.equal(st.body.players[obs.pId].score, 0);
});

test('invalid messages are ignored and the connection stays open', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const a = await join(roomId, { id: uniqueSessionId(), name: 'A' });
  const obs = await join(roomId, { id: uniqueSessionId(), name: 'obs' });
  await moveAndWait(a, { x: 250, y: 260 });
  // Wait for both coordinates: the original sends x and y in separate packets.
  await obs.waitForState((s) => s.players?.[a.pId]?.x === 250 && s.players?.[a.pId]?.y === 260);

  const before = clone(obs.state);
  const markA = a.frames.length;
  const markObs = obs.frames.length;
  const garbage = [
    { action: 'move', value: { x: 'a', y: 1 } },
    { action: 'move', value: { x: 1 } },
    { action: 'move', value: null },
    { action: 'move' },
    { action: 'move', value: [] },
    { action: 'move', value: { x: null, y: 1 } },
    { action: 'move', value: 'x=1,y=1' },
    { action: 'nope', value: { x: 1, y: 1 } },
    { action: 42, value: { x: 1, y: 1 } },
    { value: { x: 1, y: 1 } },
  ];
  for (const g of garbage) a.send(g);
  for (const raw of ['not json', '{"action":"move","value":', '[]', 'null', '""', '0', '{}']) a.sendRaw(raw);
  a.ws.send(Buffer.from([0xff, 0x00, 0x7b, 0x42]), { binary: true }); // binary garbage
  await sleep(300);

  assert.equal(a.isOpen, true, 'socket still open');
  assert.equal(a.closeInfo, null);
  const touchesA = (f) => {
    const p = f?.value?.players?.[a.pId];
    return p !== undefined && (p === '$delete' || 'x' in p || 'y' in p || 'score' in p);
  };
  assert.deepEqual(obs.frames.slice(markObs).filter(touchesA), [], 'observer saw no change to A');
  assert.deepEqual(a.frames.slice(markA).filter(touchesA), [], 'A saw no change to itself');
  assert.deepEqual(obs.state, before);

  await moveAndWait(a, { x: 300, y: 310 });
  await obs.waitForState((s) => s.players?.[a.pId]?.x === 300 && s.players[a.pId].y === 310);
  assert.equal(a.badFrames.length, 0);
});

test('reconnect with the same id keeps pId and score', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const session = uniqueSessionId();
  const s1 = await join(roomId, { id: session, name: 'Sam' });
  const pId = s1.pId;
  const star = clone(s1.state.star);
  await moveAndWait(s1, clampToArena(star));
  s1.send({ action: 'collect', value: {} });
  await s1.waitForState((s) => s.players[pId].score === 1);
  await s1.close();

  // Reconnect well within the 2 s session expiry, with nobody else in the room.
  const s2 = await join(roomId, { id: session, name: 'Sam' });
  assert.equal(s2.pId, pId);
  const me = s2.frames[0].value.players[pId];
  assert.equal(me.score, 1);
  assert.equal(me.connected, true);
  await sleep(ARENA.sessionExpiryMs + 500);
  assert.equal(s2.state.players[pId]?.connected, true, 'not expired while connected');
  assert.equal(s2.state.players[pId].score, 1);
});

test('disconnect is broadcast, then the player is deleted on session expiry', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId();
  const a = await join(roomId, { id: uniqueSessionId(), name: 'A' });
  const b = await join(roomId, { id: uniqueSessionId(), name: 'B' });
  await a.waitForState((s) => s.players?.[b.pId]?.connected === true);
  const mark = a.frames.length;
  await b.close();
  await a.waitForState((s) => s.players?.[b.pId]?.connected === false, 1_900);
  const del = await a.waitFor((f) => f.value?.players?.[b.pId] === '$delete', ARENA.sessionExpiryMs + 3_000, {
    from: mark,
  });
  assert.deepEqual(del, { type: 'sync', value: { players: { [b.pId]: '$delete' } } });
  assert.equal(a.state.players[b.pId], undefined);
});
