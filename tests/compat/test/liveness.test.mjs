// Liveness against the official client: the server pings clients that are silent and drops
// the ones that never answer. The official @signe/sync client (over `ws`, as browsers do)
// answers pings by itself, so it stays connected and keeps syncing while it sends nothing;
// a socket that does not answer pings is dropped after the liveness timeout.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connectionRoom } from '@signe/sync/client';

import { PID_RE, startServer, uniqueRoomId, uniqueSessionId, eventually, sleep, clampToArena } from './helpers.mjs';

const PING_MS = 200;
const LIVENESS_MS = 700;

let server;

before(async () => {
  server = await startServer({
    extraArgs: ['--ping-interval-ms', String(PING_MS), '--liveness-timeout-ms', String(LIVENESS_MS)],
  });
});

after(async () => {
  await server?.stop();
});

test('the official client answers the pings and stays connected while idle', { timeout: 20_000 }, async () => {
  const roomId = uniqueRoomId('live');
  const room = {};
  const packets = [];
  const events = { close: 0 };
  const client = await connectionRoom(
    { host: `127.0.0.1:${server.port}`, room: roomId, id: uniqueSessionId(), WebSocket, maxRetries: 0 },
    room,
  );
  client.on('sync', (v) => packets.push(v));
  client.conn.addEventListener('close', () => events.close++);
  let pings = 0;
  await eventually(() => PID_RE.test(packets[0]?.pId ?? ''), 5_000, { message: 'first packet' });
  // The underlying `ws` socket of partysocket: count the pings it answers.
  assert.equal(typeof client.conn._ws?.on, "function", "partysocket exposes its ws socket");
  client.conn._ws.on("ping", () => pings++);
  // Idle for more than three liveness timeouts.
  await sleep(LIVENESS_MS * 3 + 200);
  assert.equal(events.close, 0, 'still connected after being idle');
  assert.ok(pings >= 3, `pinged while idle (${pings})`);
  // And still syncing.
  const me = room.players[packets[0].pId];
  const target = clampToArena({ x: me.x + 20, y: me.y });
  client.emit('move', target);
  await eventually(() => room.players[packets[0].pId]?.x === target.x, 5_000, { message: 'moved after idling' });
  client.close();
  await sleep(50);
  server.assertAlive();
});

test('a socket that never answers pings is dropped after the liveness timeout', { timeout: 20_000 }, async () => {
  const roomId = uniqueRoomId('dead');
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/parties/main/${roomId}?_pk=${uniqueSessionId()}`, {
    autoPong: false,
  });
  let pings = 0;
  ws.on('ping', () => pings++);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const opened = Date.now();
  const closedAfter = await new Promise((resolve) => ws.once('close', () => resolve(Date.now() - opened)));
  assert.ok(pings >= 2, `pinged before being dropped (${pings})`);
  assert.ok(
    closedAfter >= LIVENESS_MS - 100 && closedAfter < LIVENESS_MS + 1_500,
    `dropped after about the liveness timeout (${closedAfter} ms)`,
  );
  server.assertAlive();
});
